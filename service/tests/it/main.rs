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
