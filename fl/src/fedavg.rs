//! FedAvg: [`fedavg`] is the sample-weighted average of client updates (McMahan et al. 2017),
//! [`apply_update`] the server step.
//!
//! The rounds themselves (who is expected, deadlines, dropouts, secure aggregation) are run by
//! [`crate::server::Server`].

use serde::{Deserialize, Serialize};

use crate::ClientId;

/// Errors from averaging.
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
}
