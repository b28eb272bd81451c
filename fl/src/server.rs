//! The coordinator side of a federated job ([`crate::wire`]): a state machine that runs the
//! statistics round and `rounds` training rounds over the clients it was given, with deadlines
//! (time comes in as milliseconds), dropouts, DP accounting and secure aggregation. It sees only
//! sums. Every message it cannot use is refused with a typed [`Refusal`]; the job goes on.
//!
//! # Surviving a coordinator restart
//! The coordinator saves a [`Checkpoint`] ([`Server::checkpoint`]) whenever the round changes and,
//! after a restart, rebuilds the server with [`Server::resume`]. A checkpoint taken at any moment
//! of round r says "round r began with these weights" (the weights change only when a round
//! finishes, which begins the next one at once). The round's own state (secure-aggregation keys,
//! shares, masked updates) is never saved, so that no such material is reused, and the round r
//! that was in progress is treated as interrupted:
//! - r = 0, the statistics round (no privacy cost): round 0 begins again.
//! - r ≥ 1 without DP: round r begins again, from the same weights.
//! - r ≥ 1 under DP: the clients may already have sent their noised updates, and running the
//!   round again would release a second look at the same data. So round r is charged to the
//!   ledger as the worst release it could have been (a sum over the fewest contributors a round
//!   accepts, which carries the least noise) and the job goes on with round r + 1; it completes
//!   at once with the checkpoint's weights if r was the last round, and stops early (saying so in
//!   [`JobResult::stopped_early`]) when the ledger cannot pay, which with a tight budget means
//!   the last round is not released. The job thus never releases more than `rounds` aggregates
//!   and stays within its ε.
//!
//! Every interrupted round is listed in [`JobResult::interrupted`]. Each resume is counted and the
//! count is mixed into every later round's secure-aggregation session, so no session id is used
//! twice. Clients that died while the coordinator was away are dropped by the usual deadlines.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ClientId;
use crate::client::{DP_LOSS_BOUND, vector_len};
use crate::data::{Dataset, FeatureStats};
use crate::dp::{PrivacyLedger, calibrate_sigma, effective_sigma};
use crate::fedavg::apply_update;
use crate::model::{ModelSpec, auc};
use crate::secagg::{
    AdvertisedKeys, FixedPoint, MaskedInput, SealedShare, SecAggParams, ServerAggregator,
    UnmaskShares, wrapping_sum,
};
use crate::wire::{JobSpec, RoundMetrics, ToClient, ToServer};

/// Why a job cannot start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    /// Bad parameters: the submitter's mistake, refused at submission.
    #[error("{0}")]
    Invalid(String),
}

/// A client message the server did not use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// The sender is not (or no longer) a client of this job.
    #[error("client {0} is not in this job (or was dropped)")]
    NotAClient(ClientId),
    /// The message is for another round or phase: it came too late (or too early).
    #[error("late or out-of-order {what} from client {client} for round {round}")]
    Late {
        /// Sender.
        client: ClientId,
        /// Which message.
        what: &'static str,
        /// Its round.
        round: u32,
    },
    /// The client already sent this.
    #[error("duplicate {what} from client {client}")]
    Duplicate {
        /// Sender.
        client: ClientId,
        /// Which message.
        what: &'static str,
    },
    /// A vector of the wrong length: the client is dropped from the job.
    #[error("client {client} sent {found} values, expected {expected}; dropped")]
    WrongLength {
        /// Sender.
        client: ClientId,
        /// Expected length.
        expected: usize,
        /// Received length.
        found: usize,
    },
    /// The client said it cannot take part; it is dropped.
    #[error("client {client} left: {reason}")]
    Left {
        /// Sender.
        client: ClientId,
        /// Its reason.
        reason: String,
    },
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Recipient.
    pub to: ClientId,
    /// The message.
    pub msg: ToClient,
}

/// Where the job stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Rounds in progress: `round` of `rounds` (0 is the statistics round).
    Running {
        /// Current round.
        round: u32,
        /// Training rounds.
        rounds: u32,
    },
    /// Finished.
    Done(Box<JobResult>),
    /// Failed, with the reason.
    Failed(String),
}

/// A finished job's result (the task's `output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The model.
    pub model: ModelSpec,
    /// Final weights (layout in `ambient_fl::model`).
    pub weights: Vec<f32>,
    /// Feature means used for standardisation (apply them before predicting).
    pub feature_mean: Vec<f32>,
    /// Feature standard deviations.
    pub feature_std: Vec<f32>,
    /// Rows over all clients (from the statistics round).
    pub total_rows: u64,
    /// Per training round.
    pub rounds: Vec<RoundMetrics>,
    /// The privacy ledger, under DP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
    /// Whether secure aggregation was on.
    pub secure_aggregation: bool,
    /// Set when the job ended before `rounds` (the budget could not cover another round).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
    /// Rounds interrupted by a coordinator restart, in order: run again (round 0, or any round
    /// without DP) or, under DP, charged to the ledger and skipped (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<u32>,
    /// Rounds that got too few clients and were run again with every client of the job
    /// ([`ROUND_RETRIES`]), once per retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried: Vec<u32>,
}

/// The DP part of a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    /// Budget ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Calibrated noise multiplier σ.
    pub sigma: f64,
    /// Clipping norm C.
    pub clip_norm: f32,
    /// ε spent in total.
    pub epsilon_spent: f64,
    /// Per round: the σ that held (fewer contributors, less noise) and ε after it.
    pub ledger: PrivacyLedger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Keys,
    Shares,
    Updates,
    Unmask,
}

/// One round in progress.
struct RoundState {
    round: u32,
    phase: Phase,
    deadline: u64,
    /// Clients the round began with: each added 1/this of the noise (without secure
    /// aggregation; with it, 1/peers).
    began_with: usize,
    invited: BTreeSet<ClientId>,
    keys: BTreeMap<ClientId, AdvertisedKeys>,
    shares: BTreeMap<ClientId, Vec<SealedShare>>,
    peers: BTreeSet<ClientId>,
    updates: BTreeMap<ClientId, Vec<u32>>,
    unmask: BTreeMap<ClientId, UnmaskShares>,
    aggregator: Option<ServerAggregator>,
}

/// Everything a [`Server`] needs to go on after a coordinator restart ([`Server::checkpoint`],
/// [`Server::resume`]): the job's settings and what it has learnt so far, as of the beginning of
/// round `round`. Neither the evaluation set (rebuilt from `job.eval_csv`) nor the round's own
/// state (secure-aggregation material must not be reused) is in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The job as submitted.
    pub job: JobSpec,
    /// The model.
    pub spec: ModelSpec,
    /// Feature columns of the clients' data set.
    pub features: usize,
    /// The secure-aggregation session of the job (from the task id).
    pub session: u64,
    /// Whether secure aggregation is on.
    pub secure: bool,
    /// Clients still in the job.
    pub alive: BTreeSet<ClientId>,
    /// The Shamir threshold, fixed from the job's size at start.
    pub threshold: usize,
    /// Calibrated noise multiplier σ, under DP.
    pub sigma: Option<f64>,
    /// The privacy ledger, under DP.
    pub ledger: Option<PrivacyLedger>,
    /// The weights `round` began with.
    pub weights: Vec<f32>,
    /// Feature means and standard deviations, once the statistics round is done.
    pub standardize: Option<(Vec<f32>, Vec<f32>)>,
    /// Rows over all clients (from the statistics round).
    pub total_rows: u64,
    /// Per finished training round.
    pub metrics: Vec<RoundMetrics>,
    /// The round in progress when the checkpoint was taken (0 is the statistics round).
    pub round: u32,
    /// Rounds interrupted by earlier restarts.
    #[serde(default)]
    pub interrupted: Vec<u32>,
    /// How many times the job was resumed before this checkpoint.
    pub resumes: u32,
    /// The clients the job started with (0 in checkpoints from before retries: no retry then).
    #[serde(default)]
    pub clients: usize,
    /// Rounds run again so far.
    #[serde(default)]
    pub retried: Vec<u32>,
}

/// The server of one job.
pub struct Server {
    job: JobSpec,
    spec: ModelSpec,
    features: usize,
    session: u64,
    secure: bool,
    alive: BTreeSet<ClientId>,
    threshold: usize,
    sigma: Option<f64>,
    ledger: Option<PrivacyLedger>,
    weights: Vec<f32>,
    standardize: Option<(Vec<f32>, Vec<f32>)>,
    total_rows: u64,
    eval: Option<Dataset>,
    metrics: Vec<RoundMetrics>,
    current: Option<RoundState>,
    state: JobState,
    /// Rounds interrupted by a restart.
    interrupted: Vec<u32>,
    /// Times the job was resumed: mixed into the secure-aggregation session.
    resumes: u32,
    /// The clients the job started with.
    clients: usize,
    /// Rounds run again because too few clients took part.
    retried: Vec<u32>,
}

/// How many times a job without secure aggregation or differential privacy runs a round again
/// when too few clients take part (a node restarted, a broker node died), before it fails.
pub const ROUND_RETRIES: usize = 3;

/// The smallest number of clients a job accepts.
pub const MIN_CLIENTS: usize = 2;

/// Checks a job before it is accepted: the model, rounds, DP budget (calibrating σ) and the
/// evaluation set. Returns σ under DP.
pub fn check_job(job: &JobSpec, clients: usize) -> Result<Option<f64>, JobError> {
    let bad = |m: String| Err(JobError::Invalid(m));
    if clients < MIN_CLIENTS {
        return bad(format!(
            "federated learning needs min_nodes ≥ {MIN_CLIENTS} clients per round"
        ));
    }
    if job.rounds == 0 || job.rounds > 1000 {
        return bad("rounds must be 1 to 1000".into());
    }
    if job.dataset.is_empty() || job.dataset.len() > 64 {
        return bad("dataset must be a name of 1 to 64 characters".into());
    }
    if job.local.epochs == 0 || job.local.epochs > 1000 || job.local.batch_size == 0 {
        return bad("local.epochs must be 1 to 1000 and local.batch_size at least 1".into());
    }
    // NaN fails every comparison, so `> 0.0` refuses it; infinity (`1e39` in JSON overflows
    // an f32) needs its own check.
    for (name, lr) in [("local.lr", job.local.lr), ("server_lr", job.server_lr)] {
        if !(lr > 0.0 && lr.is_finite()) {
            return bad(format!("{name} must be positive and finite, not {lr}"));
        }
    }
    if job.round_timeout_sec == 0 || job.round_timeout_sec > 3600 {
        return bad("round_timeout_sec must be 1 to 3600".into());
    }
    if job.secure_aggregation == Some(true) && clients < 3 {
        return bad("secure aggregation needs min_nodes ≥ 3".into());
    }
    if let crate::wire::ModelChoice::Mlp { hidden } = &job.model
        && (hidden.is_empty() || hidden.len() > 4 || hidden.iter().any(|&h| h == 0 || h > 1024))
    {
        return bad("model.hidden must list 1 to 4 layer widths of 1 to 1024".into());
    }
    if job.eval_csv.is_some() {
        eval_set(job)?;
    }
    let Some(epsilon) = job.epsilon else {
        return Ok(None);
    };
    if !(job.delta > 0.0 && job.delta < 1.0) {
        return bad("delta must be in (0, 1)".into());
    }
    if !(job.clip_norm > 0.0 && job.clip_norm.is_finite()) {
        return bad("clip_norm must be positive".into());
    }
    calibrate_sigma(epsilon, job.delta, u64::from(job.rounds))
        .map(Some)
        .map_err(|e| JobError::Invalid(format!("the privacy budget cannot be met: {e}")))
}

/// The evaluation set of `job`, if any: it parses, has its label column, at least one feature
/// column and one row, and no column name twice (columns are matched by name). All that can be
/// known at submission, before any client is chosen.
fn eval_set(job: &JobSpec) -> Result<Option<Dataset>, JobError> {
    let Some(csv) = &job.eval_csv else {
        return Ok(None);
    };
    let bad = |m: String| JobError::Invalid(format!("eval_csv: {m}"));
    let d = Dataset::from_csv_str(csv, &job.eval_label, None).map_err(|e| bad(e.to_string()))?;
    if d.columns.is_empty() {
        return Err(bad("no feature columns besides the label".into()));
    }
    if d.is_empty() {
        return Err(bad("no rows".into()));
    }
    for (k, c) in d.columns.iter().enumerate() {
        if d.columns[..k].contains(c) || *c == job.eval_label {
            return Err(bad(format!("column {c:?} appears twice")));
        }
    }
    Ok(Some(d))
}

/// The evaluation set of `job`, if any, checked against the clients' `features` columns.
fn eval_set_for(job: &JobSpec, features: usize) -> Result<Option<Dataset>, JobError> {
    let d = eval_set(job)?;
    if let Some(d) = &d {
        check_eval_features(d.num_features(), &[features as u32])?;
    }
    Ok(d)
}

/// Checks an evaluation set of `eval` feature columns against the feature counts the data set's
/// holders advertise; with no holder there is nothing to check against yet.
pub fn check_eval_features(eval: usize, holders: &[u32]) -> Result<(), JobError> {
    if holders.is_empty() || holders.contains(&(eval as u32)) {
        return Ok(());
    }
    let list: Vec<String> = holders.iter().map(u32::to_string).collect();
    Err(JobError::Invalid(format!(
        "eval_csv has {eval} feature columns, the clients' data set {}",
        list.join(" or ")
    )))
}

/// The number of feature columns of `job`'s evaluation set, if it has one (checked as
/// [`check_job`] checks it). Pair it with [`check_eval_features`] when the evaluation set is
/// read in one place and the holders are known in another.
pub fn eval_features(job: &JobSpec) -> Result<Option<usize>, JobError> {
    Ok(eval_set(job)?.map(|d| d.num_features()))
}

/// Checks `job`'s evaluation set against the feature counts of the data set as the nodes that
/// hold it now advertise it (`holders`, one count per node or per distinct count): the
/// coordinator calls it at submission, after [`check_job`], so that an `eval_csv` with the
/// wrong number of feature columns is refused then rather than when the job starts. With no
/// holder online (`holders` empty) there is nothing to check against yet; the job's start
/// checks again. The columns themselves are matched by name by each client
/// ([`crate::wire::ToClient::Begin`]'s `columns`).
pub fn check_eval_against(job: &JobSpec, holders: &[u32]) -> Result<(), JobError> {
    match eval_set(job)? {
        Some(d) => check_eval_features(d.num_features(), holders),
        None => Ok(()),
    }
}

impl Server {
    /// Starts a job over `clients` (ids 0..n), whose data sets have `features` columns. Returns
    /// the server and the statistics round's `Begin` messages. `session` is bound into every
    /// secure-aggregation seed (derive it from the task id).
    pub fn start(
        job: JobSpec,
        features: usize,
        clients: usize,
        session: u64,
        now: u64,
    ) -> Result<(Server, Vec<Outgoing>), JobError> {
        let sigma = check_job(&job, clients)?;
        if features == 0 {
            return Err(JobError::Invalid("the data set has no features".into()));
        }
        let ledger = match (job.epsilon, sigma) {
            (Some(e), Some(_)) => Some(
                PrivacyLedger::new(e, job.delta).map_err(|e| JobError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        let eval = eval_set_for(&job, features)?;
        let spec = job.model.spec(features);
        let secure = job.secure_aggregation.unwrap_or(clients >= 3);
        let mut s = Server {
            weights: spec.init(job.seed),
            spec,
            features,
            session,
            secure,
            alive: (0..clients as ClientId).collect(),
            clients,
            retried: Vec::new(),
            threshold: crate::client::secagg_threshold(clients),
            sigma,
            ledger,
            standardize: None,
            total_rows: 0,
            eval,
            metrics: Vec::new(),
            current: None,
            state: JobState::Running {
                round: 0,
                rounds: job.rounds,
            },
            job,
            interrupted: Vec::new(),
            resumes: 0,
        };
        let out = s.begin(0, now);
        Ok((s, out))
    }

    /// What a restarted coordinator needs to go on with this job (see the module docs): `None`
    /// once the job is done or failed. Valid at any moment of a round, since it describes the
    /// beginning of the round in progress; save it whenever the round changes.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let JobState::Running { round, .. } = self.state else {
            return None;
        };
        Some(Checkpoint {
            job: self.job.clone(),
            spec: self.spec.clone(),
            features: self.features,
            session: self.session,
            secure: self.secure,
            alive: self.alive.clone(),
            threshold: self.threshold,
            sigma: self.sigma,
            ledger: self.ledger.clone(),
            weights: self.weights.clone(),
            standardize: self.standardize.clone(),
            total_rows: self.total_rows,
            metrics: self.metrics.clone(),
            round,
            interrupted: self.interrupted.clone(),
            resumes: self.resumes,
            clients: self.clients,
            retried: self.retried.clone(),
        })
    }

    /// Rebuilds a job's server from its [`Checkpoint`] after a coordinator restart. The round r
    /// in progress when the checkpoint was taken was interrupted and is listed in
    /// [`JobResult::interrupted`]:
    /// - r = 0 (statistics, no privacy cost): round 0 begins again.
    /// - r ≥ 1 without DP: round r begins again, from the checkpoint's weights.
    /// - r ≥ 1 under DP: the round may have released noisy updates, so it is charged to the
    ///   ledger at the σ of the fewest contributors a round accepts, and round r + 1 begins. If r was the last round the job completes
    ///   with the checkpoint's weights; if the ledger cannot pay it completes with `stopped_early`.
    ///
    /// Returns the server and the `Begin` messages of the round that starts (or the `End`
    /// messages if the job completed). Every resume changes the secure-aggregation sessions of
    /// the rounds that follow. Refuses a checkpoint that does not hold together.
    ///
    /// Save the new server's checkpoint before sending the messages: resuming the same checkpoint
    /// twice would reuse its sessions and, under DP, charge once for rounds released twice.
    pub fn resume(cp: Checkpoint, now: u64) -> Result<(Server, Vec<Outgoing>), JobError> {
        let bad = |m: String| Err(JobError::Invalid(format!("checkpoint: {m}")));
        let round = cp.round;
        if round > cp.job.rounds {
            return bad(format!(
                "round {round} of a job of {} rounds",
                cp.job.rounds
            ));
        }
        if cp.features == 0 || cp.spec != cp.job.model.spec(cp.features) {
            return bad("the model does not fit the job and its features".into());
        }
        if cp.weights.len() != cp.spec.num_params() {
            return bad(format!(
                "{} weights for a model of {}",
                cp.weights.len(),
                cp.spec.num_params()
            ));
        }
        if round > 0 && cp.standardize.is_none() {
            return bad(format!("round {round} without the statistics of round 0"));
        }
        let dp = cp.job.epsilon.is_some();
        if cp.sigma.is_some() != dp || cp.ledger.is_some() != dp {
            return bad("the privacy settings do not match the job".into());
        }
        if cp.secure && cp.threshold < 2 {
            return bad(format!("secure-aggregation threshold {}", cp.threshold));
        }
        let Some(resumes) = cp.resumes.checked_add(1) else {
            return bad("resumed too many times".into());
        };
        let mut eval = eval_set_for(&cp.job, cp.features)?;
        if let (Some(eval), Some((mean, std))) = (eval.as_mut(), &cp.standardize) {
            eval.standardize(mean, std)
                .map_err(|e| JobError::Invalid(format!("eval_csv: {e}")))?;
        }
        let mut s = Server {
            state: JobState::Running {
                round,
                rounds: cp.job.rounds,
            },
            job: cp.job,
            spec: cp.spec,
            features: cp.features,
            session: cp.session,
            secure: cp.secure,
            alive: cp.alive,
            threshold: cp.threshold,
            sigma: cp.sigma,
            ledger: cp.ledger,
            weights: cp.weights,
            standardize: cp.standardize,
            total_rows: cp.total_rows,
            eval,
            metrics: cp.metrics,
            current: None,
            interrupted: cp.interrupted,
            resumes,
            clients: cp.clients,
            retried: cp.retried,
        };
        s.interrupted.push(round);
        // The worst the interrupted round may have released: a sum over the fewest contributors
        // a round accepts, which carries the least noise.
        let worst = s
            .sigma
            .map(|sigma| effective_sigma(sigma, s.alive.len(), s.needed()));
        let out = match (worst, s.ledger.as_mut()) {
            (Some(sigma), Some(ledger)) if round > 0 => {
                match ledger.record(u64::from(round), sigma) {
                    Err(e) => s.complete(Some(format!(
                        "stopped after a coordinator restart: round {round} was interrupted and \
                         the ledger cannot charge it: {e}"
                    ))),
                    Ok(_) if round >= s.job.rounds => s.complete(None),
                    Ok(_) => s.begin(round + 1, now),
                }
            }
            _ => s.begin(round, now),
        };
        Ok((s, out))
    }

    /// Where the job stands.
    pub fn state(&self) -> &JobState {
        &self.state
    }

    /// Clients still in the job.
    pub fn alive(&self) -> &BTreeSet<ClientId> {
        &self.alive
    }

    /// The fewest clients a round needs.
    fn needed(&self) -> usize {
        if self.secure { self.threshold } else { 1 }
    }

    fn dp(&self) -> bool {
        self.sigma.is_some()
    }

    fn vector_len(&self, round: u32) -> usize {
        vector_len(round, self.features, self.spec.num_params(), self.dp())
    }

    fn begin(&mut self, round: u32, now: u64) -> Vec<Outgoing> {
        let invited = self.alive.clone();
        let n = invited.len();
        let secagg = self.secure.then(|| self.params(round));
        let msgs = invited
            .iter()
            .map(|&c| Outgoing {
                to: c,
                msg: ToClient::Begin {
                    round,
                    client: c,
                    clients: n as u32,
                    dataset: self.job.dataset.clone(),
                    spec: self.spec.clone(),
                    weights: if round == 0 {
                        vec![]
                    } else {
                        self.weights.clone()
                    },
                    standardize: self.standardize.clone(),
                    local: self.job.local.clone(),
                    dp: self.sigma.map(|s| (s, self.job.clip_norm)),
                    secagg,
                    seed: self.job.seed,
                    columns: self
                        .eval
                        .as_ref()
                        .map(|e| e.columns.clone())
                        .filter(|c| !c.is_empty()),
                },
            })
            .collect();
        self.current = Some(RoundState {
            round,
            phase: if self.secure {
                Phase::Keys
            } else {
                Phase::Updates
            },
            deadline: self.deadline(now),
            began_with: n,
            peers: invited.clone(),
            invited,
            keys: BTreeMap::new(),
            shares: BTreeMap::new(),
            updates: BTreeMap::new(),
            unmask: BTreeMap::new(),
            aggregator: None,
        });
        self.state = JobState::Running {
            round,
            rounds: self.job.rounds,
        };
        msgs
    }

    /// One round's secure-aggregation session. The threshold is fixed from the job's size at
    /// start, so a job that loses clients fails when it can no longer meet it.
    fn params(&self, round: u32) -> SecAggParams {
        SecAggParams {
            session: self.session
                ^ u64::from(round).rotate_left(32)
                ^ u64::from(self.resumes).rotate_left(48),
            threshold: self.threshold,
            vector_len: self.vector_len(round),
        }
    }

    fn deadline(&self, now: u64) -> u64 {
        now + self.job.round_timeout_sec * 1000
    }

    /// Handles one client message. `Err` says why it was not used (the job goes on); the
    /// messages returned must be sent either way.
    pub fn handle(
        &mut self,
        from: ClientId,
        msg: ToServer,
        now: u64,
    ) -> (Vec<Outgoing>, Result<(), Refusal>) {
        let r = self.accept(from, msg);
        let out = match &r {
            Err(Refusal::WrongLength { client, .. }) | Err(Refusal::Left { client, .. }) => {
                let c = *client;
                let mut out = self.drop_client(c, "refused");
                out.extend(self.advance(now));
                out
            }
            Ok(()) => self.advance(now),
            Err(_) => vec![],
        };
        (out, r)
    }

    fn accept(&mut self, from: ClientId, msg: ToServer) -> Result<(), Refusal> {
        if !self.alive.contains(&from) {
            return Err(Refusal::NotAClient(from));
        }
        let dp = self.dp();
        let features = self.features;
        let params = self.spec.num_params();
        let Some(cur) = self.current.as_mut() else {
            return Err(Refusal::Late {
                client: from,
                what: "message",
                round: msg.round(),
            });
        };
        let round = msg.round();
        let late = |what| Refusal::Late {
            client: from,
            what,
            round,
        };
        if round != cur.round {
            return Err(late("message"));
        }
        let dup = |what| Refusal::Duplicate { client: from, what };
        match msg {
            ToServer::Failed { reason, .. } => Err(Refusal::Left {
                client: from,
                reason,
            }),
            ToServer::Keys { keys, .. } => {
                if cur.phase != Phase::Keys || !cur.invited.contains(&from) {
                    return Err(late("keys"));
                }
                if keys.client != from {
                    return Err(Refusal::NotAClient(keys.client));
                }
                // The first keys stand: a duplicate must not replace what peers may have seen.
                match cur.keys.entry(from) {
                    std::collections::btree_map::Entry::Occupied(_) => Err(dup("keys")),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(keys);
                        Ok(())
                    }
                }
            }
            ToServer::Shares { shares, .. } => {
                if cur.phase != Phase::Shares || !cur.keys.contains_key(&from) {
                    return Err(late("shares"));
                }
                if shares.iter().any(|s| s.from != from) {
                    return Err(Refusal::NotAClient(from));
                }
                if cur.shares.contains_key(&from) {
                    return Err(dup("shares"));
                }
                cur.shares.insert(from, shares);
                Ok(())
            }
            ToServer::Update { y, .. } => {
                if cur.phase != Phase::Updates || !cur.peers.contains(&from) {
                    return Err(late("update"));
                }
                let expected = vector_len(cur.round, features, params, dp);
                if y.len() != expected {
                    return Err(Refusal::WrongLength {
                        client: from,
                        expected,
                        found: y.len(),
                    });
                }
                if cur.updates.contains_key(&from) {
                    return Err(dup("update"));
                }
                cur.updates.insert(from, y);
                Ok(())
            }
            ToServer::Unmask { shares, .. } => {
                if cur.phase != Phase::Unmask || !cur.updates.contains_key(&from) {
                    return Err(late("unmask shares"));
                }
                if shares.from != from {
                    return Err(Refusal::NotAClient(shares.from));
                }
                match cur.unmask.entry(from) {
                    std::collections::btree_map::Entry::Occupied(_) => Err(dup("unmask shares")),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(shares);
                        Ok(())
                    }
                }
            }
        }
    }

    /// Closes phases whose deadline passed; missing clients are dropped from the job.
    pub fn tick(&mut self, now: u64) -> Vec<Outgoing> {
        match &self.current {
            Some(cur) if now >= cur.deadline => self.close_phase(now),
            _ => vec![],
        }
    }

    /// Closes the current phase early when everyone it waits for has answered.
    fn advance(&mut self, now: u64) -> Vec<Outgoing> {
        let Some(cur) = &self.current else {
            return vec![];
        };
        // Everyone still in the job whom the phase waits for has answered.
        let all = |waited: &mut dyn Iterator<Item = &ClientId>,
                   done: &dyn Fn(&ClientId) -> bool| {
            waited.filter(|c| self.alive.contains(c)).all(done)
        };
        let complete = match cur.phase {
            Phase::Keys => all(&mut cur.invited.iter(), &|c| cur.keys.contains_key(c)),
            Phase::Shares => all(&mut cur.keys.keys(), &|c| cur.shares.contains_key(c)),
            Phase::Updates => all(&mut cur.peers.iter(), &|c| cur.updates.contains_key(c)),
            Phase::Unmask => all(&mut cur.updates.keys(), &|c| cur.unmask.contains_key(c)),
        };
        if complete {
            self.close_phase(now)
        } else {
            vec![]
        }
    }

    fn drop_client(&mut self, c: ClientId, why: &str) -> Vec<Outgoing> {
        if !self.alive.remove(&c) {
            return vec![];
        }
        if let Some(cur) = self.current.as_mut() {
            // A client gone before it shared keys is simply not a peer; after, it is a dropout
            // whose masks the survivors remove.
            cur.invited.remove(&c);
            if matches!(cur.phase, Phase::Keys | Phase::Shares) {
                cur.keys.remove(&c);
                cur.shares.remove(&c);
            }
        }
        vec![Outgoing {
            to: c,
            msg: ToClient::End {
                reason: format!("dropped from the job: {why}"),
            },
        }]
    }

    fn fail(&mut self, reason: String) -> Vec<Outgoing> {
        self.current = None;
        let out = self.end_messages(&reason);
        self.state = JobState::Failed(reason);
        out
    }

    /// `End` for every client still in the job (when the job is abandoned from outside).
    pub fn end_messages(&self, reason: &str) -> Vec<Outgoing> {
        self.alive
            .iter()
            .map(|&c| Outgoing {
                to: c,
                msg: ToClient::End {
                    reason: reason.to_string(),
                },
            })
            .collect()
    }

    fn close_phase(&mut self, now: u64) -> Vec<Outgoing> {
        let Some(mut cur) = self.current.take() else {
            return vec![];
        };
        let mut out = Vec::new();
        let round = cur.round;
        match cur.phase {
            Phase::Keys => {
                let missing: Vec<ClientId> = cur
                    .invited
                    .difference(&cur.keys.keys().copied().collect())
                    .copied()
                    .collect();
                for c in missing {
                    out.extend(self.drop_client(c, "no keys before the deadline"));
                }
                if cur.keys.len() < self.threshold {
                    return self.fail_round(round, cur.keys.len(), "advertised keys", now, out);
                }
                let roster: Vec<AdvertisedKeys> = cur.keys.values().cloned().collect();
                out.extend(cur.keys.keys().map(|&c| Outgoing {
                    to: c,
                    msg: ToClient::Roster {
                        round,
                        roster: roster.clone(),
                    },
                }));
                cur.phase = Phase::Shares;
            }
            Phase::Shares => {
                let missing: Vec<ClientId> = cur
                    .keys
                    .keys()
                    .filter(|c| !cur.shares.contains_key(c))
                    .copied()
                    .collect();
                for c in missing {
                    out.extend(self.drop_client(c, "no key shares before the deadline"));
                }
                if cur.shares.len() < self.threshold {
                    return self.fail_round(round, cur.shares.len(), "shared keys", now, out);
                }
                let roster: Vec<AdvertisedKeys> = cur.keys.values().cloned().collect();
                cur.peers = cur.shares.keys().copied().collect();
                match ServerAggregator::new(self.params(round), &roster) {
                    Ok(a) => cur.aggregator = Some(a),
                    Err(e) => return self.fail_round_with(round, e.to_string(), out),
                }
                for &to in &cur.peers {
                    let shares: Vec<SealedShare> = cur
                        .shares
                        .iter()
                        .filter(|(from, _)| cur.peers.contains(from))
                        .flat_map(|(_, v)| v.iter().filter(|s| s.to == to).cloned())
                        .collect();
                    out.push(Outgoing {
                        to,
                        msg: ToClient::Relay {
                            round,
                            shares,
                            peers: cur.peers.clone(),
                        },
                    });
                }
                cur.phase = Phase::Updates;
            }
            Phase::Updates => {
                let missing: Vec<ClientId> = cur
                    .peers
                    .iter()
                    .filter(|c| !cur.updates.contains_key(c))
                    .copied()
                    .collect();
                for &c in &missing {
                    out.extend(self.drop_client(c, "no update before the deadline"));
                }
                if cur.updates.len() < self.needed() {
                    return self.fail_round(round, cur.updates.len(), "sent updates", now, out);
                }
                if !self.secure {
                    let sum = wrapping_sum(
                        cur.updates.values().map(Vec::as_slice),
                        self.vector_len(round),
                    );
                    let invited = cur.began_with;
                    let contributors = cur.updates.len();
                    self.current = None;
                    return match sum {
                        Ok(sum) => {
                            out.extend(self.finish_round(round, sum, invited, contributors, now));
                            out
                        }
                        Err(e) => self.fail_round_with(round, e.to_string(), out),
                    };
                }
                let survivors: BTreeSet<ClientId> = cur.updates.keys().copied().collect();
                let dropped: BTreeSet<ClientId> =
                    cur.peers.difference(&survivors).copied().collect();
                out.extend(survivors.iter().map(|&c| Outgoing {
                    to: c,
                    msg: ToClient::Unmask {
                        round,
                        survivors: survivors.clone(),
                        dropped: dropped.clone(),
                    },
                }));
                cur.phase = Phase::Unmask;
            }
            Phase::Unmask => {
                let survivors: BTreeSet<ClientId> = cur.updates.keys().copied().collect();
                let dropped: BTreeSet<ClientId> =
                    cur.peers.difference(&survivors).copied().collect();
                let missing: Vec<ClientId> = survivors
                    .iter()
                    .filter(|c| !cur.unmask.contains_key(c))
                    .copied()
                    .collect();
                for c in missing {
                    out.extend(self.drop_client(c, "no unmask shares before the deadline"));
                }
                if cur.unmask.len() < self.threshold {
                    return self.fail_round(
                        round,
                        cur.unmask.len(),
                        "answered to unmask",
                        now,
                        out,
                    );
                }
                let Some(agg) = cur.aggregator.take() else {
                    return self.fail_round_with(round, "no aggregator".into(), out);
                };
                let inputs: Vec<MaskedInput> = cur
                    .updates
                    .iter()
                    .map(|(&client, y)| MaskedInput {
                        client,
                        y: y.clone(),
                    })
                    .collect();
                let responses: Vec<UnmaskShares> = cur.unmask.values().cloned().collect();
                let sum = agg
                    .sum_masked(&inputs)
                    .and_then(|m| agg.unmask(&m, &survivors, &dropped, &responses));
                let (invited, contributors) = (cur.peers.len(), survivors.len());
                return match sum {
                    Ok(sum) => {
                        out.extend(self.finish_round(round, sum, invited, contributors, now));
                        out
                    }
                    Err(e) => self.fail_round_with(round, format!("unmasking: {e}"), out),
                };
            }
        }
        cur.deadline = self.deadline(now);
        self.current = Some(cur);
        out
    }

    /// A round that got too few clients: run again with every client of the job, dropped ones
    /// back in (a restarted node is back), up to [`ROUND_RETRIES`] times in a job, when neither
    /// secure aggregation nor differential privacy ties anything to who took part; the job fails
    /// otherwise. Nothing of a failed round was used.
    fn fail_round(
        &mut self,
        round: u32,
        got: usize,
        what: &str,
        now: u64,
        mut out: Vec<Outgoing>,
    ) -> Vec<Outgoing> {
        if !self.secure && !self.dp() && self.clients > 0 && self.retried.len() < ROUND_RETRIES {
            self.retried.push(round);
            self.alive = (0..self.clients as ClientId).collect();
            out.extend(self.begin(round, now));
            return out;
        }
        let reason = format!(
            "round {round}: only {got} clients {what}; the round needs {}",
            self.needed()
        );
        out.extend(self.fail(reason));
        out
    }

    fn fail_round_with(
        &mut self,
        round: u32,
        why: String,
        mut out: Vec<Outgoing>,
    ) -> Vec<Outgoing> {
        out.extend(self.fail(format!("round {round}: {why}")));
        out
    }

    /// Uses an unmasked sum: statistics in round 0, an update afterwards. Starts the next round
    /// or ends the job.
    fn finish_round(
        &mut self,
        round: u32,
        sum: Vec<u32>,
        invited: usize,
        contributors: usize,
        now: u64,
    ) -> Vec<Outgoing> {
        let fp = FixedPoint::default();
        if round == 0 {
            let stats = fp
                .decode_wide(&sum)
                .map_err(|e| e.to_string())
                .and_then(|v| FeatureStats::from_vec(&v).map_err(|e| e.to_string()))
                .and_then(|s| {
                    let ms = s.mean_std().map_err(|e| e.to_string())?;
                    Ok((s.count, ms))
                });
            return match stats {
                Ok((count, ms)) => {
                    self.total_rows = count.round() as u64;
                    if let Some(eval) = self.eval.as_mut()
                        && let Err(e) = eval.standardize(&ms.0, &ms.1)
                    {
                        return self.fail(format!("eval_csv: {e}"));
                    }
                    self.standardize = Some(ms);
                    self.begin(1, now)
                }
                Err(e) => self.fail(format!("statistics round: {e}")),
            };
        }
        let params = self.spec.num_params();
        let (avg, loss) = if self.dp() {
            let v = fp.decode(&sum);
            let count = f64::from(v[params]).round().max(1.0);
            let avg: Vec<f32> = v[..params]
                .iter()
                .map(|x| (f64::from(*x) / count) as f32)
                .collect();
            // The loss travelled scaled to the clipping norm (`client::DP_LOSS_BOUND`).
            let scale = f64::from(DP_LOSS_BOUND) / f64::from(self.job.clip_norm);
            (avg, f64::from(v[params + 1]) / count * scale)
        } else {
            let v = match fp.decode_wide(&sum) {
                Ok(v) => v,
                Err(e) => return self.fail(format!("round {round}: {e}")),
            };
            let n = v[params].max(1.0);
            let avg: Vec<f32> = v[..params].iter().map(|x| (x / n) as f32).collect();
            (avg, v[params + 1] / n)
        };
        // Under DP the aggregate is released only if the ledger can pay for it.
        let mut epsilon_spent = None;
        if let (Some(sigma), Some(ledger)) = (self.sigma, self.ledger.as_mut()) {
            let held = effective_sigma(sigma, invited, contributors);
            match ledger.record(u64::from(round), held) {
                Ok(eps) => epsilon_spent = Some(eps),
                Err(e) => {
                    return self.complete(Some(format!(
                        "stopped before releasing round {round}: {e} (dropouts left less noise \
                         than planned)"
                    )));
                }
            }
        }
        apply_update(&mut self.weights, &avg, self.job.server_lr);
        let (eval_accuracy, eval_auc) = match &self.eval {
            Some(d) => (
                self.spec.accuracy(&self.weights, d).ok(),
                self.spec
                    .predict(&self.weights, d)
                    .ok()
                    .and_then(|p| auc(&p, &d.y)),
            ),
            None => (None, None),
        };
        self.metrics.push(RoundMetrics {
            round,
            train_loss: loss,
            clients: contributors as u32,
            dropped: (invited - contributors) as u32,
            epsilon_spent,
            eval_accuracy,
            eval_auc,
        });
        if round >= self.job.rounds {
            return self.complete(None);
        }
        self.begin(round + 1, now)
    }

    fn complete(&mut self, stopped_early: Option<String>) -> Vec<Outgoing> {
        self.current = None;
        let (feature_mean, feature_std) = self.standardize.clone().unwrap_or_default();
        let privacy = match (self.sigma, &self.ledger) {
            (Some(sigma), Some(ledger)) => Some(Privacy {
                epsilon: ledger.budget,
                delta: ledger.delta,
                sigma,
                clip_norm: self.job.clip_norm,
                epsilon_spent: ledger.spent().unwrap_or(f64::NAN),
                ledger: ledger.clone(),
            }),
            _ => None,
        };
        let out = self.end_messages("the job is complete");
        self.state = JobState::Done(Box::new(JobResult {
            model: self.spec.clone(),
            weights: self.weights.clone(),
            feature_mean,
            feature_std,
            total_rows: self.total_rows,
            rounds: self.metrics.clone(),
            privacy,
            secure_aggregation: self.secure,
            stopped_early,
            interrupted: self.interrupted.clone(),
            retried: self.retried.clone(),
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::client::Client;
    use crate::data::{breast_cancer, non_iid_split, stratified_split};

    /// The breast cancer data split non-IID over 5 clients, and the evaluation set as CSV.
    fn data() -> (Vec<Dataset>, String) {
        let (train, test) = stratified_split(&breast_cancer(), 0.2, 7).unwrap();
        let clients = non_iid_split(&train, 5, 0, 0.3).unwrap();
        (clients, test.to_csv("target"))
    }

    fn job(epsilon: Option<f64>, secure: bool, eval: &str) -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "dataset": "breast_cancer",
            "rounds": 4,
            "local": {"epochs": 2, "batch_size": 16, "lr": 0.2, "l2": 1e-3},
            "epsilon": epsilon,
            "secure_aggregation": secure,
            "round_timeout_sec": 5,
            "eval_csv": eval,
        }))
        .unwrap()
    }

    /// A learning rate must be a positive, finite number: NaN, ±∞, 0 and negatives are refused,
    /// naming the field.
    #[test]
    fn learning_rates_must_be_positive_and_finite() {
        let spec = |server_lr: f32, lr: f32| {
            let mut j: JobSpec =
                serde_json::from_value(serde_json::json!({"dataset": "d"})).unwrap();
            j.server_lr = server_lr;
            j.local.lr = lr;
            j
        };
        assert!(check_job(&spec(1.0, 0.05), 3).is_ok());
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -1.0] {
            for (job, name) in [(spec(bad, 0.05), "server_lr"), (spec(1.0, bad), "local.lr")] {
                match check_job(&job, 3) {
                    Err(JobError::Invalid(m)) => {
                        assert!(m.starts_with(name) && m.contains("finite"), "{m}")
                    }
                    other => panic!("{name} = {bad}: expected a refusal, got {other:?}"),
                }
            }
        }
        // JSON has no infinity, but a number beyond f32's range becomes one.
        let big: JobSpec =
            serde_json::from_value(serde_json::json!({"dataset": "d", "server_lr": 1e39})).unwrap();
        assert!(big.server_lr.is_infinite());
        assert!(matches!(check_job(&big, 3), Err(JobError::Invalid(_))));
    }

    /// A job between a server and real clients, every message passed through JSON.
    struct Run {
        server: Server,
        queue: Vec<Outgoing>,
        clients: Vec<Client>,
        rng: ChaCha20Rng,
        now: u64,
        /// The round of every answer the server took.
        answered: Vec<u32>,
    }

    impl Run {
        fn start(job: JobSpec, datasets: &[Dataset]) -> Run {
            let (server, queue) = Server::start(job, 30, datasets.len(), 42, 0).unwrap();
            Run {
                server,
                queue,
                clients: datasets.iter().cloned().map(Client::new).collect(),
                rng: ChaCha20Rng::seed_from_u64(3),
                now: 0,
                answered: Vec::new(),
            }
        }

        fn round(&self) -> Option<u32> {
            match self.server.state() {
                JobState::Running { round, .. } => Some(*round),
                _ => None,
            }
        }

        /// Delivers one message and hands the answer to the server; when nothing is in flight,
        /// time moves on to fire deadlines.
        fn step(&mut self) {
            if self.queue.is_empty() {
                self.now += 10_000;
                self.queue = self.server.tick(self.now);
                return;
            }
            let Outgoing { to, msg } = self.queue.remove(0);
            let msg: ToClient =
                serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
            let answer = self.clients[to as usize]
                .handle(msg, &mut self.rng)
                .unwrap();
            if let Some(answer) = answer {
                let answer: ToServer =
                    serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
                self.answered.push(answer.round());
                let (out, r) = self.server.handle(to, answer, self.now);
                r.unwrap();
                self.queue.extend(out);
            }
        }

        /// Runs until the server has taken `answers` answers in `round`: mid-round.
        fn until(&mut self, round: u32, answers: usize) {
            while self.answered.iter().filter(|&&r| r == round).count() < answers {
                assert!(self.round().is_some(), "{:?}", self.server.state());
                self.step();
            }
            assert_eq!(self.round(), Some(round));
        }

        /// The coordinator restarts from `cp` (taken through JSON, as it is stored): the
        /// messages in flight are lost, the clients keep their state.
        fn restart(&mut self, cp: &Checkpoint) {
            let cp: Checkpoint = serde_json::from_str(&serde_json::to_string(cp).unwrap()).unwrap();
            let (server, queue) = Server::resume(cp, self.now).unwrap();
            self.server = server;
            self.queue = queue;
        }

        fn finish(&mut self) -> JobResult {
            while self.round().is_some() {
                assert!(self.now < 10_000_000, "the job never ended");
                self.step();
            }
            match self.server.state() {
                JobState::Done(r) => (**r).clone(),
                other => panic!("{other:?}"),
            }
        }
    }

    fn begins(out: &[Outgoing]) -> Vec<(ClientId, u32)> {
        out.iter()
            .filter_map(|o| match &o.msg {
                ToClient::Begin { round, .. } => Some((o.to, *round)),
                _ => None,
            })
            .collect()
    }

    /// A plain job (no secure aggregation, no DP) whose clients all miss a round (the messages
    /// of round 2 are lost: nodes restarted, a broker node died) runs the round again with every
    /// client, and ends as an undisturbed one does; after [`ROUND_RETRIES`] such rounds it fails.
    /// With secure aggregation it fails at once.
    #[test]
    fn a_round_that_no_client_answers_runs_again_in_a_plain_job() {
        let (datasets, eval) = data();
        let whole = Run::start(job(None, false, &eval), &datasets).finish();
        let mut run = Run::start(job(None, false, &eval), &datasets);
        while run.round() != Some(2) {
            run.step();
        }
        run.queue.clear(); // round 2's Begin messages never arrive
        let retried = run.finish();
        assert_eq!(retried.retried, vec![2]);
        assert_eq!(
            retried.weights, whole.weights,
            "the same rounds on the same data"
        );

        let lose_round = |secure: bool| {
            // Every message of round 0, and of each of its retries, is lost.
            let mut run = Run::start(job(None, secure, &eval), &datasets);
            while run.round() == Some(0) {
                run.queue.clear();
                run.step();
            }
            run.server.state().clone()
        };
        match lose_round(false) {
            JobState::Failed(why) => assert!(why.contains("round 0"), "{why}"),
            other => panic!("a plain job that loses every try of a round: {other:?}"),
        }
        match lose_round(true) {
            JobState::Failed(why) => assert!(why.contains("round 0"), "{why}"),
            other => panic!("secure aggregation retries nothing: {other:?}"),
        }
    }

    /// Secure aggregation without DP: a restart in the middle of round 2 runs round 2 again
    /// under a new session, and the job ends as an uninterrupted one does.
    #[test]
    fn a_restart_reruns_the_interrupted_round_without_dp() {
        let (datasets, eval) = data();
        let whole = Run::start(job(None, true, &eval), &datasets).finish();
        assert!(whole.interrupted.is_empty());
        assert!(
            !serde_json::to_string(&whole)
                .unwrap()
                .contains("interrupted")
        );

        let mut run = Run::start(job(None, true, &eval), &datasets);
        run.until(2, 7); // the keys of round 2 and two of its shares
        let cp = run.server.checkpoint().unwrap();
        assert_eq!((cp.round, cp.resumes), (2, 0));
        let before = run.server.params(2).session;
        run.restart(&cp);
        assert_eq!(
            begins(&run.queue),
            (0..5).map(|c| (c, 2)).collect::<Vec<_>>()
        );
        assert_ne!(run.server.params(2).session, before);
        let r = run.finish();
        assert_eq!(r.interrupted, vec![2]);
        assert_eq!(r.rounds.len(), whole.rounds.len());
        assert_eq!(
            r.rounds.iter().map(|m| m.round).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(r.weights.len(), whole.weights.len());
        assert_eq!(r.total_rows, whole.total_rows);
        assert!(r.rounds.iter().all(|m| m.clients == 5));
        let acc = r.rounds.last().unwrap().eval_accuracy.unwrap();
        assert!(acc > 0.85, "{acc}");
    }

    /// Under DP the interrupted round is charged as the worst release it could have been, not
    /// run again. With secure aggregation that is a sum over the threshold's 4 of 5 clients: the
    /// job goes on with round 3, and the tight budget then cannot pay for round 4, which is not
    /// released. Without it a single client's update could have been seen: the charge alone is
    /// more than the budget, and the job stops at once. ε never exceeds the budget.
    #[test]
    fn a_restart_under_dp_charges_the_interrupted_round() {
        let (datasets, eval) = data();
        let mut run = Run::start(job(Some(8.0), true, &eval), &datasets);
        run.until(2, 1);
        let cp = run.server.checkpoint().unwrap();
        let sigma = cp.sigma.unwrap();
        run.restart(&cp);
        assert_eq!(
            begins(&run.queue),
            (0..5).map(|c| (c, 3)).collect::<Vec<_>>()
        );
        let r = run.finish();
        assert_eq!(r.interrupted, vec![2]);
        assert!(r.stopped_early.is_some(), "{r:?}");
        let p = r.privacy.unwrap();
        assert_eq!(
            p.ledger.entries.iter().map(|e| e.round).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(p.ledger.entries[1].sigma, effective_sigma(sigma, 5, 4));
        assert!(p.epsilon_spent <= 8.0 + 1e-9, "{p:?}");
        assert_eq!(
            r.rounds.iter().map(|m| m.round).collect::<Vec<_>>(),
            vec![1, 3]
        );

        let mut run = Run::start(job(Some(8.0), false, &eval), &datasets);
        run.until(2, 1);
        let cp = run.server.checkpoint().unwrap();
        let (server, out) = Server::resume(cp, run.now).unwrap();
        assert!(out.iter().all(|o| matches!(o.msg, ToClient::End { .. })));
        let JobState::Done(r) = server.state() else {
            panic!("{:?}", server.state())
        };
        assert!(r.stopped_early.is_some(), "{r:?}");
        let p = r.privacy.as_ref().unwrap();
        assert_eq!(p.ledger.entries.len(), 1);
        assert!(p.epsilon_spent <= 8.0 + 1e-9, "{p:?}");
    }

    /// Under DP a restart in the last round completes the job at once with the weights of the
    /// checkpoint; here the tight budget cannot pay for the interrupted round's worst case, so
    /// it says it stopped early; a ledger with room charges it and completes plainly.
    #[test]
    fn a_restart_in_the_last_dp_round_completes_the_job() {
        let (datasets, eval) = data();
        let mut run = Run::start(job(Some(8.0), true, &eval), &datasets);
        run.until(4, 3);
        let cp = run.server.checkpoint().unwrap();
        let (server, out) = Server::resume(cp.clone(), run.now).unwrap();
        assert!(
            out.iter().all(|o| matches!(o.msg, ToClient::End { .. })),
            "{out:?}"
        );
        assert_eq!(out.len(), 5);
        let JobState::Done(r) = server.state() else {
            panic!("{:?}", server.state())
        };
        assert_eq!(r.weights, cp.weights);
        assert_eq!(r.interrupted, vec![4]);
        assert_eq!(r.rounds.len(), 3);
        assert_eq!(r.privacy.as_ref().unwrap().ledger.entries.len(), 3);
        assert!(r.stopped_early.is_some());
        assert!(server.checkpoint().is_none());

        let mut rich = cp.clone();
        rich.ledger.as_mut().unwrap().budget = 100.0;
        let (server, _) = Server::resume(rich, run.now).unwrap();
        let JobState::Done(r) = server.state() else {
            panic!("{:?}", server.state())
        };
        assert_eq!(r.privacy.as_ref().unwrap().ledger.entries.len(), 4);
        assert_eq!(r.stopped_early, None);

        let mut poor = cp;
        let ledger = poor.ledger.as_mut().unwrap();
        ledger.budget = ledger.spent().unwrap();
        let (server, _) = Server::resume(poor, run.now).unwrap();
        let JobState::Done(r) = server.state() else {
            panic!("{:?}", server.state())
        };
        assert!(
            r.stopped_early
                .as_deref()
                .is_some_and(|s| s.contains("round 4 was interrupted")),
            "{r:?}"
        );
        assert_eq!(r.privacy.as_ref().unwrap().ledger.entries.len(), 3);
    }

    /// A checkpoint taken at any moment of a job resumes (round 0 begins again; a second resume
    /// changes the session again); a checkpoint that does not hold together is refused; a
    /// finished or failed job has none.
    #[test]
    fn every_checkpoint_resumes_and_ended_jobs_have_none() {
        let (datasets, eval) = data();
        let mut run = Run::start(job(Some(8.0), true, &eval), &datasets);
        let mut seen = BTreeSet::new();
        while let Some(round) = run.round() {
            let cp = run.server.checkpoint().unwrap();
            assert_eq!(cp.round, round);
            seen.insert(round);
            if Server::resume(cp, run.now).is_err() {
                panic!("refused a checkpoint of round {round}");
            }
            run.step();
        }
        assert_eq!(seen, (0..=4).collect());
        assert!(run.server.checkpoint().is_none());

        // Round 0 begins again, and every resume moves the session on.
        let mut run = Run::start(job(None, true, &eval), &datasets);
        run.until(0, 2);
        let first = run.server.params(0).session;
        run.restart(&run.server.checkpoint().unwrap());
        assert_eq!(begins(&run.queue).len(), 5);
        let second = run.server.params(0).session;
        run.until(0, 9);
        run.restart(&run.server.checkpoint().unwrap());
        assert!(run.server.params(0).session != first && run.server.params(0).session != second);
        let r = run.finish();
        assert_eq!(r.interrupted, vec![0, 0]);
        assert_eq!(r.rounds.len(), 4);

        // Refused: inconsistent checkpoints.
        let run = Run::start(job(None, true, &eval), &datasets);
        let cp = run.server.checkpoint().unwrap();
        let mut bad = cp.clone();
        bad.weights.pop();
        assert!(Server::resume(bad, 0).is_err());
        let mut bad = cp.clone();
        bad.round = 5;
        assert!(Server::resume(bad, 0).is_err());
        let mut bad = cp;
        bad.round = 1;
        assert!(Server::resume(bad, 0).is_err(), "no statistics yet");

        // Failed: nobody answers.
        let mut run = Run::start(job(None, true, &eval), &datasets);
        run.queue = run.server.tick(1_000_000);
        assert!(matches!(run.server.state(), JobState::Failed(_)));
        assert!(run.server.checkpoint().is_none());
    }
}
