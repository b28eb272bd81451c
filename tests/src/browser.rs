//! What the headless-Chromium tests need (the tray app's dashboard, the web console), and the one
//! rule for a missing tool: the test is skipped with a message, unless `AMBIENT_REQUIRE_TRAY_TESTS`
//! is set (`scripts/test` sets it once it has installed them), and then it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e package lives in the repository")
        .to_path_buf()
}

/// Whether `tool` is on the PATH.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What driving Chromium needs and this machine lacks: node, Chromium (or `CHROMIUM`), and
/// playwright-core in `tray-app/tests/node_modules` (`npm ci` there).
pub fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if !on_path("node") {
        missing.push("node".to_string());
    }
    if !["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .any(|p| Path::new(p).exists())
        && std::env::var_os("CHROMIUM").is_none()
    {
        missing.push("chromium".into());
    }
    if !repo()
        .join("tray-app/tests/node_modules/playwright-core")
        .exists()
    {
        missing.push("playwright-core (npm ci in tray-app/tests)".into());
    }
    missing
}

/// True when `what` must be skipped because of `missing` (said on stderr); panics instead when
/// `AMBIENT_REQUIRE_TRAY_TESTS` is set.
pub fn skip(what: &str, missing: &[String]) -> bool {
    if missing.is_empty() {
        return false;
    }
    assert!(
        std::env::var_os("AMBIENT_REQUIRE_TRAY_TESTS").is_none(),
        "AMBIENT_REQUIRE_TRAY_TESTS is set but these are missing for {what}: {missing:?}"
    );
    eprintln!("skipping {what}: missing {missing:?} (scripts/test installs them)");
    true
}
