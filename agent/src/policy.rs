//! The contribution policy: when this machine's owner lets it work, and how hard.
//!
//! The owner's choices are [`Settings`] (the JSON body of the control API's `/v1/settings`, kept
//! in `<data_dir>/settings.json`). [`Settings::compile`] checks them into [`Rules`], and [`decide`]
//! turns rules, what the probes saw ([`Observations`]) and the local time into a [`Decision`]:
//! contribute or not, and every reason why not. `decide` does no I/O, so the unit tests cover each
//! rule with a fixed clock and hand-made observations; [`evaluate`] runs the injected [`Probes`]
//! first. The real probes (X11 or logind idleness, power supply, process list) are in [`probe`].
//!
//! Rules:
//! - `enabled`: the master switch;
//! - `idle_only` + `idle_minutes`: only after that long without keyboard or mouse input. When
//!   idleness cannot be read, the agent pauses and says why, rather than guess;
//! - `pause_on_battery`;
//! - `cpu_max_cores` (caps concurrent tasks) and `cpu_duty_pct` (wasm runs at most that share of
//!   the time); these throttle rather than pause;
//! - `gpu_enabled`: off runs inference on the CPU and advertises no GPU;
//! - `exclusive_apps`: pause while a program of one of these names runs;
//! - `time_windows`: weekly local-time windows; none means any time.

pub mod probe;

use std::time::Duration;

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::{Deserialize, Deserializer, Serialize};

/// Most exclusive apps and time windows accepted.
pub const MAX_LIST: usize = 64;

/// The owner's settings, exactly as the control API and `settings.json` carry them. Every field is
/// required and unknown fields are refused, so a typo never silently means a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Master switch: false pauses all contribution.
    pub enabled: bool,
    /// Contribute only while nobody uses the keyboard or mouse.
    pub idle_only: bool,
    /// Minutes without input before the machine counts as idle (1–1440).
    pub idle_minutes: u32,
    /// Pause while the machine runs on battery.
    pub pause_on_battery: bool,
    /// Run at most this many tasks at once (each task uses one core); `null` = the configured
    /// `execution.max_concurrent_tasks`.
    #[serde(deserialize_with = "required_option")]
    pub cpu_max_cores: Option<u32>,
    /// Share of the time (1–100 %) a wasm task may compute; it sleeps the rest.
    pub cpu_duty_pct: u32,
    /// Use the GPU for inference (off: CPU only, and no GPU is advertised).
    pub gpu_enabled: bool,
    /// Program names (not paths) that pause contribution while any of them runs.
    pub exclusive_apps: Vec<String>,
    /// Weekly local-time windows in which contribution is allowed; empty = any time.
    pub time_windows: Vec<TimeWindow>,
}

/// A weekly window: on each of `days`, from `start` to `end` (local time, `HH:MM`). An `end`
/// earlier than `start` crosses midnight into the next day; `end` may be `24:00`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Days the window starts on: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`.
    pub days: Vec<String>,
    /// Start, `HH:MM`.
    pub start: String,
    /// End, `HH:MM` (exclusive).
    pub end: String,
}

/// `Option` fields are optional in serde by default; the settings want `null` said out loud.
fn required_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::deserialize(d)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            idle_only: false,
            idle_minutes: 5,
            pause_on_battery: true,
            cpu_max_cores: None,
            cpu_duty_pct: 100,
            gpu_enabled: true,
            exclusive_apps: Vec::new(),
            time_windows: Vec::new(),
        }
    }
}

/// A setting out of range, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct SettingsError {
    /// The field, e.g. `time_windows[0].start`.
    pub field: String,
    /// What is wrong with it.
    pub why: String,
}

fn bad(field: impl Into<String>, why: impl Into<String>) -> SettingsError {
    SettingsError {
        field: field.into(),
        why: why.into(),
    }
}

/// A checked window: minutes since midnight, `end` in `1..=1440`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    start: u32,
    end: u32,
}

/// Settings that passed [`Settings::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    settings: Settings,
    windows: Vec<Window>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `HH:MM` to minutes since midnight; `24:00` only where `allow_24` is set.
fn parse_hhmm(s: &str, allow_24: bool) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if allow_24 => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl Settings {
    /// Checks every field; the error names the first bad one and says why.
    pub fn compile(&self) -> Result<Rules, SettingsError> {
        if !(1..=1440).contains(&self.idle_minutes) {
            return Err(bad(
                "idle_minutes",
                format!("must be 1-1440, got {}", self.idle_minutes),
            ));
        }
        if let Some(n) = self.cpu_max_cores
            && !(1..=1024).contains(&n)
        {
            return Err(bad(
                "cpu_max_cores",
                format!("must be null or 1-1024, got {n}"),
            ));
        }
        if !(1..=100).contains(&self.cpu_duty_pct) {
            return Err(bad(
                "cpu_duty_pct",
                format!(
                    "must be 1-100 (percent), got {}; use enabled=false to stop",
                    self.cpu_duty_pct
                ),
            ));
        }
        if self.exclusive_apps.len() > MAX_LIST {
            return Err(bad(
                "exclusive_apps",
                format!("at most {MAX_LIST} programs"),
            ));
        }
        for (i, app) in self.exclusive_apps.iter().enumerate() {
            let field = format!("exclusive_apps[{i}]");
            if app.trim().is_empty() || app.trim() != app {
                return Err(bad(
                    field,
                    format!("{app:?} must be a program name without surrounding spaces"),
                ));
            }
            if app.contains(['/', '\\']) {
                return Err(bad(
                    field,
                    format!("{app:?} is a path; give the program's name, e.g. \"steam\""),
                ));
            }
            if app.len() > 255 {
                return Err(bad(field, "longer than 255 bytes"));
            }
        }
        if self.time_windows.len() > MAX_LIST {
            return Err(bad("time_windows", format!("at most {MAX_LIST} windows")));
        }
        let mut windows = Vec::new();
        for (i, w) in self.time_windows.iter().enumerate() {
            let field = |f: &str| format!("time_windows[{i}].{f}");
            if w.days.is_empty() {
                return Err(bad(field("days"), "must name at least one day"));
            }
            let mut days = [false; 7];
            for d in &w.days {
                let Some(k) = DAYS.iter().position(|x| x == d) else {
                    return Err(bad(
                        field("days"),
                        format!("{d:?} is not one of mon, tue, wed, thu, fri, sat, sun"),
                    ));
                };
                days[k] = true;
            }
            let start = parse_hhmm(&w.start, false).ok_or_else(|| {
                bad(
                    field("start"),
                    format!("{:?} is not a time of day HH:MM (00:00-23:59)", w.start),
                )
            })?;
            let end = parse_hhmm(&w.end, true).ok_or_else(|| {
                bad(
                    field("end"),
                    format!("{:?} is not a time of day HH:MM (00:00-24:00)", w.end),
                )
            })?;
            if start == end {
                return Err(bad(
                    field("end"),
                    "equals start; for a whole day use 00:00 to 24:00",
                ));
            }
            windows.push(Window { days, start, end });
        }
        Ok(Rules {
            settings: self.clone(),
            windows,
        })
    }
}

impl Default for Rules {
    fn default() -> Self {
        Settings::default()
            .compile()
            .expect("default settings are valid")
    }
}

impl Rules {
    /// The settings these rules came from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether `now` (local) falls in a window; true when there are none.
    pub fn in_window(&self, now: NaiveDateTime) -> bool {
        if self.windows.is_empty() {
            return true;
        }
        let minute = now.hour() * 60 + now.minute();
        let today = now.weekday().num_days_from_monday() as usize;
        let yesterday = (today + 6) % 7;
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days[today] && (w.start..w.end).contains(&minute)
            } else {
                // Crosses midnight: the evening part starts today, the morning part started
                // yesterday.
                (w.days[today] && minute >= w.start) || (w.days[yesterday] && minute < w.end)
            }
        })
    }

    /// Tasks at once under these rules, given the configured maximum.
    pub fn slots(&self, configured: u32) -> u32 {
        self.settings
            .cpu_max_cores
            .map_or(configured, |c| c.min(configured))
    }
}

/// What the probes saw. A probe the rules do not need is not run and stays at its default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    /// Time since the last keyboard or mouse input, or why it cannot be known. `None` when not
    /// probed.
    pub idle: Option<Result<Duration, String>>,
    /// Running on battery; `None` when unknown or not probed (no battery counts as mains).
    pub on_battery: Option<bool>,
    /// The listed exclusive apps found running.
    pub exclusive_running: Vec<String>,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the machine takes work now.
    pub contributing: bool,
    /// Why not, one sentence per rule that says stop; empty when contributing.
    pub reasons: Vec<String>,
}

/// Reads the world for [`evaluate`]. The real one is [`probe::SystemProbes`].
pub trait Probes {
    /// Time since the last keyboard or mouse input, or why it cannot be read.
    fn idle(&mut self) -> Result<Duration, String>;
    /// Whether the machine runs on battery; `None` when unknown.
    fn on_battery(&mut self) -> Option<bool>;
    /// Which of `names` run now.
    fn running(&mut self, names: &[String]) -> Vec<String>;
}

/// Local wall-clock time, injected so tests can set it.
pub trait Clock {
    /// Now, local time.
    fn now(&self) -> NaiveDateTime;
}

/// The machine's local time.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalClock;

impl Clock for LocalClock {
    fn now(&self) -> NaiveDateTime {
        chrono::Local::now().naive_local()
    }
}

/// Runs only the probes the rules need.
pub fn observe(rules: &Rules, probes: &mut dyn Probes) -> Observations {
    let s = &rules.settings;
    Observations {
        idle: s.idle_only.then(|| probes.idle()),
        on_battery: if s.pause_on_battery {
            probes.on_battery()
        } else {
            None
        },
        exclusive_running: if s.exclusive_apps.is_empty() {
            Vec::new()
        } else {
            probes.running(&s.exclusive_apps)
        },
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else {
        format!("{} min", s / 60)
    }
}

/// The decision for these rules, observations and local time. Pure.
pub fn decide(rules: &Rules, obs: &Observations, now: NaiveDateTime) -> Decision {
    let s = &rules.settings;
    let mut reasons = Vec::new();
    if !s.enabled {
        reasons.push("contribution is switched off".to_string());
    }
    if s.idle_only {
        let need = Duration::from_secs(u64::from(s.idle_minutes) * 60);
        match &obs.idle {
            Some(Ok(idle)) if *idle >= need => {}
            Some(Ok(idle)) => reasons.push(format!(
                "the computer is in use (last input {} ago; idle-only waits for {} min)",
                human(*idle),
                s.idle_minutes
            )),
            Some(Err(why)) => reasons.push(format!(
                "idle-only is on but idleness cannot be read: {why}"
            )),
            None => reasons.push("idle-only is on but idleness was not read yet".to_string()),
        }
    }
    if s.pause_on_battery && obs.on_battery == Some(true) {
        reasons.push("running on battery".to_string());
    }
    if !obs.exclusive_running.is_empty() {
        reasons.push(format!(
            "exclusive app running: {}",
            obs.exclusive_running.join(", ")
        ));
    }
    if !rules.in_window(now) {
        reasons.push("outside the contribution time windows".to_string());
    }
    Decision {
        contributing: reasons.is_empty(),
        reasons,
    }
}

/// Probes what the rules need, then decides.
pub fn evaluate(
    rules: &Rules,
    probes: &mut dyn Probes,
    clock: &dyn Clock,
) -> (Decision, Observations) {
    let obs = observe(rules, probes);
    (decide(rules, &obs, clock.now()), obs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// Probes with fixed answers that count how often they were asked.
    #[derive(Default)]
    struct Fake {
        idle: Option<Result<Duration, String>>,
        battery: Option<bool>,
        running: Vec<String>,
        calls: [u32; 3],
    }

    impl Probes for Fake {
        fn idle(&mut self) -> Result<Duration, String> {
            self.calls[0] += 1;
            self.idle.clone().expect("idle probed unexpectedly")
        }
        fn on_battery(&mut self) -> Option<bool> {
            self.calls[1] += 1;
            self.battery
        }
        fn running(&mut self, names: &[String]) -> Vec<String> {
            self.calls[2] += 1;
            names
                .iter()
                .filter(|n| self.running.contains(n))
                .cloned()
                .collect()
        }
    }

    struct At(NaiveDateTime);
    impl Clock for At {
        fn now(&self) -> NaiveDateTime {
            self.0
        }
    }

    /// 2026-11-23 is a Monday.
    fn at(day: u32, h: u32, m: u32) -> At {
        At(NaiveDate::from_ymd_opt(2026, 11, day)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap())
    }

    fn rules(f: impl FnOnce(&mut Settings)) -> Rules {
        let mut s = Settings::default();
        f(&mut s);
        s.compile().unwrap()
    }

    fn run(r: &Rules, p: &mut Fake, c: &At) -> Decision {
        evaluate(r, p, c).0
    }

    #[test]
    fn defaults_contribute_and_probe_only_the_battery() {
        let mut p = Fake::default();
        let d = run(&Rules::default(), &mut p, &at(23, 12, 0));
        assert_eq!(
            d,
            Decision {
                contributing: true,
                reasons: vec![]
            }
        );
        assert_eq!(p.calls, [0, 1, 0]);
    }

    #[test]
    fn master_switch_off_pauses() {
        let r = rules(|s| s.enabled = false);
        let d = run(&r, &mut Fake::default(), &at(23, 12, 0));
        assert!(!d.contributing);
        assert_eq!(d.reasons, ["contribution is switched off"]);
    }

    #[test]
    fn idle_only_waits_for_the_idle_time() {
        let r = rules(|s| {
            s.idle_only = true;
            s.idle_minutes = 5;
        });
        let mut p = Fake {
            idle: Some(Ok(Duration::from_secs(299))),
            ..Fake::default()
        };
        let d = run(&r, &mut p, &at(23, 12, 0));
        assert!(!d.contributing);
        assert!(d.reasons[0].contains("in use"), "{d:?}");
        assert!(d.reasons[0].contains("4 min"), "{d:?}");
        p.idle = Some(Ok(Duration::from_secs(300)));
        assert!(run(&r, &mut p, &at(23, 12, 0)).contributing);
        // Idle-only off: idleness is not even read.
        let mut p = Fake::default();
        assert!(run(&Rules::default(), &mut p, &at(23, 12, 0)).contributing);
        assert_eq!(p.calls[0], 0);
    }

    #[test]
    fn unknown_idleness_pauses_with_the_reason() {
        let r = rules(|s| s.idle_only = true);
        let mut p = Fake {
            idle: Some(Err("idle detection is not supported on this OS".into())),
            ..Fake::default()
        };
        let d = run(&r, &mut p, &at(23, 12, 0));
        assert!(!d.contributing);
        assert_eq!(
            d.reasons,
            [
                "idle-only is on but idleness cannot be read: idle detection is not supported on this OS"
            ]
        );
        let d = decide(&r, &Observations::default(), at(23, 12, 0).0);
        assert!(!d.contributing, "not read yet is not idle");
    }

    #[test]
    fn battery_pauses_only_when_asked() {
        let mut p = Fake {
            battery: Some(true),
            ..Fake::default()
        };
        let d = run(&Rules::default(), &mut p, &at(23, 12, 0));
        assert_eq!(d.reasons, ["running on battery"]);
        let r = rules(|s| s.pause_on_battery = false);
        assert!(run(&r, &mut p, &at(23, 12, 0)).contributing);
        p.battery = Some(false);
        assert!(run(&Rules::default(), &mut p, &at(23, 12, 0)).contributing);
        p.battery = None; // a desktop: no battery
        assert!(run(&Rules::default(), &mut p, &at(23, 12, 0)).contributing);
    }

    #[test]
    fn exclusive_apps_pause_while_running() {
        let r = rules(|s| s.exclusive_apps = vec!["steam".into(), "blender".into()]);
        let mut p = Fake {
            running: vec!["blender".into(), "bash".into()],
            ..Fake::default()
        };
        let d = run(&r, &mut p, &at(23, 12, 0));
        assert_eq!(d.reasons, ["exclusive app running: blender"]);
        p.running.clear();
        assert!(run(&r, &mut p, &at(23, 12, 0)).contributing);
        // An empty list never scans the process table.
        let mut p = Fake::default();
        run(&Rules::default(), &mut p, &at(23, 12, 0));
        assert_eq!(p.calls[2], 0);
    }

    #[test]
    fn time_windows_including_across_midnight() {
        let r = rules(|s| {
            s.time_windows = vec![TimeWindow {
                days: vec!["mon".into(), "fri".into()],
                start: "22:00".into(),
                end: "07:00".into(),
            }]
        });
        let mut p = Fake::default();
        let yes = |d: u32, h: u32, m: u32, p: &mut Fake| run(&r, p, &at(d, h, m)).contributing;
        assert!(yes(23, 22, 0, &mut p), "Monday 22:00");
        assert!(
            yes(24, 6, 59, &mut p),
            "Tuesday 06:59 continues Monday's window"
        );
        assert!(
            !yes(24, 7, 0, &mut p),
            "Tuesday 07:00: the end is exclusive"
        );
        assert!(!yes(24, 22, 30, &mut p), "Tuesday evening is not listed");
        assert!(!yes(23, 21, 59, &mut p), "Monday before start");
        assert!(
            !yes(23, 3, 0, &mut p),
            "Monday 03:00 belongs to Sunday's night"
        );
        assert!(
            yes(28, 3, 0, &mut p),
            "Saturday 03:00 continues Friday's window"
        );
        let d = run(&r, &mut p, &at(23, 12, 0));
        assert_eq!(d.reasons, ["outside the contribution time windows"]);

        let day = rules(|s| {
            s.time_windows = vec![TimeWindow {
                days: vec!["sun".into()],
                start: "09:30".into(),
                end: "24:00".into(),
            }]
        });
        assert!(day.in_window(at(29, 23, 59).0), "Sunday 23:59");
        assert!(day.in_window(at(29, 9, 30).0), "Sunday 09:30");
        assert!(!day.in_window(at(29, 9, 29).0), "Sunday 09:29");
        assert!(
            !day.in_window(at(23, 0, 0).0),
            "24:00 does not spill into Monday"
        );
        assert!(Rules::default().in_window(at(23, 3, 0).0));
    }

    #[test]
    fn every_stop_reason_is_listed() {
        let r = rules(|s| {
            s.enabled = false;
            s.idle_only = true;
            s.exclusive_apps = vec!["game".into()];
            s.time_windows = vec![TimeWindow {
                days: vec!["sat".into()],
                start: "00:00".into(),
                end: "24:00".into(),
            }];
        });
        let mut p = Fake {
            idle: Some(Ok(Duration::from_secs(3))),
            battery: Some(true),
            running: vec!["game".into()],
            ..Fake::default()
        };
        let d = run(&r, &mut p, &at(23, 12, 0));
        assert!(!d.contributing);
        assert_eq!(d.reasons.len(), 5, "{d:?}");
    }

    #[test]
    fn cpu_cores_cap_the_slots() {
        assert_eq!(Rules::default().slots(4), 4);
        assert_eq!(rules(|s| s.cpu_max_cores = Some(1)).slots(4), 1);
        assert_eq!(rules(|s| s.cpu_max_cores = Some(8)).slots(4), 4);
    }

    #[test]
    fn bad_settings_name_the_field() {
        let check = |f: &dyn Fn(&mut Settings), field: &str| {
            let mut s = Settings::default();
            f(&mut s);
            let e = s.compile().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        };
        check(&|s| s.idle_minutes = 0, "idle_minutes");
        check(&|s| s.cpu_duty_pct = 0, "cpu_duty_pct");
        check(&|s| s.cpu_duty_pct = 101, "cpu_duty_pct");
        check(&|s| s.cpu_max_cores = Some(0), "cpu_max_cores");
        check(&|s| s.exclusive_apps = vec!["".into()], "exclusive_apps[0]");
        check(
            &|s| s.exclusive_apps = vec!["ok".into(), "/usr/bin/x".into()],
            "exclusive_apps[1]",
        );
        let window = |days: &[&str], start: &str, end: &str| TimeWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            start: start.into(),
            end: end.into(),
        };
        check(
            &|s| s.time_windows = vec![window(&["monday"], "01:00", "02:00")],
            "time_windows[0].days",
        );
        check(
            &|s| s.time_windows = vec![window(&[], "01:00", "02:00")],
            "time_windows[0].days",
        );
        check(
            &|s| s.time_windows = vec![window(&["mon"], "25:00", "02:00")],
            "time_windows[0].start",
        );
        check(
            &|s| s.time_windows = vec![window(&["mon"], "24:00", "02:00")],
            "time_windows[0].start",
        );
        check(
            &|s| s.time_windows = vec![window(&["mon"], "1:00", "02:00")],
            "time_windows[0].start",
        );
        check(
            &|s| s.time_windows = vec![window(&["mon"], "01:00", "01:60")],
            "time_windows[0].end",
        );
        check(
            &|s| s.time_windows = vec![window(&["mon"], "00:00", "00:00")],
            "time_windows[0].end",
        );
    }

    #[test]
    fn settings_json_is_strict_and_round_trips() {
        let text = r#"{"enabled": true, "idle_only": false, "idle_minutes": 5,
            "pause_on_battery": true, "cpu_max_cores": null, "cpu_duty_pct": 100,
            "gpu_enabled": true, "exclusive_apps": [],
            "time_windows": [{"days": ["mon","tue","wed","thu","fri","sat","sun"],
                              "start": "22:00", "end": "07:00"}]}"#;
        let s: Settings = serde_json::from_str(text).unwrap();
        s.compile().unwrap();
        let back: Settings = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["surprise"] = 1.into();
        let e = serde_json::from_value::<Settings>(v.clone()).unwrap_err();
        assert!(e.to_string().contains("unknown field `surprise`"), "{e}");
        v.as_object_mut().unwrap().remove("surprise");
        v.as_object_mut().unwrap().remove("cpu_max_cores");
        let e = serde_json::from_value::<Settings>(v).unwrap_err();
        assert!(
            e.to_string().contains("missing field `cpu_max_cores`"),
            "{e}"
        );
    }
}
