//! Node reputation, event-sourced: every judgement of a node's work is an [`Event`] appended to
//! the `reputation_events` table, and a node's [`Reputation`] is the fold of its events with
//! exponential decay (half-life [`HALF_LIFE_DAYS`]), kept on its node record.
//!
//! Events: `valid` (its answer was accepted: it matched the quorum, or was the single replica),
//! `invalid` (its answer lost a quorum), `timeout` (its lease expired), `lost` (it went offline
//! holding work), `proof_verified` (its zero-knowledge proof checked out, so its answer was
//! accepted) and `proof_rejected` (its proof did not verify).
//!
//! Score, 0–100, with decayed counts v, i, t, l, where a verified proof counts as a valid answer
//! and a rejected proof as an invalid one:
//! `score = 100 × (v + 1) / (v + 4·i + 2·t + l + 2)`.
//! A new node scores 50; a wrong answer weighs four valid ones, a timeout two, a loss one. The
//! scheduler ranks by `health_score × (0.5 + score / 200)`, so reputation scales a node's
//! health between half and all of it.
//!
//! Everything here is pure, like the scheduler: the scheduler folds events in and queues them,
//! the engine writes them, and whoever builds a [`report`] reads the history from the store
//! first.

use ambient_protocol::{NodeInfo, ReputationEventInfo, ReputationReport};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Score under which a node counts as untrusted (`trusted: false` in the API). One wrong answer
/// takes a new node to 17.
pub const TRUST_THRESHOLD: f64 = 30.0;

/// Days after which an event counts half.
pub const HALF_LIFE_DAYS: f64 = 7.0;

pub use ambient_protocol::ReputationEventKind as EventKind;

/// One judgement of a node's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The node.
    pub node: String,
    /// What happened.
    pub kind: EventKind,
    /// The task it happened on.
    pub task_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// The node's score just after it, rounded to 0.1.
    pub score: f64,
}

/// Undecayed counts of a node's events, one per [`EventKind`]. Persisted as the array
/// `[valid, invalid, timeout, lost, proofs_verified, proofs_rejected]`, as node records always
/// were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u64; 6]", into = "[u64; 6]")]
pub struct Totals {
    /// Answers accepted.
    pub valid: u64,
    /// Answers that lost a quorum.
    pub invalid: u64,
    /// Leases that expired.
    pub timeouts: u64,
    /// Work lost by going offline.
    pub lost: u64,
    /// Proofs that verified.
    pub proofs_verified: u64,
    /// Proofs that did not.
    pub proofs_rejected: u64,
}

impl Totals {
    fn count(&mut self, kind: EventKind) {
        let n = match kind {
            EventKind::Valid => &mut self.valid,
            EventKind::Invalid => &mut self.invalid,
            EventKind::Timeout => &mut self.timeouts,
            EventKind::Lost => &mut self.lost,
            EventKind::ProofVerified => &mut self.proofs_verified,
            EventKind::ProofRejected => &mut self.proofs_rejected,
        };
        *n += 1;
    }
}

impl From<[u64; 6]> for Totals {
    fn from(
        [
            valid,
            invalid,
            timeouts,
            lost,
            proofs_verified,
            proofs_rejected,
        ]: [u64; 6],
    ) -> Self {
        Totals {
            valid,
            invalid,
            timeouts,
            lost,
            proofs_verified,
            proofs_rejected,
        }
    }
}

impl From<Totals> for [u64; 6] {
    fn from(t: Totals) -> Self {
        [
            t.valid,
            t.invalid,
            t.timeouts,
            t.lost,
            t.proofs_verified,
            t.proofs_rejected,
        ]
    }
}

/// The fold of a node's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reputation {
    /// Decayed counts.
    pub valid: f64,
    /// Decayed count of invalid answers.
    pub invalid: f64,
    /// Decayed count of timeouts.
    pub timeout: f64,
    /// Decayed count of losses.
    pub lost: f64,
    /// Valid answers in a row, most recent last.
    pub streak: u32,
    /// Undecayed totals of each kind of event.
    pub totals: Totals,
    /// When the counts were last decayed.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Reputation {
    fn decayed(&self, now: DateTime<Utc>) -> [f64; 4] {
        let factor = match self.updated_at {
            Some(at) => {
                let days = (now - at).num_milliseconds().max(0) as f64 / 86_400_000.0;
                0.5f64.powf(days / HALF_LIFE_DAYS)
            }
            None => 1.0,
        };
        [
            self.valid * factor,
            self.invalid * factor,
            self.timeout * factor,
            self.lost * factor,
        ]
    }

    /// Folds one event in.
    pub fn apply(&mut self, kind: EventKind, at: DateTime<Utc>) {
        let [v, i, t, l] = self.decayed(at);
        (self.valid, self.invalid, self.timeout, self.lost) = (v, i, t, l);
        self.updated_at = Some(at);
        self.totals.count(kind);
        match kind {
            EventKind::Valid | EventKind::ProofVerified => {
                self.valid += 1.0;
                self.streak += 1;
            }
            EventKind::Invalid | EventKind::ProofRejected => {
                self.invalid += 1.0;
                self.streak = 0;
            }
            EventKind::Timeout => {
                self.timeout += 1.0;
                self.streak = 0;
            }
            EventKind::Lost => self.lost += 1.0,
        }
    }

    /// The score at `now`, 0–100.
    pub fn score(&self, now: DateTime<Utc>) -> f64 {
        let [v, i, t, l] = self.decayed(now);
        100.0 * (v + 1.0) / (v + 4.0 * i + 2.0 * t + l + 2.0)
    }
}

/// Events in a published reputation report's history.
pub const REPORT_HISTORY: u32 = 100;

/// A node's reputation report at `at`: its standing from the scheduler (`node`) and its recent
/// events, oldest first, which the caller reads from the store
/// ([`crate::store::Store::reputation_history`]). Pure, like the scheduler: no I/O here.
pub fn report(
    node: NodeInfo,
    history: Vec<ReputationEventInfo>,
    at: DateTime<Utc>,
) -> ReputationReport {
    ReputationReport {
        history,
        node_id: node.node_id,
        at,
        reputation: node.reputation,
        credits: node.credits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::days(days)
    }

    #[test]
    fn scores_move_the_right_way_and_decay() {
        let fresh = Reputation::default();
        assert_eq!(fresh.score(t(0)), 50.0);
        let mut good = Reputation::default();
        for _ in 0..20 {
            good.apply(EventKind::Valid, t(0));
        }
        assert!(good.score(t(0)) > 95.0);
        assert_eq!(good.streak, 20);
        let mut bad = good.clone();
        bad.apply(EventKind::Invalid, t(0));
        assert!(bad.score(t(0)) < good.score(t(0)));
        assert_eq!(bad.streak, 0);
        let mut cheat = Reputation::default();
        for _ in 0..3 {
            cheat.apply(EventKind::Invalid, t(0));
        }
        assert!(cheat.score(t(0)) < 10.0);
        // A month later the wrong answers count for a sixteenth: the node drifts back to 50.
        assert!(cheat.score(t(28)) > cheat.score(t(0)) + 20.0);
        assert_eq!(<[u64; 6]>::from(cheat.totals), [0, 3, 0, 0, 0, 0]);
        assert_eq!(cheat.totals.invalid, 3);
    }

    /// Totals are persisted in node records as the array they always were.
    #[test]
    fn totals_keep_their_stored_form() {
        let mut r = Reputation::default();
        r.apply(EventKind::Timeout, t(0));
        r.apply(EventKind::ProofVerified, t(0));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["totals"], serde_json::json!([0, 0, 1, 0, 1, 0]));
        let back: Reputation = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    /// A report is the node's standing as the scheduler gives it and the history as read.
    #[test]
    fn a_report_carries_the_standing_and_history_given() {
        use ambient_protocol::{NodeState, ReputationEventKind, ReputationInfo};
        let node = NodeInfo {
            node_id: "n1".into(),
            state: NodeState::Online,
            health_score: 80.0,
            last_seen: Some(t(0)),
            health: None,
            active_assignments: 1,
            reputation: ReputationInfo {
                score: 42.0,
                invalid: 1,
                ..ReputationInfo::default()
            },
            identity: None,
            credits: Default::default(),
        };
        let history = vec![ReputationEventInfo {
            kind: ReputationEventKind::Invalid,
            task_id: Uuid::from_u128(7),
            at: t(0),
            score: 42.0,
        }];
        let r = report(node.clone(), history.clone(), t(1));
        assert_eq!(r.node_id, "n1");
        assert_eq!(r.at, t(1));
        assert_eq!(r.reputation, node.reputation);
        assert_eq!(r.history, history);
    }
}
