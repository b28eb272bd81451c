//! Adversaries over the real broker: 10 nodes, of which 2 (20 %) are colluding liars built on
//! the protocol crate ([`ambient_e2e::adversary`]) that give the same wrong answer to every task
//! and advertise the most attractive health on the network. Replication with a quorum must
//! never accept a lie, the liars must sink below the trust threshold (and be told so), the honest
//! agents must rise, and a result for a task a node was never given must be refused.

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_e2e::adversary::{Liar, lie};
use ambient_protocol::{ReputationEventKind, Requirements, TaskStatus};

use crate::util::*;

/// The trust threshold of `coordinator/src/reputation.rs`.
const TRUST_THRESHOLD: f64 = ambient_coordinator::reputation::TRUST_THRESHOLD;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colluding_liars_never_win_and_lose_their_reputation() {
    let c = Cluster::mosquitto(8).await.unwrap();
    let client = c.client();
    let mut liars = Vec::new();
    for (node, password) in &c.spare_nodes {
        liars.push(Liar::start(c.mqtt, node, password).await.unwrap());
    }
    client
        .wait_for_nodes(10, std::time::Duration::from_secs(20))
        .await
        .unwrap();

    // 50 tasks, each replicated on 5 of the 10 nodes (a quorum is 3 equal answers), submitted
    // in batches of 5 so every node, liars included, keeps getting work.
    let replicated = Requirements {
        min_nodes: 5,
        ..Requirements::default()
    };
    let mut accepted_lies = 0;
    for batch in 0..10u64 {
        let mut pending = Vec::new();
        for k in 0..5u64 {
            let numbers = [batch, k, 1 + batch * 5 + k];
            let (mut sub, expected) = sum_task(&numbers);
            sub.requirements = replicated.clone();
            pending.push((client.submit(&sub).await.unwrap().task_id, expected));
        }
        for (id, expected) in pending {
            let info = client.wait(id, WAIT, |_| {}).await.unwrap();
            assert_eq!(info.status, TaskStatus::Completed, "{info:?}");
            let result = info.result.as_ref().unwrap();
            if result["output"] == lie() {
                accepted_lies += 1;
            }
            assert_eq!(output_sum(&info), expected, "{info:?}");
            for liar in &liars {
                assert!(
                    !result["nodes"]
                        .as_array()
                        .unwrap()
                        .contains(&liar.node.as_str().into()),
                    "{} was among the winners: {result}",
                    liar.node
                );
            }
        }
    }
    assert_eq!(accepted_lies, 0);

    for liar in &liars {
        assert!(
            liar.answered.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "{} was never given work, so the test proves nothing",
            liar.node
        );
        let report = client.reputation(&liar.node).await.unwrap();
        assert!(
            report.reputation.score < TRUST_THRESHOLD && !report.reputation.trusted,
            "{}: {:?}",
            liar.node,
            report.reputation
        );
        assert!(report.reputation.invalid > 0);
        assert!(
            report
                .history
                .iter()
                .all(|e| e.kind == ReputationEventKind::Invalid),
            "{:?}",
            report.history
        );
        // The score after the last event is the score now (no time has passed to decay it).
        let last = report.history.last().unwrap().score;
        assert!((last - report.reputation.score).abs() < 0.2, "{report:?}");
    }
    // Every honest agent that was given work rose; the scheduler ranks by health, so an agent
    // may sit out a run this short, but most take part.
    let mut rose = 0;
    for (node, _) in &c.nodes {
        let rep = client.reputation(node).await.unwrap().reputation;
        assert_eq!(rep.invalid, 0, "{node}: {rep:?}");
        if rep.valid > 0 {
            assert!(rep.score > 50.0 && rep.trusted, "{node}: {rep:?}");
            rose += 1;
        }
    }
    assert!(rose >= 6, "only {rose} honest agents took part");

    // Each liar hears its own standing on its retained reputation topic.
    let deadline = tokio::time::Instant::now() + WAIT;
    for liar in &liars {
        loop {
            let heard = liar.reputation.lock().unwrap().clone();
            if let Some(r) = heard
                && r.reputation.invalid
                    == client
                        .reputation(&liar.node)
                        .await
                        .unwrap()
                        .reputation
                        .invalid
            {
                assert!(r.reputation.score < TRUST_THRESHOLD, "{r:?}");
                assert_eq!(r.node_id, liar.node);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never heard its reputation",
                liar.node
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    // A result for a task the node was never given is refused: the liars stop taking work, an
    // honest agent runs a one-second task, and a liar answers it first.
    for liar in &liars {
        liar.set_accepting(false).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused_before = metric(&c, "ambient_results_refused_total").await;
    let busy = wasm_task(
        modules::BUSY_WAT,
        serde_json::json!({}),
        Requirements::default(),
    );
    let id = client.submit(&busy).await.unwrap().task_id;
    let running = wait_status(&client, id, TaskStatus::Running).await;
    assert!(
        liars
            .iter()
            .all(|l| !running.assigned_nodes.contains(&l.node)),
        "{running:?}"
    );
    liars[0].forge(id, 1, lie()).await.unwrap();
    let done = client.wait(id, WAIT, |_| {}).await.unwrap();
    assert_eq!(output_sum(&done), modules::BUSY_OUTPUT);
    assert_eq!(
        metric(&c, "ambient_results_refused_total").await,
        refused_before + 1
    );

    for liar in liars {
        liar.stop().await;
    }
    c.shutdown().await;
}
