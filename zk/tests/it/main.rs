//! Black-box tests of `ambient-zk`: real setups, real proofs, real verification.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use ambient_zk::*;

mod nn;
mod snarkjs_cli;

const TASK: &[u8; 16] = b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef";
const OTHER_TASK: &[u8; 16] = b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xee";

/// Keys per circuit instance, made once per test binary (setup takes seconds).
pub fn keys(spec: CircuitSpec) -> Keys {
    static CACHE: OnceLock<Mutex<HashMap<CircuitSpec, Keys>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(k) = cache.lock().unwrap().get(&spec) {
        return k.clone();
    }
    let k = setup_with_os_rng(&spec).unwrap();
    cache.lock().unwrap().entry(spec).or_insert(k).clone()
}

fn small_chain() -> CircuitSpec {
    CircuitSpec::new(CircuitId::HashChain, 8).unwrap()
}

fn dot_inputs() -> Inputs {
    Inputs::Dot {
        a: (0..16).map(|i| (i - 8) * 65_536).collect(),
        b: (0..16).map(|i| i64::MAX - i * 1_000_003).collect(),
    }
}

#[test]
fn prove_and_verify_every_circuit_at_default_size() {
    for &id in CircuitId::all() {
        let spec = CircuitSpec::default_for(id);
        let keys = keys(spec);
        let inputs = match id {
            CircuitId::HashChain => Inputs::HashChain {
                x: Fr::from(12345u64),
            },
            CircuitId::Dot => dot_inputs(),
        };
        let (proof, public, output) = prove(&keys, &spec, TASK, &inputs).unwrap();
        assert_eq!(output, compute_output(&spec, &inputs).unwrap());
        // The verifier recomputes the public inputs; they must equal the prover's.
        let expected = public_inputs_for(&spec, TASK, &inputs, &output).unwrap();
        assert_eq!(public, expected);
        assert!(
            verify(&keys.verifying_key, &spec, &expected, &proof).unwrap(),
            "{spec}"
        );
        let pv = PreparedVerifier::new(&keys.verifying_key).unwrap();
        assert!(pv.verify(&expected, &proof).unwrap());
    }
}

#[test]
fn dot_output_is_exact() {
    let spec = CircuitSpec::default_for(CircuitId::Dot);
    let Inputs::Dot { a, b } = dot_inputs() else {
        unreachable!()
    };
    let sum: i128 = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| i128::from(x) * i128::from(y))
        .sum();
    assert_eq!(
        compute_output(&spec, &dot_inputs()).unwrap(),
        Output::Dot { sum }
    );
}

#[test]
fn wrong_task_input_or_output_fails() {
    let spec = small_chain();
    let keys = keys(spec);
    let inputs = Inputs::HashChain { x: Fr::from(7u64) };
    let (proof, _, output) = prove(&keys, &spec, TASK, &inputs).unwrap();
    let vk = &keys.verifying_key;
    let check = |task: &[u8], inputs: &Inputs, output: &Output| {
        let public = public_inputs_for(&spec, task, inputs, output).unwrap();
        verify(vk, &spec, &public, &proof).unwrap()
    };
    assert!(check(TASK, &inputs, &output));
    assert!(!check(OTHER_TASK, &inputs, &output), "other task id");
    assert!(!check(b"", &inputs, &output), "empty task id");
    assert!(
        !check(TASK, &Inputs::HashChain { x: Fr::from(8u64) }, &output),
        "other input"
    );
    let Output::HashChain { y } = output else {
        unreachable!()
    };
    assert!(
        !check(
            TASK,
            &inputs,
            &Output::HashChain {
                y: y + Fr::from(1u64)
            }
        ),
        "other output"
    );

    // The same for dot, where inputs are vectors and outputs integers.
    let spec = CircuitSpec::new(CircuitId::Dot, 4).unwrap();
    let keys = keys_for(spec);
    let inputs = Inputs::Dot {
        a: vec![1, 2, 3, 4],
        b: vec![-5, 6, -7, 8],
    };
    let (proof, _, output) = prove(&keys, &spec, TASK, &inputs).unwrap();
    let check = |task: &[u8], inputs: &Inputs, output: &Output| {
        let public = public_inputs_for(&spec, task, inputs, output).unwrap();
        verify(&keys.verifying_key, &spec, &public, &proof).unwrap()
    };
    assert_eq!(output, Output::Dot { sum: 18 });
    assert!(check(TASK, &inputs, &output));
    assert!(!check(OTHER_TASK, &inputs, &output));
    let swapped = Inputs::Dot {
        a: vec![-5, 6, -7, 8],
        b: vec![1, 2, 3, 4],
    };
    assert!(!check(TASK, &swapped, &output), "same sum, other inputs");
    assert!(!check(TASK, &inputs, &Output::Dot { sum: 19 }));
    assert!(!check(TASK, &inputs, &Output::Dot { sum: -18 }));
}

fn keys_for(spec: CircuitSpec) -> Keys {
    keys(spec)
}

#[test]
fn tampered_proofs_and_public_inputs_are_rejected() {
    let spec = small_chain();
    let keys = keys(spec);
    let inputs = Inputs::HashChain { x: Fr::from(99u64) };
    let (proof, public, _) = prove(&keys, &spec, TASK, &inputs).unwrap();
    let bytes = proof_to_bytes(&proof).unwrap();
    assert_eq!(bytes.len(), 128);
    let pv = PreparedVerifier::new(&keys.verifying_key).unwrap();
    assert!(
        pv.verify(&public, &proof_from_bytes(&bytes).unwrap())
            .unwrap()
    );
    let (mut refused, mut failed) = (0, 0);
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = bytes.clone();
            t[i] ^= bit;
            match proof_from_bytes(&t) {
                Err(_) => refused += 1,
                Ok(p) => {
                    assert!(!pv.verify(&public, &p).unwrap(), "byte {i} bit {bit:#x}");
                    failed += 1;
                }
            }
        }
    }
    assert_eq!(refused + failed, 256);
    assert!(proof_from_bytes(&bytes[..100]).is_err());

    let mut wrong = public;
    wrong.input_commitment += Fr::from(1u64);
    assert!(!pv.verify(&wrong, &proof).unwrap());
}

#[test]
fn keys_round_trip_through_bytes_and_files() {
    let spec = small_chain();
    let keys = keys(spec);
    let bytes = keys.to_bytes().unwrap();
    let back = Keys::from_bytes(&spec, &bytes).unwrap();
    assert_eq!(back.proving_key, keys.proving_key);
    assert_eq!(back.verifying_key, keys.verifying_key);

    let dir = tempfile::tempdir().unwrap();
    let (pk_path, vk_path) = (dir.path().join("k.pk"), dir.path().join("k.vk"));
    keys.save(&pk_path).unwrap();
    save_verifying_key(&keys.verifying_key, &vk_path).unwrap();
    let loaded = Keys::load(&spec, &pk_path).unwrap();
    let vk = load_verifying_key(&vk_path).unwrap();
    assert_eq!(vk, keys.verifying_key);
    assert_eq!(
        verifying_key_from_bytes(&verifying_key_to_bytes(&vk).unwrap()).unwrap(),
        vk
    );

    // A proof from the loaded proving key verifies under the original verifying key.
    let inputs = Inputs::HashChain { x: Fr::from(3u64) };
    let (proof, public, _) = prove(&loaded, &spec, TASK, &inputs).unwrap();
    assert!(verify(&vk, &spec, &public, &proof).unwrap());

    // Keys for another size are refused on load and on prove.
    let other = CircuitSpec::new(CircuitId::HashChain, 9).unwrap();
    assert!(matches!(
        Keys::from_bytes(&other, &bytes),
        Err(ZkError::KeyMismatch { .. })
    ));
    assert!(matches!(
        prove(&keys, &other, TASK, &inputs),
        Err(ZkError::KeyMismatch { .. })
    ));
    assert!(matches!(
        Keys::load(&spec, &dir.path().join("missing")),
        Err(ZkError::Io { .. })
    ));
    assert!(Keys::from_bytes(&spec, &bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn the_verifying_key_is_read_from_the_head_of_the_proving_key() {
    let spec = small_chain();
    let keys = keys(spec);
    let bytes = keys.to_bytes().unwrap();
    assert_eq!(
        verifying_key_from_proving_key(&bytes).unwrap(),
        keys.verifying_key
    );
    // Too short to hold one, or not a key at all: an error, never a key.
    assert!(verifying_key_from_proving_key(&bytes[..100]).is_err());
    assert!(verifying_key_from_proving_key(&[0xff; 4096]).is_err());
}

#[test]
fn sizes_outside_the_range_are_refused_naming_it() {
    for &id in CircuitId::all() {
        let (min, max) = id.size_range();
        assert_eq!(min, 1);
        assert!(CircuitSpec::new(id, max).is_ok());
        let err = CircuitSpec::new(id, max + 1).unwrap_err();
        assert!(matches!(err, ZkError::BadSize { .. }));
        assert!(err.to_string().contains(&format!("(1..={max})")), "{err}");
    }
}

#[test]
fn a_verifying_key_for_another_instance_rejects() {
    let spec = small_chain();
    let inputs = Inputs::HashChain { x: Fr::from(5u64) };
    let (proof, public, _) = prove(&keys(spec), &spec, TASK, &inputs).unwrap();
    let other = setup_with_os_rng(&spec).unwrap();
    assert!(!verify(&other.verifying_key, &spec, &public, &proof).unwrap());
}

#[test]
fn setup_is_randomised() {
    let spec = CircuitSpec::new(CircuitId::HashChain, 1).unwrap();
    let a = setup_with_os_rng(&spec).unwrap();
    let b = setup_with_os_rng(&spec).unwrap();
    assert_ne!(
        verifying_key_to_bytes(&a.verifying_key).unwrap(),
        verifying_key_to_bytes(&b.verifying_key).unwrap()
    );
    assert_ne!(a.proving_key.delta_g1, b.proving_key.delta_g1);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let spec = CircuitSpec::new(CircuitId::Dot, 4).unwrap();
    let short = Inputs::Dot {
        a: vec![1, 2, 3],
        b: vec![1, 2, 3, 4],
    };
    assert!(matches!(
        compute_output(&spec, &short),
        Err(ZkError::BadInput { .. })
    ));
    let overflow = Inputs::Dot {
        a: vec![i64::MIN; 4],
        b: vec![i64::MIN; 4],
    };
    assert!(matches!(
        compute_output(&spec, &overflow),
        Err(ZkError::BadInput { .. })
    ));
    let chain = Inputs::HashChain { x: Fr::from(1u64) };
    assert!(matches!(
        public_inputs_for(&spec, TASK, &chain, &Output::Dot { sum: 0 }),
        Err(ZkError::BadInput { .. })
    ));
    assert!(matches!(
        public_inputs_for(
            &spec,
            TASK,
            &short,
            &Output::HashChain { y: Fr::from(0u64) }
        ),
        Err(ZkError::BadInput { .. })
    ));
    assert!(matches!(
        CircuitSpec::new(CircuitId::HashChain, 1 << 20),
        Err(ZkError::BadSize { .. })
    ));
}

#[test]
fn constraint_count_is_bounded_and_memory_sane() {
    for n in [1usize, 64, 256, 1024] {
        let spec = CircuitSpec::new(CircuitId::HashChain, n).unwrap();
        let s = shape(&spec).unwrap();
        // 4 constraints per MiMC round, n chain steps plus the two commitment hashes,
        // plus the task-binding constraint.
        assert_eq!(s.constraints, 4 * 91 * (n + 2) + 1, "n = {n}");
        assert!(s.constraints <= 4 * 91 * n + 730);
        assert_eq!(s.instance_variables, 1 + NUM_PUBLIC_INPUTS);
        // Every constraint introduces at most one witness, plus the inputs themselves.
        assert!(s.witness_variables <= s.constraints + 1);
        assert_eq!(s.constraints, spec.expected_constraints());
    }
    let dot = CircuitSpec::default_for(CircuitId::Dot);
    assert_eq!(shape(&dot).unwrap().constraints, 364 * 33 + 17);

    // Synthesis of n = 1024 (~373k constraints) must stay far from the O(n²) blow-up of
    // growing linear combinations. Peak RSS is process-wide, so the bound is loose.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let peak_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        assert!(peak_kib < 2 * 1024 * 1024, "peak RSS {peak_kib} KiB");
    }
}

#[test]
fn registry() {
    let names: Vec<_> = CircuitId::all().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hash_chain", "dot"]);
    assert_eq!(CircuitId::parse("dot").unwrap(), CircuitId::Dot);
    assert!(matches!(
        CircuitId::parse("nope"),
        Err(ZkError::UnknownCircuit(_))
    ));
}
