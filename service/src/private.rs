//! Files that hold user data, readable by their owner only.
//!
//! The services' databases hold every submitter's inputs and results, and their data directories
//! hold models and credentials. On Unix a data directory is created `0700` and a database file
//! `0600` (its `-wal` and `-shm` files take the database's mode from SQLite), whatever the umask;
//! a database an older version left readable by others is narrowed to `0600` when it is opened.
//! Elsewhere these are plain `create_dir_all` and a no-op: the OS's own ACLs apply.

use std::io;
use std::path::Path;

/// Creates `path` and any missing parents as directories only their owner may enter (`0700` on
/// Unix). Directories that exist already keep their mode: an operator may have chosen it.
pub fn create_dir(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Writes `contents` to `path` as a file only its owner may read (`0600` on Unix), whole or not
/// at all: written beside it, then renamed over it, so a reader never sees it half written.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write as _;
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    let aside = std::path::PathBuf::from(aside);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&aside)?.write_all(contents.as_ref())?;
    std::fs::rename(&aside, path)
}

/// Makes the database file at `path` readable and writable by its owner only: creates it empty
/// with mode `0600` when it does not exist, and takes the group's and others' rights away from
/// it and from its `-wal` and `-shm` files when they have any. Run before SQLite opens the file.
pub fn restrict_database(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for file in [
            path.to_owned(),
            sidecar(path, "-wal"),
            sidecar(path, "-shm"),
        ] {
            let mode = match std::fs::metadata(&file) {
                Ok(m) => m.permissions().mode(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))?;
                tracing::info!(
                    file = %file.display(),
                    "Narrowed a database file to its owner only (it was readable by others)."
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `path` with `suffix` appended to its file name, as SQLite names its side files.
#[cfg(unix)]
fn sidecar(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}
