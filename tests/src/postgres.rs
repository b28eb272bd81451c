//! Starts a real, throwaway PostgreSQL server on a free loopback port: `initdb` into a temporary
//! directory, then `postgres` as a child process, with password (SCRAM) authentication as in
//! production and durability settings off (`fsync`, `synchronous_commit`, `full_page_writes`),
//! which a test's data does not need.
//!
//! PostgreSQL refuses to run as root. Run as root (CI), the server runs as the `postgres` user
//! that Debian's package creates, in a directory handed to it.
//!
//! The binaries are found in `AMBIENT_PG_BIN`, on `PATH`, or in Debian's
//! `/usr/lib/postgresql/<version>/bin` (newest first). [`available`] says whether they are there;
//! a test that needs them fails when `AMBIENT_REQUIRE_POSTGRES=1` (set by `scripts/test`, which
//! installs the `postgresql` package) and is skipped with a message otherwise.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The superuser the cluster is made with.
const USER: &str = "ambient";
/// Its password (the server only listens on loopback, and only for the test's life).
const PASSWORD: &str = "ambient-test-password";
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL server child process on `127.0.0.1:port`. Stopped (SIGQUIT: immediate shutdown)
/// and waited for on drop.
pub struct Postgres {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    // Last field: removed after the server is gone.
    dir: tempfile::TempDir,
}

/// Whether PostgreSQL's server binaries can be found.
pub fn available() -> bool {
    bin_dir().is_some()
}

/// Whether a test must fail, rather than skip, when PostgreSQL is missing.
pub fn required() -> bool {
    std::env::var("AMBIENT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

impl Postgres {
    /// Starts a server, or returns `None` (after saying why on stderr) when PostgreSQL is not
    /// installed and [`required`] is off.
    pub fn start_or_skip(test: &str) -> Result<Option<Postgres>> {
        if !available() {
            if required() {
                bail!("PostgreSQL is not installed (AMBIENT_REQUIRE_POSTGRES=1): run scripts/test");
            }
            eprintln!(
                "{test}: skipped, PostgreSQL is not installed (scripts/test installs it and \
                 requires it)"
            );
            return Ok(None);
        }
        Postgres::start().map(Some)
    }

    /// Starts a server on a free loopback port.
    pub fn start() -> Result<Postgres> {
        let bin = bin_dir().context(
            "PostgreSQL's initdb and postgres were not found (AMBIENT_PG_BIN, PATH, \
             /usr/lib/postgresql/*/bin): install the postgresql package",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("ambient-postgres-")
            .tempdir()
            .context("creating the server's temporary directory")?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            chown(dir.path(), Some(uid), Some(gid)).context("handing the directory to postgres")?;
        }
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, PASSWORD).context("writing the password file")?;
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            chown(&pwfile, Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let out = as_owner(Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .env("LC_ALL", "C")
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut pg = Postgres {
            child: None,
            port: 0,
            bin,
            dir,
        };
        pg.port = crate::free_port()?;
        let log = fs::File::create(pg.dir.path().join("postgres.log"))?;
        if let Some((uid, gid)) = owner {
            chown(pg.dir.path().join("postgres.log"), Some(uid), Some(gid))?;
        }
        let child = as_owner(Command::new(pg.bin.join("postgres")), owner)
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(pg.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                pg.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        pg.child = Some(child);
        pg.wait_ready()?;
        Ok(pg)
    }

    /// Polls `pg_isready` until the server accepts connections.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("postgres exited with {status}:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a new, empty database and returns its URL (with credentials).
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.client("createdb", &[name])?;
        Ok(self.url(name))
    }

    /// Runs `sql` in database `db` with `psql` and returns what it printed, unaligned and
    /// without headers (`-tA`), trimmed: one row a line, columns split by `|`.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.client(
            "psql",
            &["-d", db, "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )
    }

    /// Runs client program `name` of the server's installation against it, as the superuser,
    /// and returns its standard output, trimmed.
    fn client(&self, name: &str, args: &[&str]) -> Result<String> {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join(name))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", USER])
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .output()
            .with_context(|| format!("running {name}"))?;
        if !out.status.success() {
            bail!(
                "{name} {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The number of rows in `table` of database `db`.
    pub fn count_rows(&self, db: &str, table: &str) -> Result<u64> {
        Ok(self
            .psql(db, &format!("SELECT count(*) FROM {table}"))?
            .parse()?)
    }

    /// The URL of database `name` on this server, with the superuser's credentials.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster stops its children and
            // exits at once (a SIGKILL would leave the children to notice on their own).
            let _ = crate::mosquitto::signal(&child, "QUIT");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The uid and gid the server must run as: `None` when this process is not root (the server
/// runs as us), the `postgres` account's when it is.
fn server_user() -> Result<Option<(u32, u32)>> {
    let id = |args: &[&str]| -> Result<u32> {
        let out = Command::new("id")
            .args(args)
            .output()
            .context("running id")?;
        if !out.status.success() {
            bail!(
                "running as root, and there is no `postgres` account to run PostgreSQL as \
                 (the postgresql package makes it)"
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    Ok(Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?)))
}

fn as_owner(mut cmd: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Where `initdb`, `postgres` and the client programs this module runs are.
fn bin_dir() -> Option<PathBuf> {
    let has_server = |d: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb", "psql"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    if let Some(d) = std::env::var_os("AMBIENT_PG_BIN").map(PathBuf::from) {
        return has_server(&d).then_some(d);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has_server(d));
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_server(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}
