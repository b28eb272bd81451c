//! Black-box tests of `ambient-service`, through its public API only.
//!
//! # Layout
//! - `shutdown`: tracked tasks stop on trigger and are drained.
//! - `migrate`: migrations on real SQLite files (adoption of an unversioned file, atomicity, the
//!   newer-database refusal) and the actor over a migrated connection.
//! - `config`: loading a file from disk.
//! - `private`: database files and data directories readable by their owner only.

mod config;
mod migrate;
mod private;
mod shutdown;

use ambient_service::sqlite::Closed;

/// The error type of the tests' small stores: what [`ambient_service::SqliteActor::call`] needs.
#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("closed")]
    Closed,
}

impl From<Closed> for StoreError {
    fn from(_: Closed) -> StoreError {
        StoreError::Closed
    }
}
