//! Credits through the real scheduler and a real SQLite store: random sequences of submissions,
//! results (agreeing, disagreeing, failing), duplicates of results already recorded, cancels,
//! nodes going away, time passing (leases and queues running out) and crashes (the scheduler
//! dropped with changes not yet written, then restarted from the store). After every step the
//! ledger in the store must pass the audit, and the restarted book must agree with it.

use ambient_protocol::credits::Audit;
use ambient_protocol::testkit::HealthBuilder;
use ambient_protocol::{Outcome, Requirements, TaskResult, TaskType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::credits::{Book, Prices};
use crate::store::{Batch, LedgerFilter, Location, Store};

const GRANT: i64 = 50_000_000;
const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        lease_grace: Duration::seconds(5),
        max_retries: 2,
        queue_timeout: Duration::seconds(40),
        health_timeout: Duration::seconds(30),
        min_free_memory_bytes: 0,
    }
}

/// The scheduler as a coordinator starts it to lead: from the store, with the bootstrap
/// submitter's opening grant (given once).
async fn restart(store: &Store, now: DateTime<Utc>) -> Scheduler {
    let (tasks, nodes) = store.load_active().await.unwrap();
    let mut book = Book::new(Prices::default(), store.credit_snapshot().await.unwrap());
    book.open("acme", GRANT, now);
    Scheduler::new(settings(), tasks, nodes).with_book(book)
}

async fn flush(s: &mut Scheduler, store: &Store) {
    let e = s.take_effects();
    store
        .save(Batch {
            tasks: e.tasks,
            nodes: e.nodes,
            events: e.reputation,
            checkpoints: e.fl_checkpoints,
            postings: e.postings,
            fence: None,
        })
        .await
        .unwrap();
}

/// The answer a node gives: the right one, a wrong one, or a trap.
fn answer(task_id: Uuid, attempt: u32, rng: &mut StdRng) -> AgentEvent {
    let outcome = match rng.random_range(0..10) {
        0 => Outcome::Success {
            output: serde_json::json!("wrong"),
            output_sha256: "bad".into(),
        },
        1 => Outcome::Failure {
            kind: ambient_protocol::FailureKind::from_wire("trap"),
            message: "unreachable".into(),
        },
        _ => Outcome::Success {
            output: serde_json::json!("right"),
            output_sha256: "good".into(),
        },
    };
    AgentEvent::Finished {
        result: TaskResult {
            task_id,
            attempt,
            outcome,
            duration_ms: 3,
            // Deterministic per task, as fuel is: honest replicas agree.
            fuel_consumed: Some(u64::from(task_id.as_bytes()[0]) * 1_000_000),
            macs: None,
            engine: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_hold_over_random_sequences_with_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut all_crashes, mut settled, mut paying) = (0, 0, 0);
    for seed in 0..12u64 {
        let store = Store::open(&Location::File(dir.path().join(format!("{seed}.db"))))
            .await
            .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut s = restart(&store, now).await;
        let mut sent: Vec<AgentEvent> = Vec::new();
        let mut crashes = 0;
        for _ in 0..150 {
            now += Duration::milliseconds(rng.random_range(0..3000));
            match rng.random_range(0..20) {
                0..=3 => {
                    // From the seeded generator, so that a seed is one sequence: the tasks'
                    // order (and which replica a node answers) follows their ids.
                    let mut task = TaskRecord::new(
                        Uuid::from_u128(rng.random()),
                        "acme".into(),
                        TaskType::WasmExecution,
                        serde_json::json!({}),
                        Requirements {
                            min_nodes: rng.random_range(1..=3),
                            max_execution_time_sec: rng.random_range(1..=10),
                            ..Requirements::default()
                        },
                        Some("ab".repeat(32)),
                        now,
                    );
                    if s.reserve(&mut task, 0, now).is_ok() {
                        s.submit(task, now);
                    }
                }
                4..=10 => {
                    // A node answers one of the replicas it holds.
                    let held: Vec<(Uuid, u32, String)> = s
                        .tasks
                        .values()
                        .flat_map(|t| t.active().map(|a| (t.id, a.attempt, a.node_id.clone())))
                        .collect();
                    if !held.is_empty() {
                        let (task, attempt, node) = &held[rng.random_range(0..held.len())];
                        let ev = answer(*task, *attempt, &mut rng);
                        sent.push(ev.clone());
                        s.on_agent_event(node, ev, now);
                    }
                }
                11..=12 if !sent.is_empty() => {
                    // A result sent again (QoS 1 redelivery, or a retry after a lost ack).
                    let ev = sent[rng.random_range(0..sent.len())].clone();
                    if let AgentEvent::Finished { result } = &ev {
                        let node = s.task(&result.task_id).and_then(|t| {
                            t.assignments
                                .iter()
                                .find(|a| a.attempt == result.attempt)
                                .map(|a| a.node_id.clone())
                        });
                        if let Some(node) = node {
                            s.on_agent_event(&node, ev, now);
                        }
                    }
                }
                13 => {
                    let ids: Vec<Uuid> = s.tasks.keys().copied().collect();
                    if !ids.is_empty() {
                        let _ = s.cancel(ids[rng.random_range(0..ids.len())], "acme", now);
                    }
                }
                14 => s.on_status(NODES[rng.random_range(0..4)], NodeState::Offline, now),
                15 => {
                    // A crash: what was not written is lost; the scheduler starts from the store.
                    drop(s.take_effects());
                    s = restart(&store, now).await;
                    crashes += 1;
                    continue;
                }
                _ => now += Duration::seconds(rng.random_range(1..20)),
            }
            for node in NODES {
                if rng.random_bool(0.5) {
                    s.on_health(HealthBuilder::new(node, now).cpu(10.0, 4).build(), now);
                }
            }
            s.tick(now);
            flush(&mut s, &store).await;
            let entries = store.ledger(LedgerFilter::All, 0, 100_000).await.unwrap();
            let audit = Audit::of(&entries);
            assert_eq!(audit.faults(), 0, "seed {seed}: {audit:?}");
            let written = store.credit_snapshot().await.unwrap();
            assert_eq!(
                written.balances.get("acme").copied().unwrap_or(0),
                s.book().balance("acme"),
                "seed {seed}: the book and the ledger differ"
            );
        }
        // Time runs out for everything still waiting: every task ends, every escrow closes, and
        // what acme has plus what it spent is what it was granted.
        for _ in 0..10 {
            now += Duration::seconds(60);
            s.tick(now);
            flush(&mut s, &store).await;
        }
        let end = store.credit_snapshot().await.unwrap();
        assert!(s.tasks.is_empty(), "seed {seed}: tasks left");
        assert!(
            end.escrows.is_empty(),
            "seed {seed}: open escrows {:?}",
            end.escrows
        );
        let spent = end.spent.get("acme").copied().unwrap_or(0);
        assert_eq!(end.balances["acme"] + spent, GRANT, "seed {seed}");
        let entries = store.ledger(LedgerFilter::All, 0, 100_000).await.unwrap();
        let audit = Audit::of(&entries);
        assert_eq!(audit.charged, spent, "seed {seed}");
        // A sequence may pay for nothing (every completion lost to a crash or a wrong answer:
        // node choice is random too); across the seeds, most pay.
        paying += usize::from(audit.charged > 0);
        all_crashes += crashes;
        settled += entries.iter().filter(|e| e.kind == "release").count();
    }
    eprintln!(
        "{all_crashes} crashes, {settled} tasks settled with a release, {paying} of 12 seeds \
         paid for work"
    );
    assert!(
        all_crashes >= 12 && settled >= 100 && paying >= 9,
        "{all_crashes} crashes, {settled} settled, {paying} of 12 seeds paid"
    );
}
