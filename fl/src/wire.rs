//! A federated-learning job over the network: what the submitter asks for ([`JobSpec`]), and the
//! messages between the coordinator ([`crate::server::Server`]) and each client
//! ([`crate::client::Client`]). The transport (MQTT in Ambient VCP) carries them as JSON.
//!
//! # A job
//! - **Round 0, statistics.** Every client sends its [`crate::data::FeatureStats`] through
//!   secure aggregation (or in the clear without it); the server learns only the sums, from
//!   which every client standardises its features the same way. No model is trained.
//! - **Rounds 1..=rounds, training.** The server sends the global weights; each client trains
//!   locally, and sends `[Δ.., 1, loss·C]` under DP, Δ and the capped loss clipped together to
//!   C and noised (averaged unweighted, as DP-FedAvg does), or `[n·Δ.., n, n·loss]` without DP
//!   (sample-weighted FedAvg), masked under secure aggregation.
//!
//! # One round with secure aggregation
//! `Begin` → `Keys` (advertise) → `Roster` → `Shares` (sealed key shares) → `Relay` (the shares
//! addressed to each client, and who shared) → `Update` (masked vector) → `Unmask` (who survived)
//! → `Unmask` (shares to remove masks). Without secure aggregation: `Begin` → `Update`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ClientId;
use crate::model::{LocalTraining, ModelSpec};
use crate::secagg::{AdvertisedKeys, SealedShare, SecAggParams, UnmaskShares};

/// The model to train.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelChoice {
    /// Logistic regression.
    #[default]
    Logistic,
    /// An MLP with ReLU hidden layers of these widths.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
    },
}

impl ModelChoice {
    /// The model for `features` inputs.
    pub fn spec(&self, features: usize) -> ModelSpec {
        match self {
            ModelChoice::Logistic => ModelSpec::logistic(features),
            ModelChoice::Mlp { hidden } => ModelSpec::mlp(features, hidden),
        }
    }
}

/// A `federated_learning` task's `inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The data set, by the name nodes advertise.
    pub dataset: String,
    /// The model.
    #[serde(default)]
    pub model: ModelChoice,
    /// Training rounds.
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    /// Local training per round.
    #[serde(default = "default_local")]
    pub local: LocalTraining,
    /// Server learning rate (1 is plain FedAvg).
    #[serde(default = "one")]
    pub server_lr: f32,
    /// ε of the (ε, δ) user-level DP budget for the whole job; none means no DP.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// δ of the budget.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// L2 clipping norm C of each client's update (under DP).
    #[serde(default = "default_clip")]
    pub clip_norm: f32,
    /// Secure aggregation; by default on when `min_nodes ≥ 3`.
    #[serde(default)]
    pub secure_aggregation: Option<bool>,
    /// Seconds each phase of a round waits for answers before missing clients count as dropped.
    #[serde(default = "default_timeout")]
    pub round_timeout_sec: u64,
    /// An evaluation set (CSV with a header: the label column `eval_label` and the clients'
    /// feature columns, by name, in any order), scored by the coordinator after each round. Its
    /// columns are matched to each client's by name; the model takes them in this file's order.
    #[serde(default)]
    pub eval_csv: Option<String>,
    /// The label column of `eval_csv`.
    #[serde(default = "default_label")]
    pub eval_label: String,
    /// Seed of the initial weights and of local shuffling.
    #[serde(default)]
    pub seed: u64,
}

fn default_rounds() -> u32 {
    10
}
/// 5 local epochs at lr 0.05 over 10 rounds: on the breast cancer data split non-IID over 5
/// clients this ends at 98.2 % test accuracy, above centralised logistic regression (97.3 %);
/// 1 epoch ended at 95.6 % (`fl/tests/it/defaults.rs` checks it).
fn default_local() -> LocalTraining {
    LocalTraining {
        epochs: 5,
        batch_size: 16,
        lr: 0.05,
        l2: 1e-3,
    }
}
fn one() -> f32 {
    1.0
}
fn default_delta() -> f64 {
    1e-5
}
fn default_clip() -> f32 {
    0.5
}
fn default_timeout() -> u64 {
    30
}
fn default_label() -> String {
    "target".into()
}

/// Coordinator → client. Externally tagged (`{"begin": {..}}`): maps keyed by client id do not
/// survive serde's buffering of internally tagged enums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToClient {
    /// A round begins.
    Begin {
        /// 0 for the statistics round, then 1..=rounds.
        round: u32,
        /// This client's id in the job.
        client: ClientId,
        /// Clients invited to this round: each adds 1/clients of the DP noise.
        clients: u32,
        /// The data set to use.
        dataset: String,
        /// The model.
        spec: ModelSpec,
        /// Global weights (empty in round 0).
        weights: Vec<f32>,
        /// Feature means and standard deviations (absent in round 0).
        standardize: Option<(Vec<f32>, Vec<f32>)>,
        /// Local training.
        local: LocalTraining,
        /// DP: noise multiplier σ and clipping norm C.
        dp: Option<(f64, f32)>,
        /// Secure aggregation parameters, when on.
        secagg: Option<SecAggParams>,
        /// Seed of local shuffling.
        seed: u64,
        /// The feature columns by name, in the order the model takes them: the evaluation
        /// set's. Each client picks these columns of its data set by name
        /// ([`crate::data::Dataset::with_columns`]) and cannot take part if one is missing.
        /// Absent without an evaluation set: clients use their columns in file order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        columns: Option<Vec<String>>,
    },
    /// The clients that advertised keys.
    Roster {
        /// Round.
        round: u32,
        /// Their keys.
        roster: Vec<AdvertisedKeys>,
    },
    /// The sealed shares addressed to this client, and the clients that shared (the peer set to
    /// mask with).
    Relay {
        /// Round.
        round: u32,
        /// Shares for this client.
        shares: Vec<SealedShare>,
        /// Clients that completed key sharing.
        peers: BTreeSet<ClientId>,
    },
    /// Who survived and who dropped: answer with shares to unmask.
    Unmask {
        /// Round.
        round: u32,
        /// Clients whose masked update arrived.
        survivors: BTreeSet<ClientId>,
        /// Peers whose update did not.
        dropped: BTreeSet<ClientId>,
    },
    /// The job is over for this client (done, failed, or it was dropped): forget it.
    End {
        /// Why.
        reason: String,
    },
}

/// Client → coordinator (externally tagged, like [`ToClient`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToServer {
    /// Public keys for this round's secure aggregation.
    Keys {
        /// Round.
        round: u32,
        /// The keys.
        keys: AdvertisedKeys,
    },
    /// Sealed key shares for the other clients.
    Shares {
        /// Round.
        round: u32,
        /// One per other client in the roster.
        shares: Vec<SealedShare>,
    },
    /// The (masked, under secure aggregation) encoded update.
    Update {
        /// Round.
        round: u32,
        /// The vector in Z_2^32.
        y: Vec<u32>,
    },
    /// Shares for unmasking.
    Unmask {
        /// Round.
        round: u32,
        /// The shares.
        shares: UnmaskShares,
    },
    /// The client cannot take part (e.g. it lacks the data set): it leaves the job.
    Failed {
        /// Round.
        round: u32,
        /// Why.
        reason: String,
    },
}

impl ToClient {
    /// The round a message belongs to (`End` belongs to none).
    pub fn round(&self) -> Option<u32> {
        match self {
            ToClient::Begin { round, .. }
            | ToClient::Roster { round, .. }
            | ToClient::Relay { round, .. }
            | ToClient::Unmask { round, .. } => Some(*round),
            ToClient::End { .. } => None,
        }
    }
}

impl ToServer {
    /// The round a message belongs to.
    pub fn round(&self) -> u32 {
        match self {
            ToServer::Keys { round, .. }
            | ToServer::Shares { round, .. }
            | ToServer::Update { round, .. }
            | ToServer::Unmask { round, .. }
            | ToServer::Failed { round, .. } => *round,
        }
    }
}

/// Per-round figures in the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Round (1-based).
    pub round: u32,
    /// Mean local training loss over the contributing clients.
    pub train_loss: f64,
    /// Clients whose update is in the aggregate.
    pub clients: u32,
    /// Clients invited but dropped in this round.
    pub dropped: u32,
    /// ε spent after this round (under DP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon_spent: Option<f64>,
    /// Accuracy on the evaluation set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f64>,
    /// AUC on the evaluation set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_auc: Option<f64>,
}
