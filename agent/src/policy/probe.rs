//! The real probes behind the contribution policy. All of them block; the agent calls them from a
//! blocking thread.
//!
//! - **Idleness** (Linux): the X server's XScreenSaver extension (`ms_since_user_input`, the time
//!   since the last real or XTEST input) when a display is configured or `DISPLAY` is set;
//!   otherwise logind's `IdleHint`/`IdleSinceHint` through `loginctl`
//!   (the session in `XDG_SESSION_ID`, or the calling user). Other operating systems report that
//!   idle detection is not supported, so idle-only pauses and says why.
//! - **Battery** (Linux): `/sys/class/power_supply/*`: a `Battery` whose `status` is
//!   `Discharging`. No battery means mains. Other operating systems report unknown.
//! - **Processes**: sysinfo's process list, matched by name, executable file name and `argv[0]`
//!   (Linux truncates a process's own name to 15 bytes).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::time::Instant;

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, RefreshKind, System, UpdateKind};

use super::Probes;

/// How long a logind answer is reused: `loginctl` is a process to start.
#[cfg(target_os = "linux")]
const LOGIND_TTL: Duration = Duration::from_secs(1);

/// The machine's probes.
pub struct SystemProbes {
    display: Option<String>,
    #[cfg(target_os = "linux")]
    x11: Option<x11::Idle>,
    #[cfg(target_os = "linux")]
    logind: Option<(Instant, Result<Duration, String>)>,
    power_supply: PathBuf,
    sys: Option<System>,
}

impl std::fmt::Debug for SystemProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemProbes")
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

impl SystemProbes {
    /// Probes reading idleness from X display `display` (else `$DISPLAY`), or logind.
    pub fn new(display: Option<String>) -> SystemProbes {
        SystemProbes {
            display: display.or_else(|| std::env::var("DISPLAY").ok().filter(|d| !d.is_empty())),
            #[cfg(target_os = "linux")]
            x11: None,
            #[cfg(target_os = "linux")]
            logind: None,
            power_supply: PathBuf::from("/sys/class/power_supply"),
            sys: None,
        }
    }

    #[cfg(target_os = "linux")]
    fn idle_linux(&mut self) -> Result<Duration, String> {
        let x11_err = match &self.display {
            None => "no X display (DISPLAY unset)".to_string(),
            Some(d) => {
                let read = match self.x11.take() {
                    Some(x) => x.since_input().map(|idle| (idle, x)),
                    None => x11::Idle::connect(d).and_then(|x| Ok((x.since_input()?, x))),
                };
                match read {
                    Ok((idle, x)) => {
                        self.x11 = Some(x); // keep the connection for the next reading
                        return Ok(idle);
                    }
                    Err(e) => format!("X display {d}: {e}"),
                }
            }
        };
        if let Some((at, r)) = &self.logind
            && at.elapsed() < LOGIND_TTL
        {
            return r.clone();
        }
        let r = logind_idle().map_err(|e| format!("{x11_err}; logind: {e}"));
        self.logind = Some((Instant::now(), r.clone()));
        r
    }
}

impl Probes for SystemProbes {
    fn idle(&mut self) -> Result<Duration, String> {
        #[cfg(target_os = "linux")]
        return self.idle_linux();
        #[cfg(not(target_os = "linux"))]
        Err("idle detection is not supported on this OS".to_string())
    }

    fn on_battery(&mut self) -> Option<bool> {
        if cfg!(target_os = "linux") {
            on_battery(&self.power_supply)
        } else {
            None
        }
    }

    fn running(&mut self, names: &[String]) -> Vec<String> {
        if self.sys.is_none() {
            self.sys = System::new_with_specifics(RefreshKind::nothing()).ok();
        }
        let Some(sys) = &mut self.sys else {
            return Vec::new();
        };
        sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_exe(UpdateKind::OnlyIfNotSet)
                .with_cmd(UpdateKind::OnlyIfNotSet),
        );
        let me = sysinfo::get_current_pid().ok();
        let mut found: Vec<String> = names
            .iter()
            .filter(|n| {
                sys.processes().iter().any(|(pid, p)| {
                    Some(*pid) != me
                        && matches(n, p.name(), p.exe(), p.cmd().first().map(|c| c.as_os_str()))
                })
            })
            .cloned()
            .collect();
        found.dedup();
        found
    }
}

fn normalize(s: &OsStr) -> String {
    let s = s.to_string_lossy().to_lowercase();
    match s.strip_suffix(".exe") {
        Some(stem) => stem.to_string(),
        None => s,
    }
}

/// Whether a process is the listed program: by its name, its executable's file name or the file
/// name of its `argv[0]`, case-insensitively and without a `.exe` suffix.
pub fn matches(listed: &str, name: &OsStr, exe: Option<&Path>, argv0: Option<&OsStr>) -> bool {
    let want = normalize(OsStr::new(listed));
    let file = |p: &Path| p.file_name().map(normalize);
    let exe_name = exe.and_then(file);
    let argv_name = argv0.and_then(|a| file(Path::new(a)));
    let name = normalize(name);
    if name == want || exe_name.as_deref() == Some(&want) || argv_name.as_deref() == Some(&want) {
        return true;
    }
    // Linux keeps 15 bytes of a process's name; only trust a prefix when nothing else is known.
    exe_name.is_none() && argv_name.is_none() && name.len() == 15 && want.starts_with(&name)
}

/// `Some(true)` when a battery discharges, `Some(false)` on mains or with no battery, `None` when
/// the directory cannot be read.
pub fn on_battery(power_supply: &Path) -> Option<bool> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut discharging = false;
    for entry in std::fs::read_dir(power_supply).ok()?.flatten() {
        let dir = entry.path();
        if read(dir.join("type")) == "Battery" && read(dir.join("status")) == "Discharging" {
            discharging = true;
        }
    }
    Some(discharging)
}

/// Idleness from logind's `IdleHint` and `IdleSinceHint` (µs since the epoch).
#[cfg(target_os = "linux")]
fn logind_idle() -> Result<Duration, String> {
    let mut cmd = std::process::Command::new("loginctl");
    match std::env::var("XDG_SESSION_ID") {
        Ok(id) if !id.is_empty() => cmd.args(["show-session", &id]),
        _ => cmd.arg("show-user"),
    };
    let out = cmd
        .args(["-p", "IdleHint", "-p", "IdleSinceHint"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run loginctl: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("loginctl failed: {}", err.trim()));
    }
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    parse_logind(&String::from_utf8_lossy(&out.stdout), now_us)
}

/// Parses `loginctl show-… -p IdleHint -p IdleSinceHint` output.
pub fn parse_logind(text: &str, now_us: u64) -> Result<Duration, String> {
    let mut hint = None;
    let mut since = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("IdleHint", v)) => hint = Some(v.trim() == "yes"),
            Some(("IdleSinceHint", v)) => since = v.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    match (hint, since) {
        (Some(false), _) => Ok(Duration::ZERO),
        (Some(true), Some(since)) if since > 0 => {
            Ok(Duration::from_micros(now_us.saturating_sub(since)))
        }
        (Some(true), _) => Err("logind says idle but not since when".into()),
        (None, _) => Err("logind reported no IdleHint".into()),
    }
}

#[cfg(target_os = "linux")]
mod x11 {
    use std::time::Duration;

    use x11rb::connection::{Connection as _, RequestConnection as _};
    use x11rb::protocol::screensaver::{self, ConnectionExt as _};
    use x11rb::rust_connection::RustConnection;

    /// A connection to the X server and its root window.
    pub struct Idle {
        conn: RustConnection,
        root: u32,
    }

    impl Idle {
        pub fn connect(display: &str) -> Result<Idle, String> {
            let (conn, screen) = x11rb::connect(Some(display)).map_err(|e| e.to_string())?;
            let root = conn
                .setup()
                .roots
                .get(screen)
                .map(|s| s.root)
                .ok_or("no such screen")?;
            match conn.extension_information(screensaver::X11_EXTENSION_NAME) {
                Ok(Some(_)) => Ok(Idle { conn, root }),
                Ok(None) => Err("the X server lacks the MIT-SCREEN-SAVER extension".into()),
                Err(e) => Err(e.to_string()),
            }
        }

        pub fn since_input(&self) -> Result<Duration, String> {
            let reply = self
                .conn
                .screensaver_query_info(self.root)
                .map_err(|e| e.to_string())?
                .reply()
                .map_err(|e| e.to_string())?;
            Ok(Duration::from_millis(u64::from(reply.ms_since_user_input)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_names_match_by_name_exe_or_argv0() {
        let n = OsStr::new;
        assert!(matches("steam", n("steam"), None, None));
        assert!(matches("Steam", n("steam"), None, None));
        assert!(matches("game", n("game.exe"), None, None));
        assert!(!matches("steam", n("steamwebhelper"), None, None));
        let long = "ambient-game-0123456789";
        // Linux truncates the name; the executable or argv[0] still says it.
        assert!(matches(
            long,
            n("ambient-game-01"),
            Some(Path::new("/tmp/x/ambient-game-0123456789")),
            None
        ));
        assert!(matches(
            long,
            n("ambient-game-01"),
            None,
            Some(n("./ambient-game-0123456789"))
        ));
        assert!(!matches(
            long,
            n("ambient-game-01"),
            Some(Path::new("/usr/bin/ambient-game-0199")),
            None
        ));
        assert!(matches(long, n("ambient-game-01"), None, None));
    }

    #[test]
    #[cfg(unix)]
    fn running_sees_a_real_process() {
        // A real program under a unique name, found in the real process list.
        let dir = tempfile::tempdir().unwrap();
        let name = format!("probe-test-{}", std::process::id());
        let exe = dir.path().join(&name);
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let mut probes = SystemProbes::new(None);
        let listed = vec![name.clone(), "no-such-program-xyz".to_string()];
        assert!(probes.running(&listed).is_empty());
        let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
        let found = probes.running(&listed);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, vec![name.clone()]);
        assert!(probes.running(&listed).is_empty());
    }

    #[test]
    fn battery_from_a_power_supply_tree() {
        let root = tempfile::tempdir().unwrap();
        let supply = |name: &str, kind: &str, status: Option<&str>| {
            let d = root.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            if let Some(s) = status {
                std::fs::write(d.join("status"), format!("{s}\n")).unwrap();
            }
        };
        assert_eq!(on_battery(root.path()), Some(false), "no supply at all");
        supply("AC", "Mains", None);
        supply("BAT0", "Battery", Some("Charging"));
        assert_eq!(on_battery(root.path()), Some(false));
        supply("BAT0", "Battery", Some("Discharging"));
        assert_eq!(on_battery(root.path()), Some(true));
        assert_eq!(on_battery(&root.path().join("missing")), None);
        // This machine's real tree reads without error where it exists.
        if Path::new("/sys/class/power_supply").exists() {
            assert!(on_battery(Path::new("/sys/class/power_supply")).is_some());
        }
    }

    #[test]
    fn logind_output_parses() {
        let now = 1_800_000_000_000_000u64;
        assert_eq!(
            parse_logind("IdleHint=no\nIdleSinceHint=0\n", now),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            parse_logind(
                &format!("IdleHint=yes\nIdleSinceHint={}\n", now - 90_000_000),
                now
            ),
            Ok(Duration::from_secs(90))
        );
        assert!(parse_logind("IdleHint=yes\nIdleSinceHint=0\n", now).is_err());
        assert!(parse_logind("", now).is_err());
    }

    #[test]
    fn idleness_without_any_source_says_why() {
        // No display given and (in CI) no logind session: an error naming both, never a value
        // made up. Where a desktop session exists the real answer is fine too.
        let mut probes = SystemProbes {
            display: None,
            ..SystemProbes::new(None)
        };
        match probes.idle() {
            Ok(_) => {}
            #[cfg(target_os = "linux")]
            Err(e) => assert!(
                e.starts_with("no X display (DISPLAY unset); logind: "),
                "{e}"
            ),
            #[cfg(not(target_os = "linux"))]
            Err(e) => assert_eq!(e, "idle detection is not supported on this OS"),
        }
    }
}
