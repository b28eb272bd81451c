//! Times setup, key loading, proving and verifying `hash_chain` at its default n = 256.
//!
//! `CARGO_TARGET_DIR=/tmp/zk-target cargo run --release --example timing`

use std::time::Instant;

use ambient_zk::*;

fn main() -> Result<(), ZkError> {
    let spec = CircuitSpec::default_for(CircuitId::HashChain);
    let t = Instant::now();
    let s = shape(&spec)?;
    println!("shape {:?} in {:?}", s, t.elapsed());
    let t = Instant::now();
    let keys = setup_with_os_rng(&spec)?;
    println!("setup {:?}", t.elapsed());
    println!("pk bytes {}", keys.to_bytes()?.len());
    let t = Instant::now();
    let back = Keys::from_bytes(&spec, &keys.to_bytes()?)?;
    println!("pk load {:?}", t.elapsed());
    let inputs = Inputs::HashChain { x: Fr::from(1u64) };
    for _ in 0..3 {
        let t = Instant::now();
        let (proof, public, _) = prove(&back, &spec, b"0123456789abcdef", &inputs)?;
        println!("prove {:?}", t.elapsed());
        let pv = PreparedVerifier::new(&keys.verifying_key)?;
        let t = Instant::now();
        let ok = verify(&keys.verifying_key, &spec, &public, &proof)?;
        println!("verify {:?} ok={ok}", t.elapsed());
        let t = Instant::now();
        let ok = pv.verify(&public, &proof)?;
        println!("prepared verify {:?} ok={ok}", t.elapsed());
    }
    Ok(())
}
