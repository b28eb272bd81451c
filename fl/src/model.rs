//! Binary classifiers over flat weight vectors: logistic regression and a small MLP.
//!
//! A model is a [`ModelSpec`] (the shape) plus a flat `Vec<f32>` of weights, so that weights and
//! updates are plain vectors that FedAvg, clipping, noise and secure aggregation treat alike.
//!
//! # Weight layout
//! Layer sizes are `[inputs, hidden[0], .., hidden[h−1], 1]`. For each layer `l` from input to
//! output, with `n_in` inputs and `n_out` outputs, the vector holds first `W_l` in row-major order
//! `[out][in]` (`W_l[o][i]` at `offset + o·n_in + i`), then the bias `b_l` (`n_out` values). Hidden
//! layers use ReLU; the output is one logit `z` and `p = sigmoid(z)`. Logistic regression is the
//! spec with no hidden layers: `inputs` weights followed by one bias.
//!
//! The loss is binary cross-entropy on the logit (numerically stable form), labels in `{0, 1}`.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;

/// Errors from model operations.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    /// The weight vector does not match the spec.
    #[error("weight vector has {found} values, the model needs {expected}")]
    WeightLength {
        /// Parameters the spec needs.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// A data row does not match the spec's input width.
    #[error("data has {found} features, the model takes {expected}")]
    FeatureCount {
        /// Inputs of the spec.
        expected: usize,
        /// Features in the data.
        found: usize,
    },
    /// Invalid hyper-parameters or an empty data set.
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
}

/// The shape of a binary classifier: `inputs → hidden.. (ReLU) → 1 (sigmoid)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Number of input features.
    pub inputs: usize,
    /// Hidden layer widths; empty for logistic regression.
    pub hidden: Vec<usize>,
}

/// Hyper-parameters of local minibatch SGD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalTraining {
    /// Passes over the local data.
    pub epochs: usize,
    /// Minibatch size (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f32,
    /// L2 penalty coefficient on weights (not biases); 0 for none.
    pub l2: f32,
}

impl ModelSpec {
    /// Logistic regression on `inputs` features.
    pub fn logistic(inputs: usize) -> Self {
        ModelSpec {
            inputs,
            hidden: Vec::new(),
        }
    }

    /// An MLP with the given hidden widths.
    pub fn mlp(inputs: usize, hidden: &[usize]) -> Self {
        ModelSpec {
            inputs,
            hidden: hidden.to_vec(),
        }
    }

    fn sizes(&self) -> Vec<usize> {
        let mut s = Vec::with_capacity(self.hidden.len() + 2);
        s.push(self.inputs);
        s.extend_from_slice(&self.hidden);
        s.push(1);
        s
    }

    /// Total number of parameters (length of the weight vector).
    pub fn num_params(&self) -> usize {
        self.sizes().windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    /// Deterministic initial weights from a seed.
    ///
    /// Hidden layers use He-uniform (`U(±√(6/n_in))`), the output layer Xavier-uniform
    /// (`U(±√(6/(n_in+n_out)))`) and biases 0. Logistic regression starts at all zeros, the
    /// usual and seed-independent choice for a convex model.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let sizes = self.sizes();
        let mut w = Vec::with_capacity(self.num_params());
        let last = sizes.len() - 2;
        for (l, pair) in sizes.windows(2).enumerate() {
            let (n_in, n_out) = (pair[0], pair[1]);
            let bound = if self.hidden.is_empty() {
                0.0
            } else if l == last {
                (6.0 / (n_in + n_out) as f32).sqrt()
            } else {
                (6.0 / n_in as f32).sqrt()
            };
            for _ in 0..n_in * n_out {
                w.push(if bound > 0.0 {
                    rng.random_range(-bound..bound)
                } else {
                    0.0
                });
            }
            w.extend(std::iter::repeat_n(0.0, n_out));
        }
        w
    }

    fn check(&self, weights: &[f32], data: &Dataset) -> Result<(), ModelError> {
        if weights.len() != self.num_params() {
            return Err(ModelError::WeightLength {
                expected: self.num_params(),
                found: weights.len(),
            });
        }
        if let Some(row) = data.x.iter().find(|r| r.len() != self.inputs) {
            return Err(ModelError::FeatureCount {
                expected: self.inputs,
                found: row.len(),
            });
        }
        Ok(())
    }

    /// Forward pass keeping every layer's activations (input first, output logit last).
    fn forward(&self, weights: &[f32], x: &[f32]) -> Vec<Vec<f32>> {
        let sizes = self.sizes();
        let mut acts = vec![x.to_vec()];
        let mut off = 0;
        for (l, pair) in sizes.windows(2).enumerate() {
            let (n_in, n_out) = (pair[0], pair[1]);
            let w = &weights[off..off + n_in * n_out];
            let b = &weights[off + n_in * n_out..off + n_in * n_out + n_out];
            let a = &acts[l];
            let hidden = l + 2 < sizes.len();
            let out: Vec<f32> = (0..n_out)
                .map(|o| {
                    let z = b[o] + dot(&w[o * n_in..(o + 1) * n_in], a);
                    if hidden { z.max(0.0) } else { z }
                })
                .collect();
            acts.push(out);
            off += n_in * n_out + n_out;
        }
        acts
    }

    fn logit(&self, weights: &[f32], x: &[f32]) -> f32 {
        self.forward(weights, x)
            .last()
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0)
    }

    /// Adds the gradient of the BCE loss of one example into `grad`; returns the loss.
    fn backprop(&self, weights: &[f32], x: &[f32], y: f32, grad: &mut [f32]) -> f32 {
        let sizes = self.sizes();
        let acts = self.forward(weights, x);
        let z = acts[acts.len() - 1][0];
        let loss = bce_with_logit(z, y);
        // delta = dL/d(pre-activation) of the current layer.
        let mut delta = vec![sigmoid(z) - y];
        let mut offsets = Vec::with_capacity(sizes.len() - 1);
        let mut off = 0;
        for pair in sizes.windows(2) {
            offsets.push(off);
            off += pair[0] * pair[1] + pair[1];
        }
        for l in (0..sizes.len() - 1).rev() {
            let (n_in, n_out) = (sizes[l], sizes[l + 1]);
            let off = offsets[l];
            let a = &acts[l];
            for o in 0..n_out {
                let d = delta[o];
                if d == 0.0 {
                    continue;
                }
                let row = &mut grad[off + o * n_in..off + (o + 1) * n_in];
                for (g, &ai) in row.iter_mut().zip(a) {
                    *g += d * ai;
                }
                grad[off + n_in * n_out + o] += d;
            }
            if l > 0 {
                let w = &weights[off..off + n_in * n_out];
                delta = (0..n_in)
                    .map(|i| {
                        if a[i] <= 0.0 {
                            0.0
                        } else {
                            (0..n_out).map(|o| delta[o] * w[o * n_in + i]).sum()
                        }
                    })
                    .collect();
            }
        }
        loss
    }

    /// Indices of the weight (not bias) entries, for the L2 penalty.
    fn is_weight_mask(&self) -> Vec<bool> {
        let mut m = Vec::with_capacity(self.num_params());
        for pair in self.sizes().windows(2) {
            m.extend(std::iter::repeat_n(true, pair[0] * pair[1]));
            m.extend(std::iter::repeat_n(false, pair[1]));
        }
        m
    }

    /// Mean BCE loss over a data set.
    pub fn loss(&self, weights: &[f32], data: &Dataset) -> Result<f32, ModelError> {
        self.check(weights, data)?;
        if data.is_empty() {
            return Err(ModelError::Invalid("empty data set"));
        }
        let total: f64 = data
            .x
            .iter()
            .zip(&data.y)
            .map(|(x, &y)| f64::from(bce_with_logit(self.logit(weights, x), y)))
            .sum();
        Ok((total / data.len() as f64) as f32)
    }

    /// Predicted probabilities of label 1, one per row.
    pub fn predict(&self, weights: &[f32], data: &Dataset) -> Result<Vec<f32>, ModelError> {
        self.check(weights, data)?;
        Ok(data
            .x
            .iter()
            .map(|x| sigmoid(self.logit(weights, x)))
            .collect())
    }

    /// Fraction of rows where `p ≥ 0.5` agrees with the label.
    pub fn accuracy(&self, weights: &[f32], data: &Dataset) -> Result<f64, ModelError> {
        let p = self.predict(weights, data)?;
        if p.is_empty() {
            return Err(ModelError::Invalid("empty data set"));
        }
        let hits = p
            .iter()
            .zip(&data.y)
            .filter(|(p, y)| (**p >= 0.5) == (**y >= 0.5))
            .count();
        Ok(hits as f64 / p.len() as f64)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The logistic function.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Binary cross-entropy of label `y` given logit `z`: `max(z,0) − z·y + ln(1 + e^{−|z|})`.
pub fn bce_with_logit(z: f32, y: f32) -> f32 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// Local minibatch SGD from `weights`; returns the new weights and the mean training loss over
/// all minibatches of all epochs (the loss of each batch before its step).
///
/// The row order of each epoch is a shuffle seeded by `seed`, so the result is deterministic.
pub fn train_local(
    model: &ModelSpec,
    weights: &[f32],
    data: &Dataset,
    cfg: &LocalTraining,
    seed: u64,
) -> Result<(Vec<f32>, f32), ModelError> {
    model.check(weights, data)?;
    if data.is_empty() {
        return Err(ModelError::Invalid("empty data set"));
    }
    if cfg.batch_size == 0 || !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(ModelError::Invalid("batch_size must be > 0 and lr > 0"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = weights.to_vec();
    let mut grad = vec![0.0f32; w.len()];
    let mask = model.is_weight_mask();
    let mut order: Vec<usize> = (0..data.len()).collect();
    let (mut loss_sum, mut batches) = (0.0f64, 0usize);
    for _ in 0..cfg.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(cfg.batch_size) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut loss = 0.0f32;
            for &i in batch {
                loss += model.backprop(&w, &data.x[i], data.y[i], &mut grad);
            }
            let scale = cfg.lr / batch.len() as f32;
            for ((wi, gi), &is_w) in w.iter_mut().zip(&grad).zip(&mask) {
                let reg = if is_w { cfg.l2 * *wi } else { 0.0 };
                *wi -= scale * gi + cfg.lr * reg;
            }
            loss_sum += f64::from(loss / batch.len() as f32);
            batches += 1;
        }
    }
    let mean = if batches == 0 {
        0.0
    } else {
        (loss_sum / batches as f64) as f32
    };
    Ok((w, mean))
}

/// Area under the ROC curve by ranks (Mann–Whitney U), ties given their average rank.
///
/// Returns `None` when the labels hold only one class.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0f64; idx.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = avg;
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|&&y| y >= 0.5).count() as f64;
    let neg = idx.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let rank_sum: f64 = idx
        .iter()
        .filter(|&&k| labels[k] >= 0.5)
        .map(|&k| ranks[k])
        .sum();
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, seed: u64) -> Dataset {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut d = Dataset::default();
        for i in 0..n {
            let y = (i % 2) as f32;
            let c = if y == 1.0 { 1.5 } else { -1.5 };
            d.x.push(vec![
                c + rng.random_range(-1.0..1.0),
                -c + rng.random_range(-1.0..1.0),
            ]);
            d.y.push(y);
        }
        d
    }

    #[test]
    fn layout_and_param_count() {
        assert_eq!(ModelSpec::logistic(30).num_params(), 31);
        let m = ModelSpec::mlp(3, &[4, 2]);
        assert_eq!(m.num_params(), 3 * 4 + 4 + 4 * 2 + 2 + 2 + 1);
        assert_eq!(m.init(1), m.init(1));
        assert_ne!(m.init(1), m.init(2));
        // Layout: with W = 0 except b of the output layer, the logit is that bias.
        let mut w = vec![0.0; m.num_params()];
        *w.last_mut().unwrap() = 2.0;
        let d = Dataset {
            x: vec![vec![1.0, 2.0, 3.0]],
            y: vec![1.0],
            columns: Vec::new(),
        };
        assert!((m.predict(&w, &d).unwrap()[0] - sigmoid(2.0)).abs() < 1e-6);
        // Logistic: W row-major then b.
        let lr = ModelSpec::logistic(3);
        let w = vec![1.0, 0.0, -1.0, 0.5];
        let z: f32 = 1.0 - 3.0 + 0.5;
        assert!((lr.predict(&w, &d).unwrap()[0] - sigmoid(z)).abs() < 1e-6);
    }

    #[test]
    fn mlp_gradient_matches_finite_differences() {
        let m = ModelSpec::mlp(3, &[5, 4]);
        let w = m.init(3);
        let x = [0.3f32, -0.7, 1.1];
        let mut g = vec![0.0; w.len()];
        m.backprop(&w, &x, 1.0, &mut g);
        let eps = 1e-3f32;
        for k in 0..w.len() {
            let mut wp = w.clone();
            wp[k] += eps;
            let mut wm = w.clone();
            wm[k] -= eps;
            let num = (bce_with_logit(m.logit(&wp, &x), 1.0)
                - bce_with_logit(m.logit(&wm, &x), 1.0))
                / (2.0 * eps);
            assert!((num - g[k]).abs() < 2e-3, "param {k}: {num} vs {}", g[k]);
        }
    }

    #[test]
    fn training_learns_separable_blobs() {
        let d = blobs(200, 5);
        let cfg = LocalTraining {
            epochs: 20,
            batch_size: 16,
            lr: 0.1,
            l2: 0.0,
        };
        for spec in [ModelSpec::logistic(2), ModelSpec::mlp(2, &[8])] {
            let w0 = spec.init(1);
            let before = spec.loss(&w0, &d).unwrap();
            let (w, mean_loss) = train_local(&spec, &w0, &d, &cfg, 9).unwrap();
            assert!(spec.loss(&w, &d).unwrap() < before / 4.0);
            assert!(mean_loss < before);
            assert!(spec.accuracy(&w, &d).unwrap() > 0.97);
            let p = spec.predict(&w, &d).unwrap();
            assert!(auc(&p, &d.y).unwrap() > 0.99);
            assert_eq!(train_local(&spec, &w0, &d, &cfg, 9).unwrap().0, w);
        }
    }

    #[test]
    fn auc_by_ranks() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.5, 0.5], &[0.0, 1.0]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0]), None);
    }

    #[test]
    fn rejects_bad_shapes() {
        let m = ModelSpec::logistic(2);
        let d = blobs(4, 1);
        assert!(matches!(
            m.predict(&[0.0; 2], &d),
            Err(ModelError::WeightLength { .. })
        ));
        assert!(matches!(
            ModelSpec::logistic(3).predict(&[0.0; 4], &d),
            Err(ModelError::FeatureCount { .. })
        ));
    }
}
