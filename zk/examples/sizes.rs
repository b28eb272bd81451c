//! What one circuit size costs: setup, proving key size, key decoding, proving and verifying,
//! per size. Prints a Markdown table; the figures behind [`CircuitId::size_range`] and
//! BENCHMARKS.md's "zk_proof at any size".
//!
//! `cargo run --release --locked -p ambient-zk --example sizes -- [--circuit hash_chain]
//! [--sizes 64,256,1000,2000] [--runs 3]`
//!
//! Per size: one setup from OS randomness (what the coordinator runs on a size's first
//! request), the compressed proving key's length (the artifact nodes download), decoding it as
//! an agent does ([`Keys::from_bytes`]: point decompression and the shape check), reading only
//! the verifying key at its head ([`verifying_key_from_proving_key`]: what a coordinator does
//! with keys another coordinator made), then `--runs` proofs ([`prove`], median) and 51 prepared
//! verifications (median). `peak RSS` is the process's high-water mark so far (it only grows,
//! so read it for the largest size measured yet).

use std::time::{Duration, Instant};

use ambient_zk::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The process's peak resident set, from `/proc/self/status` (Linux), in MiB.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn main() -> Result<(), ZkError> {
    let id = CircuitId::parse(&arg("--circuit").unwrap_or_else(|| "hash_chain".into()))?;
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "64,256,1000,2000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(3);
    let task = *b"0123456789abcdef";
    println!(
        "| Circuit | Constraints | Setup | Proving key | Decode (agent) | Verifying key from the proving key | Prove (median of {runs}) | Constraints/s proved | Verify | Peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for size in sizes {
        let spec = CircuitSpec::new(id, size)?;
        let constraints = spec.expected_constraints();
        let t = Instant::now();
        let keys = setup_with_os_rng(&spec)?;
        let setup = t.elapsed();
        let bytes = keys.to_bytes()?;
        drop(keys);
        let t = Instant::now();
        let keys = Keys::from_bytes(&spec, &bytes)?;
        let decode = t.elapsed();
        let t = Instant::now();
        let vk = verifying_key_from_proving_key(&bytes)?;
        let vk_read = t.elapsed();
        assert!(vk == keys.verifying_key);
        let inputs = match id {
            CircuitId::HashChain => Inputs::HashChain { x: Fr::from(7u64) },
            CircuitId::Dot => Inputs::Dot {
                a: (0..size as i64).map(|i| (i - 8) * 65_536).collect(),
                b: (0..size as i64).map(|i| 3 - i * i).collect(),
            },
        };
        let mut proving = Vec::new();
        let mut last = None;
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            last = Some(prove(&keys, &spec, &task, &inputs)?);
            proving.push(t.elapsed());
        }
        let (proof, public, _) = last.expect("at least one run");
        let verifier = PreparedVerifier::new(&vk)?;
        let mut verifying = Vec::new();
        for _ in 0..51 {
            let t = Instant::now();
            assert!(verifier.verify(&public, &proof)?);
            verifying.push(t.elapsed());
        }
        let prove_median = median(proving);
        println!(
            "| {id} {size} | {constraints} | {} | {:.1} MB | {} | {:.1} ms | {} | {:.0} | {:.1} ms | {} MiB |",
            secs(setup),
            bytes.len() as f64 / 1e6,
            secs(decode),
            vk_read.as_secs_f64() * 1e3,
            secs(prove_median),
            constraints as f64 / prove_median.as_secs_f64(),
            median(verifying).as_secs_f64() * 1e3,
            peak_rss_mib().map_or("?".into(), |m| m.to_string()),
        );
    }
    Ok(())
}
