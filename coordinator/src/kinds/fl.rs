//! `federated_learning` tasks: the submission check, and the federated driver that runs them
//! for the engine.
//!
//! In this crate a *job* is one federated training run: an [`ambient_fl::server::Server`] with
//! its clients, driven here for one `federated_learning` task (as [`JobSpec`] and [`JobState`] in
//! `ambient_fl`). Nothing else is called a job.
//!
//! The scheduler keeps these tasks (persistence, status, notifications, queue timeout) but never
//! places them. The driver starts a waiting task once `min_nodes` online, accepting, trusted
//! nodes advertise its data set, runs an [`ambient_fl::server::Server`] per task, relays its
//! messages as [`Control::Fl`] on each client's control topic, feeds it the clients'
//! [`ambient_protocol::AgentEvent::Fl`] answers, and turns its progress and end into task
//! updates.
//!
//! Each time a job's round changes, its [`Checkpoint`] is written with the task record, before
//! the round's messages go out. After a restart the driver resumes every running job from its
//! checkpoint ([`Server::resume`] says how the interrupted round is treated) and saves the new
//! checkpoint at once, so a second restart never reuses a session.
//!
//! Clients sign their secure-aggregation keys with their node identity; keys whose signature
//! does not verify (forged, or left over from before a restart) are refused here, so the client
//! is dropped at the deadline unless good keys follow. Models larger than
//! [`INLINE_WEIGHTS_MAX`] parameters travel as a blob, which the clients download: the driver
//! queues [`BlobChange`]s, which the engine applies with [`crate::artifacts::Artifacts`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ambient_fl::ClientId;
use ambient_fl::secagg::AdvertisedKeys;
use ambient_fl::server::{Checkpoint, JobState, Outgoing, Server};
use ambient_fl::wire::{JobSpec, ToClient, ToServer};
use ambient_protocol::identity::{IdentityCheck, KeyDirectory};
use ambient_protocol::wire::weights_to_blob;
use ambient_protocol::{Control, NodeState};
use chrono::{DateTime, Utc};
use rand::seq::SliceRandom as _;
use tracing::{info, warn};
use uuid::Uuid;

use crate::artifacts::BlobChange;
use crate::scheduler::fl::FlOutcome;
use crate::scheduler::{Outbound, Scheduler};
use crate::submission::{Accepted, SubmitError};

/// Checks a `federated_learning` submission beyond its shape (which `submission::schema`
/// checked: no module, no GPU, the job's fields): its privacy budget, client count and
/// hyper-parameters.
pub(crate) fn check(accepted: &mut Accepted) -> Result<(), SubmitError> {
    let submission = &accepted.submission;
    let job: JobSpec = serde_json::from_value(submission.inputs.clone())
        .map_err(|e| SubmitError::InvalidInputs(format!("federated_learning inputs: {e}")))?;
    // A budget that cannot be met, too few clients, bad hyper-parameters: refused now.
    ambient_fl::server::check_job(&job, submission.requirements.min_nodes as usize)
        .map_err(|e| SubmitError::InvalidInputs(format!("federated_learning: {e}")))?;
    accepted.eval_features = ambient_fl::server::eval_features(&job)
        .map_err(|e| SubmitError::InvalidInputs(format!("federated_learning: {e}")))?;
    accepted.submission.inputs =
        serde_json::to_value(&job).map_err(|e| SubmitError::InvalidInputs(e.to_string()))?;
    Ok(())
}

/// Checks a `federated_learning` submission's evaluation set (its feature count, read by
/// [`check`]) against the feature counts of the online nodes that hold its data set, so that a
/// wrong number of columns is refused at submission rather than when the job starts. With no
/// holder online there is nothing to check against yet; the job's start checks again.
pub(crate) fn check_against_holders(
    accepted: &Accepted,
    sched: &Scheduler,
    now: DateTime<Utc>,
) -> Result<(), SubmitError> {
    let Some(eval) = accepted.eval_features else {
        return Ok(());
    };
    let dataset = accepted.submission.inputs["dataset"]
        .as_str()
        .unwrap_or_default();
    let holders: BTreeSet<u32> = sched
        .node_infos(now)
        .into_iter()
        .filter(|n| n.state == NodeState::Online)
        .filter_map(|n| n.health)
        .flat_map(|h| h.datasets)
        .filter(|d| d.name == dataset)
        .map(|d| d.features)
        .collect();
    let holders: Vec<u32> = holders.into_iter().collect();
    ambient_fl::server::check_eval_features(eval, &holders)
        .map_err(|e| SubmitError::InvalidInputs(format!("federated_learning: {e}")))
}

/// One running job.
struct Job {
    server: Server,
    /// Client id → node.
    nodes: Vec<String>,
    /// The secure-aggregation session of the round in progress, which clients sign their keys
    /// for.
    session: Option<u64>,
    /// The round of the checkpoint last saved.
    saved_round: Option<u32>,
    /// After a restart that re-runs round r under secure aggregation: r, and the clients whose
    /// fresh keys (signed for the new session) have not arrived yet. Until they have, that
    /// client's messages for round r are left over from before the restart and are refused:
    /// a stale masked update would not cancel against the new masks.
    stale: Option<(u32, BTreeSet<ClientId>)>,
    /// The blob holding the current round's model, when it went by reference; forgotten when
    /// the next round's replaces it or the job ends.
    blob: Option<String>,
}

impl Job {
    fn new(server: Server, nodes: Vec<String>) -> Job {
        Job {
            server,
            nodes,
            session: None,
            saved_round: None,
            stale: None,
            blob: None,
        }
    }

    /// Ends the job here: its checkpoint and model blob go.
    fn forget(self, sched: &mut Scheduler, blobs: &mut Vec<BlobChange>, id: Uuid) {
        sched.fl_checkpoint(id, None);
        if let Some(sha256) = self.blob {
            blobs.push(BlobChange::Release { sha256 });
        }
    }
}

/// Every running federated job.
pub struct FlDriver {
    jobs: HashMap<Uuid, Job>,
    identities: Arc<KeyDirectory>,
    /// Checkpoints read at start, consumed by [`FlDriver::recover`].
    checkpoints: HashMap<Uuid, String>,
    /// Client messages refused (late, duplicate, wrong length, strangers, bad signatures), for
    /// metrics.
    pub refused: u64,
    /// Model blobs to store, adopt or release, in order, before the next messages go out.
    blobs: Vec<BlobChange>,
}

fn millis(now: DateTime<Utc>) -> u64 {
    now.timestamp_millis().max(0) as u64
}

impl FlDriver {
    /// A driver that checks clients' signed keys against `identities`, and resumes running jobs
    /// from `checkpoints` (JSON, by task, as the store keeps them).
    pub fn new(identities: Arc<KeyDirectory>, checkpoints: Vec<(Uuid, String)>) -> FlDriver {
        FlDriver {
            jobs: HashMap::new(),
            identities,
            checkpoints: checkpoints.into_iter().collect(),
            refused: 0,
            blobs: Vec::new(),
        }
    }

    /// Takes the blob changes queued since the last take. The engine stores and adopts blobs
    /// before it publishes the messages that name them, and releases blobs after.
    pub fn take_blob_changes(&mut self) -> Vec<BlobChange> {
        std::mem::take(&mut self.blobs)
    }

    /// Resumes the jobs a previous coordinator process was running, from their checkpoints.
    pub fn recover(&mut self, sched: &mut Scheduler, now: DateTime<Utc>) {
        let mut checkpoints = std::mem::take(&mut self.checkpoints);
        for id in sched.fl_running() {
            let nodes = sched
                .task(&id)
                .and_then(|t| t.federated())
                .map(|f| f.clients.clone())
                .unwrap_or_default();
            let resumed = checkpoints
                .remove(&id)
                .ok_or_else(|| "no checkpoint was saved".to_string())
                .and_then(|cp| serde_json::from_str::<Checkpoint>(&cp).map_err(|e| e.to_string()))
                .and_then(|cp| {
                    let interrupted = cp.round;
                    // The model the job was sending when the coordinator stopped, if by blob.
                    let blob = (cp.weights.len() > INLINE_WEIGHTS_MAX)
                        .then(|| ambient_protocol::sha256_hex(&weights_to_blob(&cp.weights)));
                    Server::resume(cp, millis(now))
                        .map(|(server, out)| (interrupted, blob, server, out))
                        .map_err(|e| e.to_string())
                });
            match resumed {
                Ok((interrupted, blob, server, out)) => {
                    info!(task_id = %id, clients = ?nodes, round = interrupted,
                          "Federated job resumed after a restart.");
                    let rerun = match server.state() {
                        JobState::Running { round, .. } => *round == interrupted,
                        _ => false,
                    };
                    let secure = out.iter().any(
                        |o| matches!(&o.msg, ToClient::Begin { secagg, .. } if secagg.is_some()),
                    );
                    let mut job = Job::new(server, nodes);
                    if rerun && secure {
                        job.stale = Some((interrupted, job.server.alive().clone()));
                    }
                    if let Some(sha256) = blob {
                        self.blobs.push(BlobChange::Adopt {
                            sha256: sha256.clone(),
                        });
                        job.blob = Some(sha256);
                    }
                    self.jobs.insert(id, job);
                    self.relay(sched, id, out, now);
                }
                Err(why) => sched.fl_finish(
                    id,
                    FlOutcome::Failed(format!(
                        "the coordinator restarted during the job and could not resume it: {why}"
                    )),
                    now,
                ),
            }
        }
        // Checkpoints of jobs that ended (their deletion was not written): drop them.
        for id in checkpoints.into_keys() {
            sched.fl_checkpoint(id, None);
        }
    }

    /// Starts waiting tasks whose clients are available, advances deadlines, and drops jobs
    /// whose task ended elsewhere (cancelled).
    pub fn tick(&mut self, sched: &mut Scheduler, now: DateTime<Utc>) {
        for id in sched.fl_waiting() {
            self.try_start(sched, id, now);
        }
        let ids: Vec<Uuid> = self.jobs.keys().copied().collect();
        for id in ids {
            let active = sched.task(&id).is_some_and(|t| !t.status.is_terminal());
            if !active {
                if let Some(job) = self.jobs.remove(&id) {
                    let out = job.server.end_messages("the task was cancelled");
                    send(sched, &mut self.blobs, id, &job.nodes, out);
                    job.forget(sched, &mut self.blobs, id);
                }
                continue;
            }
            let out = match self.jobs.get_mut(&id) {
                Some(job) => job.server.tick(millis(now)),
                None => continue,
            };
            self.relay(sched, id, out, now);
        }
    }

    /// A client's message.
    pub fn on_message(
        &mut self,
        sched: &mut Scheduler,
        node: &str,
        task_id: Uuid,
        msg: serde_json::Value,
        now: DateTime<Utc>,
    ) {
        let Some(job) = self.jobs.get_mut(&task_id) else {
            self.refused += 1;
            warn!(task_id = %task_id, node = %node, "Federated message for no running job; refused.");
            return;
        };
        let Some(client) = job.nodes.iter().position(|n| n == node) else {
            self.refused += 1;
            warn!(task_id = %task_id, node = %node, "Federated message from a node that is not a client of this job; refused.");
            return;
        };
        let msg: ToServer = match serde_json::from_value(msg) {
            Ok(m) => m,
            Err(e) => {
                self.refused += 1;
                warn!(task_id = %task_id, node = %node, error = %e, "Malformed federated message; refused.");
                return;
            }
        };
        // Keys that peers would refuse never reach the roster, so one bad client (or keys left
        // over from before a restart) cannot make every honest client abandon the round.
        if let ToServer::Keys { keys, .. } = &msg
            && let Err(why) = check_keys(&self.identities, node, job.session, keys)
        {
            self.refused += 1;
            warn!(task_id = %task_id, node = %node, reason = %why, "Federated keys refused.");
            return;
        }
        if let Some((round, waiting)) = job.stale.as_mut()
            && msg.round() == *round
            && waiting.contains(&(client as ClientId))
        {
            if matches!(msg, ToServer::Keys { .. }) {
                waiting.remove(&(client as ClientId)); // signed for the new session (checked above)
            } else {
                self.refused += 1;
                warn!(task_id = %task_id, node = %node, "Federated message from before the restart; refused.");
                return;
            }
        }
        let (out, r) = job.server.handle(client as ClientId, msg, millis(now));
        if let Err(refusal) = r {
            self.refused += 1;
            warn!(task_id = %task_id, node = %node, reason = %refusal, "Federated message refused.");
        }
        self.relay(sched, task_id, out, now);
    }

    fn try_start(&mut self, sched: &mut Scheduler, id: Uuid, now: DateTime<Utc>) {
        let Some(task) = sched.task(&id) else {
            return;
        };
        let n = task.requirements.min_nodes as usize;
        let job: JobSpec = match serde_json::from_value(task.inputs.clone()) {
            Ok(j) => j,
            Err(e) => {
                sched.fl_finish(
                    id,
                    FlOutcome::Failed(format!("federated_learning inputs: {e}")),
                    now,
                );
                return;
            }
        };
        // Online, accepting, trusted nodes that hold the data set, grouped by feature count.
        let mut holders: HashMap<u32, Vec<String>> = HashMap::new();
        let busy: Vec<&String> = self.jobs.values().flat_map(|j| j.nodes.iter()).collect();
        for node in sched.node_infos(now) {
            let Some(h) = node.health.as_ref() else {
                continue;
            };
            if node.state != NodeState::Online
                || !h.accepting
                || !node.reputation.trusted
                || busy.contains(&&node.node_id)
            {
                continue;
            }
            if let Some(d) = h.datasets.iter().find(|d| d.name == job.dataset) {
                holders
                    .entry(d.features)
                    .or_default()
                    .push(node.node_id.clone());
            }
        }
        let Some((features, mut nodes)) = holders.into_iter().max_by_key(|(_, v)| v.len()) else {
            sched.fl_waiting_reason(
                id,
                format!(
                    "waiting for {n} online nodes holding data set {:?}; none now",
                    job.dataset
                ),
                now,
            );
            return;
        };
        if nodes.len() < n {
            sched.fl_waiting_reason(
                id,
                format!(
                    "waiting for {n} online nodes holding data set {:?}; {} now",
                    job.dataset,
                    nodes.len()
                ),
                now,
            );
            return;
        }
        nodes.shuffle(&mut rand::rng());
        nodes.truncate(n);
        let session = u64::from_le_bytes(id.as_bytes()[..8].try_into().unwrap_or_default());
        let rounds = job.rounds;
        match Server::start(job, features as usize, n, session, millis(now)) {
            Ok((server, out)) => {
                info!(task_id = %id, clients = ?nodes, "Federated job started.");
                sched.fl_started(id, nodes.clone(), rounds + 1, now);
                self.jobs.insert(id, Job::new(server, nodes));
                self.relay(sched, id, out, now);
            }
            Err(e) => sched.fl_finish(id, FlOutcome::Failed(e.to_string()), now),
        }
    }

    /// Sends a job's messages and turns its state into task updates.
    fn relay(&mut self, sched: &mut Scheduler, id: Uuid, out: Vec<Outgoing>, now: DateTime<Utc>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(params) = out.iter().find_map(|o| match &o.msg {
            ToClient::Begin { secagg, .. } => secagg.as_ref(),
            _ => None,
        }) {
            job.session = Some(params.session);
        }
        // The checkpoint of a new round is written before the round's messages go out.
        if let JobState::Running { round, .. } = job.server.state()
            && job.saved_round != Some(*round)
            && let Some(cp) = job.server.checkpoint()
        {
            match serde_json::to_string(&cp) {
                Ok(json) => {
                    sched.fl_checkpoint(id, Some(json));
                    job.saved_round = Some(*round);
                }
                Err(e) => {
                    warn!(task_id = %id, error = %e, "Could not encode a federated checkpoint.")
                }
            }
        }
        // Each store of a model counts once, each forget once: two jobs (or two rounds) with the
        // same weights share the blob, which goes when the last lets it go.
        if let Some(new) = send(sched, &mut self.blobs, id, &job.nodes, out)
            && let Some(old) = job.blob.replace(new)
        {
            self.blobs.push(BlobChange::Release { sha256: old });
        }
        let outcome = match job.server.state() {
            JobState::Running { round, .. } => {
                sched.fl_progress(id, *round, now);
                return;
            }
            JobState::Done(result) => {
                info!(task_id = %id, "Federated job done.");
                FlOutcome::Done(serde_json::json!({
                    "output": result,
                    "nodes": job.nodes,
                }))
            }
            JobState::Failed(why) => {
                warn!(task_id = %id, reason = %why, "Federated job failed.");
                FlOutcome::Failed(why.clone())
            }
        };
        sched.fl_finish(id, outcome, now);
        if let Some(job) = self.jobs.remove(&id) {
            job.forget(sched, &mut self.blobs, id);
        }
    }
}

/// Why a client's secure-aggregation keys were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysRefused {
    /// The keys carry no signature.
    #[error("its keys are not signed by its node identity")]
    Unsigned,
    /// The keys are signed in another node's name.
    #[error("its keys are signed by node {0}, not by itself")]
    OtherSigner(String),
    /// No round is collecting keys.
    #[error("no secure-aggregation round is in progress")]
    NoRound,
    /// The signature does not verify against the node's identity key.
    #[error(transparent)]
    BadSignature(#[from] IdentityCheck),
}

/// Checks that `node`'s round keys are signed by its published identity for this round.
fn check_keys(
    identities: &KeyDirectory,
    node: &str,
    session: Option<u64>,
    keys: &AdvertisedKeys,
) -> Result<(), KeysRefused> {
    let Some(s) = &keys.signature else {
        return Err(KeysRefused::Unsigned);
    };
    if s.node != node {
        return Err(KeysRefused::OtherSigner(s.node.clone()));
    }
    let session = session.ok_or(KeysRefused::NoRound)?;
    Ok(identities.verify(node, &keys.signed_message(session, node), &s.sig)?)
}

/// Models with more parameters than this go to clients as a blob, not inline in the message.
pub const INLINE_WEIGHTS_MAX: usize = 16_384;

/// Sends a job's messages; returns the blob its model went in, if it went by reference.
fn send(
    sched: &mut Scheduler,
    blobs: &mut Vec<BlobChange>,
    id: Uuid,
    nodes: &[String],
    out: Vec<Outgoing>,
) -> Option<String> {
    // Every `Begin` of a round carries the same weights: store them once.
    let mut stored: Option<(Vec<f32>, String)> = None;
    for Outgoing { to, mut msg } in out {
        let Some(node) = nodes.get(to as usize) else {
            continue;
        };
        let mut weights_blob = None;
        if let ToClient::Begin { weights, .. } = &mut msg
            && weights.len() > INLINE_WEIGHTS_MAX
        {
            let sha = match &stored {
                Some((w, sha)) if w == weights => sha.clone(),
                _ => {
                    let bytes = weights_to_blob(weights);
                    let sha = ambient_protocol::sha256_hex(&bytes);
                    blobs.push(BlobChange::Store {
                        sha256: sha.clone(),
                        bytes,
                    });
                    stored = Some((std::mem::take(weights), sha.clone()));
                    sha
                }
            };
            weights.clear();
            weights_blob = Some(sha);
        }
        sched.send(Outbound::Control {
            node: node.clone(),
            control: Control::Fl {
                task_id: id,
                msg: serde_json::to_value(&msg).unwrap_or_default(),
                weights_blob,
            },
        });
    }
    stored.map(|(_, sha)| sha)
}
