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
    },
    /// Store the node's broker password (read from stdin) in the OS keyring, or in a 0600 file
    /// under the data dir where no keyring exists.
    SetPassword {
        /// Configuration file: gives the node id and the data dir.
        #[arg(long, short, env = "AMBIENT_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Print an example configuration with every field documented.
    GenerateConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match Cli::parse().command {
        Command::GenerateConfig => print!("{}", ambient_agent::config::EXAMPLE),
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
        Command::Run { config, log_json } => {
            let builder = tracing_subscriber::fmt().with_env_filter(filter);
            if log_json {
                builder.json().init();
            } else {
                builder.init();
            }
            let cfg = ambient_agent::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            ambient_agent::run(cfg, ambient_service::shutdown_signal()).await?;
        }
    }
    Ok(())
}
