//! The `ambient` command line: a local network in one command (`demo`, `up`), and a submitter's
//! tools (`submit`, `status`, `nodes`, `balance`, `ledger`) and an operator's (`token`,
//! `node revoke`, `account`, `key`) for any coordinator.
//!
//! # Layout
//! - [`local`]: broker + coordinator + agents in one process.
//! - [`client`]: REST client and MQTT submission.
//! - [`admin`]: the operator's commands (enrolment tokens, node revocation).
//! - [`credits`]: accounts, API keys, balances, the ledger, prices and the leaderboard.
//! - [`demo`]: the end-to-end demo and its checks.
//! - [`modules`]: the bundled WAT modules.
//! - [`templates`]: the coordinator's task templates: `templates list`/`show`, `submit --template`.

pub mod admin;
pub mod client;
pub mod credits;
pub mod datasets;
pub mod demo;
pub mod local;
pub mod modules;
pub mod templates;
