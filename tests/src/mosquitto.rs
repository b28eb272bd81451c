//! Starts a real mosquitto on a free loopback port with the project's broker-config ACL.
//!
//! The generated configuration includes the repository's real `broker-config/acl` (copied into a
//! temporary directory) and mirrors the production settings of `broker-config/mosquitto.conf` that
//! matter to tests: `allow_anonymous false`, a password file written with `mosquitto_passwd -b`,
//! persistence (in the temporary directory), `max_packet_size` and the queue limits.
//!
//! One deliberate difference: `autosave_interval 0`, so mosquitto writes its database only on a
//! graceful stop ([`Mosquitto::stop`], SIGTERM) or an explicit [`Mosquitto::save`] (SIGUSR1).
//! [`Mosquitto::kill`] (SIGKILL) therefore models a crash that loses everything since the last
//! save — in production the loss window is `autosave_interval` (60 s). This keeps restart tests
//! deterministic.
//!
//! The broker logs everything (`log_type all`) to `mosquitto.log` in the temporary directory; its
//! tail is part of the error when the broker fails to start, and the directory is kept (and its
//! path printed) when a `Mosquitto` is dropped while the test thread is panicking.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

const HOST: &str = "127.0.0.1";
/// How long a started broker may take to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SIGTERM-ed broker may take to save its database and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGUSR1-triggered database save may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh ports tried by [`Mosquitto::start`] when mosquitto cannot bind the one it was given.
const START_ATTEMPTS: usize = 5;
/// Attempts of [`Mosquitto::start_again`] to re-bind the same port.
const RESTART_ATTEMPTS: usize = 5;
/// Log lines shown in start-up errors.
const TAIL_LINES: usize = 40;
/// Logged by mosquitto ("mosquitto version 2.0.11 running") once its listeners are open and its
/// password and ACL files are loaded.
const RUNNING_MARKER: (&str, &str) = ("mosquitto version ", " running");
const ADDR_IN_USE_MARKER: &str = "Address already in use";

/// Mirrors `max_packet_size` in `broker-config/mosquitto.conf` (16 MiB).
pub const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;

/// A mosquitto broker child process on `127.0.0.1:port`, configured like production.
///
/// Killed (SIGKILL) and waited for on drop.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    mosquitto: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    stderr_log: PathBuf,
    db: PathBuf,
    /// The configuration's authentication lines: password and ACL files, or the
    /// dynamic-security plugin.
    auth: String,
    // Last field: removed after everything above is done with it.
    dir: tempfile::TempDir,
}

/// The dynamic-security plugin of Debian's mosquitto package.
pub const DYNSEC_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so";
/// The dynamic-security admin account of [`Mosquitto::start_dynsec`].
pub const DYNSEC_ADMIN: &str = "admin";
/// Its password.
pub const DYNSEC_ADMIN_PASSWORD: &str = "dynsec-admin-password";

/// The test-only account that may read every topic (never in `broker-config/`).
pub const TAP_USER: &str = "test-tap";
/// Its password.
pub const TAP_PASSWORD: &str = "test-tap-password";

impl Mosquitto {
    /// Starts a broker on a free loopback port.
    ///
    /// `users`: (username, password) pairs written with `mosquitto_passwd -b` into a fresh
    /// password file. The ACL is the repository's `broker-config/acl`, so usernames are node ids,
    /// submitter ids or `coordinator`, plus one test-only account: [`TAP_USER`] may read every
    /// topic, to check what crosses the broker.
    pub fn start(users: &[(&str, &str)]) -> Result<Mosquitto> {
        let mosquitto = find_program("mosquitto")
            .context("`mosquitto` not found on PATH (nor in /usr/sbin, /usr/local/sbin)")?;
        let mosquitto_passwd = find_program("mosquitto_passwd")
            .context("`mosquitto_passwd` not found on PATH (nor in /usr/sbin, /usr/local/sbin)")?;

        let dir = tempfile::Builder::new()
            .prefix("ambient-mosquitto-")
            .tempdir()
            .context("creating the broker's temporary directory")?;
        let root = dir.path().to_path_buf();

        let acl_src = acl_source();
        let acl = root.join("acl");
        let mut rules = fs::read_to_string(&acl_src)
            .with_context(|| format!("reading the ACL from {}", acl_src.display()))?;
        rules.push_str(&format!(
            "\n# Test harness only: a wiretap that reads everything.\nuser {TAP_USER}\ntopic read #\n"
        ));
        fs::write(&acl, rules).context("writing the ACL")?;
        let mut users = users.to_vec();
        users.push((TAP_USER, TAP_PASSWORD));
        let users = &users[..];

        let passwd = root.join("passwd");
        write_password_file(&mosquitto_passwd, &passwd, users)?;

        let auth = format!(
            "password_file {}\nacl_file {}\n",
            config_path(&passwd)?,
            config_path(&acl)?
        );
        Mosquitto::launch(mosquitto, dir, auth)
    }

    /// Starts a broker whose accounts live in mosquitto's dynamic-security plugin (no password
    /// or ACL file), set up as an operator would with `broker-config/dynsec/`: `mosquitto_ctrl
    /// dynsec init` makes the admin account, and `ambient-dynsec-setup` the coordinator's
    /// account (password `coordinator_password`) and the `submitters`'. Nodes get theirs from
    /// the coordinator when they join.
    pub fn start_dynsec(
        coordinator_password: &str,
        submitters: &[(&str, &str)],
    ) -> Result<Mosquitto> {
        let mosquitto = find_program("mosquitto")
            .context("`mosquitto` not found on PATH (nor in /usr/sbin, /usr/local/sbin)")?;
        let dir = tempfile::Builder::new()
            .prefix("ambient-mosquitto-dynsec-")
            .tempdir()
            .context("creating the broker's temporary directory")?;
        let state = dir.path().join("dynamic-security.json");
        let init = Command::new("mosquitto_ctrl")
            .args(["dynsec", "init"])
            .arg(&state)
            .args([DYNSEC_ADMIN, DYNSEC_ADMIN_PASSWORD])
            .output()
            .context("running mosquitto_ctrl dynsec init (package mosquitto-clients)")?;
        anyhow::ensure!(
            init.status.success(),
            "mosquitto_ctrl dynsec init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let auth = format!(
            "plugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {}\n",
            config_path(&state)?
        );
        let broker = Mosquitto::launch(mosquitto, dir, auth)?;
        let setup = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../broker-config/dynsec/ambient-dynsec-setup");
        let mut cmd = Command::new(&setup);
        cmd.args(["--host", HOST, "--port", &broker.port.to_string()])
            .args(["--admin", DYNSEC_ADMIN])
            .env("MOSQ_ADMIN_PASSWORD", DYNSEC_ADMIN_PASSWORD)
            .env("COORDINATOR_PASSWORD", coordinator_password);
        for (name, password) in submitters {
            cmd.arg(name).env(
                format!("SUBMITTER_PASSWORD_{}", name.replace('-', "_")),
                password,
            );
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}", setup.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}{}",
            setup.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(broker)
    }

    /// Starts mosquitto in `dir` with the `auth` configuration lines, on a free port.
    fn launch(mosquitto: PathBuf, dir: tempfile::TempDir, auth: String) -> Result<Mosquitto> {
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        fs::create_dir(&data).context("creating the persistence directory")?;
        let mut broker = Mosquitto {
            child: None,
            port: 0,
            mosquitto,
            conf: root.join("mosquitto.conf"),
            log: root.join("mosquitto.log"),
            stderr_log: root.join("mosquitto.stderr"),
            db: data.join("mosquitto.db"),
            auth,
            dir,
        };

        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            broker.port = crate::free_port()?;
            broker.write_config(&data)?;
            match broker.spawn_and_wait() {
                Ok(()) => return Ok(broker),
                Err(StartError::AddrInUse(e)) => last_err = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "mosquitto could not bind a free port in {START_ATTEMPTS} attempts"
            )))
    }

    /// The TCP port the broker listens on (stays the same across [`Mosquitto::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the broker listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// Kills the broker with SIGKILL (a crash) and waits for it to exit.
    ///
    /// Nothing is saved: retained messages, persistent sessions and queued messages received
    /// since the last [`Mosquitto::stop`] or [`Mosquitto::save`] are lost (see the module docs).
    /// Does nothing if the broker is not running.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Err here only means it has already exited; wait() reaps it either way.
            let _ = child.kill();
            child.wait().context("waiting for the killed mosquitto")?;
        }
        Ok(())
    }

    /// Stops the broker gracefully with SIGTERM and waits for it to exit; mosquitto writes its
    /// persistence database on the way out, so [`Mosquitto::start_again`] restores retained
    /// messages, persistent sessions and their queued QoS 1/2 messages.
    /// Does nothing if the broker is not running.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            signal(&child, "TERM")?;
        }
        match wait_timeout(&mut child, STOP_TIMEOUT)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!(
                "mosquitto exited with {status} after SIGTERM\n{}",
                self.diagnostics()
            ),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "mosquitto did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it\n{}",
                    self.diagnostics()
                )
            }
        }
    }

    /// Makes the running broker write its persistence database now (SIGUSR1) and waits until the
    /// new file is in place. After `save()`, a [`Mosquitto::kill`] + [`Mosquitto::start_again`]
    /// keeps everything the broker held at the time of the save (models a crash right after an
    /// autosave).
    pub fn save(&mut self) -> Result<()> {
        let before = file_identity(&self.db);
        signal(
            self.child
                .as_ref()
                .context("save(): mosquitto is not running")?,
            "USR1",
        )?;
        let deadline = Instant::now() + SAVE_TIMEOUT;
        // mosquitto writes mosquitto.db.new and renames it over mosquitto.db, so a completed
        // save shows up as a new inode (or as the file appearing).
        loop {
            let now = file_identity(&self.db);
            if now.is_some() && now != before {
                return Ok(());
            }
            let child = self.child.as_mut().expect("checked above");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "mosquitto exited ({status}) while saving\n{}",
                    self.diagnostics()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "mosquitto did not write {} within {SAVE_TIMEOUT:?} of SIGUSR1\n{}",
                    self.db.display(),
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Restarts a killed or stopped broker on the same port with the same configuration, password
    /// file and persistence directory, and waits until it accepts connections.
    pub fn start_again(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                bail!("start_again(): mosquitto is still running; call kill() or stop() first");
            }
            self.child = None;
        }
        let mut last_err = None;
        for attempt in 0..RESTART_ATTEMPTS {
            if attempt > 0 {
                thread::sleep(Duration::from_millis(200));
            }
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(StartError::AddrInUse(e)) => last_err = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "mosquitto could not re-bind port {} in {RESTART_ATTEMPTS} attempts",
                self.port
            )))
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The broker's log file (appended to across restarts; `log_type all`).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The temporary directory holding config, password file, ACL copy, log and `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self, data: &Path) -> Result<()> {
        let user_line = if running_as_root() {
            // Without this, mosquitto started as root drops to user "mosquitto", which cannot
            // read the root-owned 0700 temporary directory.
            "# Running as root: stay root (otherwise it drops to `mosquitto` before reading files).\nuser root\n"
        } else {
            ""
        };
        let conf = format!(
            "# Generated by ambient-e2e (tests/src/mosquitto.rs) for one test; mirrors\n\
             # broker-config/mosquitto.conf except where noted.\n\
             {user_line}\
             per_listener_settings false\n\
             listener {port} {HOST}\n\
             allow_anonymous false\n\
             {auth}\
             persistence true\n\
             persistence_location {data}/\n\
             # Differs from production (60): save only on SIGTERM/SIGUSR1, so kill() is a\n\
             # deterministic crash that loses everything since the last save.\n\
             autosave_interval 0\n\
             persistent_client_expiration 7d\n\
             max_queued_messages 10000\n\
             max_queued_bytes 268435456\n\
             max_inflight_messages 20\n\
             queue_qos0_messages false\n\
             max_packet_size {MAX_PACKET_SIZE}\n\
             retain_available true\n\
             check_retain_source true\n\
             set_tcp_nodelay true\n\
             # Differs from production: everything, to a file in the temporary directory.\n\
             log_dest file {log}\n\
             log_type all\n\
             connection_messages true\n\
             log_timestamp true\n\
             log_timestamp_format %Y-%m-%dT%H:%M:%S\n",
            port = self.port,
            auth = self.auth,
            data = config_path(data)?,
            log = config_path(&self.log)?,
        );
        fs::write(&self.conf, conf).with_context(|| format!("writing {}", self.conf.display()))
    }

    /// Spawns mosquitto and waits until it is ready; on failure the child is gone.
    fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log_start = file_len(&self.log);
        let stderr_start = file_len(&self.stderr_log);
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .with_context(|| format!("opening {}", self.stderr_log.display()))?;
        let stdout = stderr
            .try_clone()
            .context("duplicating the stderr log handle")?;
        let child = Command::new(&self.mosquitto)
            .arg("-c")
            .arg(&self.conf)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", self.mosquitto.display()))?;
        self.child = Some(child);

        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child was just set");
            if let Some(status) = child.try_wait().context("polling mosquitto")? {
                self.child = None;
                return Err(self.start_failure(status, log_start, stderr_start));
            }
            // Ready = our own process logged that it is running (so a connect cannot be answered
            // by some other process that took the port) and the port accepts connections.
            let running = read_from(&self.log, log_start)
                .lines()
                .any(|l| l.contains(RUNNING_MARKER.0) && l.contains(RUNNING_MARKER.1));
            if running && TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().expect("child was just set");
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartError::Other(anyhow!(
                    "mosquitto did not accept connections on {addr} within {READY_TIMEOUT:?}\n{}",
                    self.diagnostics()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_failure(&self, status: ExitStatus, log_start: u64, stderr_start: u64) -> StartError {
        let new_output = format!(
            "{}{}",
            read_from(&self.log, log_start),
            read_from(&self.stderr_log, stderr_start)
        );
        let err = anyhow!(
            "mosquitto exited during start-up ({status}) on port {}\n{}",
            self.port,
            self.diagnostics()
        );
        if new_output.contains(ADDR_IN_USE_MARKER) {
            StartError::AddrInUse(err)
        } else {
            StartError::Other(err)
        }
    }

    /// The config path and the tails of the broker's log and stderr, for error messages.
    fn diagnostics(&self) -> String {
        format!(
            "config: {}\n--- last {TAIL_LINES} lines of {} ---\n{}\n--- {} ---\n{}",
            self.conf.display(),
            self.log.display(),
            tail(&self.log, TAIL_LINES),
            self.stderr_log.display(),
            tail(&self.stderr_log, TAIL_LINES),
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "mosquitto harness: test panicked; kept broker directory {} (log: {})",
                self.dir.path().display(),
                self.log.display()
            );
        }
    }
}

/// True when `mosquitto` and `mosquitto_passwd` are on PATH.
///
/// Also looks in /usr/sbin and /usr/local/sbin, which are often missing from a non-root PATH
/// while Debian installs `mosquitto` in /usr/sbin.
pub fn available() -> bool {
    find_program("mosquitto").is_some() && find_program("mosquitto_passwd").is_some()
}

enum StartError {
    /// mosquitto exited because its port was taken: worth retrying.
    AddrInUse(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// `broker-config/acl` next to this crate in the repository.
fn acl_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("broker-config")
        .join("acl")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn write_password_file(mosquitto_passwd: &Path, file: &Path, users: &[(&str, &str)]) -> Result<()> {
    // `mosquitto_passwd -b` refuses a missing file; create it 0600 as ambient-passwd does.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    for (user, password) in users {
        let out = Command::new(mosquitto_passwd)
            .arg("-b")
            .arg(file)
            .arg(user)
            .arg(password)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", mosquitto_passwd.display()))?;
        if !out.status.success() {
            bail!(
                "mosquitto_passwd -b {} {user:?} failed ({}): {}{}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// A path as it can appear in mosquitto.conf (UTF-8, no line breaks; spaces are fine because
/// mosquitto takes the rest of the line).
fn config_path(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))?;
    if s.contains(['\n', '\r']) {
        bail!("path {s:?} contains a line break");
    }
    Ok(s.to_owned())
}

/// Effective uid 0? Read from /proc/self/status (no libc), falling back to `id -u`.
fn running_as_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(uids) = status.lines().find_map(|l| l.strip_prefix("Uid:"))
        // Real, effective, saved, filesystem.
        && let Some(euid) = uids.split_whitespace().nth(1)
    {
        return euid == "0";
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Sends a signal by name (TERM, USR1, ...) with kill(1): std has no signal API besides SIGKILL.
/// Sends signal `name` (`TERM`, `QUIT`, …) to `child` with kill(1).
pub(crate) fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .stdin(Stdio::null())
        .status()
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -{name} {} failed ({status})", child.id());
    }
    Ok(())
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The file's contents from byte `start` on (lossy UTF-8; empty if unreadable).
fn read_from(path: &Path, start: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read: {e}>"),
    }
}
