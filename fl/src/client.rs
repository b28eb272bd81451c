//! The client side of a federated job ([`crate::wire`]): a state machine over one node's local
//! data. The node's rows never leave it; it sends only statistics sums and (clipped, noised,
//! masked) model updates. CPU-heavy steps (local training) happen inside [`Client::handle`], so
//! callers run it off their async workers.
//!
//! A client with a node identity ([`Client::with_identity`]) signs the keys it advertises and
//! refuses a roster in which any peer's keys are unsigned, signed by an unknown node, or signed
//! by a node that appears twice: the coordinator relays the roster, and without these checks it
//! could hand every client keys of its own and unmask each update.

use std::collections::BTreeSet;
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use rand::{CryptoRng, RngCore};

use crate::ClientId;
use crate::data::{Dataset, FeatureStats};
use crate::dp::{add_noise_share, clip_l2};
use crate::model::{LocalTraining, ModelSpec, train_local};
use crate::secagg::{AdvertisedKeys, ClientSetup, FixedPoint, KeySignature};
use crate::wire::{ToClient, ToServer};

/// A message the client cannot act on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClientError {
    /// A message for another round, or out of order.
    #[error("unexpected {what} for round {round} (the client is in round {current})")]
    OutOfOrder {
        /// Which message.
        what: &'static str,
        /// Its round.
        round: u32,
        /// The client's round.
        current: u32,
    },
    /// The model, data or parameters do not fit.
    #[error("{0}")]
    Invalid(String),
    /// The roster cannot be trusted: a peer's keys are not signed by a known node identity.
    #[error("untrusted roster: {0}")]
    Untrusted(String),
}

/// Looks up a node's published identity key.
pub type IdentityLookup = Arc<dyn Fn(&str) -> Option<VerifyingKey> + Send + Sync>;

/// The node identity a client signs its keys with, and how it finds its peers' identity keys.
#[derive(Clone)]
pub struct ClientIdentity {
    /// This node's name.
    pub node: String,
    /// This node's identity key.
    pub key: SigningKey,
    /// Peers' identity keys, by node name (read from where the coordinator cannot change them).
    pub peers: IdentityLookup,
}

impl ClientIdentity {
    fn sign(&self, keys: &mut AdvertisedKeys, session: u64) {
        let sig = self.key.sign(&keys.signed_message(session, &self.node));
        keys.signature = Some(KeySignature {
            node: self.node.clone(),
            sig: sig.to_bytes().to_vec(),
        });
    }

    /// Checks every peer's signature; `me` is this client's own entry, which must be what it
    /// advertised.
    fn check_roster(
        &self,
        roster: &[AdvertisedKeys],
        mine: &AdvertisedKeys,
        session: u64,
    ) -> Result<(), ClientError> {
        let untrusted = |m: String| Err(ClientError::Untrusted(m));
        let mut nodes = BTreeSet::new();
        for k in roster {
            let c = k.client;
            if c == mine.client {
                if (k.mask_pk, k.enc_pk) != (mine.mask_pk, mine.enc_pk) {
                    return untrusted(format!("this client's own keys (client {c}) were replaced"));
                }
                nodes.insert(self.node.as_str());
                continue;
            }
            let Some(s) = &k.signature else {
                return untrusted(format!("client {c} did not sign its keys"));
            };
            if !nodes.insert(s.node.as_str()) {
                return untrusted(format!("node {} appears twice in the roster", s.node));
            }
            let Some(pk) = (self.peers)(&s.node) else {
                return untrusted(format!(
                    "client {c} claims node {}, which has published no identity key",
                    s.node
                ));
            };
            let sig = <[u8; 64]>::try_from(s.sig.as_slice()).map(|b| Signature::from_bytes(&b));
            let ok = sig.is_ok_and(|sig| {
                pk.verify_strict(&k.signed_message(session, &s.node), &sig)
                    .is_ok()
            });
            if !ok {
                return untrusted(format!(
                    "the keys of client {c} do not carry a valid signature of node {}",
                    s.node
                ));
            }
        }
        Ok(())
    }
}

fn invalid(e: impl std::fmt::Display) -> ClientError {
    ClientError::Invalid(e.to_string())
}

/// One round's settings, from `Begin`.
struct RoundPlan {
    round: u32,
    clients: u32,
    spec: ModelSpec,
    weights: Vec<f32>,
    local: LocalTraining,
    dp: Option<(f64, f32)>,
    seed: u64,
}

/// One client of one job.
pub struct Client {
    id: ClientId,
    raw: Dataset,
    data: Option<Dataset>,
    plan: Option<RoundPlan>,
    secagg: Option<ClientSetup>,
    identity: Option<ClientIdentity>,
    /// The last training round this client released a noised update for, under DP.
    released: Option<u32>,
}

impl Client {
    /// A client over the node's data set (unstandardised).
    pub fn new(data: Dataset) -> Client {
        Client {
            id: 0,
            raw: data,
            data: None,
            plan: None,
            secagg: None,
            identity: None,
            released: None,
        }
    }

    /// A client that signs its keys with a node identity and checks its peers' signatures.
    pub fn with_identity(data: Dataset, identity: ClientIdentity) -> Client {
        Client {
            identity: Some(identity),
            ..Client::new(data)
        }
    }

    /// Rows in the local data set.
    pub fn rows(&self) -> usize {
        self.raw.len()
    }

    /// Handles one message; returns the answer to send, if any. Trains in `Relay` (with secure
    /// aggregation) or `Begin` (without): seconds of CPU for large data.
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        msg: ToClient,
        rng: &mut R,
    ) -> Result<Option<ToServer>, ClientError> {
        match msg {
            ToClient::Begin {
                round,
                client,
                clients,
                dataset: _,
                spec,
                weights,
                standardize,
                local,
                dp,
                secagg,
                seed,
                columns,
            } => {
                // A round is released once: a coordinator that asks again (for round r or an
                // earlier one) would get a second noisy look at the same data.
                if dp.is_some()
                    && let Some(last) = self.released
                    && round <= last
                {
                    return Err(invalid(format!(
                        "round {round} comes after this client released round {last} under DP: \
                         each round is released once"
                    )));
                }
                self.id = client;
                // The job's columns by name (the evaluation set's order), before round 0 sums
                // the statistics.
                if let Some(names) = columns
                    && self.raw.columns != names
                {
                    let picked = self.raw.with_columns(&names).map_err(|e| {
                        invalid(format!("the job's feature columns: this data set: {e}"))
                    })?;
                    // A data set without names stays as it is (matched by position).
                    if picked.columns == names {
                        self.raw = picked;
                        self.data = None;
                    }
                }
                if let Some((mean, std)) = standardize
                    && self.data.is_none()
                {
                    let mut d = self.raw.clone();
                    d.standardize(&mean, &std).map_err(invalid)?;
                    self.data = Some(d);
                }
                self.plan = Some(RoundPlan {
                    round,
                    clients,
                    spec,
                    weights,
                    local,
                    dp,
                    seed,
                });
                match secagg {
                    Some(params) => {
                        let session = params.session;
                        let setup = ClientSetup::new(client, params, rng);
                        let mut keys = setup.advertise();
                        if let Some(id) = &self.identity {
                            id.sign(&mut keys, session);
                        }
                        self.secagg = Some(setup);
                        Ok(Some(ToServer::Keys { round, keys }))
                    }
                    None => {
                        self.secagg = None;
                        let y = self.vector(rng)?;
                        Ok(Some(ToServer::Update { round, y }))
                    }
                }
            }
            ToClient::Roster { round, roster } => {
                self.check_round("roster", round)?;
                let identity = self.identity.clone();
                let setup = self.setup("roster", round)?;
                if let Some(id) = identity {
                    id.check_roster(&roster, &setup.advertise(), setup.params().session)?;
                }
                let shares = setup.share_keys(&roster, rng).map_err(invalid)?;
                let sealed = shares
                    .iter()
                    .map(|s| setup.seal(s, rng))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                Ok(Some(ToServer::Shares {
                    round,
                    shares: sealed,
                }))
            }
            ToClient::Relay {
                round,
                shares,
                peers,
            } => {
                self.check_round("relay", round)?;
                let setup = self.setup("relay", round)?;
                let opened = shares
                    .iter()
                    .map(|s| setup.open(s))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(invalid)?;
                setup.receive_shares(opened).map_err(invalid)?;
                let y = self.vector_for(&peers, rng)?;
                let setup = self.setup("relay", round)?;
                let masked = setup.masked_update(&y, &peers).map_err(invalid)?;
                Ok(Some(ToServer::Update { round, y: masked.y }))
            }
            ToClient::Unmask {
                round,
                survivors,
                dropped,
            } => {
                self.check_round("unmask", round)?;
                let setup = self.setup("unmask", round)?;
                let shares = setup
                    .unmask_response(&survivors, &dropped)
                    .map_err(invalid)?;
                Ok(Some(ToServer::Unmask { round, shares }))
            }
            ToClient::End { .. } => {
                self.plan = None;
                self.secagg = None;
                Ok(None)
            }
        }
    }

    fn check_round(&self, what: &'static str, round: u32) -> Result<(), ClientError> {
        let current = self.plan.as_ref().map_or(u32::MAX, |p| p.round);
        if current != round {
            return Err(ClientError::OutOfOrder {
                what,
                round,
                current,
            });
        }
        Ok(())
    }

    fn setup(&mut self, what: &'static str, round: u32) -> Result<&mut ClientSetup, ClientError> {
        self.secagg.as_mut().ok_or(ClientError::OutOfOrder {
            what,
            round,
            current: round,
        })
    }

    fn vector_for<R: RngCore>(
        &mut self,
        peers: &BTreeSet<ClientId>,
        rng: &mut R,
    ) -> Result<Vec<u32>, ClientError> {
        // Under secure aggregation the noise is split among the clients that will mask together.
        if let Some(p) = self.plan.as_mut() {
            p.clients = peers.len() as u32;
        }
        self.vector(rng)
    }

    /// This round's contribution, encoded: statistics in round 0, an update afterwards.
    fn vector<R: RngCore>(&mut self, rng: &mut R) -> Result<Vec<u32>, ClientError> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| invalid("no round in progress"))?;
        let fp = FixedPoint::default();
        if plan.round == 0 {
            if self.raw.num_features() != plan.spec.inputs {
                return Err(invalid(format!(
                    "the data set has {} features, the model {}",
                    self.raw.num_features(),
                    plan.spec.inputs
                )));
            }
            let stats = FeatureStats::from_dataset(&self.raw).to_vec();
            return fp.encode_wide(&stats).map_err(invalid);
        }
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| invalid("training before standardisation"))?;
        let seed = plan.seed ^ (u64::from(plan.round) << 32) ^ u64::from(self.id);
        let (w, loss) =
            train_local(&plan.spec, &plan.weights, data, &plan.local, seed).map_err(invalid)?;
        let mut delta: Vec<f32> = w.iter().zip(&plan.weights).map(|(a, b)| a - b).collect();
        match plan.dp {
            Some((sigma, clip)) => {
                // The loss is released with the update, so it is bounded, scaled to the clipping
                // norm, clipped together with the update and noised with it: the pair has
                // sensitivity C, which the accountant charges.
                delta.push(loss.clamp(0.0, DP_LOSS_BOUND) / DP_LOSS_BOUND * clip);
                clip_l2(&mut delta, clip);
                add_noise_share(&mut delta, sigma, clip, plan.clients.max(1) as usize, rng)
                    .map_err(invalid)?;
                let loss = delta.pop().unwrap_or_default();
                delta.push(1.0);
                delta.push(loss);
                let encoded = fp.encode(&delta).map_err(invalid)?;
                self.released = Some(plan.round);
                Ok(encoded)
            }
            None => {
                let n = data.len() as f64;
                let mut v: Vec<f64> = delta.iter().map(|d| n * f64::from(*d)).collect();
                v.push(n);
                v.push(n * f64::from(loss));
                fp.encode_wide(&v).map_err(invalid)
            }
        }
    }
}

/// Under DP, a client's training loss is capped at this before it is released (scaled to the
/// clipping norm and noised with the update); the mean loss the server reports is then noisy,
/// with standard deviation about σ·`DP_LOSS_BOUND`/clients.
pub const DP_LOSS_BOUND: f32 = 1.0;

/// Length of a round's encoded vector: statistics in round 0, an update afterwards.
pub fn vector_len(round: u32, features: usize, params: usize, dp: bool) -> usize {
    if round == 0 {
        4 * (1 + 2 * features)
    } else if dp {
        params + 2
    } else {
        4 * (params + 2)
    }
}

/// The Shamir threshold of a secure-aggregation session of `n` clients.
pub fn secagg_threshold(n: usize) -> usize {
    // Survive 30 % of the clients dropping after sharing keys; never fewer than a majority.
    (n - n * 3 / 10).max(n / 2 + 1).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::breast_cancer;

    #[test]
    fn under_dp_the_loss_is_clipped_and_released_with_the_update() {
        let data = breast_cancer();
        let (mean, std) = FeatureStats::from_dataset(&data).mean_std().unwrap();
        let spec = ModelSpec::logistic(data.num_features());
        let params = spec.num_params();
        let clip = 0.5;
        let mut client = Client::new(data);
        let begin = ToClient::Begin {
            round: 1,
            client: 0,
            clients: 1,
            dataset: "d".into(),
            weights: spec.init(0),
            spec,
            standardize: Some((mean, std)),
            local: LocalTraining {
                epochs: 1,
                batch_size: 16,
                lr: 0.5,
                l2: 0.0,
            },
            // σ = 0: the clipping alone, without noise to hide it.
            dp: Some((0.0, clip)),
            secagg: None,
            columns: None,
            seed: 1,
        };
        let again = begin.clone();
        let Ok(Some(ToServer::Update { y, .. })) = client.handle(begin, &mut rand::rng()) else {
            panic!("no update");
        };
        let v = FixedPoint::default().decode(&y);
        assert_eq!(v.len(), params + 2);
        assert_eq!(v[params], 1.0);
        let loss = v[params + 1];
        assert!(loss > 0.0 && loss <= clip + 1e-4, "{loss}");
        let norm = v[..params]
            .iter()
            .chain(std::iter::once(&loss))
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(norm <= f64::from(clip) + 1e-3, "{norm}");
        // Asked for the same round again, the client refuses.
        assert!(matches!(
            client.handle(again, &mut rand::rng()),
            Err(ClientError::Invalid(m)) if m.contains("released once")
        ));
    }
}
