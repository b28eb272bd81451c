//! Black-box tests of `ambient-fl`, one test binary (`cargo test -p ambient-fl --test it`).
//!
//! # Layout
//! - [`breast_cancer`]: centralised training vs FedAvg, with and without DP and secure
//!   aggregation, on the Wisconsin breast cancer data set (`tests/data/`).
//! - [`defaults`]: a job with every `JobSpec` default reaches centralised accuracy.
//! - [`identity`]: signed secure-aggregation keys; a tampered roster is refused.
//! - [`job`]: whole jobs between the server and client state machines, messages as JSON.

mod breast_cancer;
mod defaults;
mod identity;
mod job;
