//! `ambient-agent`: parses the command line, starts logging, loads the configuration and runs the
//! agent until Ctrl-C or SIGTERM.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Ambient VCP node agent.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Configuration file (see `generate-config`).
        #[arg(long, short, env = "AMBIENT_AGENT_CONFIG")]
        config: PathBuf,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
        /// When the configuration does not exist yet, wait for a join token on the control API
        /// (`POST /v1/join`, what the tray app's "Join a network" sends), then run. Data go to
        /// `--data-dir`.
        #[arg(long)]
        wait_for_join: bool,
        /// With `--wait-for-join`: where a joined node keeps its data.
        #[arg(long, default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
    },
    /// Store the node's broker password (read from stdin) in the OS keyring, or in a 0600 file
    /// under the data dir where no keyring exists.
    SetPassword {
        /// Configuration file: gives the node id and the data dir.
        #[arg(long, short, env = "AMBIENT_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Join a network with an enrolment token from its operator (`ambient token create`): makes
    /// this node's identity key, enrols it, stores the broker password (OS keyring, or a 0600
    /// file) and writes a complete configuration for `run`.
    Join {
        /// The token, `ambient-join-v1.…`.
        token: String,
        /// Where to write the configuration.
        #[arg(long, short, env = "AMBIENT_AGENT_CONFIG", default_value_os_t = default_config())]
        config: PathBuf,
        /// Where the node keeps its journal and, without a keyring, its secrets.
        #[arg(long, default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// A name for the operator's lists (default: this machine's host name).
        #[arg(long)]
        name: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an example configuration with every field documented.
    GenerateConfig,
}

/// `$XDG_CONFIG_HOME/ambient/agent.toml` (`~/.config/ambient/agent.toml`): where the tray app
/// and the user service look.
fn default_config() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("ambient/agent.toml")
}

/// `$XDG_DATA_HOME/ambient-agent` (`~/.local/share/ambient-agent`).
fn default_data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("ambient-agent")
}

/// This machine's host name, for the operator's lists.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(fallback)
        })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match Cli::parse().command {
        Command::GenerateConfig => print!("{}", ambient_agent::config::EXAMPLE),
        Command::Join {
            token,
            config,
            data_dir,
            name,
            json,
        } => {
            tracing_subscriber::fmt().with_env_filter(filter).init();
            let name = name.or_else(host_name);
            let joined = ambient_agent::join::join(&token, &config, &data_dir, name).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "node_id": joined.node_id,
                        "config": joined.config,
                        "secrets": joined.secrets.to_string(),
                    })
                );
            } else {
                println!(
                    "Joined as {}. Configuration: {}; secrets in the {}.\nStart it with: \
                     ambient-agent run --config {}",
                    joined.node_id,
                    joined.config.display(),
                    joined.secrets,
                    joined.config.display()
                );
            }
        }
        Command::SetPassword { config } => {
            tracing_subscriber::fmt().with_env_filter(filter).init();
            let cfg = ambient_agent::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end();
            anyhow::ensure!(!password.is_empty(), "no password on stdin");
            let source = ambient_agent::creds::store(&cfg.node_id, &cfg.data_dir, password)?;
            println!(
                "Stored the broker password of {} in the {source}.",
                cfg.node_id
            );
        }
        Command::Run {
            config,
            log_json,
            wait_for_join,
            data_dir,
        } => {
            let builder = tracing_subscriber::fmt().with_env_filter(filter);
            if log_json {
                builder.json().init();
            } else {
                builder.init();
            }
            if wait_for_join && !config.exists() {
                let stop = tokio_util::sync::CancellationToken::new();
                let signal = stop.clone();
                tokio::spawn(async move {
                    ambient_service::shutdown_signal().await;
                    signal.cancel();
                });
                let mut control = ambient_agent::config::ControlConfig::default();
                if let Ok(v) = std::env::var("AMBIENT_CONTROL_LISTEN") {
                    control.listen = v
                        .parse()
                        .with_context(|| format!("AMBIENT_CONTROL_LISTEN={v:?} does not parse"))?;
                }
                let joined = ambient_agent::setup::wait_for_join(
                    &config,
                    &data_dir,
                    &control,
                    host_name(),
                    stop.clone(),
                )
                .await?;
                if joined.is_none() {
                    return Ok(());
                }
            }
            let cfg = ambient_agent::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            ambient_agent::run(cfg, ambient_service::shutdown_signal()).await?;
        }
    }
    Ok(())
}
