//! Round trip through the real snarkjs verifier, when it is installed in `zk/node_modules`
//! (`scripts/snarkjs-verify.sh` installs it, and so does `scripts/test`). Without it the test
//! says so and passes, unless `AMBIENT_REQUIRE_SNARKJS` is set (as `scripts/test` sets it once
//! snarkjs is installed), in which case a missing snarkjs fails it.

use std::path::{Path, PathBuf};
use std::process::Command;

use ambient_zk::*;

/// The snarkjs binary, or `None` (the caller skips) when it or node is missing; fails the
/// test instead when `AMBIENT_REQUIRE_SNARKJS` is set. Shared with `nn`.
pub(crate) fn snarkjs() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/snarkjs");
    let has_node = Command::new("node").arg("--version").output().is_ok();
    if bin.exists() && has_node {
        return Some(bin);
    }
    assert!(
        std::env::var_os("AMBIENT_REQUIRE_SNARKJS").is_none(),
        "AMBIENT_REQUIRE_SNARKJS is set but zk/node_modules has no snarkjs"
    );
    eprintln!("snarkjs not installed in zk/node_modules: skipped (run scripts/snarkjs-verify.sh)");
    None
}

/// Writes `public` to `dir/public.json` and runs `snarkjs groth16 verify` on the `vk.json` and
/// `proof.json` already there; true when snarkjs says OK.
pub(crate) fn snarkjs_verify(bin: &Path, dir: &Path, public: &serde_json::Value) -> bool {
    std::fs::write(dir.join("public.json"), public.to_string()).unwrap();
    let out = Command::new(bin)
        .args(["groth16", "verify", "vk.json", "public.json", "proof.json"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("snarkjs: {} {}", out.status, text.trim());
    out.status.success() && text.contains("OK")
}

#[test]
fn snarkjs_accepts_real_proofs_and_rejects_tampered_inputs() {
    let Some(bin) = snarkjs() else {
        return;
    };
    for spec in [
        CircuitSpec::new(CircuitId::HashChain, 4).unwrap(),
        CircuitSpec::new(CircuitId::Dot, 3).unwrap(),
    ] {
        let keys = crate::keys(spec);
        let inputs = match spec.id() {
            CircuitId::HashChain => Inputs::HashChain {
                x: Fr::from(2024u64),
            },
            CircuitId::Dot => Inputs::Dot {
                a: vec![-1, 2, -3],
                b: vec![4, -5, 6],
            },
        };
        let (proof, public, _) = prove(&keys, &spec, crate::TASK, &inputs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let vk_json = snarkjs_verification_key_json(&keys.verifying_key);
        assert_eq!(vk_json["nPublic"], 3);
        std::fs::write(dir.path().join("vk.json"), vk_json.to_string()).unwrap();
        std::fs::write(
            dir.path().join("proof.json"),
            snarkjs_proof_json(&proof).to_string(),
        )
        .unwrap();
        assert!(
            snarkjs_verify(&bin, dir.path(), &snarkjs_public_json(&public)),
            "{spec}: snarkjs rejected a valid proof"
        );
        for i in 0..NUM_PUBLIC_INPUTS {
            let mut tampered = public.to_vec();
            tampered[i] += Fr::from(1u64);
            let t = PublicInputs {
                task_binding: tampered[0],
                input_commitment: tampered[1],
                output_commitment: tampered[2],
            };
            assert!(
                !snarkjs_verify(&bin, dir.path(), &snarkjs_public_json(&t)),
                "{spec}: snarkjs accepted tampered public input {i}"
            );
        }
    }
}
