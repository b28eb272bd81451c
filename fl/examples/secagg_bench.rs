//! Secure aggregation at scale: 100 clients in one process, a 1M-parameter update each, at 0 %
//! and 30 % dropout after key sharing. Prints a Markdown table: bytes each client sends (as the
//! JSON the network carries) against sending its plain f32 update, and client and server time.
//! Clients sign their keys with an ed25519 node identity and check every peer's signature before
//! sharing, as `ambient_fl::client::Client` does; the last column is that check's share.
//!
//! `cargo run --release --locked -p ambient-fl --example secagg_bench [-- --clients 100 --len 1000000]`

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ambient_fl::ClientId;
use ambient_fl::secagg::{
    AdvertisedKeys, ClientSetup, FixedPoint, KeyShare, KeySignature, MaskedInput, SealedShare,
    SecAggParams, ServerAggregator, UnmaskShares,
};
use ed25519_dalek::{Signature, Signer as _, SigningKey};

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn json_len<T: serde::Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0)
}

fn main() {
    let n = arg("--clients", 100);
    let len = arg("--len", 1_000_000);
    let mut rng = rand::rng();
    let fp = FixedPoint::default();
    // Every client's update: small reals, as a clipped model delta would be.
    let update: Vec<f32> = (0..len)
        .map(|i| ((i % 1000) as f32 - 500.0) * 1e-4)
        .collect();
    let encoded = fp.encode(&update).expect("encode");
    let plain_bytes = json_len(&update);

    println!(
        "| Dropout | Clients | Bytes sent per client (secure aggregation) | Plain f32 update as JSON | Ratio | Client time (median) | Server time | Signing and checking the roster (median, in client time) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let identities: Vec<SigningKey> = (0..n)
        .map(|_| {
            let mut seed = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rng, &mut seed);
            SigningKey::from_bytes(&seed)
        })
        .collect();
    for dropout in [0.0, 0.3] {
        let params = SecAggParams {
            session: 7,
            threshold: n - (n * 3 / 10),
            vector_len: len,
        };
        let mut client_time = vec![Duration::ZERO; n];
        let mut sent = vec![0usize; n];
        let mut clients: Vec<ClientSetup> = (0..n)
            .map(|i| {
                let t = Instant::now();
                let c = ClientSetup::new(i as ClientId, params, &mut rng);
                client_time[i] += t.elapsed();
                c
            })
            .collect();
        let mut sig_time = vec![Duration::ZERO; n];
        let roster: Vec<AdvertisedKeys> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let t = Instant::now();
                let mut k = c.advertise();
                let node = format!("node-{i}");
                let sig = identities[i].sign(&k.signed_message(params.session, &node));
                k.signature = Some(KeySignature {
                    node,
                    sig: sig.to_bytes().to_vec(),
                });
                sig_time[i] += t.elapsed();
                k
            })
            .collect();
        for (i, k) in roster.iter().enumerate() {
            sent[i] += json_len(k);
        }
        // Each client checks every peer's signature before it shares anything.
        for (i, spent) in sig_time.iter_mut().enumerate() {
            let t = Instant::now();
            for k in roster.iter().filter(|k| k.client as usize != i) {
                let s = k.signature.as_ref().expect("signed");
                let sig = Signature::from_bytes(&s.sig[..].try_into().expect("64 bytes"));
                identities[k.client as usize]
                    .verifying_key()
                    .verify_strict(&k.signed_message(params.session, &s.node), &sig)
                    .expect("a valid signature");
            }
            *spent += t.elapsed();
        }
        for (t, s) in client_time.iter_mut().zip(&sig_time) {
            *t += *s;
        }
        let mut sealed: Vec<SealedShare> = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            let t = Instant::now();
            let shares: Vec<KeyShare> = c.share_keys(&roster, &mut rng).expect("share");
            let out: Vec<SealedShare> = shares
                .iter()
                .map(|s| c.seal(s, &mut rng).expect("seal"))
                .collect();
            client_time[i] += t.elapsed();
            sent[i] += json_len(&out);
            sealed.extend(out);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let t = Instant::now();
            let mine: Vec<KeyShare> = sealed
                .iter()
                .filter(|s| s.to == i as ClientId)
                .map(|s| c.open(s).expect("open"))
                .collect();
            c.receive_shares(mine).expect("receive");
            client_time[i] += t.elapsed();
        }
        let peers: BTreeSet<ClientId> = (0..n as ClientId).collect();
        let dropped_n = (n as f64 * dropout).round() as usize;
        let dropped: BTreeSet<ClientId> = (n - dropped_n..n).map(|i| i as ClientId).collect();
        let survivors: BTreeSet<ClientId> = peers.difference(&dropped).copied().collect();
        let mut inputs: Vec<MaskedInput> = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            if dropped.contains(&(i as ClientId)) {
                continue; // shared its keys, then vanished
            }
            let t = Instant::now();
            let m = c.masked_update(&encoded, &peers).expect("mask");
            client_time[i] += t.elapsed();
            sent[i] += json_len(&m);
            inputs.push(m);
        }
        let mut responses: Vec<UnmaskShares> = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            if dropped.contains(&(i as ClientId)) {
                continue;
            }
            let t = Instant::now();
            let r = c.unmask_response(&survivors, &dropped).expect("respond");
            client_time[i] += t.elapsed();
            sent[i] += json_len(&r);
            responses.push(r);
        }
        let t = Instant::now();
        let server = ServerAggregator::new(params, &roster).expect("server");
        let masked = server.sum_masked(&inputs).expect("sum");
        let sum = server
            .unmask(&masked, &survivors, &dropped, &responses)
            .expect("unmask");
        let server_time = t.elapsed();
        // The sum is exactly the survivors' encoded updates added up.
        let k = survivors.len() as u32;
        assert!(
            sum.iter()
                .zip(&encoded)
                .all(|(s, e)| *s == e.wrapping_mul(k)),
            "unmasked sum differs from the plain sum"
        );
        let live: Vec<usize> = survivors.iter().map(|&c| c as usize).collect();
        let mut times: Vec<Duration> = live.iter().map(|&i| client_time[i]).collect();
        times.sort();
        let mut bytes: Vec<usize> = live.iter().map(|&i| sent[i]).collect();
        bytes.sort();
        let median_bytes = bytes[bytes.len() / 2];
        let mut sigs: Vec<Duration> = live.iter().map(|&i| sig_time[i]).collect();
        sigs.sort();
        let median_time = times[times.len() / 2];
        let median_sig = sigs[sigs.len() / 2];
        println!(
            "| {:.0} % | {n} | {median_bytes} | {plain_bytes} | {:.2}× | {:.2} s | {:.2} s | {:.1} ms ({:.1} %) |",
            dropout * 100.0,
            median_bytes as f64 / plain_bytes as f64,
            median_time.as_secs_f64(),
            server_time.as_secs_f64(),
            median_sig.as_secs_f64() * 1e3,
            100.0 * median_sig.as_secs_f64() / median_time.as_secs_f64(),
        );
    }
}
