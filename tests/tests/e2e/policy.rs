//! The home user's side on a real running agent: the contribution policy (an exclusive app, real
//! X11 idleness under Xvfb) and the local control API (auth, toggle, settings that survive a
//! restart, clear errors, reputation), with the coordinator and broker watching.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_link::Incoming;
use ambient_protocol::{Health, ReputationEventKind, Requirements, TaskStatus, topics};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::util::*;

/// The broker account the harness gives the coordinator (it may read every node's topics).
const WATCHER: (&str, &str) = ("coordinator", "coordinator-password");

/// A client of one agent's control API, from its `control.json`.
struct Ctl {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Ctl {
    fn open(data_dir: &Path) -> Ctl {
        let text = std::fs::read_to_string(data_dir.join("control.json")).expect("control.json");
        let v: Value = serde_json::from_str(&text).unwrap();
        Ctl {
            url: v["url"].as_str().unwrap().to_string(),
            token: v["token"].as_str().unwrap().to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send_as(method, path, body, Some(&self.token)).await
    }

    async fn send_as(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("control API reachable");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
        (status, v)
    }

    async fn status(&self) -> Value {
        let (code, v) = self.send("GET", "/v1/status", None).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        v
    }

    async fn put_settings(&self, s: &Value) -> Value {
        let (code, v) = self.send("PUT", "/v1/settings", Some(s.clone())).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        v
    }

    /// Polls status every 10 ms until `pred` holds; returns it and how long that took.
    async fn until(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> (Value, Duration) {
        let t0 = Instant::now();
        loop {
            let s = self.status().await;
            if pred(&s) {
                return (s, t0.elapsed());
            }
            assert!(t0.elapsed() < within, "not within {within:?}: {s}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn default_settings() -> Value {
    json!({"enabled": true, "idle_only": false, "idle_minutes": 5, "pause_on_battery": true,
           "cpu_max_cores": null, "cpu_duty_pct": 100, "gpu_enabled": true,
           "exclusive_apps": [], "time_windows": []})
}

/// Health reports of `node` as the broker delivers them to a third party.
async fn watch_health(
    c: &Cluster,
    node: &str,
) -> (mpsc::Receiver<Health>, tokio_util::sync::DropGuard) {
    let token = tokio_util::sync::CancellationToken::new();
    let id = format!("health-watch-{}", uuid::Uuid::new_v4().simple());
    let mut link = c
        .mqtt_client(WATCHER, &id, vec![topics::node_health(node)], &token)
        .await
        .expect("health watcher could not connect");
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        while let Some(m) = link.incoming.recv().await {
            if let Incoming::Publish { payload, .. } = m
                && let Ok(h) = ambient_protocol::envelope::decode::<Health>(&payload)
                && tx.send(h).await.is_err()
            {
                return;
            }
        }
    });
    // Let the SUBACK land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (rx, token.drop_guard())
}

/// Waits for a health report matching `pred`; returns it with its arrival time.
async fn health_until(
    rx: &mut mpsc::Receiver<Health>,
    within: Duration,
    pred: impl Fn(&Health) -> bool,
) -> (Health, Instant) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let h = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no matching health report within {within:?}"))
            .expect("watcher alive");
        if pred(&h) {
            return (h, Instant::now());
        }
    }
}

/// A program under a name nothing else has: a copy of `sleep`, started and killed by the test.
struct ExclusiveApp {
    name: String,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ExclusiveApp {
    fn new() -> ExclusiveApp {
        let dir = tempfile::tempdir().unwrap();
        // 14 characters: also fits Linux's 15-byte process name.
        let name = format!(
            "ambgame-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let path = dir.path().join(&name);
        std::fs::copy("/bin/sleep", &path).expect("copy /bin/sleep");
        ExclusiveApp {
            name,
            path,
            _dir: dir,
        }
    }

    fn start(&self) -> Child {
        Command::new(&self.path)
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the exclusive app")
    }
}

/// A wasm task that runs for several seconds: `busy.wat` with five times the iterations.
fn long_task() -> (ambient_protocol::TaskSubmission, u64) {
    let n: u64 = 1_500_000_000;
    let wat = modules::BUSY_WAT.replace("300000000", &n.to_string());
    assert_ne!(wat, modules::BUSY_WAT);
    let req = Requirements {
        max_execution_time_sec: 120,
        ..Requirements::default()
    };
    (wasm_task(&wat, json!({}), req), n * (n - 1) / 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_app_pauses_the_agent_and_its_task_moves_to_another() {
    let c = Cluster::mosquitto(2).await.unwrap();
    let client = c.client();
    let app = ExclusiveApp::new();
    let (sub, expected) = long_task();
    let info = client.submit(&sub).await.unwrap();
    let running = wait_status(&client, info.task_id, TaskStatus::Running).await;
    let holder = running.assigned_nodes[0].clone();
    let h = c.agent_index(&holder);
    let ctl = Ctl::open(&c.agent_dir(h));

    // The owner lists the app; it is not running, so nothing changes.
    let mut settings = default_settings();
    settings["exclusive_apps"] = json!([app.name]);
    assert_eq!(ctl.put_settings(&settings).await, settings);
    let s = ctl.status().await;
    assert_eq!(s["contributing"], true, "{s}");
    assert_eq!(s["running"][0]["task_id"], info.task_id.to_string(), "{s}");
    assert_eq!(s["running"][0]["task_type"], "wasm_execution", "{s}");
    let (mut health, _watch) = watch_health(&c, &holder).await;

    // The app starts: within a second the agent is paused and its task has stopped.
    let started = Instant::now();
    let mut game = app.start();
    let (s, _) = ctl
        .until(Duration::from_secs(2), |s| {
            s["contributing"] == false && s["running"].as_array().unwrap().is_empty()
        })
        .await;
    let paused_after = started.elapsed();
    assert!(
        paused_after < Duration::from_secs(1),
        "paused after {paused_after:?}"
    );
    assert_eq!(
        s["paused_reasons"],
        json!([format!("exclusive app running: {}", app.name)])
    );
    let (h_paused, at) = health_until(&mut health, Duration::from_secs(2), |h| !h.accepting).await;
    assert!(at - started < Duration::from_secs(1), "{:?}", at - started);
    assert!(
        h_paused
            .paused_reason
            .as_deref()
            .unwrap_or("")
            .contains(&app.name),
        "{h_paused:?}"
    );

    // The coordinator moved the task at once, and it completes on the other agent.
    let done = client.wait(info.task_id, WAIT, |_| {}).await.unwrap();
    assert_eq!(output_sum(&done), expected);
    assert_eq!(done.assigned_nodes.len(), 2, "{done:?}");
    assert_eq!(done.assigned_nodes[0], holder);
    assert_ne!(done.assigned_nodes[1], holder);
    let row = persisted(&c.coordinator_db(), info.task_id);
    assert_eq!(row["assignments"][0]["state"], "declined", "{row}");
    assert_eq!(row["assignments"][1]["state"], "finished", "{row}");

    // The app quits: the agent resumes within a second and takes work again.
    game.kill().unwrap();
    game.wait().unwrap();
    let quit = Instant::now();
    let (s, _) = ctl
        .until(Duration::from_secs(2), |s| s["contributing"] == true)
        .await;
    assert!(
        quit.elapsed() < Duration::from_secs(1),
        "{:?}",
        quit.elapsed()
    );
    assert_eq!(s["paused_reasons"], json!([]));
    health_until(&mut health, Duration::from_secs(2), |h| h.accepting).await;
    let (mut both, expected) = sum_task(&[4, 5, 6]);
    both.requirements.min_nodes = 2;
    let done = submit_and_wait(&client, &both).await;
    assert_eq!(output_sum(&done), expected);
    assert!(done.assigned_nodes.contains(&holder), "{done:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_auth_toggle_and_settings_that_survive_a_restart() {
    let mut c = Cluster::mosquitto(1).await.unwrap();
    let client = c.client();
    let dir = c.agent_dir(0);
    let ctl = Ctl::open(&dir);
    assert!(ctl.url.starts_with("http://127.0.0.1:"), "{}", ctl.url);
    assert_eq!(ctl.token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("control.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "control.json must be owner-only");
    }

    // No token, a wrong token, a token of the wrong form: refused, with the API error shape.
    for token in [None, Some("0".repeat(64)), Some(format!("{}x", ctl.token))] {
        for (method, path) in [
            ("GET", "/v1/status"),
            ("POST", "/v1/toggle"),
            ("GET", "/v1/settings"),
            ("PUT", "/v1/settings"),
            ("GET", "/v1/reputation"),
            ("GET", "/v1/nowhere"),
        ] {
            let body = (method != "GET").then(|| json!({"enabled": false}));
            let (code, v) = ctl.send_as(method, path, body, token.as_deref()).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
            assert_eq!(v["error"], "unauthorized", "{v}");
            assert!(v["message"].as_str().unwrap().contains("token"), "{v}");
        }
    }
    assert_eq!(
        ctl.status().await["contributing"],
        true,
        "refused calls changed nothing"
    );

    let s = ctl.status().await;
    assert_eq!(s["node_id"], "node-1");
    assert_eq!(s["connected"], true, "{s}");
    assert_eq!(s["settings"], default_settings());
    assert!(
        s["resources"]["agent_rss_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(
        s["resources"]["mem_total_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    let done_before = s["tasks_done"].as_u64().unwrap();
    let (code, v) = ctl.send("GET", "/v1/nowhere", None).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Toggle off: the answer already says paused, and the broker carries accepting=false.
    let (mut health, _watch) = watch_health(&c, "node-1").await;
    let t0 = Instant::now();
    let (code, s) = ctl
        .send("POST", "/v1/toggle", Some(json!({"enabled": false})))
        .await;
    assert_eq!(code, StatusCode::OK, "{s}");
    assert_eq!(s["contributing"], false, "{s}");
    assert_eq!(s["paused_reasons"], json!(["contribution is switched off"]));
    assert_eq!(s["settings"]["enabled"], false);
    let (h, at) = health_until(&mut health, Duration::from_secs(2), |h| !h.accepting).await;
    assert!(at - t0 < Duration::from_secs(1), "{:?}", at - t0);
    assert_eq!(
        h.paused_reason.as_deref(),
        Some("contribution is switched off")
    );
    assert_eq!(ctl.status().await["contributing"], false);

    // Paused, the node gets no work: a task waits...
    let (sub, expected) = sum_task(&[20, 22]);
    let info = client.submit(&sub).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = client.task(info.task_id).await.unwrap();
    assert!(waiting.assigned_nodes.is_empty(), "{waiting:?}");
    assert!(!waiting.status.is_terminal(), "{waiting:?}");
    // ...until the owner switches it back on.
    let (code, s) = ctl
        .send("POST", "/v1/toggle", Some(json!({"enabled": true})))
        .await;
    assert_eq!(
        (code, &s["contributing"]),
        (StatusCode::OK, &json!(true)),
        "{s}"
    );
    health_until(&mut health, Duration::from_secs(2), |h| h.accepting).await;
    let done = client.wait(info.task_id, WAIT, |_| {}).await.unwrap();
    assert_eq!(output_sum(&done), expected);
    let counted = ctl
        .until(Duration::from_secs(10), |s| {
            s["tasks_done"].as_u64().unwrap() > done_before
        })
        .await
        .0;
    assert_eq!(counted["tasks_done"].as_u64().unwrap(), done_before + 1);

    // Bad settings: 400 invalid_settings naming the field, and nothing changes.
    let mut bad = Vec::new();
    let mut v = default_settings();
    v["cpu_duty_pct"] = json!(0);
    bad.push((v, "cpu_duty_pct"));
    let mut v = default_settings();
    v["idle_minutes"] = json!(0);
    bad.push((v, "idle_minutes"));
    let mut v = default_settings();
    v["time_windows"] = json!([{"days": ["mon"], "start": "25:00", "end": "07:00"}]);
    bad.push((v, "time_windows[0].start"));
    let mut v = default_settings();
    v["time_windows"] = json!([{"days": ["someday"], "start": "22:00", "end": "07:00"}]);
    bad.push((v, "time_windows[0].days"));
    let mut v = default_settings();
    v["exclusive_apps"] = json!(["/usr/bin/steam"]);
    bad.push((v, "exclusive_apps[0]"));
    let mut v = default_settings();
    v["turbo"] = json!(true);
    bad.push((v, "unknown field `turbo`"));
    let mut v = default_settings();
    v.as_object_mut().unwrap().remove("gpu_enabled");
    bad.push((v, "missing field `gpu_enabled`"));
    let mut v = default_settings();
    v["cpu_max_cores"] = json!("two");
    bad.push((v, "invalid type"));
    for (body, says) in bad {
        let (code, e) = ctl.send("PUT", "/v1/settings", Some(body.clone())).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_eq!(e["error"], "invalid_settings", "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{says}: {e}");
    }
    let (code, e) = ctl
        .send("POST", "/v1/toggle", Some(json!({"enabled": "yes"})))
        .await;
    assert_eq!(
        (code, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{e}"
    );
    let (_, now) = ctl.send("GET", "/v1/settings", None).await;
    assert_eq!(now, default_settings(), "refused settings changed nothing");

    // Good settings persist across a restart of the agent, and so does the token.
    let chosen = json!({"enabled": true, "idle_only": false, "idle_minutes": 12,
        "pause_on_battery": false, "cpu_max_cores": 1, "cpu_duty_pct": 60, "gpu_enabled": false,
        "exclusive_apps": ["steam", "blender"],
        "time_windows": [{"days": ["mon","tue","wed","thu","fri","sat","sun"],
                          "start": "00:00", "end": "24:00"}]});
    assert_eq!(ctl.put_settings(&chosen).await, chosen);
    assert_eq!(ctl.send("GET", "/v1/settings", None).await.1, chosen);
    c.stop_agent(0).await;
    let restarted = chrono::Utc::now();
    c.start_agent(0).await.unwrap();
    let again = Ctl::open(&dir);
    assert_eq!(again.token, ctl.token, "the token is kept across restarts");
    assert_eq!(again.send("GET", "/v1/settings", None).await.1, chosen);
    let s = again.status().await;
    assert_eq!(s["settings"], chosen);
    assert_eq!(s["contributing"], true, "{s}");
    // GPU off and one core show in the health the coordinator sees.
    let (h, _) = health_until(&mut health, Duration::from_secs(5), |h| h.at > restarted).await;
    assert!(h.accepting, "{h:?}");
    assert_eq!(h.max_concurrent_tasks, 1, "{h:?}");
    assert!(h.gpus.is_empty(), "{h:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reputation_published_by_the_coordinator_reaches_the_control_api() {
    let c = Cluster::mosquitto(1).await.unwrap();
    let ctl = Ctl::open(&c.agent_dir(0));
    let (code, v) = ctl.send("GET", "/v1/reputation", None).await;
    match code {
        StatusCode::NOT_FOUND => assert_eq!(v["error"], "no_reputation_yet", "{v}"),
        StatusCode::OK => assert_eq!(v["node_id"], "node-1", "{v}"),
        other => panic!("{other}: {v}"),
    }
    // Earn a reputation: a task the coordinator accepts. The coordinator publishes the node's
    // report, retained, on its topic; it reaches the node through the broker's ACL and comes out
    // of the control API as the coordinator's REST API tells it.
    let (sub, expected) = sum_task(&[1, 2, 3]);
    let done = submit_and_wait(&c.client(), &sub).await;
    assert_eq!(output_sum(&done), expected);
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let (code, v) = ctl.send("GET", "/v1/reputation", None).await;
        if code == StatusCode::OK
            && v["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["task_id"] == done.task_id.to_string())
        {
            break serde_json::from_value::<ambient_protocol::ReputationReport>(v).unwrap();
        }
        assert!(Instant::now() < deadline, "{code}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rest = c.client().reputation("node-1").await.unwrap();
    assert_eq!(got.node_id, "node-1");
    assert!(got.reputation.valid >= 1, "{got:?}");
    assert_eq!(
        got.reputation.valid, rest.reputation.valid,
        "{got:?} vs {rest:?}"
    );
    assert_eq!(
        got.history.last().map(|e| e.kind),
        Some(ReputationEventKind::Valid)
    );
    c.shutdown().await;
}

/// An X server of our own (Xvfb), killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_xvfb() -> Option<Xvfb> {
    if !have("Xvfb") || !have("xdotool") {
        assert!(
            std::env::var("AMBIENT_REQUIRE_XVFB").as_deref() != Ok("1"),
            "AMBIENT_REQUIRE_XVFB=1 but Xvfb or xdotool is missing (apt install xvfb xdotool)"
        );
        eprintln!("SKIPPED: Xvfb or xdotool not installed");
        return None;
    }
    for _ in 0..20 {
        let n = 100 + (uuid::Uuid::new_v4().as_u128() % 30_000) as u32;
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let child = Command::new("Xvfb")
            .args([
                format!(":{n}").as_str(),
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "640x480x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let mut x = Xvfb {
            child,
            display: format!(":{n}"),
        };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return Some(x);
            }
            if x.child.try_wait().unwrap().is_some() {
                break; // lost a race for the display number: try another
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start Xvfb");
}

fn move_mouse(display: &str, x: u32) {
    let ok = Command::new("xdotool")
        .args(["mousemove", &x.to_string(), "10"])
        .env("DISPLAY", display)
        .status()
        .expect("run xdotool");
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_only_follows_real_keyboard_and_mouse_idleness_under_x11() {
    let Some(x) = start_xvfb() else { return };
    let mut c = Cluster::embedded(1).await.unwrap();
    c.stop_agent(0).await;
    let display = x.display.clone();
    c.start_agent_with(0, |cfg| cfg.policy.x11_display = Some(display))
        .await
        .unwrap();
    let ctl = Ctl::open(&c.agent_dir(0));
    let mut settings = default_settings();
    settings["idle_only"] = json!(true);
    settings["idle_minutes"] = json!(1);

    // Someone moves the mouse: the machine is in use.
    move_mouse(&x.display, 5);
    let last_input = Instant::now();
    ctl.put_settings(&settings).await;
    let (s, _) = ctl
        .until(Duration::from_secs(2), |s| s["contributing"] == false)
        .await;
    let reason = s["paused_reasons"][0].as_str().unwrap();
    assert!(reason.contains("in use"), "{s}");

    // A minute without input: contributing, and not much earlier.
    let (_, _) = ctl
        .until(Duration::from_secs(75), |s| s["contributing"] == true)
        .await;
    let idle_for = last_input.elapsed();
    assert!(idle_for >= Duration::from_secs(59), "{idle_for:?}");

    // Input again: paused within a second, and the coordinator hears it.
    let (mut health, _watch) = watch_health(&c, "node-1").await;
    let moved = Instant::now();
    move_mouse(&x.display, 200);
    let (s, _) = ctl
        .until(Duration::from_secs(2), |s| s["contributing"] == false)
        .await;
    assert!(
        moved.elapsed() < Duration::from_secs(1),
        "{:?}",
        moved.elapsed()
    );
    assert!(
        s["paused_reasons"][0].as_str().unwrap().contains("in use"),
        "{s}"
    );
    let (h, _) = health_until(&mut health, Duration::from_secs(2), |h| !h.accepting).await;
    assert!(h.paused_reason.unwrap().contains("in use"));
    c.shutdown().await;
}
