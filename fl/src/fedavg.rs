//! FedAvg and the round state machine.
//!
//! [`fedavg`] is the sample-weighted average of client updates (McMahan et al. 2017).
//! [`Round`] tracks one round on the coordinator: which clients are expected, what arrived, and
//! when to stop waiting. It reads no clock: every call that depends on time takes `now` (any
//! monotonic unit the caller likes, e.g. milliseconds since the task started). It is generic over
//! the payload, so the same machine holds plain [`ClientUpdate`]s or masked secure-aggregation
//! inputs.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ClientId;

/// Errors from averaging or from the round state machine.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FedAvgError {
    /// No updates to average.
    #[error("no updates to average")]
    Empty,
    /// Updates of different lengths.
    #[error("update of client {client} has length {found}, expected {expected}")]
    Length {
        /// The client.
        client: ClientId,
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// All sample counts are zero.
    #[error("total sample count is zero")]
    ZeroWeight,
    /// A submission from a client that is not in this round.
    #[error("client {0} is not expected in this round")]
    UnknownClient(ClientId),
    /// A second submission from the same client.
    #[error("client {0} already submitted")]
    Duplicate(ClientId),
    /// A submission after the round closed or after its deadline.
    #[error("round is closed (or past its deadline) for client {0}")]
    Closed(ClientId),
    /// `close` before the deadline while some clients are still missing.
    #[error("round not due: {missing} clients missing and the deadline is {deadline}, now {now}")]
    NotDue {
        /// Clients still missing.
        missing: usize,
        /// The deadline.
        deadline: u64,
        /// The time passed to `close`.
        now: u64,
    },
    /// The deadline passed with fewer than `min_clients` submissions: the round fails.
    #[error("only {received} of the required {min} clients submitted")]
    TooFewClients {
        /// Submissions received.
        received: usize,
        /// The minimum.
        min: usize,
    },
}

/// One client's plain (unmasked) update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientUpdate {
    /// The sender.
    pub client: ClientId,
    /// Local examples it trained on (the FedAvg weight).
    pub num_samples: u64,
    /// `new_weights − global_weights`.
    pub delta: Vec<f32>,
}

/// Sample-weighted FedAvg: `Σ n_i·Δ_i / Σ n_i` (accumulated in f64).
pub fn fedavg(updates: &[ClientUpdate]) -> Result<Vec<f32>, FedAvgError> {
    let first = updates.first().ok_or(FedAvgError::Empty)?;
    let len = first.delta.len();
    let mut acc = vec![0.0f64; len];
    let mut total = 0.0f64;
    for u in updates {
        if u.delta.len() != len {
            return Err(FedAvgError::Length {
                client: u.client,
                expected: len,
                found: u.delta.len(),
            });
        }
        let n = u.num_samples as f64;
        total += n;
        for (a, d) in acc.iter_mut().zip(&u.delta) {
            *a += n * f64::from(*d);
        }
    }
    if total == 0.0 {
        return Err(FedAvgError::ZeroWeight);
    }
    Ok(acc.into_iter().map(|a| (a / total) as f32).collect())
}

/// Adds `lr · avg` to `weights` (the server step; `lr = 1` is plain FedAvg).
pub fn apply_update(weights: &mut [f32], avg: &[f32], lr: f32) {
    for (w, d) in weights.iter_mut().zip(avg) {
        *w += lr * d;
    }
}

/// What a round needs to know when it opens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundConfig {
    /// Round number within the task.
    pub round: u64,
    /// Clients selected for this round.
    pub expected: BTreeSet<ClientId>,
    /// After this time, missing clients count as dropouts.
    pub deadline: u64,
    /// Fewest submissions for the round to succeed (secure aggregation needs at least its
    /// threshold `t`).
    pub min_clients: usize,
}

/// Lifecycle of a [`Round`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundState {
    /// Accepting submissions.
    Open,
    /// Closed with enough submissions.
    Closed,
    /// Closed with too few submissions.
    Failed,
}

/// The result of closing a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedRound<U> {
    /// Round number.
    pub round: u64,
    /// Submissions by client (the survivors).
    pub received: BTreeMap<ClientId, U>,
    /// Expected clients that did not submit in time.
    pub dropped: BTreeSet<ClientId>,
}

/// One round on the coordinator, generic over the submitted payload `U`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round<U> {
    config: RoundConfig,
    received: BTreeMap<ClientId, U>,
    state: RoundState,
}

impl<U: Clone> Round<U> {
    /// Opens a round.
    pub fn new(config: RoundConfig) -> Self {
        Round {
            config,
            received: BTreeMap::new(),
            state: RoundState::Open,
        }
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// Current state.
    pub fn state(&self) -> RoundState {
        self.state
    }

    /// Whether every expected client has submitted.
    pub fn is_complete(&self) -> bool {
        self.received.len() == self.config.expected.len()
    }

    /// Expected clients that have not submitted yet.
    pub fn missing(&self) -> BTreeSet<ClientId> {
        self.config
            .expected
            .iter()
            .filter(|c| !self.received.contains_key(c))
            .copied()
            .collect()
    }

    /// Records a submission at time `now`; returns whether the round is now complete.
    ///
    /// Rejects unknown clients, duplicates, and anything after the close or past the deadline
    /// (a late update must not change a round whose dropouts may already be announced).
    pub fn submit(&mut self, client: ClientId, payload: U, now: u64) -> Result<bool, FedAvgError> {
        if self.state != RoundState::Open || now > self.config.deadline {
            return Err(FedAvgError::Closed(client));
        }
        if !self.config.expected.contains(&client) {
            return Err(FedAvgError::UnknownClient(client));
        }
        if self.received.contains_key(&client) {
            return Err(FedAvgError::Duplicate(client));
        }
        self.received.insert(client, payload);
        Ok(self.is_complete())
    }

    /// Tries to close the round at time `now`.
    ///
    /// Succeeds once everyone has submitted, or once `now ≥ deadline` with at least
    /// `min_clients` submissions (the rest are dropouts). Before the deadline with clients
    /// missing it returns [`FedAvgError::NotDue`] and stays open; past the deadline with too few
    /// it moves to [`RoundState::Failed`] and returns [`FedAvgError::TooFewClients`].
    pub fn close(&mut self, now: u64) -> Result<ClosedRound<U>, FedAvgError> {
        if self.state == RoundState::Failed {
            return Err(FedAvgError::TooFewClients {
                received: self.received.len(),
                min: self.config.min_clients,
            });
        }
        if self.state == RoundState::Open && !self.is_complete() && now < self.config.deadline {
            return Err(FedAvgError::NotDue {
                missing: self.missing().len(),
                deadline: self.config.deadline,
                now,
            });
        }
        if self.received.len() < self.config.min_clients {
            self.state = RoundState::Failed;
            return Err(FedAvgError::TooFewClients {
                received: self.received.len(),
                min: self.config.min_clients,
            });
        }
        self.state = RoundState::Closed;
        Ok(ClosedRound {
            round: self.config.round,
            received: self.received.clone(),
            dropped: self.missing(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(client: ClientId, n: u64, delta: Vec<f32>) -> ClientUpdate {
        ClientUpdate {
            client,
            num_samples: n,
            delta,
        }
    }

    #[test]
    fn weighted_average() {
        let avg = fedavg(&[up(1, 1, vec![1.0, 0.0]), up(2, 3, vec![5.0, 4.0])]).unwrap();
        assert_eq!(avg, vec![4.0, 3.0]);
        assert_eq!(fedavg(&[]), Err(FedAvgError::Empty));
        assert!(matches!(
            fedavg(&[up(1, 1, vec![1.0]), up(2, 1, vec![1.0, 2.0])]),
            Err(FedAvgError::Length { client: 2, .. })
        ));
        assert_eq!(fedavg(&[up(1, 0, vec![1.0])]), Err(FedAvgError::ZeroWeight));
        let mut w = vec![1.0, 1.0];
        apply_update(&mut w, &avg, 0.5);
        assert_eq!(w, vec![3.0, 2.5]);
    }

    fn round() -> Round<ClientUpdate> {
        Round::new(RoundConfig {
            round: 3,
            expected: [1, 2, 3].into_iter().collect(),
            deadline: 100,
            min_clients: 2,
        })
    }

    #[test]
    fn closes_early_when_complete() {
        let mut r = round();
        assert_eq!(r.submit(1, up(1, 1, vec![0.0]), 10), Ok(false));
        assert_eq!(
            r.submit(1, up(1, 1, vec![0.0]), 11),
            Err(FedAvgError::Duplicate(1))
        );
        assert_eq!(
            r.submit(9, up(9, 1, vec![0.0]), 11),
            Err(FedAvgError::UnknownClient(9))
        );
        assert_eq!(r.submit(2, up(2, 1, vec![0.0]), 12), Ok(false));
        assert!(matches!(
            r.close(50),
            Err(FedAvgError::NotDue { missing: 1, .. })
        ));
        assert_eq!(r.state(), RoundState::Open);
        assert_eq!(r.submit(3, up(3, 1, vec![0.0]), 13), Ok(true));
        let c = r.close(14).unwrap();
        assert_eq!(c.round, 3);
        assert!(c.dropped.is_empty());
        assert_eq!(c.received.len(), 3);
        assert_eq!(
            r.submit(3, up(3, 1, vec![0.0]), 15),
            Err(FedAvgError::Closed(3))
        );
    }

    #[test]
    fn deadline_turns_missing_into_dropouts() {
        let mut r = round();
        r.submit(1, up(1, 1, vec![0.0]), 10).unwrap();
        r.submit(3, up(3, 1, vec![0.0]), 20).unwrap();
        assert_eq!(
            r.submit(2, up(2, 1, vec![0.0]), 101),
            Err(FedAvgError::Closed(2))
        );
        let c = r.close(100).unwrap();
        assert_eq!(c.dropped, [2].into_iter().collect());
        assert_eq!(r.state(), RoundState::Closed);
    }

    #[test]
    fn too_few_fails() {
        let mut r = round();
        r.submit(1, up(1, 1, vec![0.0]), 10).unwrap();
        assert_eq!(
            r.close(200),
            Err(FedAvgError::TooFewClients {
                received: 1,
                min: 2
            })
        );
        assert_eq!(r.state(), RoundState::Failed);
        assert!(r.close(300).is_err());
    }
}
