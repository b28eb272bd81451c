//! The tray app against a real network: a coordinator, the embedded broker and one agent with its
//! control API, which runs a few tasks so the coordinator has published its reputation. Then:
//!
//! - `tray-app/tests/dashboard.mjs` drives the dashboard (`tray-app/ui`) in headless Chromium:
//!   toggle, settings (saved, and refused with the agent's error), reputation chart, no agent;
//! - `tray-app/tests/tray_sni.py` starts the real `ambient-tray` binary under Xvfb and checks its
//!   StatusNotifierItem over D-Bus: icon states, menu, toggling from the menu, "Open dashboard".
//!
//! Both read the agent's state back with their own authorized requests. Screenshots go to
//! `target/test-output/tray/`. The tools they need (node with playwright-core in
//! `tray-app/tests/node_modules`, Chromium, Xvfb, dbus-run-session, python3-gi, the tray binary
//! built by `cargo build --manifest-path tray-app/Cargo.toml`) are installed by `scripts/test`,
//! which sets `AMBIENT_REQUIRE_TRAY_TESTS=1`: then a missing tool fails the test instead of
//! skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ambient_cli::modules;
use ambient_e2e::Cluster;
use ambient_e2e::browser::{self, repo};
use ambient_protocol::{Requirements, TaskStatus, TaskSubmission, TaskType};
use base64::Engine as _;

/// Why the tray tests cannot run here, if they cannot: the browser's tools, and Xvfb, a D-Bus
/// session, python3-gi and the tray binary.
fn missing_tools() -> Vec<String> {
    let mut missing = browser::missing_tools();
    for tool in ["Xvfb", "dbus-run-session"] {
        if !browser::on_path(tool) {
            missing.push(tool.to_string());
        }
    }
    if !Command::new("/usr/bin/python3")
        .args(["-c", "from gi.repository import Gio"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("python3-gi".into());
    }
    if !tray_binary().exists() {
        missing.push(format!(
            "{} (cargo build --manifest-path tray-app/Cargo.toml)",
            tray_binary().display()
        ));
    }
    missing
}

/// Where cargo put the tray's debug build: `tray-app/target` (its own workspace), or
/// `CARGO_TARGET_DIR` when that is set (relative to the repository, where `scripts/test` runs).
fn tray_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo().join("tray-app/target"), |dir| repo().join(dir));
    target.join("debug/ambient-tray")
}

fn sum_task(n: u64) -> TaskSubmission {
    TaskSubmission {
        task_type: TaskType::WasmExecution,
        wasm_module: Some(
            base64::engine::general_purpose::STANDARD.encode(modules::wasm(modules::SUM_WAT)),
        ),
        inputs: serde_json::json!({ "numbers": [1, 2, n] }),
        requirements: Requirements::default(),
        task_id: None,
    }
}

/// The agent's reputation report, straight from its control API, once it has `events` events.
async fn wait_reputation(control: &Path, events: usize) -> serde_json::Value {
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(control).expect("control.json")).expect("json");
    let url = format!("{}/v1/reputation", info["url"].as_str().expect("url"));
    let token = info["token"].as_str().expect("token").to_string();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("agent answers");
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.expect("json");
            if v["history"].as_array().is_some_and(|h| h.len() >= events) {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never got a reputation with {events} events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn run_script(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {what} test: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the {what} test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_tray_drive_a_real_agent() {
    if browser::skip("the tray tests", &missing_tools()) {
        return;
    }

    let cluster = Cluster::embedded(1).await.expect("cluster");
    let client = cluster.client();
    client
        .wait_for_nodes(1, Duration::from_secs(20))
        .await
        .expect("node online");
    for n in 0..4 {
        let info = client.submit(&sum_task(n)).await.expect("submit");
        let done = client
            .wait(info.task_id, Duration::from_secs(60), |_| {})
            .await
            .expect("wait");
        assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    }
    let control = cluster.dir.path().join("node-1").join("control.json");
    let rep = wait_reputation(&control, 4).await;
    println!("reputation: {}", rep["reputation"]);

    let out = repo().join("target/test-output/tray");
    std::fs::create_dir_all(&out).expect("output dir");
    let tests = repo().join("tray-app/tests");
    run_script(
        "dashboard (Chromium)",
        Command::new("node")
            .arg(tests.join("dashboard.mjs"))
            .arg("--control")
            .arg(&control)
            .arg("--out")
            .arg(&out),
    );
    run_script(
        "tray (Xvfb + D-Bus)",
        Command::new("/usr/bin/python3")
            .arg(tests.join("tray_sni.py"))
            .arg("--bin")
            .arg(tray_binary())
            .arg("--control")
            .arg(&control)
            .arg("--out")
            .arg(&out),
    );
    cluster.shutdown().await;
}

/// The processes whose command line starts with `exe` (from /proc).
fn running(exe: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmd.split(|&b| b == 0).next()?;
        (argv0 == exe.as_bytes()).then_some(pid)
    })
    .collect()
}

/// Runs a package command as root (directly, or with `sudo -n`).
fn as_root(args: &[&str]) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let mut cmd = if root {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(args[0]);
        c
    };
    cmd.args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("runs")
}

/// Removes the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = as_root(&["apt-get", "remove", "-y", "-qq", "ambient-vcp"]);
    }
}

/// The home user's whole path, from the package: `scripts/package-deb` builds it, this test
/// installs it with apt on this machine, starts the agent as the package's user service starts
/// it and the tray under Xvfb, joins from the dashboard in headless Chromium by pasting a token,
/// sees the node contributing, then removes the package and finds nothing of it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_joins_from_the_dashboard_and_leaves_nothing_running() {
    let Some(deb) = std::env::var_os("AMBIENT_DEB").map(PathBuf::from) else {
        assert!(
            std::env::var_os("AMBIENT_REQUIRE_TRAY_TESTS").is_none(),
            "AMBIENT_REQUIRE_TRAY_TESTS is set but AMBIENT_DEB (the package scripts/package-deb \
             builds) is not"
        );
        eprintln!("skipping the package test: set AMBIENT_DEB to a .deb (scripts/test does)");
        return;
    };
    let missing = missing_tools();
    assert!(missing.is_empty(), "missing {missing:?}");
    let install = as_root(&[
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        deb.to_str().expect("a UTF-8 path"),
    ]);
    assert!(
        install.status.success(),
        "apt-get install {}: {}",
        deb.display(),
        String::from_utf8_lossy(&install.stderr)
    );
    let installed = Installed;

    let cluster = Cluster::embedded(0).await.expect("cluster");
    let token = cluster
        .admin()
        .create_token(&ambient_protocol::join::TokenRequest::default())
        .await
        .expect("token")
        .token
        .expect("the token");
    let home = tempfile::tempdir().expect("home");
    // The user service as systemd would start it (no user manager runs here): the unit's own
    // ExecStart, with %h the user's home.
    let unit = std::fs::read_to_string("/usr/lib/systemd/user/ambient-agent.service")
        .expect("the package installs the user unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
        .replace("%h", &home.path().display().to_string());
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let log = std::fs::File::create(home.path().join("agent.log")).expect("log");
    let mut agent = Command::new(argv[0])
        .args(&argv[1..])
        .env("HOME", home.path())
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("the packaged agent starts");
    let control = home.path().join(".local/share/ambient-agent/control.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !control.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting agent wrote no control.json: {}",
            std::fs::read_to_string(home.path().join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The tray, from the package, on a virtual display with a session bus.
    let mut tray = Command::new("xvfb-run")
        .args(["-a", "dbus-run-session", "--", "/usr/bin/ambient-tray"])
        .env("HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("xvfb-run");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        tray.try_wait().expect("tray").is_none(),
        "the tray app exited"
    );
    assert_eq!(
        running("/usr/bin/ambient-tray").len(),
        1,
        "the packaged tray runs"
    );

    let out_dir = repo().join("target/test-output/tray");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let joined = Command::new("node")
        .arg(repo().join("tray-app/tests/join.mjs"))
        .arg("--control")
        .arg(&control)
        .arg("--token")
        .arg(&token)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&joined.stdout).to_string();
    println!("{stdout}");
    assert!(
        joined.status.success(),
        "the join test failed:\n{stdout}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&joined.stderr),
        std::fs::read_to_string(home.path().join("agent.log")).unwrap_or_default()
    );
    let node = stdout
        .lines()
        .find_map(|l| l.strip_prefix("NODE_ID="))
        .expect("the node id")
        .to_string();
    let nodes = cluster.client().nodes().await.expect("nodes");
    assert!(
        nodes
            .iter()
            .any(|n| n.node_id == node && n.state == ambient_protocol::NodeState::Online),
        "{node} is not online at the coordinator: {nodes:?}"
    );

    // Removing the package stops everything it started.
    drop(installed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = [
            running("/usr/bin/ambient-agent"),
            running("/usr/bin/ambient-tray"),
        ]
        .concat();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the package was removed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.wait().is_ok());
    let _ = tray.wait();
    assert!(!Path::new("/usr/bin/ambient-agent").exists());
    cluster.shutdown().await;
}
