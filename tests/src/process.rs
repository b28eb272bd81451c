//! Services as separate OS processes (the `ambient-coordinator` and `ambient-agent` binaries built
//! next to the test binaries), so that a test can kill them with SIGKILL, which an in-process
//! service cannot model.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The binary `name` of this build (`target/<profile>/<name>`), if it was built (`scripts/test`
/// builds `ambient-coordinator` and `ambient-agent`).
pub fn binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // Test binaries live in target/<profile>/deps, other binaries one level up; a binary of
    // this package (a load generator) lives in target/<profile> itself.
    let dir = exe.parent()?;
    let profile = if dir.ends_with("deps") {
        dir.parent()?
    } else {
        dir
    };
    let bin = profile.join(name);
    bin.is_file().then_some(bin)
}

/// `bin run --config FILE`, logging to a file; killed with SIGKILL on drop.
pub struct ServiceProcess {
    child: Option<Child>,
    /// What runs `bin` (an emulator such as `qemu-aarch64-static`), if anything.
    runner: Option<PathBuf>,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl ServiceProcess {
    /// Writes `config` to `dir/<name>.toml` and starts `<name> run --config` on it, logging to
    /// `dir/<name>.log`.
    pub fn start(name: &str, config: &str, dir: &Path) -> Result<ServiceProcess> {
        let bin = binary(name).with_context(|| {
            format!("{name} is not built: cargo build --bin {name} (scripts/test does)")
        })?;
        fs::create_dir_all(dir)?;
        let mut p = ServiceProcess {
            child: None,
            runner: None,
            bin,
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
        };
        fs::write(&p.config, config)?;
        p.spawn()?;
        Ok(p)
    }

    /// Starts `<name> run --config CONFIG` on a configuration that exists (one `ambient-agent
    /// join` wrote), logging to `dir/<name>.log`.
    pub fn start_existing(name: &str, config: &Path, dir: &Path) -> Result<ServiceProcess> {
        let bin = binary(name).with_context(|| {
            format!("{name} is not built: cargo build --bin {name} (scripts/test does)")
        })?;
        ServiceProcess::start_under(None, &bin, config, dir)
    }

    /// Starts `[runner] bin run --config CONFIG` (the runner: an emulator for a binary of
    /// another architecture), logging to `dir/<file name of bin>.log`.
    pub fn start_under(
        runner: Option<&Path>,
        bin: &Path,
        config: &Path,
        dir: &Path,
    ) -> Result<ServiceProcess> {
        fs::create_dir_all(dir)?;
        let name = bin
            .file_name()
            .map_or("service".into(), |n| n.to_string_lossy());
        let mut p = ServiceProcess {
            child: None,
            runner: runner.map(Path::to_owned),
            bin: bin.to_owned(),
            config: config.to_owned(),
            log: dir.join(format!("{name}.log")),
        };
        p.spawn()?;
        Ok(p)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = match &self.runner {
            Some(runner) => {
                let mut c = Command::new(runner);
                c.arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,rumqttd=off")
            // No session bus: secrets go to the 0600 files, where a test can read them.
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills it with SIGKILL (a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same configuration (killing it first if it runs).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Whether it has exited (`Some` with how), after a crash of its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What it logged.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `role` of a coordinator's `GET /api/v1/health` at `url`: `leader` or `follower` (`None` when
/// it does not answer).
pub async fn role(url: &str) -> Option<String> {
    let health: serde_json::Value = reqwest::get(format!("{url}/api/v1/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    health["role"].as_str().map(str::to_string)
}

/// A coordinator process.
pub struct CoordinatorProcess {
    process: ServiceProcess,
    /// Its REST API.
    pub url: String,
}

impl CoordinatorProcess {
    /// Starts a coordinator on `cfg` (its `http_addr` must have a fixed port) in `dir`; returns
    /// once its REST API answers.
    pub async fn start(cfg: &ambient_coordinator::Config, dir: &Path) -> Result<Self> {
        anyhow::ensure!(cfg.http_addr.port() != 0, "give the process a fixed port");
        let process = ServiceProcess::start("ambient-coordinator", &toml::to_string(cfg)?, dir)?;
        let mut p = CoordinatorProcess {
            process,
            url: format!("http://{}", cfg.http_addr),
        };
        p.wait_ready().await?;
        Ok(p)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let health = format!("{}/api/v1/health", self.url);
        loop {
            if reqwest::get(&health).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.process.exited() {
                bail!("ambient-coordinator exited with {status}:\n{}", self.log());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "ambient-coordinator did not answer within 60 s:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills it with SIGKILL (a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same configuration; returns once its REST API answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.restart()?;
        self.wait_ready().await
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Its role ([`role`]).
    pub async fn role(&self) -> Option<String> {
        role(&self.url).await
    }

    /// What it logged.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
