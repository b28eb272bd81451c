//! The node's secrets: its broker password (from the configuration, else the OS keyring — Secret
//! Service on Linux, Keychain on macOS, Credential Manager on Windows — else a file readable only
//! by its owner) and its ed25519 identity key (made on first start, kept the same way). The file
//! fallback exists for headless boxes without a keyring, and the agent says so in its log
//! whenever it uses it.
//!
//! Keyring calls block (they talk D-Bus); call these functions off the async workers.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ambient_protocol::NodeKey;

/// Keyring service name under which node passwords are stored.
pub const SERVICE: &str = "ambient-vcp";

/// Where a password came from or went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration file or environment.
    Config,
    /// The OS keyring.
    Keyring,
    /// The 0600 fallback file.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Config => f.write_str("configuration"),
            Source::Keyring => f.write_str("OS keyring"),
            Source::File(p) => write!(f, "file {} (no OS keyring available)", p.display()),
        }
    }
}

/// A credential problem.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// No password anywhere.
    #[error(
        "no broker password for node {node}: set mqtt.password, AMBIENT_MQTT_PASSWORD, or run \
         `ambient-agent set-password --config FILE`"
    )]
    Missing {
        /// The node.
        node: String,
    },
    /// The fallback file could not be used.
    #[error("credential file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The fallback file is readable by others.
    #[error("credential file {0} is readable by group or others; run `chmod 600` on it")]
    Permissions(PathBuf),
    /// The node has an identity, but its secret half cannot be read now.
    #[error(
        "node {node} has an identity key (its public half is in {public}), but neither the OS \
         keyring nor the fallback file gives its secret half now: unlock the keyring (run with \
         RUST_LOG=debug to see why it failed), or delete {public} to make a new identity (other \
         nodes and the coordinator will see a new key)",
        public = public.display()
    )]
    IdentityUnavailable {
        /// The node.
        node: String,
        /// The public-half file.
        public: PathBuf,
    },
    /// The stored identity key is not one.
    #[error(
        "the identity key of node {node} stored in the {source_} is corrupt; remove it to make a \
         new one (the node's old signatures stop verifying)"
    )]
    BadIdentity {
        /// The node.
        node: String,
        /// Where it was read from.
        source_: Source,
    },
}

/// The fallback file of a node.
pub fn fallback_path(data_dir: &Path, node: &str) -> PathBuf {
    data_dir
        .join("credentials")
        .join(format!("{node}.mqtt-password"))
}

/// The fallback file of a node's identity key.
pub fn identity_fallback_path(data_dir: &Path, node: &str) -> PathBuf {
    data_dir
        .join("credentials")
        .join(format!("{node}.identity-key"))
}

/// The keyring account of a node's identity key (its password's account is the node id).
fn identity_account(node: &str) -> String {
    format!("{node}/identity")
}

/// Finds the node's password.
pub fn load(
    node: &str,
    data_dir: &Path,
    configured: Option<&str>,
) -> Result<(String, Source), CredsError> {
    if let Some(p) = configured {
        return Ok((p.to_string(), Source::Config));
    }
    read_secret(node, &fallback_path(data_dir, node))?.ok_or_else(|| CredsError::Missing {
        node: node.to_string(),
    })
}

/// Stores the node's password in the OS keyring, or in the 0600 file where there is none.
pub fn store(node: &str, data_dir: &Path, password: &str) -> Result<Source, CredsError> {
    write_secret(node, &fallback_path(data_dir, node), password)
}

/// Where the public half of a node's identity key is written, beside the credentials. It is
/// not secret: it records that the node has an identity, so that a keyring that cannot be read
/// today (locked, its daemon not up yet) never leads to a new identity in its place.
pub fn identity_public_path(data_dir: &Path, node: &str) -> PathBuf {
    data_dir
        .join("credentials")
        .join(format!("{node}.identity-public"))
}

/// The node's identity key, made and stored on first use.
pub fn identity(node: &str, data_dir: &Path) -> Result<(NodeKey, Source), CredsError> {
    let (account, path) = (
        identity_account(node),
        identity_fallback_path(data_dir, node),
    );
    let public = identity_public_path(data_dir, node);
    if let Some((hex, source_)) = read_secret(&account, &path)? {
        let key = NodeKey::from_hex(&hex).map_err(|_| CredsError::BadIdentity {
            node: node.to_string(),
            source_: source_.clone(),
        })?;
        if !public.exists() {
            write_public(node, data_dir, &key)?;
        }
        return Ok((key, source_));
    }
    if public.exists() {
        return Err(CredsError::IdentityUnavailable {
            node: node.to_string(),
            public,
        });
    }
    let key = NodeKey::generate();
    let source = store_identity(node, data_dir, &key)?;
    tracing::info!(node, source = %source, "Made this node's identity key.");
    Ok((key, source))
}

/// Stores `key` as the node's identity key (the OS keyring, else the 0600 file) with its public
/// half beside the credentials: for a key made before the node had its id (`ambient-agent
/// join`).
pub fn store_identity(node: &str, data_dir: &Path, key: &NodeKey) -> Result<Source, CredsError> {
    let source = write_secret(
        &identity_account(node),
        &identity_fallback_path(data_dir, node),
        &key.to_hex(),
    )?;
    write_public(node, data_dir, key)?;
    Ok(source)
}

fn write_public(node: &str, data_dir: &Path, key: &NodeKey) -> Result<(), CredsError> {
    let public = identity_public_path(data_dir, node);
    std::fs::create_dir_all(data_dir.join("credentials"))
        .and_then(|()| std::fs::write(&public, key.identity(node).ed25519))
        .map_err(|source| CredsError::File {
            path: public.clone(),
            source,
        })
}

/// A secret from the OS keyring, else from its 0600 fallback file; `None` when neither has it.
fn read_secret(account: &str, path: &Path) -> Result<Option<(String, Source)>, CredsError> {
    match keyring_get(account) {
        Ok(Some(p)) => return Ok(Some((p, Source::Keyring))),
        Ok(None) => {}
        Err(why) => tracing::debug!(account, reason = %why,
            "No usable OS keyring; looking for the credential file fallback."),
    }
    match std::fs::read_to_string(path) {
        Ok(p) => {
            check_private(path)?;
            Ok(Some((
                p.trim_end().to_string(),
                Source::File(path.to_owned()),
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredsError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Stores a secret in the OS keyring, or in a 0600 file where there is none.
fn write_secret(account: &str, path: &Path, secret: &str) -> Result<Source, CredsError> {
    match keyring_set(account, secret) {
        Ok(()) => return Ok(Source::Keyring),
        Err(why) => tracing::debug!(account, reason = %why,
            "No usable OS keyring; storing the secret in a file readable only by this user."),
    }
    let path = path.to_owned();
    let io = |source| CredsError::File {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(io)?;
    f.write_all(secret.as_bytes()).map_err(io)?;
    check_private(&path)?;
    Ok(Source::File(path))
}

fn check_private(path: &Path) -> Result<(), CredsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(path).map_err(|source| CredsError::File {
            path: path.to_owned(),
            source,
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(CredsError::Permissions(path.to_owned()));
        }
    }
    Ok(())
}

#[cfg(feature = "keyring")]
fn keyring_get(account: &str) -> Result<Option<String>, String> {
    let entry = keyring::Entry::new(SERVICE, account).map_err(|e| e.to_string())?;
    match entry.get_password() {
        Ok(p) => Ok(Some(p)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(feature = "keyring")]
fn keyring_set(account: &str, secret: &str) -> Result<(), String> {
    keyring::Entry::new(SERVICE, account)
        .and_then(|e| e.set_password(secret))
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "keyring"))]
fn keyring_get(_: &str) -> Result<Option<String>, String> {
    Err("built without the `keyring` feature".into())
}

#[cfg(not(feature = "keyring"))]
fn keyring_set(_: &str, _: &str) -> Result<(), String> {
    Err("built without the `keyring` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_password_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (p, src) = load("n1", dir.path(), Some("secret")).unwrap();
        assert_eq!((p.as_str(), src), ("secret", Source::Config));
    }

    #[test]
    fn store_then_load_round_trips() {
        // Uses the OS keyring where one exists (a desktop), else the 0600 file (CI, headless).
        let dir = tempfile::tempdir().unwrap();
        let node = format!("test-{}", uuid::Uuid::new_v4().simple());
        let src = store(&node, dir.path(), "s3cret").unwrap();
        let (p, loaded_from) = load(&node, dir.path(), None).unwrap();
        assert_eq!(p, "s3cret");
        assert_eq!(src, loaded_from);
        if let Source::File(path) = &src {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        } else {
            #[cfg(feature = "keyring")]
            let _ = keyring::Entry::new(SERVICE, &node).and_then(|e| e.delete_credential());
        }
    }

    #[test]
    fn identity_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let node = format!("test-{}", uuid::Uuid::new_v4().simple());
        let (k1, src) = identity(&node, dir.path()).unwrap();
        let (k2, again) = identity(&node, dir.path()).unwrap();
        assert_eq!(k1.verifying_key(), k2.verifying_key());
        assert_eq!(src, again);
        if let Source::File(path) = &src {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            // A corrupt key is an error that says what to do, never a silent new identity.
            std::fs::write(path, "not a key").unwrap();
            let e = identity(&node, dir.path()).err().unwrap().to_string();
            assert!(e.contains("corrupt"), "{e}");
            // Nor is a missing secret while the node is known to have an identity (as with
            // a keyring that cannot be read today).
            std::fs::remove_file(path).unwrap();
            let e = identity(&node, dir.path()).err().unwrap().to_string();
            assert!(e.contains("delete"), "{e}");
            std::fs::remove_file(identity_public_path(dir.path(), &node)).unwrap();
            let (k3, _) = identity(&node, dir.path()).unwrap();
            assert_ne!(k3.verifying_key(), k1.verifying_key());
        }
        // A key in the keyring outlives the test's directory: take it out.
        #[cfg(feature = "keyring")]
        if !matches!(src, Source::File(_)) {
            let _ = keyring::Entry::new(SERVICE, &identity_account(&node))
                .and_then(|e| e.delete_credential());
        }
    }

    #[test]
    fn missing_and_world_readable_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let node = format!("absent-{}", uuid::Uuid::new_v4().simple());
        assert!(matches!(
            load(&node, dir.path(), None),
            Err(CredsError::Missing { .. })
        ));
        let path = fallback_path(dir.path(), &node);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "pw").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load(&node, dir.path(), None),
            Err(CredsError::Permissions(_))
        ));
    }
}
