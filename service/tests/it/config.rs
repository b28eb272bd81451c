use std::path::Path;

use ambient_service::config::{self, ConfigError, StrictConfig};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Cfg {
    name: String,
    #[serde(default)]
    workers: u32,
}

impl StrictConfig for Cfg {
    fn apply_env(&mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = var("TEST_WORKERS") {
            self.workers = v
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("TEST_WORKERS={v:?}")))?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::Invalid("workers must be at least 1".into()));
        }
        Ok(())
    }
}

#[test]
fn a_file_is_read_overridden_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "name = \"x\"\n").unwrap();
    // Valid only once the environment supplies the missing value.
    let err = config::load_with_env::<Cfg>(&path, &|_| None).unwrap_err();
    assert!(
        err.to_string().contains("workers must be at least 1"),
        "{err}"
    );
    let env = |k: &str| (k == "TEST_WORKERS").then(|| "4".to_string());
    let cfg: Cfg = config::load_with_env(&path, &env).unwrap();
    assert_eq!((cfg.name.as_str(), cfg.workers), ("x", 4));
    let bad = |k: &str| (k == "TEST_WORKERS").then(|| "four".to_string());
    assert!(matches!(
        config::load_with_env::<Cfg>(&path, &bad),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn a_missing_file_and_an_unknown_key_are_typed_errors() {
    let missing = Path::new("/nonexistent/ambient/c.toml");
    match config::load::<Cfg>(missing) {
        Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Read, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "name = \"x\"\nworkers = 1\nsurprise = true\n").unwrap();
    let err = config::load::<Cfg>(&path).unwrap_err();
    assert!(matches!(&err, ConfigError::Parse(_)), "{err}");
    assert!(err.to_string().contains("surprise"), "{err}");
}
