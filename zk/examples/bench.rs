//! Proving and verifying benchmark, ours beside plain ark-groth16 on the same circuit, per
//! circuit and size. Prints a Markdown table of medians.
//!
//! `cargo run --release --locked -p ambient-zk --example bench [-- --runs 5]`
//!
//! "Ours" is [`ambient_zk::prove`]: native computation of the output, commitments, witness,
//! Groth16 proving and the prover's self-check. "Plain" is `Groth16::<Bn254>::prove` alone on
//! the same witness circuit (from [`ambient_zk::witness_circuit`]). Runs alternate between the
//! two so that machine noise hits both alike.

use std::time::{Duration, Instant};

use ambient_zk::*;
use ark_groth16::Groth16;
use ark_snark::SNARK;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> Result<(), ZkError> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let task = *b"0123456789abcdef";
    let cases = [
        (CircuitId::HashChain, 16),
        (CircuitId::HashChain, 64),
        (CircuitId::HashChain, 256),
        (CircuitId::Dot, 16),
        (CircuitId::Dot, 64),
    ];
    println!(
        "| Circuit | Constraints | Prove, ours | Prove, plain ark-groth16 | Ratio | Constraints/s (ours) | Verify, prepared key | Verify, plain | Proof |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (id, size) in cases {
        let spec = CircuitSpec::new(id, size)?;
        let constraints = shape(&spec)?.constraints;
        let keys = setup_with_os_rng(&spec)?;
        let inputs = match id {
            CircuitId::HashChain => Inputs::HashChain { x: Fr::from(7u64) },
            CircuitId::Dot => Inputs::Dot {
                a: (0..size as i64).map(|i| (i - 8) * 65_536).collect(),
                b: (0..size as i64).map(|i| 3 - i * i).collect(),
            },
        };
        let (circuit, public, _) = witness_circuit(&spec, &task, &inputs)?;
        // One of each first: warm caches and the rayon pool.
        let (proof, _, _) = prove(&keys, &spec, &task, &inputs)?;
        Groth16::<Bn254>::prove(&keys.proving_key, circuit.clone(), &mut rand_core::OsRng)?;
        let (mut ours, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            prove(&keys, &spec, &task, &inputs)?;
            ours.push(t.elapsed());
            let t = Instant::now();
            Groth16::<Bn254>::prove(&keys.proving_key, circuit.clone(), &mut rand_core::OsRng)?;
            plain.push(t.elapsed());
        }
        let verifier = PreparedVerifier::new(&keys.verifying_key)?;
        let public_vec = public.to_vec();
        let (mut v_ours, mut v_plain) = (Vec::new(), Vec::new());
        for _ in 0..51 {
            let t = Instant::now();
            assert!(verifier.verify(&public, &proof)?);
            v_ours.push(t.elapsed());
            let t = Instant::now();
            assert!(Groth16::<Bn254>::verify(
                &keys.verifying_key,
                &public_vec,
                &proof
            )?);
            v_plain.push(t.elapsed());
        }
        let (o, p) = (median(ours), median(plain));
        println!(
            "| {id} {size} | {constraints} | {} | {} | {:.2}× | {:.0} | {} | {} | {} bytes |",
            ms(o),
            ms(p),
            o.as_secs_f64() / p.as_secs_f64(),
            constraints as f64 / o.as_secs_f64(),
            ms(median(v_ours)),
            ms(median(v_plain)),
            proof_to_bytes(&proof)?.len(),
        );
    }
    Ok(())
}
