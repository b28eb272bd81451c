//! `ambient-coordinator`: parses the command line, starts logging, loads the configuration and
//! runs the coordinator until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Ambient VCP coordinator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator.
    Run {
        /// Configuration file (see `generate-config`).
        #[arg(long, short, env = "AMBIENT_COORDINATOR_CONFIG")]
        config: PathBuf,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Print an example configuration with every field documented.
    GenerateConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::GenerateConfig => {
            print!("{}", ambient_coordinator::config::EXAMPLE);
            Ok(())
        }
        Command::Run { config, log_json } => {
            init_tracing(log_json);
            let cfg = ambient_coordinator::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            ambient_coordinator::run(cfg, ambient_service::shutdown_signal()).await?;
            Ok(())
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
