//! Two coordinators on one PostgreSQL store and one mosquitto: both serve REST, one runs the
//! scheduler. The leader hands over cleanly when stopped, and is replaced when killed with
//! SIGKILL while tasks run; every task ends with the right answer, once.

use std::time::{Duration, Instant};

use ambient_cli::client::Client;
use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_e2e::postgres::Postgres;
use ambient_e2e::process::{self, CoordinatorProcess};
use ambient_protocol::{TaskInfo, TaskStatus, TaskSubmission};
use uuid::Uuid;

use crate::util::*;

/// The bound on a takeover.
const TAKEOVER: Duration = Duration::from_secs(30);

/// Submits through `client` until accepted (a takeover answers 503 for a while).
async fn submit_until_accepted(client: &Client, sub: &TaskSubmission) -> TaskInfo {
    ambient_e2e::submit_until_accepted(std::slice::from_ref(client), 0, sub, TAKEOVER * 2)
        .await
        .unwrap()
}

async fn wait_for_role(p: &CoordinatorProcess, role: &str) -> Duration {
    let started = Instant::now();
    while p.role().await.as_deref() != Some(role) {
        assert!(
            started.elapsed() < TAKEOVER,
            "{} is not {role} after {TAKEOVER:?}:\n{}",
            p.url,
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

fn numbered(i: u64) -> (TaskSubmission, u64) {
    let (mut sub, expected) = sum_task(&[i, 1000 + i, 7]);
    sub.task_id = Some(Uuid::new_v4());
    (sub, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_coordinator_takes_over_the_scheduler() {
    let Some(pg) = Postgres::start_or_skip("a_second_coordinator_takes_over").unwrap() else {
        return;
    };
    if process::binary("ambient-coordinator").is_none() && !ambient_e2e::postgres::required() {
        eprintln!("a_second_coordinator_takes_over: skipped, ambient-coordinator is not built");
        return;
    }
    let url = pg.create_database("ambient").unwrap();
    // Coordinator A, in this process, leads: it is first.
    let mut c = Cluster::mosquitto_on(2, 2, Some(url)).await.unwrap();
    let a = c.client();
    let a_url = c.conn.api_url.clone();
    assert_eq!(process::role(&a_url).await.as_deref(), Some("leader"));
    // Coordinator B, a process of its own on the same store and broker, follows.
    let mut b_cfg = c.coordinator_config().clone();
    b_cfg.data_dir = c.dir.path().join("coordinator-b");
    b_cfg.http_addr = format!("127.0.0.1:{}", ambient_e2e::free_port().unwrap())
        .parse()
        .unwrap();
    let mut b = CoordinatorProcess::start(&b_cfg, &c.dir.path().join("b"))
        .await
        .unwrap();
    assert_eq!(b.role().await.as_deref(), Some("follower"));
    let b_client = Client::new(&b.url, &c.conn.api_key);

    // REST on both: B forwards submissions to A; a task is read on the other coordinator.
    let mut expected = Vec::new();
    for i in 0..6 {
        let (sub, sum) = numbered(i);
        let via = if i % 2 == 0 { &a } else { &b_client };
        expected.push((submit_until_accepted(via, &sub).await.task_id, sum));
    }
    for (id, sum) in &expected {
        let done = b_client.wait(*id, WAIT, |_| {}).await.unwrap();
        assert_eq!(output_sum(&done), *sum);
        assert_eq!(a.task(*id).await.unwrap(), done);
    }
    assert_eq!(b_client.nodes().await.unwrap().len(), 2, "nodes, through B");
    // B checked its submissions itself and handed them to A's intake, which takes only what
    // shows A's secret: a submitter, or anyone, calling it gets 401 whatever it sends.
    let intake = format!("{a_url}/internal/v1/intake");
    let forged = serde_json::json!({"submitter": "acme", "accepted": {
        "submission": {"task_type": "wasm_execution", "inputs": {}},
        "artifact_ref": "0".repeat(64), "shards": null, "eval_features": null}});
    let http = reqwest::Client::new();
    for secret in [None, Some("not-the-secret")] {
        let mut req = http.post(&intake).json(&forged);
        if let Some(secret) = secret {
            req = req.header("x-ambient-intake-secret", secret);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, 401, "intake with secret {secret:?}");
    }

    // A stops cleanly: it ends its lease, and B leads at its next attempt.
    c.stop_coordinator().await;
    let handover = wait_for_role(&b, "leader").await;
    eprintln!("clean handover: B leads {handover:?} after A stopped");
    c.start_coordinator().await.unwrap();
    assert_eq!(process::role(&a_url).await.as_deref(), Some("follower"));

    // Tasks that run for a while, through A (forwarded to B) …
    let busy = || {
        let mut sub = wasm_task(modules::BUSY_WAT, serde_json::json!({}), Default::default());
        sub.task_id = Some(Uuid::new_v4());
        sub
    };
    let running: Vec<Uuid> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(submit_until_accepted(&a, &busy()).await.task_id);
        }
        ids
    };
    wait_status(&a, running[0], TaskStatus::Running).await;
    // … then B, the leader, is killed.
    b.kill();
    let killed = Instant::now();
    // Submissions go on through A meanwhile; they are accepted once A leads.
    let mut later = Vec::new();
    for i in 100..104 {
        let (sub, sum) = numbered(i);
        later.push((submit_until_accepted(&a, &sub).await.task_id, sum));
    }
    let takeover = killed.elapsed();
    assert_eq!(process::role(&a_url).await.as_deref(), Some("leader"));
    eprintln!("takeover: A accepted work {takeover:?} after B was killed");
    assert!(takeover < TAKEOVER, "{takeover:?}");

    for id in &running {
        let done = a.wait(*id, WAIT * 2, |_| {}).await.unwrap();
        assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
        assert_eq!(output_sum(&done), modules::BUSY_OUTPUT);
    }
    for (id, sum) in &later {
        assert_eq!(output_sum(&a.wait(*id, WAIT, |_| {}).await.unwrap()), *sum);
    }

    // B comes back as a follower, and reads what A did.
    b.restart().await.unwrap();
    assert_eq!(b.role().await.as_deref(), Some("follower"));
    assert_eq!(
        b_client.task(later[0].0).await.unwrap().status,
        TaskStatus::Completed
    );
    // Nothing was judged twice: one reputation event per node, task and kind.
    let twice = pg
        .psql(
            "ambient",
            "SELECT count(*) FROM (SELECT node, task_id, kind FROM reputation_events \
             GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        )
        .unwrap();
    assert_eq!(twice, "0", "reputation events recorded twice");
    let tasks = pg.count_rows("ambient", "tasks").unwrap();
    assert_eq!(tasks, (expected.len() + running.len() + later.len()) as u64);
    drop(b);
    c.shutdown().await;
}
