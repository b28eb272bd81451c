//! Credits on the network `ambient up` runs (the embedded broker, a coordinator on SQLite, three
//! agents): accounts made at run time, a wasm task paid for by its submitter and earned by its
//! nodes, a failed task that costs nothing, a refusal for want of credits, a rate limit, and a
//! ledger that balances at the end.

use std::time::Duration;

use ambient_cli::client::Client;
use ambient_cli::local::{LocalNetwork, LocalOptions};
use ambient_e2e::ledger::read_all;
use ambient_protocol::credits::{AccountInfo, Audit, LedgerPage, MICRO, PriceList};
use ambient_protocol::{NodeInfo, Requirements, TaskStatus, TaskType};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::*;

struct Api {
    url: String,
    admin: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API reachable");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// Makes an account with `credits` µcredits and `limits`; returns its API key.
    async fn account(&self, name: &str, credits: i64, limits: Value) -> String {
        let body = json!({"account": name, "credits": credits, "limits": limits});
        let (status, _, v) = self
            .call("POST", "/api/v1/admin/accounts", &self.admin, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        assert_eq!(v["account"]["balance"], credits, "{v}");
        v["key"]["api_key"].as_str().unwrap().to_string()
    }

    async fn balance(&self, key: &str) -> AccountInfo {
        let (status, _, v) = self.call("GET", "/api/v1/account", key, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        serde_json::from_value(v).unwrap()
    }

    async fn node(&self, key: &str, id: &str) -> NodeInfo {
        let (status, _, v) = self
            .call("GET", &format!("/api/v1/nodes/{id}"), key, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        serde_json::from_value(v).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitters_pay_for_validated_work_and_nodes_earn_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = |_| ambient_e2e::free_port().unwrap();
    let net = LocalNetwork::start(LocalOptions {
        data_dir: dir.path().to_path_buf(),
        agents: 3,
        http_addr: format!("127.0.0.1:{}", port(0)).parse().unwrap(),
        mqtt_addr: format!("127.0.0.1:{}", port(1)).parse().unwrap(),
        health_interval_sec: 0.5,
        datasets: Vec::new(),
        store: None,
    })
    .await
    .unwrap();
    let conn = net.connection.clone();
    let api = Api {
        url: conn.api_url.clone(),
        admin: conn.admin_key.clone().unwrap(),
        http: reqwest::Client::new(),
    };
    let (status, _, prices) = api.call("GET", "/api/v1/prices", "", None).await;
    assert_eq!(status, StatusCode::OK);
    let prices: PriceList = serde_json::from_value(prices).unwrap();
    let wasm = prices
        .kinds
        .iter()
        .find(|k| k.task_type == TaskType::WasmExecution)
        .unwrap()
        .clone();

    // A funded account pays for a replicated wasm task: its balance goes down by what was
    // charged, each node that answered validly earns its share, and the ledger shows both.
    let key = api.account("acme", 10 * MICRO, json!({})).await;
    // A bootstrap submitter's name is taken: refused, and nothing of it is kept.
    let body = json!({"account": "local", "limits": {"max_in_flight": 1}});
    let (status, _, v) = api
        .call("POST", "/api/v1/admin/accounts", &api.admin, Some(body))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, _, _) = api
        .call(
            "POST",
            "/api/v1/admin/accounts/local/keys",
            &api.admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let acme = Client::new(&conn.api_url, &key);
    let (sub, expected) = sum_task(&[3, 4, 5]);
    let sub = ambient_protocol::TaskSubmission {
        requirements: Requirements {
            min_nodes: 2,
            ..Requirements::default()
        },
        ..sub
    };
    let info = submit_and_wait(&acme, &sub).await;
    assert_eq!(output_sum(&info), expected);
    let cost = info.cost.expect("a cost");
    let fuel = info.result.as_ref().unwrap()["fuel_consumed"]
        .as_u64()
        .unwrap();
    let per_replica = wasm.per_replica
        + ((fuel as u128 * MICRO as u128).div_ceil(u128::from(wasm.units_per_credit))) as i64;
    assert_eq!(
        cost.charged,
        Some(2 * per_replica),
        "two valid replicas at {per_replica}"
    );
    assert!(cost.estimated >= 2 * per_replica);
    let after = api.balance(&key).await;
    assert_eq!(after.balance, 10 * MICRO - 2 * per_replica);
    assert_eq!((after.reserved, after.spent), (0, 2 * per_replica));
    let pay = per_replica * i64::from(prices.node_share_percent) / 100;
    let winners: Vec<String> =
        serde_json::from_value(info.result.as_ref().unwrap()["nodes"].clone()).unwrap();
    assert_eq!(winners.len(), 2);
    for node in &winners {
        let n = api.node(&key, node).await;
        assert_eq!(n.credits.total, pay, "{node} earned the node share");
        assert!(n.credits.recent_average > 0.0);
        let path = format!("/api/v1/admin/ledger?account=node:{node}");
        let (_, _, v) = api.call("GET", &path, &api.admin, None).await;
        let page: LedgerPage = serde_json::from_value(v).unwrap();
        assert_eq!(page.entries.len(), 1);
        assert_eq!(
            (
                page.entries[0].amount,
                page.entries[0].kind.as_str(),
                page.entries[0].task_id
            ),
            (pay, "pay", Some(info.task_id))
        );
    }
    let (_, _, v) = api.call("GET", "/api/v1/account/ledger", &key, None).await;
    let mine: LedgerPage = serde_json::from_value(v).unwrap();
    let of_acme: Vec<(&str, i64)> = mine
        .entries
        .iter()
        .filter(|e| e.account == "submitter:acme")
        .map(|e| (e.kind.as_str(), e.amount))
        .collect();
    assert_eq!(
        of_acme,
        vec![
            ("grant", 10 * MICRO),
            ("reserve", -cost.estimated),
            ("release", cost.estimated - 2 * per_replica)
        ]
    );

    // A task that fails (a trap on every replica) is charged nothing: the reserve comes back.
    let trap = wasm_task(
        r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#,
        json!({}),
        Requirements::default(),
    );
    let failed = submit_and_wait(&acme, &trap).await;
    assert_eq!(failed.status, TaskStatus::Failed, "{failed:?}");
    assert_eq!(failed.cost.unwrap().charged, Some(0));
    assert_eq!(api.balance(&key).await.balance, after.balance);

    // An inference is charged by the multiply-accumulates of the model's graph, as its node
    // counted them: the MLP fixture does 4·8 + 8·3 = 56 for one row.
    let fixtures = format!("{}/fixtures/onnx", env!("CARGO_MANIFEST_DIR"));
    let model = std::fs::read(format!("{fixtures}/mlp.onnx")).unwrap();
    let reference: Value =
        serde_json::from_slice(&std::fs::read(format!("{fixtures}/mlp.json")).unwrap()).unwrap();
    let mut inputs = json!({"model_base64": base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD, &model)});
    inputs["tensors"] = reference["inputs"].clone();
    let inference = ambient_protocol::TaskSubmission {
        task_type: TaskType::Inference,
        wasm_module: None,
        inputs,
        requirements: Requirements::default(),
        task_id: None,
    };
    let ran = submit_and_wait(&acme, &inference).await;
    assert_eq!(ran.status, TaskStatus::Completed, "{ran:?}");
    let onnx = prices
        .kinds
        .iter()
        .find(|k| k.task_type == TaskType::Inference)
        .unwrap();
    let macs_price = (56 * MICRO as u128).div_ceil(u128::from(onnx.units_per_credit)) as i64;
    assert_eq!(
        ran.cost.unwrap().charged,
        Some(onnx.per_replica + macs_price)
    );

    // An account whose credits cannot cover the reservation gets 402 with the figures, and its
    // task never exists.
    let poor_key = api.account("poor", 10, json!({})).await;
    let (status, _, v) = api
        .call(
            "POST",
            "/api/v1/tasks",
            &poor_key,
            Some(serde_json::to_value(&sub).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{v}");
    assert_eq!(v["error"], "insufficient_credits");
    assert!(v["message"].as_str().unwrap().contains("0.000010"), "{v}");
    let (_, _, tasks) = api.call("GET", "/api/v1/tasks", &poor_key, None).await;
    assert_eq!(tasks, json!([]));
    assert_eq!(api.balance(&poor_key).await.balance, 10);

    // A rate-limited account gets 429 with Retry-After past its rate, and nothing is reserved
    // for the refused submission.
    let fast_key = api
        .account("fast", MICRO, json!({"max_per_second": 1.0}))
        .await;
    let mut refused = 0;
    let mut accepted = 0;
    for _ in 0..4 {
        let body = serde_json::to_value(&sub).unwrap();
        let (status, headers, v) = api
            .call("POST", "/api/v1/tasks", &fast_key, Some(body))
            .await;
        match status {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(v["error"], "rate_limited", "{v}");
                let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(wait >= 1);
                refused += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(
        refused >= 2 && accepted >= 1,
        "{accepted} accepted, {refused} refused"
    );
    let fast = Client::new(&conn.api_url, &fast_key);
    let listed = fast.tasks().await.unwrap();
    assert_eq!(listed.len(), accepted);
    for t in &listed {
        fast.wait(t.task_id, WAIT, |_| {}).await.unwrap();
    }

    // A revoked key opens nothing.
    let (_, _, keys) = api
        .call("GET", "/api/v1/admin/keys", &api.admin, None)
        .await;
    let poor_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["account"] == "poor")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = api
        .call(
            "DELETE",
            &format!("/api/v1/admin/keys/{poor_id}"),
            &api.admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = api.call("GET", "/api/v1/account", &poor_key, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The whole ledger balances, nothing was paid twice, and the metrics agree with it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let entries = read_all(&conn.api_url, &api.admin).await.unwrap();
    let audit = Audit::of(&entries);
    assert_eq!(audit.faults(), 0, "{audit:?}");
    assert_eq!(audit.charged, audit.paid + audit.fee);
    assert!(audit.charged >= 2 * per_replica);
    let metrics = reqwest::get(format!("{}/metrics", conn.api_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let charged_line = format!(
        "ambient_credits_total{{flow=\"charged\"}} {}",
        audit.charged
    );
    assert!(metrics.contains(&charged_line), "{metrics}");
    net.shutdown().await;
}
