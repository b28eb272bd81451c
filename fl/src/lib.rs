//! `ambient-fl`: the pure core of federated learning for Ambient VCP.
//!
//! Nodes train on data that never leaves them; the coordinator runs FedAvg over rounds; updates
//! are clipped and noised for user-level (ε, δ)-differential privacy with an RDP accountant; and
//! secure aggregation (pairwise masks, Shamir-shared seeds for dropouts) means the coordinator sees
//! only the sum of the updates.
//!
//! This crate does no I/O, reads no clock and opens no socket. Every type is plain data (serde)
//! and every step is a pure function or a small state machine, so that the agent (client side) and
//! the coordinator (server side) can drive it over MQTT and test it without a broker. Randomness
//! always comes from a caller-supplied RNG or seed; time always comes in as an argument.
//!
//! # Layout
//! - [`data`]: CSV parsing into a [`data::Dataset`], shareable summary statistics for
//!   standardisation, stratified and non-IID splits.
//! - [`model`]: logistic regression and a small MLP over flat `Vec<f32>` weights, minibatch SGD,
//!   prediction, accuracy and AUC.
//! - [`fedavg`]: sample-weighted FedAvg and the server step.
//! - [`dp`]: L2 clipping, distributed Gaussian noise, the RDP accountant, σ calibration and the
//!   per-round privacy ledger.
//! - [`secagg`]: fixed-point encoding into Z_2^32, X25519 pairwise masks, self masks, t-of-n
//!   Shamir sharing over GF(2^61 − 1), sealed key shares, and the server-side unmasking.
//! - [`wire`]: a job over the network: the submitter's [`wire::JobSpec`] and the messages between
//!   coordinator and clients.
//! - [`client`] and [`server`]: the two ends of a job as state machines (statistics round,
//!   training rounds, deadlines, dropouts, DP ledger, secure aggregation), driven by the agent
//!   and the coordinator over MQTT.
//!
//! # A round, end to end
//! 1. The coordinator's [`server::Server`] begins a round and sends the global weights.
//! 2. Each client runs [`model::train_local`], takes `delta = new − global`, clips it with
//!    [`dp::clip_l2`], adds its noise share with [`dp::add_noise_share`], encodes it with
//!    [`secagg::FixedPoint::encode`] and masks it with [`secagg::ClientSetup::masked_update`].
//! 3. The coordinator sums the masked vectors, collects unmasking shares from the survivors and
//!    calls [`secagg::ServerAggregator::unmask`], then decodes the sum, divides and applies it, and
//!    records the round in its [`dp::PrivacyLedger`].

pub mod client;
pub mod data;
pub mod dp;
pub mod fedavg;
pub mod model;
pub mod secagg;
pub mod server;
pub mod wire;

/// A client's identifier within one federated-learning task (the coordinator assigns them).
///
/// Secure aggregation orders clients by it (the lower id adds a pairwise mask, the higher one
/// subtracts it) and uses `id + 1` as the client's Shamir evaluation point.
pub type ClientId = u32;
