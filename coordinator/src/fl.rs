//! The federated driver: runs `federated_learning` tasks for the core.
//!
//! The scheduler keeps these tasks (persistence, status, notifications, queue timeout) but never
//! places them. The driver starts a waiting task once `min_nodes` online, accepting, trusted
//! nodes advertise its data set, runs an [`ambient_fl::server::Server`] per task, relays its
//! messages as [`Control::Fl`] on each client's control topic, feeds it the clients'
//! [`ambient_protocol::AgentEvent::Fl`] answers, and turns its progress and end into task
//! updates. Jobs live in memory: a coordinator restart fails the running ones, with that reason.

use std::collections::HashMap;

use ambient_fl::ClientId;
use ambient_fl::server::{JobState, Outgoing, Server};
use ambient_fl::wire::{JobSpec, ToServer};
use ambient_protocol::{Control, NodeState, PROTOCOL_VERSION};
use chrono::{DateTime, Utc};
use rand::seq::SliceRandom as _;
use tracing::{info, warn};
use uuid::Uuid;

use crate::scheduler::{Outbound, Scheduler};

/// One running job.
struct Job {
    server: Server,
    /// Client id → node.
    nodes: Vec<String>,
}

/// Every running federated job.
#[derive(Default)]
pub struct FlDriver {
    jobs: HashMap<Uuid, Job>,
    /// Client messages refused (late, duplicate, wrong length, strangers), for metrics.
    pub refused: u64,
}

fn millis(now: DateTime<Utc>) -> u64 {
    now.timestamp_millis().max(0) as u64
}

impl FlDriver {
    /// Fails the jobs a previous coordinator process was running: their state was in memory.
    pub fn recover(&mut self, sched: &mut Scheduler, now: DateTime<Utc>) {
        for id in sched.fl_running() {
            sched.fl_finish(
                id,
                Err(
                    "the coordinator restarted during the job; federated jobs do not survive a \
                     restart yet: submit it again"
                        .into(),
                ),
                now,
            );
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
                    send(sched, id, &job.nodes, out);
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
                sched.fl_finish(id, Err(format!("federated_learning inputs: {e}")), now);
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
                self.jobs.insert(id, Job { server, nodes });
                self.relay(sched, id, out, now);
            }
            Err(e) => sched.fl_finish(id, Err(e.to_string()), now),
        }
    }

    /// Sends a job's messages and turns its state into task updates.
    fn relay(&mut self, sched: &mut Scheduler, id: Uuid, out: Vec<Outgoing>, now: DateTime<Utc>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        send(sched, id, &job.nodes, out);
        match job.server.state() {
            JobState::Running { round, .. } => sched.fl_progress(id, *round, now),
            JobState::Done(result) => {
                let value = serde_json::json!({
                    "output": result,
                    "nodes": job.nodes,
                });
                info!(task_id = %id, "Federated job done.");
                sched.fl_finish(id, Ok(value), now);
                self.jobs.remove(&id);
            }
            JobState::Failed(why) => {
                warn!(task_id = %id, reason = %why, "Federated job failed.");
                sched.fl_finish(id, Err(why.clone()), now);
                self.jobs.remove(&id);
            }
        }
    }
}

fn send(sched: &mut Scheduler, id: Uuid, nodes: &[String], out: Vec<Outgoing>) {
    for Outgoing { to, msg } in out {
        let Some(node) = nodes.get(to as usize) else {
            continue;
        };
        sched.send(Outbound::Control {
            node: node.clone(),
            control: Control::Fl {
                v: PROTOCOL_VERSION,
                task_id: id,
                msg: serde_json::to_value(&msg).unwrap_or_default(),
            },
        });
    }
}
