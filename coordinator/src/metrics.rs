//! Prometheus metrics, kept as atomics and rendered as text on `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use ambient_protocol::TaskStatus;

/// Counters and gauges of one coordinator.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Tasks accepted.
    pub tasks_submitted: AtomicU64,
    /// Submissions refused with a 4xx error or an MQTT rejection.
    pub submissions_rejected: AtomicU64,
    /// Tasks completed.
    pub tasks_completed: AtomicU64,
    /// Tasks failed.
    pub tasks_failed: AtomicU64,
    /// Tasks expired.
    pub tasks_expired: AtomicU64,
    /// Tasks cancelled.
    pub tasks_cancelled: AtomicU64,
    /// Result messages received (duplicates included).
    pub results_received: AtomicU64,
    /// Results refused because their task was not assigned to the sender.
    pub results_refused: AtomicU64,
    /// Federated-learning client messages refused (late, duplicate, wrong length, strangers).
    pub fl_refused: AtomicU64,
    /// MQTT messages dropped as malformed, from the wrong sender, or node events not signed by
    /// their node.
    pub mqtt_rejected: AtomicU64,
    /// Blob downloads refused: unsigned, stale, unknown node or bad signature.
    pub blob_requests_refused: AtomicU64,
    /// µcredits minted (grants).
    pub credits_minted: AtomicU64,
    /// µcredits charged to submitters for work.
    pub credits_charged: AtomicU64,
    /// µcredits paid to nodes.
    pub credits_paid: AtomicU64,
    /// Nodes online now.
    pub nodes_online: AtomicU64,
    /// Tasks not yet terminal.
    pub tasks_active: AtomicU64,
}

impl Metrics {
    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a task that reached a terminal status.
    pub fn count_terminal(&self, status: TaskStatus) {
        let c = match status {
            TaskStatus::Completed => &self.tasks_completed,
            TaskStatus::Failed => &self.tasks_failed,
            TaskStatus::Expired => &self.tasks_expired,
            TaskStatus::Cancelled => &self.tasks_cancelled,
            _ => return,
        };
        Metrics::inc(c);
    }

    /// The credits `postings` move: minted, charged, paid (µcredits), for [`Metrics::add_credits`]
    /// once they are written.
    pub fn credit_flows(postings: &[crate::credits::Posting]) -> [u64; 3] {
        use crate::credits::PostingKind;
        let mut flows = [0u64; 3];
        for p in postings {
            let (i, amount) = match p.kind {
                PostingKind::Grant if p.account == "mint" => (0, -p.amount),
                PostingKind::Charge => (1, -p.amount),
                PostingKind::Pay => (2, p.amount),
                _ => continue,
            };
            flows[i] += amount.max(0) as u64;
        }
        flows
    }

    /// Adds written [`Metrics::credit_flows`].
    pub fn add_credits(&self, [minted, charged, paid]: [u64; 3]) {
        self.credits_minted.fetch_add(minted, Ordering::Relaxed);
        self.credits_charged.fetch_add(charged, Ordering::Relaxed);
        self.credits_paid.fetch_add(paid, Ordering::Relaxed);
    }

    /// Updates the gauges.
    pub fn set_gauges(&self, nodes_online: u64, tasks_active: u64) {
        self.nodes_online.store(nodes_online, Ordering::Relaxed);
        self.tasks_active.store(tasks_active, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "ambient_tasks_submitted_total",
            "counter",
            "Tasks accepted.",
            &[("", get(&self.tasks_submitted))],
        );
        metric(
            "ambient_submissions_rejected_total",
            "counter",
            "Submissions refused.",
            &[("", get(&self.submissions_rejected))],
        );
        metric(
            "ambient_tasks_finished_total",
            "counter",
            "Tasks that reached a terminal status.",
            &[
                ("{status=\"completed\"}", get(&self.tasks_completed)),
                ("{status=\"failed\"}", get(&self.tasks_failed)),
                ("{status=\"expired\"}", get(&self.tasks_expired)),
                ("{status=\"cancelled\"}", get(&self.tasks_cancelled)),
            ],
        );
        metric(
            "ambient_results_received_total",
            "counter",
            "Result messages received, duplicates included.",
            &[("", get(&self.results_received))],
        );
        metric(
            "ambient_results_refused_total",
            "counter",
            "Results refused because their task was not assigned to the sender.",
            &[("", get(&self.results_refused))],
        );
        metric(
            "ambient_fl_messages_refused_total",
            "counter",
            "Federated-learning client messages refused: late, duplicate, wrong length, strangers.",
            &[("", get(&self.fl_refused))],
        );
        metric(
            "ambient_mqtt_rejected_total",
            "counter",
            "MQTT messages dropped as malformed, misaddressed or not signed by their node.",
            &[("", get(&self.mqtt_rejected))],
        );
        metric(
            "ambient_blob_requests_refused_total",
            "counter",
            "Blob downloads refused: unsigned, stale, unknown node or bad signature.",
            &[("", get(&self.blob_requests_refused))],
        );
        metric(
            "ambient_credits_total",
            "counter",
            "µcredits moved by this coordinator: minted (grants), charged to submitters, paid to \
             nodes.",
            &[
                ("{flow=\"minted\"}", get(&self.credits_minted)),
                ("{flow=\"charged\"}", get(&self.credits_charged)),
                ("{flow=\"paid\"}", get(&self.credits_paid)),
            ],
        );
        metric(
            "ambient_nodes_online",
            "gauge",
            "Nodes online.",
            &[("", get(&self.nodes_online))],
        );
        metric(
            "ambient_tasks_active",
            "gauge",
            "Tasks not yet terminal.",
            &[("", get(&self.tasks_active))],
        );
        out
    }
}
