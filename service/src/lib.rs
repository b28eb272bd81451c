//! Service plumbing shared by the coordinator and the agent, so that each concern exists once:
//! how a service stops, which signals stop it, how SQLite is kept off the async workers, how a
//! database schema evolves, how a configuration file is loaded, and how user data stays private
//! to its owner.
//!
//! Nothing here knows about tasks, nodes or MQTT; the services' own crates hold that.
//!
//! # Layout
//! - [`shutdown`]: [`Shutdown`], one cancellation token and one task tracker per service: spawn
//!   tracked tasks, trigger, wait for cancellation, drain with a deadline.
//! - [`signal`]: [`shutdown_signal`], which completes on Ctrl-C or SIGTERM.
//! - [`sqlite`]: [`SqliteActor`], one named thread that opens a rusqlite `Connection` (with the
//!   settings every service database shares, [`sqlite::configure`]), migrates it, and runs
//!   closures sent over a channel, answering over a oneshot.
//! - [`migrate`]: versioned schema migrations ([`Migration`] lists, applied in one transaction at
//!   open, a database newer than the code refused with [`MigrateError::TooNew`]).
//! - [`private`]: data directories (`0700`) and database files (`0600`) readable by their owner
//!   only.
//! - [`config`]: the strict TOML loader (read → parse → environment overrides → validate) behind
//!   [`StrictConfig`].
//!
//! # How a service uses it
//! `main.rs` loads its configuration with [`config::load`] and passes [`shutdown_signal`] to the
//! library's `run`. `run` owns one [`Shutdown`]: every long-lived task is started with
//! [`Shutdown::spawn`] and `select!`s between its work and [`Shutdown::cancelled`]; when the
//! signal completes, `run` calls [`Shutdown::trigger`], then [`Shutdown::drain`] with a deadline
//! (the coordinator) or [`Shutdown::wait`] (the agent, whose executors stop at their next fuel
//! slice). The task that owns a store awaits its last write before it returns, so nothing
//! relies on a store flushing when its handle drops:
//!
//! ```no_run
//! use std::time::Duration;
//! use ambient_service::Shutdown;
//!
//! async fn run(signal: impl std::future::Future<Output = ()>) {
//!     let shutdown = Shutdown::new();
//!     let worker = shutdown.clone();
//!     shutdown.spawn(async move {
//!         loop {
//!             tokio::select! {
//!                 _ = worker.cancelled() => break,
//!                 _ = tokio::time::sleep(Duration::from_secs(1)) => { /* one unit of work */ }
//!             }
//!         }
//!     });
//!     signal.await;
//!     shutdown.trigger();
//!     if let Err(e) = shutdown.drain(Duration::from_secs(10)).await {
//!         tracing::warn!(error = %e, "Some tasks did not stop in time.");
//!     }
//! }
//! ```
//!
//! A store is a thin typed wrapper around a [`SqliteActor`], which opens, sets up and migrates
//! the database on its own thread:
//!
//! ```no_run
//! use ambient_service::{Dialect, Migration, OpenError, SqliteActor};
//!
//! const MIGRATIONS: &[Migration] = &[Migration {
//!     version: 1,
//!     name: "initial",
//!     sql: &[(Dialect::Sqlite, "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT);")],
//! }];
//!
//! # async fn open(path: &std::path::Path) -> Result<SqliteActor, OpenError> {
//! SqliteActor::open("example-store", path, MIGRATIONS).await
//! # }
//! ```

pub mod config;
pub mod migrate;
pub mod private;
pub mod shutdown;
pub mod signal;
pub mod sqlite;

pub use config::{ConfigError, StrictConfig};
pub use migrate::{Dialect, MigrateError, Migration};
pub use shutdown::{DrainTimeout, Shutdown};
pub use signal::shutdown_signal;
pub use sqlite::{Closed, OpenError, SqliteActor};
