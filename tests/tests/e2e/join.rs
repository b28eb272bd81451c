//! Joining with a token, as a person would: `ambient token create`, `ambient-agent join` and
//! `run` as processes, a task done by the new node, and `ambient node revoke`. On the embedded
//! broker and on mosquitto with its dynamic-security plugin.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ambient_cli::client::Client;
use ambient_e2e::process::{ServiceProcess, binary};
use ambient_e2e::{ADMIN_KEY, Cluster};
use ambient_link::{Incoming, LinkOptions, LinkState};
use ambient_protocol::credits::AccountCreate;
use ambient_protocol::join::{JoinRequest, JoinToken, TokenRequest, join_message};
use ambient_protocol::{NodeKey, NodeState};

use crate::util::*;

/// Runs this build's `bin` with `args` to completion and returns its stdout.
async fn run(bin: &str, args: Vec<String>) -> String {
    let path = binary(bin).unwrap_or_else(|| panic!("{bin} is not built (scripts/test builds it)"));
    run_program(None, path, args).await
}

/// Whether the broker accepts `user` with `password` and client id `client_id` within 10 s.
async fn connects(c: &Cluster, client_id: &str, user: &str, password: &str) -> bool {
    let token = tokio_util::sync::CancellationToken::new();
    let mut link = ambient_link::start(
        LinkOptions {
            host: c.conn.mqtt_host.clone(),
            port: c.conn.mqtt_port,
            failover: Vec::new(),
            client_id: client_id.into(),
            credentials: Some((user.into(), password.into())),
            clean_session: true,
            keep_alive: Duration::from_secs(5),
            last_will: None,
            subscriptions: vec![],
        },
        token.clone(),
        &tokio_util::task::TaskTracker::new(),
    );
    let verdict = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                m = link.incoming.recv() => if let Some(Incoming::Connected { .. }) = m {
                    return true;
                },
                _ = link.state.changed() => {
                    if matches!(&*link.state.borrow(), LinkState::Refused(_) | LinkState::Down(_)) {
                        return false;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    token.cancel();
    verdict
}

/// The whole path on `c`, whose coordinator makes broker accounts.
async fn join_run_revoke(c: &Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let api = c.conn.api_url.clone();
    // 1. The operator has an account, and makes a token for its nodes with the CLI.
    let ops = c
        .admin()
        .create_account(&AccountCreate {
            account: "lab-ops".into(),
            credits: 0,
            limits: Default::default(),
        })
        .await
        .unwrap();
    let created = run(
        "ambient",
        [
            "token",
            "create",
            "--uses",
            "1",
            "--expires",
            "1h",
            "--operator",
            "lab-ops",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--api-url".into(),
            api.clone(),
            "--admin-key".into(),
            ADMIN_KEY.into(),
        ])
        .collect(),
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["operator"], "lab-ops");
    let token = created["token"].as_str().expect("the token").to_string();
    assert!(!token.contains(char::is_whitespace), "one line: {token}");

    // 2. The node joins, and runs with the configuration join wrote.
    let config = dir.path().join("agent.toml");
    let data = dir.path().join("data");
    let joined = run(
        "ambient-agent",
        vec![
            "join".into(),
            token.clone(),
            "--config".into(),
            config.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--json".into(),
        ],
    )
    .await;
    let joined: serde_json::Value = serde_json::from_str(&joined).unwrap();
    let node = joined["node_id"].as_str().expect("node id").to_string();
    let password_file = data.join(format!("credentials/{node}.mqtt-password"));
    let password = std::fs::read_to_string(&password_file).expect("the 0600 password file");
    assert!(
        private(&password_file),
        "{} is readable by others",
        password_file.display()
    );
    let mut agent = ServiceProcess::start_existing("ambient-agent", &config, dir.path()).unwrap();

    // 3. Online within 60 s, and it does a task.
    let deadline = Instant::now() + Duration::from_secs(60);
    while node_state(c, &node).await != Some(NodeState::Online) {
        assert!(
            Instant::now() < deadline,
            "{node} not online in 60 s; its log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (task, expected) = sum_task(&[4, 5, 6]);
    let done = submit_and_wait(&c.client(), &task).await;
    assert_eq!(output_sum(&done), expected);
    assert_eq!(done.assigned_nodes, vec![node.clone()]);
    // Its earnings show on its operator's account.
    let operator = Client::new(&api, &ops.key.api_key).account().await.unwrap();
    assert_eq!(operator.nodes, vec![node.clone()]);
    let nodes = c.client().nodes().await.unwrap();
    let paid = nodes
        .iter()
        .find(|n| n.node_id == node)
        .unwrap()
        .credits
        .total;
    assert!(
        paid > 0 && operator.earned == paid,
        "{operator:?}, node paid {paid}"
    );

    // The token was for one node: a second join with it is refused, and nothing is written.
    let again = dir.path().join("again.toml");
    let path = binary("ambient-agent").unwrap();
    let refused = Command::new(path)
        .args(["join", &token, "--config"])
        .arg(&again)
        .arg("--data-dir")
        .arg(dir.path().join("again"))
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("token_used_up"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!again.exists());

    // 4. Revoked with the CLI: offline within 10 s, and its credentials no longer open the broker.
    let revoked_at = Instant::now();
    run(
        "ambient",
        vec![
            "node".into(),
            "revoke".into(),
            node.clone(),
            "--api-url".into(),
            api,
            "--admin-key".into(),
            ADMIN_KEY.into(),
        ],
    )
    .await;
    while node_state(c, &node).await != Some(NodeState::Offline) {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "still online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !connects(c, &node, &node, password.trim()).await,
        "the broker still takes the revoked node's credentials"
    );
    assert!(revoked_at.elapsed() < Duration::from_secs(10) + Duration::from_secs(10));
    // The agent process runs on, refused, and the coordinator never counts it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node_state(c, &node).await, Some(NodeState::Offline));
    assert!(agent.exited().is_none(), "the agent should keep running");
    agent.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_a_token_works_and_is_revoked_on_the_embedded_broker() {
    let c = Cluster::embedded(0).await.unwrap();
    join_run_revoke(&c).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_a_token_works_and_is_revoked_on_mosquitto_dynsec() {
    let c = Cluster::mosquitto_dynsec().await.unwrap();
    join_run_revoke(&c).await;
    c.shutdown().await;
}

/// A join request signed by `key` for `token`.
fn request(token: &JoinToken, key: &NodeKey, time: i64) -> JoinRequest {
    let ed25519 = key.identity("").ed25519;
    JoinRequest {
        token: token.id.clone(),
        secret: token.secret.clone(),
        signature: hex::encode(key.sign(&join_message(&token.id, &ed25519, time))),
        ed25519,
        name: None,
        time,
    }
}

async fn post_join(c: &Cluster, req: &JoinRequest) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/join", c.conn.api_url))
        .json(req)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_with_bad_tokens_keys_or_signatures_get_typed_refusals() {
    let c = Cluster::embedded(0).await.unwrap();
    let admin = c.admin();
    let info = admin
        .create_token(&TokenRequest {
            uses: Some(2),
            ..TokenRequest::default()
        })
        .await
        .unwrap();
    let token = JoinToken::decode(info.token.as_deref().unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let key = NodeKey::generate();

    // A wrong secret, an unknown token: the same answer.
    let mut wrong = request(&token, &key, now);
    wrong.secret = "00".repeat(32);
    assert_eq!(post_join(&c, &wrong).await.1["error"], "invalid_token");
    let mut unknown = request(&token, &key, now);
    unknown.token = "tok-nothing".into();
    unknown.signature = hex::encode(key.sign(&join_message("tok-nothing", &unknown.ed25519, now)));
    assert_eq!(post_join(&c, &unknown).await.1["error"], "invalid_token");
    // A signature by another key, and an old request.
    let mut forged = request(&token, &key, now);
    forged.ed25519 = NodeKey::generate().identity("").ed25519;
    assert_eq!(
        post_join(&c, &forged).await,
        (400, post_join(&c, &forged).await.1)
    );
    assert_eq!(post_join(&c, &forged).await.1["error"], "invalid_request");
    let stale = request(&token, &key, now - 3600);
    assert_eq!(post_join(&c, &stale).await.1["error"], "invalid_request");
    // None of that spent a use: two nodes still join, then the token is used up.
    for _ in 0..2 {
        let (status, grant) = post_join(&c, &request(&token, &NodeKey::generate(), now)).await;
        assert_eq!(status, 201, "{grant}");
    }
    let (status, body) = post_join(&c, &request(&token, &NodeKey::generate(), now)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("token_used_up"))
    );
    // Revoked and listed.
    let second = admin.create_token(&TokenRequest::default()).await.unwrap();
    admin.revoke_token(&second.id).await.unwrap();
    let t2 = JoinToken::decode(second.token.as_deref().unwrap()).unwrap();
    let (_, body) = post_join(&c, &request(&t2, &key, now)).await;
    assert_eq!(body["error"], "token_revoked");
    let listed = admin.tokens().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|t| t.token.is_none()),
        "no secret in a list"
    );
    let first = listed.iter().find(|t| t.id == info.id).unwrap();
    assert_eq!((first.used, first.uses, first.revoked), (2, 2, false));
    // The admin API wants the admin key: the submitter's does not open it.
    let err = c.client().tokens().await.unwrap_err();
    assert_eq!(err.code(), Some("unauthorized"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_take_the_coordinators_client_id() {
    // Embedded broker: a node's account may use only its own client id.
    let c = Cluster::embedded(1).await.unwrap();
    let (spare, password) = c.spare_nodes[0].clone();
    assert!(!connects(&c, "ambient-coordinator", &spare, &password).await);
    assert!(!connects(&c, "node-1", &spare, &password).await);
    assert!(connects(&c, &spare, &spare, &password).await);
    let health: serde_json::Value = reqwest::get(format!("{}/api/v1/health", c.conn.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    // The node still works.
    let (task, expected) = sum_task(&[1, 2]);
    assert_eq!(
        output_sum(&submit_and_wait(&c.client(), &task).await),
        expected
    );
    c.shutdown().await;

    // mosquitto with dynamic security: a joined node's account is bound to its id too.
    let c = Cluster::mosquitto_dynsec().await.unwrap();
    let info = c
        .admin()
        .create_token(&TokenRequest::default())
        .await
        .unwrap();
    let token = JoinToken::decode(info.token.as_deref().unwrap()).unwrap();
    let (status, grant) = post_join(
        &c,
        &request(&token, &NodeKey::generate(), chrono::Utc::now().timestamp()),
    )
    .await;
    assert_eq!(status, 201, "{grant}");
    let (node, password) = (
        grant["node_id"].as_str().unwrap().to_string(),
        grant["mqtt_password"].as_str().unwrap().to_string(),
    );
    assert!(!connects(&c, "ambient-coordinator", &node, &password).await);
    assert!(connects(&c, &node, &node, &password).await);
    c.shutdown().await;
}

/// Readable by its owner only.
fn private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}
