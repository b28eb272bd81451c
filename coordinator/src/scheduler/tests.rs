use super::*;
use crate::reputation::{EventKind, TRUST_THRESHOLD};
use ambient_protocol::testkit::{HealthBuilder, finished_success};
use ambient_protocol::{
    FailureKind, GpuInfo, Outcome, Progress, Requirements, TaskType, Temperature,
};

fn settings() -> SchedulerSettings {
    SchedulerSettings {
        lease_grace: Duration::seconds(10),
        max_retries: 2,
        queue_timeout: Duration::seconds(60),
        health_timeout: Duration::seconds(15),
        min_free_memory_bytes: 64 << 20,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn secs(n: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(n)
}

fn health(node: &str, cpu: f32) -> Health {
    HealthBuilder::new(node, t0()).cpu(cpu, 4).build()
}

fn task(min_nodes: u32) -> TaskRecord {
    TaskRecord::new(
        Uuid::new_v4(),
        "acme".into(),
        TaskType::WasmExecution,
        serde_json::json!({"x": 1}),
        Requirements {
            min_nodes,
            max_execution_time_sec: 30,
            ..Requirements::default()
        },
        Some("ab".repeat(32)),
        t0(),
    )
}

fn success(task_id: Uuid, attempt: u32, out: &str) -> AgentEvent {
    finished_success(task_id, attempt, serde_json::json!(out))
}

fn failure(task_id: Uuid, attempt: u32, kind: &str) -> AgentEvent {
    AgentEvent::Finished {
        result: TaskResult {
            task_id,
            attempt,
            outcome: Outcome::Failure {
                kind: FailureKind::from_wire(kind),
                message: format!("{kind} happened"),
            },
            duration_ms: 5,
            fuel_consumed: None,
            macs: None,
            engine: None,
        },
    }
}

fn dispatches(e: &Effects) -> Vec<(String, u32)> {
    e.publish
        .iter()
        .filter_map(|o| match o {
            Outbound::Dispatch { node, assignment } => Some((node.clone(), assignment.attempt)),
            _ => None,
        })
        .collect()
}

fn acks(e: &Effects) -> usize {
    e.publish
        .iter()
        .filter(|o| {
            matches!(
                o,
                Outbound::Control {
                    control: Control::ResultAck { .. },
                    ..
                }
            )
        })
        .count()
}

fn cancels(e: &Effects) -> Vec<(String, u32)> {
    e.publish
        .iter()
        .filter_map(|o| match o {
            Outbound::Control {
                node,
                control: Control::Cancel { attempt, .. },
            } => Some((node.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

fn persisted(e: &Effects, id: Uuid) -> TaskRecord {
    e.tasks
        .iter()
        .rev()
        .find(|t| t.id == id)
        .cloned()
        .expect("task persisted")
}

#[test]
fn no_node_means_pending_with_reason_then_expired() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    let e = s.take_effects();
    let rec = persisted(&e, id);
    assert_eq!(rec.status, TaskStatus::Pending);
    assert!(
        rec.status_reason
            .unwrap()
            .contains("no node has connected yet"),
        "reason must say why"
    );
    s.tick(secs(30));
    assert!(s.task(&id).is_some(), "not expired before the timeout");
    s.tick(secs(61));
    let e = s.take_effects();
    let rec = persisted(&e, id);
    assert_eq!(rec.status, TaskStatus::Expired);
    assert!(rec.error.unwrap().contains("no eligible node within 60 s"));
    assert!(s.task(&id).is_none());
}

#[test]
fn happy_path_with_duplicate_result() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 10.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("n1".to_string(), 1)]);
    assert_eq!(persisted(&e, id).status, TaskStatus::Assigned);

    s.on_agent_event(
        "n1",
        AgentEvent::Started {
            task_id: id,
            attempt: 1,
        },
        secs(1),
    );
    assert_eq!(persisted(&s.take_effects(), id).status, TaskStatus::Running);

    s.on_agent_event("n1", success(id, 1, "42"), secs(2));
    let e = s.take_effects();
    let rec = persisted(&e, id);
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.result.as_ref().unwrap()["output"], "42");
    assert_eq!(acks(&e), 1);

    // QoS1 redelivery: acknowledged again, recorded once.
    s.on_agent_event("n1", success(id, 1, "42"), secs(3));
    let e = s.take_effects();
    assert_eq!(acks(&e), 1);
    assert!(e.tasks.is_empty(), "a duplicate changes nothing");
}

#[test]
fn lease_expiry_reassigns_to_another_node() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    s.on_health(health("n2", 90.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    assert_eq!(dispatches(&s.take_effects()), vec![("n1".to_string(), 1)]);
    // Keep both nodes alive, let the lease (30 s + 10 s grace) run out.
    s.on_health(health("n1", 0.0), secs(35));
    s.on_health(health("n2", 90.0), secs(35));
    s.take_effects();
    s.tick(secs(41));
    let e = s.take_effects();
    assert_eq!(cancels(&e), vec![("n1".to_string(), 1)]);
    assert_eq!(dispatches(&e), vec![("n2".to_string(), 2)]);
    let rec = persisted(&e, id);
    assert_eq!(rec.assignments[0].state, AssignmentState::Expired);
    assert_eq!(rec.info().assigned_nodes, vec!["n1", "n2"]);
}

#[test]
fn offline_node_loses_its_work() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    s.on_health(health("n2", 50.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    s.take_effects();
    s.on_status("n1", NodeState::Offline, secs(1));
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("n2".to_string(), 2)]);
    assert_eq!(
        persisted(&e, id).assignments[0].state,
        AssignmentState::Lost
    );
    // A late result from the lost replica is acknowledged and may still settle the task.
    s.on_agent_event("n1", success(id, 1, "7"), secs(2));
    let e = s.take_effects();
    assert_eq!(acks(&e), 1);
    assert_eq!(persisted(&e, id).status, TaskStatus::Completed);
    assert_eq!(cancels(&e), vec![("n2".to_string(), 2)]);
}

/// Under churn every node may lose a replica of a task once: a node that lost one takes the task
/// again when no other can (after those that can), and still has one vote.
#[test]
fn a_node_that_lost_a_replica_may_take_the_task_again() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    s.on_health(health("n2", 50.0), t0());
    let t = task(2);
    let id = t.id;
    s.submit(t, t0());
    let sent = dispatches(&s.take_effects());
    assert_eq!(sent.len(), 2);
    let first = sent.iter().find(|(n, _)| n == "n1").expect("n1 has one").1;
    let other = sent.iter().find(|(n, _)| n == "n2").expect("n2 has one").1;
    s.on_status("n1", NodeState::Offline, secs(1));
    let e = s.take_effects();
    assert!(dispatches(&e).is_empty(), "n2 holds the other replica");
    s.on_health(health("n1", 0.0), secs(2));
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("n1".to_string(), 3)]);
    // The lost replica's late result and the new one are one vote: no quorum with n1 alone.
    s.on_agent_event("n1", success(id, first, "7"), secs(3));
    s.on_agent_event("n1", success(id, 3, "7"), secs(3));
    let e = s.take_effects();
    assert_eq!(persisted(&e, id).status, TaskStatus::Verifying);
    s.on_agent_event("n2", success(id, other, "7"), secs(4));
    let rec = persisted(&s.take_effects(), id);
    assert_eq!(rec.status, TaskStatus::Completed);
    let n1 = rec.assignments.iter().filter(|a| a.node_id == "n1").count();
    assert_eq!(n1, 2, "two replicas on n1: {rec:?}");
}

/// A node that declined a task (its slots were full) is not offered it again: it would decline
/// again and use up the task's retries. The task waits for another node.
#[test]
fn a_node_that_declined_is_not_offered_the_task_again() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    assert_eq!(dispatches(&s.take_effects()), vec![("n1".to_string(), 1)]);
    s.on_agent_event(
        "n1",
        AgentEvent::Declined {
            task_id: id,
            attempt: 1,
            reason: "all execution slots are busy".into(),
        },
        secs(1),
    );
    s.on_health(health("n1", 0.0), secs(2));
    s.tick(secs(3));
    let e = s.take_effects();
    assert!(dispatches(&e).is_empty(), "{:?}", dispatches(&e));
    assert_eq!(s.task(&id).map(|t| t.status), Some(TaskStatus::Pending));
}

#[test]
fn silent_node_goes_offline() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    s.tick(secs(16));
    let e = s.take_effects();
    assert_eq!(e.nodes[0].state, NodeState::Offline);
    assert_eq!(s.online_nodes(), 0);
}

#[test]
fn retry_cap_fails_with_reason() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    for n in ["n1", "n2", "n3", "n4"] {
        s.on_health(health(n, 0.0), t0());
    }
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    // Each node declines in turn: 1 + max_retries (2) assignments, then the task fails.
    let mut last = None;
    for _ in 0..3 {
        let e = s.take_effects();
        let (node, attempt) = dispatches(&e)[0].clone();
        s.on_agent_event(
            &node,
            AgentEvent::Declined {
                task_id: id,
                attempt,
                reason: "paused".into(),
            },
            secs(1),
        );
        last = Some(node);
    }
    let e = s.take_effects();
    let rec = persisted(&e, id);
    assert_eq!(rec.status, TaskStatus::Failed);
    let err = rec.error.unwrap();
    assert!(err.contains("gave up after 3 assignments"), "{err}");
    assert!(
        err.contains(&format!("declined by {}", last.unwrap())),
        "{err}"
    );
    assert!(dispatches(&e).is_empty());
}

#[test]
fn replicas_go_to_distinct_nodes_and_must_agree() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    for n in ["n1", "n2", "n3", "n4"] {
        s.on_health(health(n, 0.0), t0());
    }
    let agree = task(2);
    let a = agree.id;
    s.submit(agree, t0());
    let e = s.take_effects();
    let nodes: BTreeSet<String> = dispatches(&e).into_iter().map(|(n, _)| n).collect();
    assert_eq!(nodes.len(), 2, "two distinct nodes");
    let ds = dispatches(&e);
    s.on_agent_event(&ds[0].0, success(a, ds[0].1, "x"), secs(1));
    s.on_agent_event(&ds[1].0, success(a, ds[1].1, "x"), secs(1));
    let e = s.take_effects();
    assert_eq!(persisted(&e, a).status, TaskStatus::Completed);
    assert_eq!(e.reputation.len(), 2);
    assert!(e.reputation.iter().all(|ev| ev.kind == EventKind::Valid));
}

#[test]
fn disagreement_adds_a_replica_and_the_majority_wins() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    for n in ["n1", "n2", "n3"] {
        s.on_health(health(n, 0.0), t0());
    }
    let t = task(2);
    let id = t.id;
    s.submit(t, t0());
    let ds = dispatches(&s.take_effects());
    s.on_agent_event(&ds[0].0, success(id, ds[0].1, "honest"), secs(1));
    assert_eq!(
        persisted(&s.take_effects(), id).status,
        TaskStatus::Verifying
    );
    s.on_agent_event(&ds[1].0, success(id, ds[1].1, "forged"), secs(1));
    // No quorum of 2: a third replica goes to the node not yet used.
    let e = s.take_effects();
    let third = dispatches(&e);
    assert_eq!(third.len(), 1, "{:?}", e.publish);
    assert!(!ds.iter().any(|(n, _)| *n == third[0].0));
    s.on_agent_event(&third[0].0, success(id, third[0].1, "honest"), secs(2));
    let e = s.take_effects();
    let rec = persisted(&e, id);
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.result.as_ref().unwrap()["output"], "honest");
    assert_eq!(
        rec.result.as_ref().unwrap()["rejected_nodes"],
        serde_json::json!([ds[1].0])
    );
    let invalid: Vec<&reputation::Event> = e
        .reputation
        .iter()
        .filter(|ev| ev.kind == EventKind::Invalid)
        .collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].node, ds[1].0);
    let liar = s.node_info(&ds[1].0, secs(3)).unwrap().reputation;
    let honest = s.node_info(&ds[0].0, secs(3)).unwrap().reputation;
    assert_eq!((liar.invalid, honest.valid), (1, 1));
    assert!(liar.score < 50.0 && honest.score > 50.0);
}

#[test]
fn endless_disagreement_fails_at_the_cap() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    for n in ["n1", "n2", "n3", "n4", "n5"] {
        s.on_health(health(n, 0.0), t0());
    }
    let t = task(2);
    let id = t.id;
    s.submit(t, t0());
    // Every replica answers differently; the budget is min_nodes + max_retries = 4.
    let mut k = 0;
    loop {
        let e = s.take_effects();
        if let Some(rec) = e
            .tasks
            .iter()
            .find(|t| t.id == id && t.status.is_terminal())
        {
            assert_eq!(rec.status, TaskStatus::Failed);
            assert!(
                rec.error
                    .as_deref()
                    .unwrap()
                    .starts_with("replicas disagree")
            );
            assert_eq!(rec.assignments.len(), 4);
            break;
        }
        for (node, attempt) in dispatches(&e) {
            k += 1;
            s.on_agent_event(&node, success(id, attempt, &format!("answer-{k}")), secs(k));
        }
        assert!(k < 10, "never settled");
    }
}

#[test]
fn reputation_steers_ranking() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("liar", 0.0), t0());
    // The liar loses a quorum three times (judged through the public path: replicated tasks).
    // Only three nodes are online meanwhile, so every 3-replica task reaches it (with a fourth,
    // equally healthy node, which three are picked depends on the task id).
    for round in 0..3 {
        s.on_health(health("witness-a", 0.0), t0());
        s.on_health(health("witness-b", 0.0), t0());
        let t = task(3);
        let id = t.id;
        s.submit(t, t0());
        for (node, attempt) in dispatches(&s.take_effects()) {
            let out = if node == "liar" { "lie" } else { "truth" };
            s.on_agent_event(&node, success(id, attempt, out), secs(round));
        }
        s.take_effects();
    }
    assert!(s.node_info("liar", secs(5)).unwrap().reputation.score < 20.0);
    s.on_health(health("newcomer", 0.0), t0());
    // With equal health, a fresh task goes to the newcomer, not the liar.
    s.submit(task(1), secs(5));
    let d = dispatches(&s.take_effects());
    assert_ne!(d[0].0, "liar", "{d:?}");
}

#[test]
fn deterministic_failure_is_the_answer() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    s.on_health(health("n2", 0.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    let (node, attempt) = dispatches(&s.take_effects())[0].clone();
    s.on_agent_event(&node, failure(id, attempt, "out_of_fuel"), secs(1));
    let rec = persisted(&s.take_effects(), id);
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(
        rec.error.as_deref(),
        Some("out_of_fuel: out_of_fuel happened")
    );
}

#[test]
fn transient_failure_is_retried_elsewhere() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    s.on_health(health("n2", 50.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    s.take_effects();
    s.on_agent_event("n1", failure(id, 1, "wall_clock"), secs(1));
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("n2".to_string(), 2)]);
}

#[test]
fn eligibility_filters_and_explains() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let mut paused = health("paused", 0.0);
    paused.accepting = false;
    let mut other = health("onnx-only", 0.0);
    other.supported_task_types = vec![TaskType::Inference];
    s.on_health(paused, t0());
    s.on_health(other, t0());
    let mut gpu_task = task(1);
    gpu_task.requirements.require_gpu = true;
    let id = gpu_task.id;
    s.submit(gpu_task, t0());
    let e = s.take_effects();
    assert!(dispatches(&e).is_empty());
    let reason = persisted(&e, id).status_reason.unwrap();
    assert!(reason.contains("1 paused by their owner"), "{reason}");
    assert!(
        reason.contains("1 not supporting this task type"),
        "{reason}"
    );

    let mut gpu = health("gpu", 0.0);
    gpu.gpus = vec![GpuInfo {
        name: "test".into(),
        memory_total_bytes: 1 << 30,
        backend: "nvml".into(),
        driver: None,
    }];
    s.on_health(health("cpu", 0.0), secs(1));
    s.on_health(gpu, secs(1));
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("gpu".to_string(), 1)],
        "only the GPU node qualifies"
    );
}

#[test]
fn ranking_prefers_healthier_nodes() {
    let idle = health("idle", 5.0);
    let mut hot = health("hot", 5.0);
    hot.temperatures = vec![Temperature {
        label: "cpu".into(),
        celsius: 95.0,
    }];
    let busy = health("busy", 95.0);
    assert!(health_score(&idle) > health_score(&busy));
    assert!(health_score(&idle) > health_score(&hot));
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(busy, t0());
    s.on_health(hot, t0());
    s.on_health(idle, t0());
    s.submit(task(1), t0());
    assert_eq!(dispatches(&s.take_effects()), vec![("idle".to_string(), 1)]);
}

#[test]
fn cancel_stops_replicas() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    s.take_effects();
    assert!(s.cancel(id, "someone-else", secs(1)).is_err());
    s.cancel(id, "acme", secs(1)).unwrap();
    let e = s.take_effects();
    assert_eq!(persisted(&e, id).status, TaskStatus::Cancelled);
    assert_eq!(cancels(&e), vec![("n1".to_string(), 1)]);
    assert!(s.cancel(id, "acme", secs(2)).is_err());
}

#[test]
fn restores_from_persisted_records() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("n1", 0.0), t0());
    let t = task(1);
    let id = t.id;
    s.submit(t, t0());
    let e = s.take_effects();
    // A new scheduler from what was written continues where the old one stopped.
    let mut s2 = Scheduler::new(settings(), e.tasks, e.nodes);
    assert_eq!(s2.node_info("n1", t0()).unwrap().active_assignments, 1);
    s2.on_agent_event("n1", success(id, 1, "ok"), secs(1));
    assert_eq!(
        persisted(&s2.take_effects(), id).status,
        TaskStatus::Completed
    );
}

#[test]
fn queued_behind_busy_nodes_is_not_starved() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let mut one_slot = health("n1", 0.0);
    one_slot.max_concurrent_tasks = 1;
    s.on_health(one_slot.clone(), t0());
    let (mut first, mut second) = (task(1), task(1));
    first.requirements.max_execution_time_sec = 300;
    second.requirements.max_execution_time_sec = 300;
    let (a, b) = (first.id, second.id);
    s.submit(first, t0());
    s.submit(second, t0());
    let e = s.take_effects();
    assert_eq!(dispatches(&e).len(), 1);
    assert!(persisted(&e, b).status_reason.unwrap().contains("1 busy"));
    // Far past the queue timeout, the node is still working on the first task (its lease is
    // long): the second waits, it does not expire.
    let mut long = one_slot;
    long.running_tasks = 1;
    for t in [30, 59, 90, 120] {
        s.on_health(long.clone(), secs(t));
        s.tick(secs(t));
    }
    assert!(
        s.task(&b).is_some(),
        "queued task expired while capacity exists"
    );
    s.on_agent_event("n1", success(a, 1, "1"), secs(121));
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("n1".to_string(), 1)]);
}

#[test]
fn a_long_valid_streak_earns_a_single_replica_except_on_spot_checks() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(health("veteran", 0.0), t0());
    for k in 0..TRUSTED_STREAK {
        let t = task(1);
        let id = t.id;
        s.submit(t, t0());
        s.take_effects();
        s.on_agent_event("veteran", success(id, 1, &k.to_string()), secs(1));
        s.take_effects();
    }
    assert_eq!(
        s.node_info("veteran", secs(2)).unwrap().reputation.streak,
        TRUSTED_STREAK
    );
    s.on_health(health("other", 50.0), secs(2));

    let with_id = |first: u8| {
        let mut t = task(2);
        let mut bytes = *t.id.as_bytes();
        bytes[0] = first;
        t.id = Uuid::from_bytes(bytes);
        t
    };
    let trusted = with_id(200);
    let id = trusted.id;
    s.submit(trusted, secs(3));
    assert_eq!(
        dispatches(&s.take_effects()),
        vec![("veteran".to_string(), 1)]
    );
    s.on_agent_event("veteran", success(id, 1, "ok"), secs(4));
    let rec = persisted(&s.take_effects(), id);
    assert_eq!(rec.status, TaskStatus::Completed);
    assert!(rec.replicated().unwrap().adaptive);

    let checked = with_id(0);
    s.submit(checked, secs(5));
    assert_eq!(
        dispatches(&s.take_effects()).len(),
        2,
        "spot checks are fully replicated"
    );
}

/// Adversary harness: 10 nodes, 2 of them (20 %) colluding liars that return the same wrong
/// answer. Tasks are replicated on 5 nodes (quorum 3), in batches that keep every node busy.
#[test]
fn colluding_liars_never_win_and_sink_in_reputation() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let nodes: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let liars = ["n0", "n1"];
    let mut now = 0;
    for n in &nodes {
        s.on_health(health(n, 0.0), secs(now));
    }
    let mut accepted_wrong = 0;
    let mut settled = 0;
    for _batch in 0..13 {
        let batch: Vec<TaskRecord> = (0..4)
            .map(|_| {
                let mut t = task(5);
                t.created_at = secs(now);
                t
            })
            .collect();
        let ids: Vec<Uuid> = batch.iter().map(|t| t.id).collect();
        for t in batch {
            s.submit(t, secs(now));
        }
        // Answer until every task of the batch is settled.
        loop {
            now += 1;
            for n in &nodes {
                s.on_health(health(n, 0.0), secs(now));
            }
            let e = s.take_effects();
            for t in e
                .tasks
                .iter()
                .filter(|t| ids.contains(&t.id) && t.status.is_terminal())
            {
                settled += 1;
                assert_eq!(t.status, TaskStatus::Completed, "{t:?}");
                if t.result.as_ref().unwrap()["output"] != "right" {
                    accepted_wrong += 1;
                }
            }
            let work: Vec<(String, Uuid, u32)> = e
                .publish
                .iter()
                .filter_map(|o| match o {
                    Outbound::Dispatch { node, assignment } => {
                        Some((node.clone(), assignment.task_id, assignment.attempt))
                    }
                    _ => None,
                })
                .collect();
            if work.is_empty() && ids.iter().all(|id| s.task(id).is_none()) {
                break;
            }
            for (node, task_id, attempt) in work {
                let answer = if liars.contains(&node.as_str()) {
                    "wrong"
                } else {
                    "right"
                };
                s.on_agent_event(&node, success(task_id, attempt, answer), secs(now));
            }
            assert!(now < 10_000, "never settled");
        }
    }
    assert_eq!(settled, 52);
    assert_eq!(accepted_wrong, 0, "a wrong result was accepted");
    for n in &nodes {
        let rep = s.node_info(n, secs(now)).unwrap().reputation;
        if liars.contains(&n.as_str()) {
            assert!(rep.invalid > 0, "{n} was never caught: {rep:?}");
            assert!(rep.score < TRUST_THRESHOLD, "{n}: {rep:?}");
        } else {
            assert!(rep.score > 50.0, "{n} did not rise: {rep:?}");
        }
    }

    // A node answering for a task it was never given is refused: nothing is recorded.
    let t = task(1);
    let id = t.id;
    s.submit(t, secs(now));
    let (holder, attempt) = dispatches(&s.take_effects())[0].clone();
    let outsider = nodes.iter().find(|n| **n != holder).unwrap();
    s.on_agent_event(outsider, success(id, attempt, "forged"), secs(now + 1));
    let e = s.take_effects();
    assert!(e.tasks.is_empty(), "a foreign result changed the task");
    assert!(e.reputation.is_empty());
    assert_eq!(s.task(&id).unwrap().status, TaskStatus::Assigned);
}

/// Nodes caught lying do not count towards a quorum: two of them agreeing cannot outvote a
/// trusted node, and the task waits for another trusted answer instead.
#[test]
fn untrusted_nodes_cannot_form_a_quorum() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let nodes = ["liar-a", "liar-b", "w1", "w2", "w3"];
    for n in nodes {
        s.on_health(health(n, 0.0), t0());
    }
    let answer = |node: &str| {
        if node.starts_with("liar") {
            "lie"
        } else {
            "truth"
        }
    };
    // One task on all five: the liars lose the quorum and become untrusted.
    let t = task(5);
    let id = t.id;
    s.submit(t, t0());
    for (node, attempt) in dispatches(&s.take_effects()) {
        s.on_agent_event(&node, success(id, attempt, answer(&node)), secs(1));
    }
    s.take_effects();
    for l in ["liar-a", "liar-b"] {
        assert!(!s.node_info(l, secs(1)).unwrap().reputation.trusted);
    }
    // Only the two liars and one witness take work now.
    for n in ["w2", "w3"] {
        let mut h = health(n, 0.0);
        h.accepting = false;
        s.on_health(h, secs(2));
    }
    let t = task(2);
    let id = t.id;
    s.submit(t, secs(2));
    let mut answered = Vec::new();
    for step in 3..10 {
        let ds = dispatches(&s.take_effects());
        if ds.is_empty() {
            break;
        }
        for (node, attempt) in ds {
            s.on_agent_event(&node, success(id, attempt, answer(&node)), secs(step));
            answered.push(node);
        }
    }
    answered.sort();
    assert_eq!(answered, ["liar-a", "liar-b", "w1"]);
    // Two lies against one truth, and still no quorum: the lie is not accepted.
    assert_ne!(s.task(&id).unwrap().status, TaskStatus::Completed);
    // A second trusted node settles it, and both liars are judged again.
    s.on_health(health("w2", 0.0), secs(10));
    let ds = dispatches(&s.take_effects());
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0].0, "w2");
    s.on_agent_event("w2", success(id, ds[0].1, "truth"), secs(11));
    let e = s.take_effects();
    let rec = persisted(&e, id);
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.result.as_ref().unwrap()["output"], "truth");
    let invalid: BTreeSet<&str> = e
        .reputation
        .iter()
        .filter(|ev| ev.kind == EventKind::Invalid)
        .map(|ev| ev.node.as_str())
        .collect();
    assert_eq!(invalid, BTreeSet::from(["liar-a", "liar-b"]));
}

fn fl_task(min_nodes: u32) -> TaskRecord {
    let mut t = task(min_nodes);
    t.task_type = TaskType::FederatedLearning;
    t.kind = KindState::Federated(Federated::default());
    t
}

/// A completed federated task reports every round done, not the last one that was running.
#[test]
fn completed_federated_task_reports_all_rounds_done() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let t = fl_task(2);
    let id = t.id;
    s.submit(t, t0());
    s.fl_started(id, vec!["a".into(), "b".into()], 4, secs(1));
    s.fl_progress(id, 3, secs(2));
    s.take_effects();
    s.fl_finish(
        id,
        fl::FlOutcome::Done(serde_json::json!({"output": {}})),
        secs(3),
    );
    let rec = persisted(&s.take_effects(), id);
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.info().progress, Some(Progress { done: 4, total: 4 }));
}

/// A failed federated task keeps the rounds it actually finished.
#[test]
fn failed_federated_task_keeps_its_progress() {
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    let t = fl_task(2);
    let id = t.id;
    s.submit(t, t0());
    s.fl_started(id, vec!["a".into(), "b".into()], 4, secs(1));
    s.fl_progress(id, 2, secs(2));
    s.fl_finish(id, fl::FlOutcome::Failed("clients left".into()), secs(3));
    let rec = persisted(&s.take_effects(), id);
    assert_eq!(rec.status, TaskStatus::Failed);
    assert_eq!(rec.info().progress, Some(Progress { done: 2, total: 4 }));
}

#[test]
fn zk_task_waits_for_its_keys_then_is_placed() {
    let zk_node = |at: DateTime<Utc>| {
        HealthBuilder::new("n1", at)
            .cpu(10.0, 4)
            .kinds(&[TaskType::ZkProof])
            .build()
    };
    let mut s = Scheduler::new(settings(), vec![], vec![]);
    s.on_health(zk_node(t0()), t0());
    let mut t = task(1);
    t.task_type = TaskType::ZkProof;
    t.artifact_sha256 = None;
    t.status_reason = Some("making keys".into());
    t.waiting_since = None;
    let id = t.id;
    s.submit(t, t0());
    // Not placed while it waits, and its queue timeout does not run down.
    s.on_health(zk_node(secs(600)), secs(600));
    s.tick(secs(600));
    let e = s.take_effects();
    assert!(dispatches(&e).is_empty());
    let rec = s.task(&id).unwrap();
    assert_eq!(rec.status, TaskStatus::Pending);
    assert_eq!(rec.status_reason.as_deref(), Some("making keys"));
    assert_eq!(s.zk_waiting().len(), 1);
    s.zk_waiting_reason(id, "still making keys".into(), secs(601));
    assert_eq!(
        persisted(&s.take_effects(), id).status_reason.as_deref(),
        Some("still making keys")
    );
    // Keys ready: the proving key is its artifact, and it goes out at once.
    s.on_health(zk_node(secs(602)), secs(602));
    s.take_effects();
    s.zk_keys_ready(id, "cd".repeat(32), secs(602));
    let e = s.take_effects();
    assert_eq!(dispatches(&e), vec![("n1".to_string(), 1)]);
    let rec = persisted(&e, id);
    assert_eq!(rec.artifact_sha256, Some("cd".repeat(32)));
    assert_eq!(rec.status, TaskStatus::Assigned);
    assert!(s.zk_waiting().is_empty());

    // Keys that cannot be made fail the task, saying why.
    let mut t = task(1);
    t.task_type = TaskType::ZkProof;
    t.artifact_sha256 = None;
    let id = t.id;
    s.submit(t, secs(603));
    s.zk_keys_failed(id, "disk full".into(), secs(604));
    let rec = persisted(&s.take_effects(), id);
    assert_eq!(
        (rec.status, rec.error.as_deref()),
        (TaskStatus::Failed, Some("disk full"))
    );
}
