//! Secure aggregation in the style of Bonawitz et al. 2017 ("Practical Secure Aggregation for
//! Privacy-Preserving Machine Learning"), as pure state machines testable in one process.
//!
//! # Protocol (one session = one FL round)
//! 1. **Advertise.** Each client makes a [`ClientSetup`]: an X25519 key pair for pairwise masks
//!    and a random 32-byte self-mask seed `b_u`, and publishes [`AdvertisedKeys`].
//! 2. **Share keys.** Given the roster of advertised keys, each client Shamir-splits (t of n, over
//!    GF(2^61 − 1)) both its self-mask seed and its X25519 secret, and sends one [`KeyShare`] to
//!    every other client (through the server). Clients store the shares they receive.
//! 3. **Masked input.** A client encodes its update with [`FixedPoint`] into Z_2^32 and sends
//!    `y_u = x_u + PRG(b_u) + Σ_{v>u} PRG(s_uv) − Σ_{v<u} PRG(s_uv)` (all wrapping), where `s_uv`
//!    is derived from the X25519 shared secret of `u` and `v` ([`ClientSetup::masked_update`]).
//! 4. **Unmask.** The server announces who survived and who dropped. Each survivor answers with
//!    its shares of the survivors' self-mask seeds and of the dropped clients' X25519 secrets,
//!    never both for one client ([`ClientSetup::unmask_response`]). With `t` answers the server
//!    removes the self masks and the dropped clients' dangling pairwise masks from the sum
//!    ([`ServerAggregator::unmask`]); pairwise masks between survivors cancel by construction.
//!
//! The server learns only `Σ x_u` over survivors (against an honest-but-curious server and up to
//! `t − 1` colluding clients).
//!
//! # Confidentiality of shares
//! A [`KeyShare`] is addressed to one client and travels through the server, which could
//! otherwise reconstruct every mask. As in the paper, each client has a second X25519 pair for
//! encryption (`enc_pk` in [`AdvertisedKeys`]); [`ClientSetup::seal`] encrypts a share with
//! ChaCha20-Poly1305 under a key derived from the two clients' encryption keys, and
//! [`ClientSetup::open`] decrypts and authenticates it. The encryption keys are never shared, so
//! reconstructing a dropped client's mask key does not open its mailbox.
//!
//! # Out of scope here
//! - **Authentication.** Messages are not signed; a server that forges roster entries (an
//!   active adversary) is not stopped. Nodes have no identity keys yet.
//! - The paper's consistency-check round (signatures over the survivor set).
//!
//! # Fixed point
//! [`FixedPoint`] maps `v ↦ round(v·2^s)` as a two's-complement `i32`, stored as `u32`; sums wrap
//! in Z_2^32 and decode back exactly while the true sum stays in `(−2^31, 2^31)·2^−s`. With the
//! default `s = 16` that is ±32768 with a resolution of 1.5·10⁻⁵. For values that need more range
//! (summary statistics), [`FixedPoint::encode_wide`] splits an `i64` into four 16-bit limbs, one
//! per `u32`, so up to 65 536 clients sum without carry loss.

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::ClientId;

/// Errors from encoding, the client state machine or unmasking.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecAggError {
    /// A value is not finite or does not fit the fixed-point range.
    #[error("value {value} at index {index} does not fit the fixed-point range")]
    Encode {
        /// Index in the vector.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A vector of the wrong length.
    #[error("vector length {found}, expected {expected}")]
    Length {
        /// Expected length.
        expected: usize,
        /// Found length.
        found: usize,
    },
    /// Invalid parameters (threshold, roster).
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// A client id that is not in the roster (or not where it should be).
    #[error("client {0} is not in the roster or not allowed here")]
    UnknownClient(ClientId),
    /// The same client appears twice.
    #[error("client {0} appears twice")]
    Duplicate(ClientId),
    /// A client was asked to reveal both kinds of share for one peer, or the survivor and dropout
    /// sets do not match the masking set.
    #[error("refusing to unmask: {0}")]
    Refused(&'static str),
    /// This client holds no share from `0`.
    #[error("no key share from client {0}")]
    MissingShare(ClientId),
    /// Fewer than `t` shares for a secret.
    #[error("only {have} shares for client {client}, need {need}")]
    NotEnoughShares {
        /// Whose secret.
        client: ClientId,
        /// Shares available.
        have: usize,
        /// The threshold.
        need: usize,
    },
    /// Shares that do not decode to a valid secret.
    #[error("inconsistent shares for client {0}")]
    BadShares(ClientId),
    /// A reconstructed X25519 secret does not match the advertised public key.
    #[error("reconstructed key of client {0} does not match its public key")]
    KeyMismatch(ClientId),
    /// An X25519 exchange produced the all-zero secret (a low-order public key).
    #[error("non-contributory key exchange with client {0}")]
    NonContributory(ClientId),
}

// ---------------------------------------------------------------------------------------------
// Fixed point

/// Fixed-point encoding of reals into Z_2^32 with scale `2^scale_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedPoint {
    /// Fractional bits: a value `v` encodes as `round(v · 2^scale_bits)`.
    pub scale_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint { scale_bits: 16 }
    }
}

impl FixedPoint {
    fn scale(&self) -> f64 {
        (self.scale_bits as f64).exp2()
    }

    /// Encodes each value as a two's-complement `i32` in a `u32`. Errors on non-finite values
    /// or `|v·2^s| ≥ 2^31`; the caller must also keep the *sum* over clients in range.
    pub fn encode(&self, v: &[f32]) -> Result<Vec<u32>, SecAggError> {
        let s = self.scale();
        v.iter()
            .enumerate()
            .map(|(index, &x)| {
                let q = (f64::from(x) * s).round();
                if !q.is_finite() || q.abs() >= 2f64.powi(31) {
                    return Err(SecAggError::Encode {
                        index,
                        value: f64::from(x),
                    });
                }
                Ok(q as i32 as u32)
            })
            .collect()
    }

    /// Decodes a (summed) vector: each `u32` read as `i32`, divided by `2^s`.
    pub fn decode(&self, v: &[u32]) -> Vec<f32> {
        let s = self.scale();
        v.iter()
            .map(|&x| (f64::from(x as i32) / s) as f32)
            .collect()
    }

    /// Encodes each value as `round(v·2^s)` in an `i64` split into four 16-bit limbs (least
    /// significant first), each in its own `u32`: the output is 4× longer. Limb sums of up to
    /// 65 536 clients never wrap, so [`FixedPoint::decode_wide`] recovers the exact sum mod 2^64.
    pub fn encode_wide(&self, v: &[f64]) -> Result<Vec<u32>, SecAggError> {
        let s = self.scale();
        let mut out = Vec::with_capacity(4 * v.len());
        for (index, &x) in v.iter().enumerate() {
            let q = (x * s).round();
            if !q.is_finite() || q.abs() >= 2f64.powi(62) {
                return Err(SecAggError::Encode { index, value: x });
            }
            let bits = q as i64 as u64;
            out.extend((0..4).map(|k| ((bits >> (16 * k)) & 0xFFFF) as u32));
        }
        Ok(out)
    }

    /// Decodes a sum of [`FixedPoint::encode_wide`] vectors.
    pub fn decode_wide(&self, v: &[u32]) -> Result<Vec<f64>, SecAggError> {
        if !v.len().is_multiple_of(4) {
            return Err(SecAggError::Length {
                expected: v.len().next_multiple_of(4),
                found: v.len(),
            });
        }
        let s = self.scale();
        Ok(v.chunks(4)
            .map(|limbs| {
                let bits = limbs.iter().enumerate().fold(0u64, |acc, (k, &l)| {
                    acc.wrapping_add(u64::from(l).wrapping_shl(16 * k as u32))
                });
                bits as i64 as f64 / s
            })
            .collect())
    }
}

/// Element-wise wrapping sum of vectors in Z_2^32.
pub fn wrapping_sum<'a>(
    vectors: impl IntoIterator<Item = &'a [u32]>,
    len: usize,
) -> Result<Vec<u32>, SecAggError> {
    let mut acc = vec![0u32; len];
    for v in vectors {
        if v.len() != len {
            return Err(SecAggError::Length {
                expected: len,
                found: v.len(),
            });
        }
        acc.iter_mut()
            .zip(v)
            .for_each(|(a, b)| *a = a.wrapping_add(*b));
    }
    Ok(acc)
}

// ---------------------------------------------------------------------------------------------
// Shamir secret sharing over GF(2^61 − 1)

/// The Mersenne prime 2^61 − 1, the Shamir field modulus.
pub const FIELD_PRIME: u64 = (1 << 61) - 1;

/// Bytes of a 32-byte secret per field element (7 bytes = 56 bits < 61).
const CHUNK: usize = 7;
/// Field elements per 32-byte secret.
const ELEMS: usize = 32usize.div_ceil(CHUNK);

fn fadd(a: u64, b: u64) -> u64 {
    (a + b) % FIELD_PRIME
}

fn fsub(a: u64, b: u64) -> u64 {
    (a + FIELD_PRIME - b) % FIELD_PRIME
}

fn fmul(a: u64, b: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(FIELD_PRIME)) as u64
}

fn fpow(mut a: u64, mut e: u64) -> u64 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = fmul(r, a);
        }
        a = fmul(a, a);
        e >>= 1;
    }
    r
}

fn finv(a: u64) -> u64 {
    fpow(a, FIELD_PRIME - 2)
}

fn random_field<R: RngCore + ?Sized>(rng: &mut R) -> u64 {
    loop {
        let v = rng.next_u64() >> 3;
        if v < FIELD_PRIME {
            return v;
        }
    }
}

/// One Shamir share of a 32-byte secret: the evaluation point `x` and one polynomial value per
/// 7-byte chunk of the secret (5 field elements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Evaluation point (a client's id + 1; never 0).
    pub x: u64,
    /// `f_k(x)` for each chunk `k`.
    pub y: Vec<u64>,
}

/// The Shamir evaluation point of a client.
pub fn share_point(client: ClientId) -> u64 {
    u64::from(client) + 1
}

/// Splits a 32-byte secret into shares at the points `xs` such that any `threshold` of them
/// reconstruct it and fewer reveal nothing.
pub fn split_secret<R: RngCore + ?Sized>(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u64],
    rng: &mut R,
) -> Result<Vec<Share>, SecAggError> {
    if threshold == 0 || threshold > xs.len() {
        return Err(SecAggError::Invalid(
            "need 1 ≤ threshold ≤ number of shares",
        ));
    }
    if xs.iter().any(|&x| x == 0 || x >= FIELD_PRIME) {
        return Err(SecAggError::Invalid("share points must be in 1..p"));
    }
    let mut shares: Vec<Share> = xs
        .iter()
        .map(|&x| Share {
            x,
            y: Vec::with_capacity(ELEMS),
        })
        .collect();
    for chunk in secret.chunks(CHUNK) {
        let mut buf = [0u8; 8];
        buf[..chunk.len()].copy_from_slice(chunk);
        let mut coeffs = vec![u64::from_le_bytes(buf)];
        coeffs.extend((1..threshold).map(|_| random_field(rng)));
        for s in &mut shares {
            // Horner.
            let y = coeffs
                .iter()
                .rev()
                .fold(0, |acc, &c| fadd(fmul(acc, s.x), c));
            s.y.push(y);
        }
    }
    Ok(shares)
}

/// Lagrange interpolation at 0 of each chunk, from exactly the given shares.
fn interpolate(shares: &[Share]) -> Vec<u64> {
    (0..ELEMS)
        .map(|k| {
            shares.iter().enumerate().fold(0, |acc, (i, si)| {
                let (num, den) = shares
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .fold((1, 1), |(num, den), (_, sj)| {
                        (fmul(num, sj.x), fmul(den, fsub(sj.x, si.x)))
                    });
                let yk = si.y.get(k).copied().unwrap_or(0);
                fadd(acc, fmul(yk, fmul(num, finv(den))))
            })
        })
        .collect()
}

/// Reconstructs a 32-byte secret from at least `threshold` shares (the first `threshold` with
/// distinct points are used). `owner` only labels errors.
pub fn reconstruct_secret(
    shares: &[Share],
    threshold: usize,
    owner: ClientId,
) -> Result<[u8; 32], SecAggError> {
    let mut seen = BTreeSet::new();
    let distinct: Vec<Share> = shares
        .iter()
        .filter(|s| seen.insert(s.x))
        .take(threshold)
        .cloned()
        .collect();
    if threshold == 0 || distinct.len() < threshold {
        return Err(SecAggError::NotEnoughShares {
            client: owner,
            have: distinct.len(),
            need: threshold,
        });
    }
    if distinct
        .iter()
        .any(|s| s.y.len() != ELEMS || s.x == 0 || s.y.iter().any(|&y| y >= FIELD_PRIME))
    {
        return Err(SecAggError::BadShares(owner));
    }
    let elems = interpolate(&distinct);
    let mut out = [0u8; 32];
    for (k, chunk) in out.chunks_mut(CHUNK).enumerate() {
        let bytes = elems[k].to_le_bytes();
        if bytes[chunk.len()..].iter().any(|&b| b != 0) {
            return Err(SecAggError::BadShares(owner));
        }
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Masks

/// Expands a 32-byte seed into `len` words with ChaCha20.
pub fn prg_expand(seed: [u8; 32], len: usize) -> Vec<u32> {
    let mut rng = ChaCha20Rng::from_seed(seed);
    (0..len).map(|_| rng.next_u32()).collect()
}

/// The pairwise mask seed of clients `a` and `b`: SHA-256 over a domain tag, the session, both
/// ids in ascending order and the X25519 shared secret.
fn pairwise_seed(session: u64, a: ClientId, b: ClientId, dh: &[u8; 32]) -> [u8; 32] {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(b"ambient-fl/secagg/v1/pairwise");
    h.update(session.to_le_bytes());
    h.update(lo.to_le_bytes());
    h.update(hi.to_le_bytes());
    h.update(dh);
    h.finalize().into()
}

fn pairwise_mask(
    session: u64,
    me: ClientId,
    secret: &StaticSecret,
    peer: ClientId,
    peer_pk: &[u8; 32],
    len: usize,
) -> Result<Vec<u32>, SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_pk));
    if !shared.was_contributory() {
        return Err(SecAggError::NonContributory(peer));
    }
    Ok(prg_expand(
        pairwise_seed(session, me, peer, shared.as_bytes()),
        len,
    ))
}

// ---------------------------------------------------------------------------------------------
// Messages

/// Parameters every party agrees on for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Session id (e.g. task id hash ⊕ round): bound into every pairwise seed.
    pub session: u64,
    /// Shamir threshold `t`: shares needed to reconstruct, and fewest survivors.
    pub threshold: usize,
    /// Length of the encoded vectors.
    pub vector_len: usize,
}

/// Step 1 message: a client's public keys for pairwise masks and for encrypting shares to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedKeys {
    /// The client.
    pub client: ClientId,
    /// X25519 public key for pairwise masks.
    pub mask_pk: [u8; 32],
    /// X25519 public key for the encryption of key shares.
    pub enc_pk: [u8; 32],
    /// The node's signature of these keys, when the client has a node identity: clients check
    /// their peers' so the coordinator relaying the roster cannot substitute keys of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<KeySignature>,
}

/// A node identity's ed25519 signature of a client's keys ([`AdvertisedKeys::signed_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySignature {
    /// The node that signed (its identity key is published where the coordinator cannot
    /// change it).
    pub node: String,
    /// The 64-byte signature.
    pub sig: Vec<u8>,
}

impl AdvertisedKeys {
    /// What the node signs: the keys, the client id and the session (which binds job and round),
    /// and the node's name, under a domain separator, so a signature is good for this client of
    /// this round only.
    pub fn signed_message(&self, session: u64, node: &str) -> Vec<u8> {
        let mut m = b"ambient-fl/v1 round keys\0".to_vec();
        m.extend_from_slice(&session.to_le_bytes());
        m.extend_from_slice(&self.client.to_le_bytes());
        m.extend_from_slice(&self.mask_pk);
        m.extend_from_slice(&self.enc_pk);
        m.extend_from_slice(node.as_bytes());
        m
    }
}

/// A [`KeyShare`] encrypted from `from` to `to` ([`ClientSetup::seal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    /// Sender (owner of the shared secrets).
    pub from: ClientId,
    /// Recipient.
    pub to: ClientId,
    /// ChaCha20-Poly1305 nonce.
    pub nonce: [u8; 12],
    /// The JSON of the [`KeyShare`], encrypted and authenticated.
    pub ciphertext: Vec<u8>,
}

/// Step 2 message from `from` to `to`: shares of `from`'s self-mask seed and X25519 secret.
/// The transport must encrypt it to `to` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyShare {
    /// Owner of the shared secrets.
    pub from: ClientId,
    /// Holder of this share.
    pub to: ClientId,
    /// Share of the self-mask seed `b_from`.
    pub self_seed: Share,
    /// Share of the X25519 secret key of `from`.
    pub mask_sk: Share,
}

/// Step 3 message: a masked, encoded update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// The sender.
    pub client: ClientId,
    /// `x + self mask ± pairwise masks` in Z_2^32.
    pub y: Vec<u32>,
}

/// Step 4 message: one survivor's shares for unmasking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskShares {
    /// The responding survivor.
    pub from: ClientId,
    /// Shares of each survivor's self-mask seed.
    pub self_seeds: BTreeMap<ClientId, Share>,
    /// Shares of each dropped client's X25519 secret.
    pub mask_sks: BTreeMap<ClientId, Share>,
}

fn roster_map(
    roster: &[AdvertisedKeys],
    threshold: usize,
) -> Result<BTreeMap<ClientId, [u8; 32]>, SecAggError> {
    let mut map = BTreeMap::new();
    for k in roster {
        if map.insert(k.client, k.mask_pk).is_some() {
            return Err(SecAggError::Duplicate(k.client));
        }
    }
    if threshold < 2 || threshold > map.len() {
        return Err(SecAggError::Invalid("need 2 ≤ threshold ≤ roster size"));
    }
    Ok(map)
}

// ---------------------------------------------------------------------------------------------
// Client

/// One client's secure-aggregation state for one session.
pub struct ClientSetup {
    id: ClientId,
    params: SecAggParams,
    mask_sk: StaticSecret,
    enc_sk: StaticSecret,
    self_seed: [u8; 32],
    roster: BTreeMap<ClientId, [u8; 32]>,
    enc_keys: BTreeMap<ClientId, [u8; 32]>,
    held: BTreeMap<ClientId, KeyShare>,
    masked_with: Option<BTreeSet<ClientId>>,
    answered: bool,
}

impl std::fmt::Debug for ClientSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSetup")
            .field("id", &self.id)
            .field("params", &self.params)
            .field("roster", &self.roster.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl ClientSetup {
    /// Fresh keys and self-mask seed for one session.
    pub fn new<R: CryptoRng + ?Sized>(id: ClientId, params: SecAggParams, rng: &mut R) -> Self {
        let mut sk = [0u8; 32];
        rng.fill_bytes(&mut sk);
        let mut enc = [0u8; 32];
        rng.fill_bytes(&mut enc);
        let mut self_seed = [0u8; 32];
        rng.fill_bytes(&mut self_seed);
        ClientSetup {
            id,
            params,
            mask_sk: StaticSecret::from(sk),
            enc_sk: StaticSecret::from(enc),
            self_seed,
            roster: BTreeMap::new(),
            enc_keys: BTreeMap::new(),
            held: BTreeMap::new(),
            masked_with: None,
            answered: false,
        }
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Step 1: the keys to publish.
    pub fn advertise(&self) -> AdvertisedKeys {
        AdvertisedKeys {
            client: self.id,
            mask_pk: PublicKey::from(&self.mask_sk).to_bytes(),
            enc_pk: PublicKey::from(&self.enc_sk).to_bytes(),
            signature: None,
        }
    }

    /// The session's parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    /// The ChaCha20-Poly1305 key between this client and `peer`.
    fn share_cipher(&self, peer: ClientId) -> Result<ChaCha20Poly1305, SecAggError> {
        let pk = self
            .enc_keys
            .get(&peer)
            .ok_or(SecAggError::UnknownClient(peer))?;
        let shared = self.enc_sk.diffie_hellman(&PublicKey::from(*pk));
        if !shared.was_contributory() {
            return Err(SecAggError::NonContributory(peer));
        }
        let (lo, hi) = (self.id.min(peer), self.id.max(peer));
        let mut h = Sha256::new();
        h.update(b"ambient-fl share encryption v1");
        h.update(self.params.session.to_le_bytes());
        h.update(lo.to_le_bytes());
        h.update(hi.to_le_bytes());
        h.update(shared.as_bytes());
        Ok(ChaCha20Poly1305::new(&h.finalize()))
    }

    /// Encrypts one of this client's outgoing shares to its recipient (after
    /// [`ClientSetup::share_keys`], which learns the recipients' encryption keys).
    pub fn seal<R: CryptoRng + ?Sized>(
        &self,
        share: &KeyShare,
        rng: &mut R,
    ) -> Result<SealedShare, SecAggError> {
        if share.from != self.id {
            return Err(SecAggError::Refused("only own shares are sealed"));
        }
        let cipher = self.share_cipher(share.to)?;
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let plain = serde_json::to_vec(share).map_err(|_| SecAggError::Invalid("share"))?;
        let aad = [share.from.to_le_bytes(), share.to.to_le_bytes()].concat();
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| SecAggError::Invalid("encryption failed"))?;
        Ok(SealedShare {
            from: share.from,
            to: share.to,
            nonce,
            ciphertext,
        })
    }

    /// Decrypts and authenticates a share sealed to this client.
    pub fn open(&self, sealed: &SealedShare) -> Result<KeyShare, SecAggError> {
        if sealed.to != self.id {
            return Err(SecAggError::UnknownClient(sealed.to));
        }
        let cipher = self.share_cipher(sealed.from)?;
        let aad = [sealed.from.to_le_bytes(), sealed.to.to_le_bytes()].concat();
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SecAggError::BadShares(sealed.from))?;
        let share: KeyShare =
            serde_json::from_slice(&plain).map_err(|_| SecAggError::BadShares(sealed.from))?;
        if (share.from, share.to) != (sealed.from, sealed.to) {
            return Err(SecAggError::BadShares(sealed.from));
        }
        Ok(share)
    }

    /// Step 2: given the roster, splits this client's secrets; returns the shares to send to
    /// every other client (its own share it keeps).
    pub fn share_keys<R: CryptoRng + ?Sized>(
        &mut self,
        roster: &[AdvertisedKeys],
        rng: &mut R,
    ) -> Result<Vec<KeyShare>, SecAggError> {
        let map = roster_map(roster, self.params.threshold)?;
        if map.get(&self.id) != Some(&self.advertise().mask_pk) {
            return Err(SecAggError::UnknownClient(self.id));
        }
        self.enc_keys = roster.iter().map(|k| (k.client, k.enc_pk)).collect();
        let ids: Vec<ClientId> = map.keys().copied().collect();
        let xs: Vec<u64> = ids.iter().map(|&c| share_point(c)).collect();
        let t = self.params.threshold;
        let seed_shares = split_secret(&self.self_seed, t, &xs, rng)?;
        let sk_shares = split_secret(&self.mask_sk.to_bytes(), t, &xs, rng)?;
        self.roster = map;
        let mut out = Vec::with_capacity(ids.len() - 1);
        for ((to, self_seed), mask_sk) in ids.into_iter().zip(seed_shares).zip(sk_shares) {
            let share = KeyShare {
                from: self.id,
                to,
                self_seed,
                mask_sk,
            };
            if to == self.id {
                self.held.insert(self.id, share);
            } else {
                out.push(share);
            }
        }
        Ok(out)
    }

    /// Step 2 (receiving): stores shares addressed to this client.
    pub fn receive_shares(
        &mut self,
        shares: impl IntoIterator<Item = KeyShare>,
    ) -> Result<(), SecAggError> {
        for s in shares {
            if s.to != self.id || !self.roster.contains_key(&s.from) {
                return Err(SecAggError::UnknownClient(s.from));
            }
            if s.self_seed.x != share_point(self.id) || s.mask_sk.x != share_point(self.id) {
                return Err(SecAggError::BadShares(s.from));
            }
            if self.held.contains_key(&s.from) {
                return Err(SecAggError::Duplicate(s.from));
            }
            self.held.insert(s.from, s);
        }
        Ok(())
    }

    /// Step 3: masks an encoded update. `peers` is the set the server announces of clients that
    /// completed key sharing (this client included); this client must hold a share from each.
    pub fn masked_update(
        &mut self,
        encoded: &[u32],
        peers: &BTreeSet<ClientId>,
    ) -> Result<MaskedInput, SecAggError> {
        let len = self.params.vector_len;
        if encoded.len() != len {
            return Err(SecAggError::Length {
                expected: len,
                found: encoded.len(),
            });
        }
        if !peers.contains(&self.id) || peers.len() < self.params.threshold {
            return Err(SecAggError::Refused(
                "peer set must include me and reach the threshold",
            ));
        }
        let mut y = encoded.to_vec();
        let own = prg_expand(self.self_seed, len);
        y.iter_mut()
            .zip(&own)
            .for_each(|(a, m)| *a = a.wrapping_add(*m));
        for &peer in peers.iter().filter(|&&p| p != self.id) {
            let pk = self
                .roster
                .get(&peer)
                .ok_or(SecAggError::UnknownClient(peer))?;
            if !self.held.contains_key(&peer) {
                return Err(SecAggError::MissingShare(peer));
            }
            let mask = pairwise_mask(self.params.session, self.id, &self.mask_sk, peer, pk, len)?;
            if self.id < peer {
                y.iter_mut()
                    .zip(&mask)
                    .for_each(|(a, m)| *a = a.wrapping_add(*m));
            } else {
                y.iter_mut()
                    .zip(&mask)
                    .for_each(|(a, m)| *a = a.wrapping_sub(*m));
            }
        }
        self.masked_with = Some(peers.clone());
        Ok(MaskedInput { client: self.id, y })
    }

    /// Step 4: this survivor's shares for unmasking.
    ///
    /// `survivors` and `dropped` must be disjoint and together equal the set this client masked
    /// with, this client must be a survivor and survivors must reach the threshold; otherwise it
    /// refuses, because revealing both the self seed and the key of one client would unmask that
    /// client's individual update. It answers at most once per session.
    pub fn unmask_response(
        &mut self,
        survivors: &BTreeSet<ClientId>,
        dropped: &BTreeSet<ClientId>,
    ) -> Result<UnmaskShares, SecAggError> {
        let masked_with = self
            .masked_with
            .as_ref()
            .ok_or(SecAggError::Refused("no masked input was sent"))?;
        if self.answered {
            return Err(SecAggError::Refused("already answered this session"));
        }
        if !survivors.is_disjoint(dropped) {
            return Err(SecAggError::Refused(
                "a client is both survivor and dropped",
            ));
        }
        let union: BTreeSet<ClientId> = survivors.union(dropped).copied().collect();
        if &union != masked_with || !survivors.contains(&self.id) {
            return Err(SecAggError::Refused("survivors ∪ dropped ≠ masking set"));
        }
        if survivors.len() < self.params.threshold {
            return Err(SecAggError::Refused("fewer survivors than the threshold"));
        }
        let get = |c: &ClientId| self.held.get(c).ok_or(SecAggError::MissingShare(*c));
        let self_seeds = survivors
            .iter()
            .map(|c| Ok((*c, get(c)?.self_seed.clone())))
            .collect::<Result<_, SecAggError>>()?;
        let mask_sks = dropped
            .iter()
            .map(|c| Ok((*c, get(c)?.mask_sk.clone())))
            .collect::<Result<_, SecAggError>>()?;
        self.answered = true;
        Ok(UnmaskShares {
            from: self.id,
            self_seeds,
            mask_sks,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// The server side: sums masked inputs and removes the masks with reconstructed secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerAggregator {
    params: SecAggParams,
    roster: BTreeMap<ClientId, [u8; 32]>,
}

impl ServerAggregator {
    /// A server for one session with the advertised roster.
    pub fn new(params: SecAggParams, roster: &[AdvertisedKeys]) -> Result<Self, SecAggError> {
        Ok(ServerAggregator {
            params,
            roster: roster_map(roster, params.threshold)?,
        })
    }

    /// Wrapping sum of the survivors' masked inputs (checks lengths and duplicates).
    pub fn sum_masked(&self, inputs: &[MaskedInput]) -> Result<Vec<u32>, SecAggError> {
        let mut seen = BTreeSet::new();
        for i in inputs {
            if !self.roster.contains_key(&i.client) {
                return Err(SecAggError::UnknownClient(i.client));
            }
            if !seen.insert(i.client) {
                return Err(SecAggError::Duplicate(i.client));
            }
        }
        wrapping_sum(
            inputs.iter().map(|i| i.y.as_slice()),
            self.params.vector_len,
        )
    }

    /// Removes all masks from `masked_sum` (the sum of the survivors' inputs): reconstructs
    /// each survivor's self-mask seed and each dropped client's X25519 secret from the
    /// survivors' `shares` (at least `t` responses), and returns `Σ x_u` over survivors in
    /// Z_2^32.
    pub fn unmask(
        &self,
        masked_sum: &[u32],
        survivors: &BTreeSet<ClientId>,
        dropped: &BTreeSet<ClientId>,
        shares: &[UnmaskShares],
    ) -> Result<Vec<u32>, SecAggError> {
        let len = self.params.vector_len;
        let t = self.params.threshold;
        if masked_sum.len() != len {
            return Err(SecAggError::Length {
                expected: len,
                found: masked_sum.len(),
            });
        }
        if !survivors.is_disjoint(dropped) {
            return Err(SecAggError::Refused(
                "a client is both survivor and dropped",
            ));
        }
        if let Some(c) = survivors
            .iter()
            .chain(dropped)
            .find(|c| !self.roster.contains_key(c))
        {
            return Err(SecAggError::UnknownClient(*c));
        }
        if let Some(r) = shares.iter().find(|r| !survivors.contains(&r.from)) {
            return Err(SecAggError::UnknownClient(r.from));
        }
        let collect = |owner: ClientId, pick: &dyn Fn(&UnmaskShares) -> Option<&Share>| {
            let s: Vec<Share> = shares.iter().filter_map(pick).cloned().collect();
            reconstruct_secret(&s, t, owner)
        };
        let mut sum = masked_sum.to_vec();
        for &u in survivors {
            let seed = collect(u, &|r| r.self_seeds.get(&u))?;
            let mask = prg_expand(seed, len);
            sum.iter_mut()
                .zip(&mask)
                .for_each(|(a, m)| *a = a.wrapping_sub(*m));
        }
        for &v in dropped {
            let sk_bytes = collect(v, &|r| r.mask_sks.get(&v))?;
            let sk = StaticSecret::from(sk_bytes);
            if PublicKey::from(&sk).as_bytes() != &self.roster[&v] {
                return Err(SecAggError::KeyMismatch(v));
            }
            for &u in survivors {
                // Survivor u applied +mask if u < v, −mask if u > v; undo it.
                let mask = pairwise_mask(self.params.session, v, &sk, u, &self.roster[&u], len)?;
                if u < v {
                    sum.iter_mut()
                        .zip(&mask)
                        .for_each(|(a, m)| *a = a.wrapping_sub(*m));
                } else {
                    sum.iter_mut()
                        .zip(&mask)
                        .for_each(|(a, m)| *a = a.wrapping_add(*m));
                }
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    /// Shares relayed by the server are readable by their recipient only, and tampering shows.
    #[test]
    fn sealed_shares_open_only_for_their_recipient() {
        let params = SecAggParams {
            session: 9,
            threshold: 2,
            vector_len: 4,
        };
        let mut r = rng(5);
        let mut clients: Vec<ClientSetup> = (0..3)
            .map(|i| ClientSetup::new(i, params, &mut r))
            .collect();
        let roster: Vec<AdvertisedKeys> = clients.iter().map(ClientSetup::advertise).collect();
        let shares = clients[0].share_keys(&roster, &mut r).unwrap();
        for c in &mut clients[1..] {
            c.share_keys(&roster, &mut r).unwrap();
        }
        let to_1 = shares.iter().find(|s| s.to == 1).unwrap();
        let sealed = clients[0].seal(to_1, &mut r).unwrap();
        let plain = serde_json::to_vec(to_1).unwrap();
        assert!(
            !sealed
                .ciphertext
                .windows(16)
                .any(|w| plain.windows(16).any(|p| p == w))
        );
        assert_eq!(&clients[1].open(&sealed).unwrap(), to_1);
        // Client 2 cannot open it, even claiming to be the recipient.
        assert!(clients[2].open(&sealed).is_err());
        let mut redirected = sealed.clone();
        redirected.to = 2;
        assert!(clients[2].open(&redirected).is_err());
        let mut flipped = sealed.clone();
        flipped.ciphertext[3] ^= 1;
        assert_eq!(clients[1].open(&flipped), Err(SecAggError::BadShares(0)));
        // Only one's own shares are sealed.
        assert!(clients[1].seal(to_1, &mut r).is_err());
    }

    #[test]
    fn fixed_point_round_trips_and_wraps() {
        let fp = FixedPoint::default();
        let a = fp.encode(&[1.5, -2.25, 0.0]).unwrap();
        let b = fp.encode(&[-3.0, 1.0, 1e-5]).unwrap();
        let s = wrapping_sum([a.as_slice(), b.as_slice()], 3).unwrap();
        let d = fp.decode(&s);
        assert_eq!(&d[..2], &[-1.5, -1.25]);
        assert!((d[2] - 1e-5).abs() < 1e-5);
        assert!(fp.encode(&[40_000.0]).is_err());
        assert!(fp.encode(&[f32::NAN]).is_err());
        let w = [1.0e9, -123.456, 0.0];
        let wa = fp.encode_wide(&w).unwrap();
        let wb = fp.encode_wide(&[2.0e9, 100.0, -1.0]).unwrap();
        let ws = fp
            .decode_wide(&wrapping_sum([wa.as_slice(), wb.as_slice()], 12).unwrap())
            .unwrap();
        assert!((ws[0] - 3.0e9).abs() < 1e-4);
        assert!((ws[1] + 23.456).abs() < 1e-4);
        assert!((ws[2] + 1.0).abs() < 1e-9);
    }

    #[test]
    fn shamir_threshold() {
        let mut r = rng(1);
        let mut secret = [0u8; 32];
        r.fill_bytes(&mut secret);
        secret[31] = 0xFF;
        let xs: Vec<u64> = (1..=7).collect();
        let shares = split_secret(&secret, 4, &xs, &mut r).unwrap();
        assert_eq!(reconstruct_secret(&shares[3..], 4, 0).unwrap(), secret);
        assert_eq!(reconstruct_secret(&shares[..4], 4, 0).unwrap(), secret);
        // Fewer than t shares: the API refuses ...
        assert_eq!(
            reconstruct_secret(&shares[..3], 4, 9),
            Err(SecAggError::NotEnoughShares {
                client: 9,
                have: 3,
                need: 4
            })
        );
        // ... and interpolating t−1 shares anyway does not give the secret.
        for start in 0..4 {
            let wrong = interpolate(&shares[start..start + 3]);
            let right = interpolate(&shares[..4]);
            assert_ne!(wrong, right);
        }
        // Duplicated points do not count twice.
        let dup = vec![shares[0].clone(); 4];
        assert!(reconstruct_secret(&dup, 4, 0).is_err());
    }

    struct Sim {
        clients: Vec<ClientSetup>,
        server: ServerAggregator,
        plain: Vec<Vec<u32>>,
    }

    fn setup(n: u32, t: usize, len: usize, seed: u64) -> Sim {
        let mut r = rng(seed);
        let params = SecAggParams {
            session: 42,
            threshold: t,
            vector_len: len,
        };
        // Non-contiguous ids, to exercise ordering.
        let mut clients: Vec<ClientSetup> = (0..n)
            .map(|i| ClientSetup::new(3 * i + 1, params, &mut r))
            .collect();
        let roster: Vec<AdvertisedKeys> = clients.iter().map(ClientSetup::advertise).collect();
        let mut all = Vec::new();
        for c in &mut clients {
            all.extend(c.share_keys(&roster, &mut r).unwrap());
        }
        for c in &mut clients {
            let mine: Vec<KeyShare> = all.iter().filter(|s| s.to == c.id()).cloned().collect();
            c.receive_shares(mine).unwrap();
        }
        let fp = FixedPoint::default();
        let plain = (0..n)
            .map(|i| {
                let v: Vec<f32> = (0..len)
                    .map(|j| ((i as f32 + 1.0) * (j as f32 - 3.0)) / 7.0)
                    .collect();
                fp.encode(&v).unwrap()
            })
            .collect();
        Sim {
            clients,
            server: ServerAggregator::new(params, &roster).unwrap(),
            plain,
        }
    }

    fn run(n: u32, t: usize, drop: &[usize]) {
        let len = 17;
        let mut sim = setup(n, t, len, u64::from(n) * 100 + drop.len() as u64);
        let peers: BTreeSet<ClientId> = sim.clients.iter().map(ClientSetup::id).collect();
        let mut inputs = Vec::new();
        for (i, c) in sim.clients.iter_mut().enumerate() {
            let m = c.masked_update(&sim.plain[i], &peers).unwrap();
            assert_ne!(m.y, sim.plain[i]);
            if !drop.contains(&i) {
                inputs.push(m);
            }
        }
        let survivors: BTreeSet<ClientId> = inputs.iter().map(|m| m.client).collect();
        let dropped: BTreeSet<ClientId> = peers.difference(&survivors).copied().collect();
        let responses: Vec<UnmaskShares> = sim
            .clients
            .iter_mut()
            .filter(|c| survivors.contains(&c.id()))
            .map(|c| c.unmask_response(&survivors, &dropped).unwrap())
            .collect();
        let masked = sim.server.sum_masked(&inputs).unwrap();
        let got = sim
            .server
            .unmask(&masked, &survivors, &dropped, &responses)
            .unwrap();
        let want = wrapping_sum(
            (0..n as usize)
                .filter(|i| !drop.contains(i))
                .map(|i| sim.plain[i].as_slice()),
            len,
        )
        .unwrap();
        assert_eq!(got, want, "n={n} t={t} drop={drop:?}");
        // Only t responses suffice too.
        let got_t = sim
            .server
            .unmask(&masked, &survivors, &dropped, &responses[..t])
            .unwrap();
        assert_eq!(got_t, want);
        // t − 1 responses do not.
        assert!(matches!(
            sim.server
                .unmask(&masked, &survivors, &dropped, &responses[..t - 1]),
            Err(SecAggError::NotEnoughShares { .. })
        ));
    }

    #[test]
    fn unmasked_sum_is_exact_without_dropouts() {
        run(5, 3, &[]);
        run(10, 6, &[]);
    }

    #[test]
    fn unmasked_sum_is_exact_with_one_dropout() {
        run(5, 3, &[2]);
        run(8, 5, &[0]);
    }

    #[test]
    fn unmasked_sum_is_exact_with_30_percent_dropouts() {
        run(10, 6, &[1, 4, 9]);
        run(7, 4, &[0, 6]);
    }

    #[test]
    fn client_refuses_to_reveal_both_secrets() {
        let mut sim = setup(5, 3, 4, 7);
        let peers: BTreeSet<ClientId> = sim.clients.iter().map(ClientSetup::id).collect();
        let c = &mut sim.clients[0];
        c.masked_update(&sim.plain[0], &peers).unwrap();
        let all = peers.clone();
        let one: BTreeSet<ClientId> = [4].into_iter().collect();
        assert!(matches!(
            c.unmask_response(&all, &one),
            Err(SecAggError::Refused(_))
        ));
        let partial: BTreeSet<ClientId> = [1, 4, 7].into_iter().collect();
        assert!(matches!(
            c.unmask_response(&partial, &BTreeSet::new()),
            Err(SecAggError::Refused(_))
        ));
    }

    /// Chi-square statistic of counts against a uniform expectation.
    fn chi_square(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let e = total as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
    }

    #[test]
    fn masked_vector_looks_uniform() {
        let len = 1 << 16;
        let mut r = rng(11);
        let params = SecAggParams {
            session: 1,
            threshold: 2,
            vector_len: len,
        };
        let mut a = ClientSetup::new(1, params, &mut r);
        let mut b = ClientSetup::new(2, params, &mut r);
        let roster = vec![a.advertise(), b.advertise()];
        let sa = a.share_keys(&roster, &mut r).unwrap();
        let sb = b.share_keys(&roster, &mut r).unwrap();
        a.receive_shares(sb).unwrap();
        b.receive_shares(sa).unwrap();
        let plain: Vec<f32> = (0..len)
            .map(|i| ((i % 100) as f32 - 50.0) / 100.0)
            .collect();
        let enc = FixedPoint::default().encode(&plain).unwrap();
        let peers: BTreeSet<ClientId> = [1, 2].into_iter().collect();
        let masked = a.masked_update(&enc, &peers).unwrap().y;
        assert_ne!(masked, enc);
        let hist = |v: &[u32], shift: u32| {
            let mut c = vec![0u64; 256];
            v.iter()
                .for_each(|x| c[((x >> shift) & 0xFF) as usize] += 1);
            c
        };
        // 255 degrees of freedom: the 99.9th percentile is about 330.5.
        for shift in [0, 8, 24] {
            let chi = chi_square(&hist(&masked, shift));
            assert!(chi < 330.5, "masked byte at shift {shift}: χ² = {chi}");
        }
        let top_bits = masked.iter().filter(|x| *x >> 31 == 1).count() as f64;
        let z = (top_bits - len as f64 / 2.0) / (len as f64 / 4.0).sqrt();
        assert!(z.abs() < 3.3, "top bit z = {z}");
        // The plain encoding is far from uniform.
        assert!(chi_square(&hist(&enc, 24)) > 10_000.0);
    }
}
