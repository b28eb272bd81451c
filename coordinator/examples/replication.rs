//! The compute cost of adaptive replication over 1,000 tasks, measured on the coordinator's own
//! scheduler (the state machine the core runs, driven here without a broker). Prints a Markdown
//! table.
//!
//! `cargo run --release --locked -p ambient-coordinator --example replication`
//!
//! Ten nodes answer `wasm_execution` tasks submitted with `min_nodes` 2 or 3. Every replica the
//! scheduler dispatches is counted: that is the compute spent. The peer is plain replication
//! (every task on `min_nodes` nodes, BOINC without adaptive replication). Scenarios: all nodes
//! honest; two nodes that always lie (they never earn trust); two "sleepers" that answer
//! honestly but lie on 10 % of tasks, which is what adaptive replication trades away: a lie on a
//! task that went to one trusted node is accepted unless the task is spot-checked.

use ambient_coordinator::scheduler::{Outbound, Scheduler, SchedulerSettings, TaskRecord};
use ambient_protocol::testkit::{HealthBuilder, finished_success};
use ambient_protocol::{AgentEvent, Health, Requirements, TaskStatus, TaskType};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

const NODES: usize = 10;
const TASKS: usize = 1000;
const BATCH: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Node {
    Honest,
    Liar,
    Sleeper,
}

/// An idle node of 4 CPUs that runs 4 `wasm_execution` tasks at once.
fn health(node: &str, now: DateTime<Utc>) -> Health {
    HealthBuilder::new(node, now).slots(4).build()
}

/// A node's answer: `out` as its JSON output.
fn answer(task_id: Uuid, attempt: u32, out: &str) -> AgentEvent {
    finished_success(task_id, attempt, serde_json::json!(out))
}

/// Runs 1,000 tasks; returns (replicas dispatched, wrong results accepted, tasks failed).
fn run(kinds: &[Node], min_nodes: u32) -> (usize, usize, usize) {
    let settings = SchedulerSettings {
        lease_grace: Duration::seconds(10),
        max_retries: 4,
        queue_timeout: Duration::seconds(600),
        health_timeout: Duration::seconds(3600),
        min_free_memory_bytes: 64 << 20,
    };
    let mut s = Scheduler::new(settings, vec![], vec![]);
    let start = Utc::now();
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
    for n in &names {
        s.on_health(health(n, start), start);
    }
    let (mut dispatched, mut wrong, mut failed) = (0, 0, 0);
    let mut step = 0;
    for _ in 0..TASKS / BATCH {
        for _ in 0..BATCH {
            let now = start + Duration::milliseconds(step);
            let task = TaskRecord::new(
                Uuid::new_v4(),
                "bench".into(),
                TaskType::WasmExecution,
                serde_json::json!({}),
                Requirements {
                    min_nodes,
                    max_execution_time_sec: 30,
                    ..Requirements::default()
                },
                Some("ab".repeat(32)),
                now,
            );
            s.submit(task, now);
        }
        loop {
            step += 1;
            let now = start + Duration::milliseconds(step);
            let effects = s.take_effects();
            for t in effects.tasks.iter().filter(|t| t.status.is_terminal()) {
                match t.status {
                    TaskStatus::Completed => {
                        if t.result.as_ref().is_some_and(|r| r["output"] != "right") {
                            wrong += 1;
                        }
                    }
                    _ => failed += 1,
                }
            }
            let work: Vec<(String, Uuid, u32)> = effects
                .publish
                .into_iter()
                .filter_map(|o| match o {
                    Outbound::Dispatch { node, assignment } => {
                        Some((node, assignment.task_id, assignment.attempt))
                    }
                    _ => None,
                })
                .collect();
            if work.is_empty() && s.active_tasks() == 0 {
                break;
            }
            dispatched += work.len();
            for (node, task_id, attempt) in work {
                let i = names.iter().position(|n| *n == node).unwrap_or(0);
                // A sleeper lies on about 10 % of tasks, chosen by the task's random id.
                let lies = match kinds[i] {
                    Node::Honest => false,
                    Node::Liar => true,
                    Node::Sleeper => task_id.as_bytes()[7] < 26,
                };
                let out = if lies { "wrong" } else { "right" };
                s.on_agent_event(&node, answer(task_id, attempt, out), now);
            }
            s.tick(now);
        }
    }
    (dispatched, wrong, failed)
}

fn main() {
    let honest = vec![Node::Honest; NODES];
    let mut liars = honest.clone();
    liars[..2].fill(Node::Liar);
    let mut sleepers = honest.clone();
    sleepers[..2].fill(Node::Sleeper);
    println!(
        "| Scenario | min_nodes | Replicas for {TASKS} tasks | Per task | Plain replication (peer) | Compute saved | Wrong results accepted | Failed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, kinds) in [
        ("10 honest", &honest),
        ("8 honest + 2 liars", &liars),
        ("8 honest + 2 sleepers (lie 10 %)", &sleepers),
    ] {
        for min_nodes in [2, 3] {
            let (dispatched, wrong, failed) = run(kinds, min_nodes);
            let per_task = dispatched as f64 / TASKS as f64;
            println!(
                "| {name} | {min_nodes} | {dispatched} | {per_task:.2} | {min_nodes}.00 | {:.0} % | {wrong} | {failed} |",
                100.0 * (1.0 - per_task / min_nodes as f64)
            );
        }
    }
}
