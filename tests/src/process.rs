//! A coordinator as a separate OS process (the `ambient-coordinator` binary built next to the
//! test binaries), so that a test can kill it with SIGKILL, which an in-process coordinator
//! cannot model.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A running `ambient-coordinator run --config FILE`; killed with SIGKILL on drop.
pub struct CoordinatorProcess {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// Its REST API.
    pub url: String,
}

/// The `ambient-coordinator` binary of this build (`target/<profile>/ambient-coordinator`),
/// if it was built (`scripts/test` builds it).
pub fn binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // Test binaries live in target/<profile>/deps, other binaries one level up.
    let profile = exe.parent()?.parent()?;
    let bin = profile.join("ambient-coordinator");
    bin.is_file().then_some(bin)
}

impl CoordinatorProcess {
    /// Writes `cfg` (its `http_addr` must have a fixed port) to `dir/coordinator.toml` and starts
    /// a coordinator on it, logging to `dir/coordinator.log`; returns once its REST API answers.
    pub async fn start(cfg: &ambient_coordinator::Config, dir: &std::path::Path) -> Result<Self> {
        anyhow::ensure!(cfg.http_addr.port() != 0, "give the process a fixed port");
        fs::create_dir_all(dir)?;
        let config = dir.join("coordinator.toml");
        fs::write(&config, toml::to_string(cfg)?)?;
        let mut p = CoordinatorProcess {
            child: None,
            config,
            log: dir.join("coordinator.log"),
            url: format!("http://{}", cfg.http_addr),
        };
        p.spawn().await?;
        Ok(p)
    }

    async fn spawn(&mut self) -> Result<()> {
        let bin = binary().context(
            "ambient-coordinator is not built: cargo build --bin ambient-coordinator \
             (scripts/test does)",
        )?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,rumqttd=off")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ambient-coordinator")?;
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let health = format!("{}/api/v1/health", self.url);
            if client.get(&health).send().await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same configuration.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// `role` of its `GET /api/v1/health`: `leader` or `follower` (`None` when it does not
    /// answer).
    pub async fn role(&self) -> Option<String> {
        let health: serde_json::Value = reqwest::get(format!("{}/api/v1/health", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        health["role"].as_str().map(str::to_string)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
