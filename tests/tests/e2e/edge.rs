//! The edge device: the lean headless agent (`--no-default-features --features wasm`) built for
//! aarch64 with Debian's cross gcc, run under qemu-user against a local network. It joins with a
//! token, reports health and runs a wasm task.
//!
//! `scripts/test` installs the cross toolchain and qemu-user-static, builds the agent for
//! `aarch64-unknown-linux-gnu` and sets `AMBIENT_REQUIRE_AARCH64=1`, so that a missing piece
//! fails here; elsewhere the test says what is missing and passes without running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ambient_e2e::Cluster;
use ambient_e2e::process::ServiceProcess;
use ambient_protocol::NodeState;
use ambient_protocol::join::TokenRequest;

use crate::util::*;

/// The cross-built agent, next to this build's own binaries.
fn aarch64_agent() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/e2e-… → target/aarch64-unknown-linux-gnu/<profile>/ambient-agent
    let profile_dir = exe.parent()?.parent()?;
    let profile = profile_dir.file_name()?;
    let bin = profile_dir
        .parent()?
        .join("aarch64-unknown-linux-gnu")
        .join(profile)
        .join("ambient-agent");
    bin.is_file().then_some(bin)
}

/// The emulator, and the aarch64 libraries' root.
const QEMU: &str = "/usr/bin/qemu-aarch64-static";
const SYSROOT: &str = "/usr/aarch64-linux-gnu";

fn missing() -> Option<String> {
    if aarch64_agent().is_none() {
        return Some(
            "no aarch64 agent: cargo build -p ambient-agent --no-default-features --features \
             wasm --target aarch64-unknown-linux-gnu (scripts/test does)"
                .into(),
        );
    }
    if !Path::new(QEMU).is_file() || !Path::new(SYSROOT).join("lib").is_dir() {
        return Some(format!(
            "no {QEMU} or {SYSROOT}: apt-get install qemu-user-static libc6-dev-arm64-cross"
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aarch64_agent_joins_and_runs_a_task_under_emulation() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("AMBIENT_REQUIRE_AARCH64").is_none(),
            "AMBIENT_REQUIRE_AARCH64 is set, but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let bin = aarch64_agent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The runner: qemu-user with the aarch64 loader and libc of Debian's cross packages.
    let qemu = dir.path().join("qemu-aarch64");
    std::fs::write(
        &qemu,
        format!("#!/bin/sh\nexec {QEMU} -L {SYSROOT} \"$@\"\n"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let c = Cluster::embedded(0).await.unwrap();
    let token = c
        .admin()
        .create_token(&TokenRequest::default())
        .await
        .unwrap()
        .token
        .unwrap();
    let config = dir.path().join("agent.toml");
    let joined = run_program(
        Some(qemu.clone()),
        bin.clone(),
        vec![
            "join".into(),
            token,
            "--config".into(),
            config.display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--json".into(),
        ],
    )
    .await;
    let joined: serde_json::Value = serde_json::from_str(&joined).unwrap();
    let node = joined["node_id"].as_str().unwrap().to_string();
    let agent = ServiceProcess::start_under(Some(&qemu), &bin, &config, dir.path()).unwrap();

    // Health reported: online, with a health report, within 60 s (emulation is slow).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = c.client().nodes().await.unwrap();
        let n = nodes.iter().find(|n| n.node_id == node);
        if n.is_some_and(|n| n.state == NodeState::Online && n.health.is_some()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the aarch64 agent did not come online; its log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (task, expected) = sum_task(&[10, 20, 30]);
    let done = submit_and_wait(&c.client(), &task).await;
    assert_eq!(output_sum(&done), expected);
    assert_eq!(done.assigned_nodes, vec![node.clone()]);
    assert_eq!(node_state(&c, &node).await, Some(NodeState::Online));
    drop(agent);
    c.shutdown().await;
}
