//! The one way a service loads its configuration: read the file, parse it into types that
//! `#[serde(deny_unknown_fields)]` (so a misspelt key is an error, not a silent default), apply
//! `AMBIENT_*` environment overrides, then validate ranges and consistency, all before anything
//! starts.
//!
//! A service's `Config` implements [`StrictConfig`] (its two hooks) and calls [`load`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration problem, found before start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or has unknown fields.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A configuration [`load`] can read: TOML-deserialisable (with `deny_unknown_fields` on every
/// struct), with environment overrides and a validation pass.
pub trait StrictConfig: DeserializeOwned {
    /// Applies environment overrides; `var` looks a variable up (tests pass a closure instead
    /// of the process environment). A value that does not parse is [`ConfigError::Invalid`].
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError>;

    /// Checks ranges and consistency, after the overrides.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Reads `path`, parses it, applies overrides from the process environment, and validates.
pub fn load<C: StrictConfig>(path: &Path) -> Result<C, ConfigError> {
    load_with_env(path, &|k| std::env::var(k).ok())
}

/// [`load`] with the environment looked up through `var`.
pub fn load_with_env<C: StrictConfig>(
    path: &Path,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_toml(&text, var)
}

/// Parses `text`, applies overrides through `var`, and validates.
pub fn from_toml<C: StrictConfig>(
    text: &str,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<C, ConfigError> {
    let mut cfg: C = toml::from_str(text)?;
    cfg.apply_env(var)?;
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        port: u16,
    }

    impl StrictConfig for Demo {
        fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
            if let Some(v) = var("PORT") {
                self.port = v
                    .parse()
                    .map_err(|_| ConfigError::Invalid(format!("PORT={v:?}")))?;
            }
            Ok(())
        }

        fn validate(&self) -> Result<(), ConfigError> {
            if self.port == 0 {
                return Err(ConfigError::Invalid("port must be > 0".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn parse_then_env_then_validate() {
        let none = |_: &str| None;
        assert_eq!(from_toml::<Demo>("port = 1", &none).unwrap().port, 1);
        let port0 = |k: &str| (k == "PORT").then(|| "0".to_string());
        // The override comes before validation, so it is validated too.
        assert!(matches!(
            from_toml::<Demo>("port = 1", &port0),
            Err(ConfigError::Invalid(m)) if m.contains("> 0")
        ));
        assert!(matches!(
            from_toml::<Demo>("port = 1\nextra = 2", &none),
            Err(ConfigError::Parse(e)) if e.to_string().contains("extra")
        ));
    }
}
