//! Keys, proving and verifying for programs.

use std::path::Path;

use ark_bn254::{Bn254, Fr};
use ark_groth16::{Groth16, Proof, ProvingKey, VerifyingKey};
use ark_relations::gr1cs::{ConstraintSynthesizer, ConstraintSystem, SynthesisMode};
use ark_snark::SNARK;
use ark_std::rand::{CryptoRng, RngCore};

use super::circuit::NnCircuit;
use super::eval::{check_input, evaluate};
use super::fixed::{in_act_range, pack, packed_len};
use super::program::Program;
use crate::circuits::Shape;
use crate::error::ZkError;
use crate::keys::{
    PreparedVerifier, proving_key_from_bytes, proving_key_to_bytes, read_file, write_file,
};
use crate::mimc;

/// The number of public inputs of `program`'s circuit:
/// `2 + ⌈inputs / 7⌉ + ⌈outputs / 7⌉`.
pub fn num_public_inputs(program: &Program) -> usize {
    let n_in: usize = program.input.shape.iter().product();
    let n_out: usize = program.output.shape.iter().product();
    2 + packed_len(n_in) + packed_len(n_out)
}

/// The public inputs a verifier expects: `[task_binding, model_commitment, packed input…,
/// packed output…]`, recomputed from the task id, the program, its input and the claimed
/// output (never taken from the prover).
pub fn public_inputs(
    program: &Program,
    task_id: &[u8],
    input: &[i64],
    output: &[i64],
) -> Result<Vec<Fr>, ZkError> {
    program.check()?;
    check_input(program, input)?;
    assemble(
        program.commitment(),
        &program.output.shape,
        task_id,
        input,
        output,
    )
}

/// The public inputs from a commitment, after checking the output (the input is checked).
fn assemble(
    commitment: Fr,
    output_shape: &[usize],
    task_id: &[u8],
    input: &[i64],
    output: &[i64],
) -> Result<Vec<Fr>, ZkError> {
    let n_out: usize = output_shape.iter().product();
    if output.len() != n_out {
        return Err(ZkError::BadInput {
            circuit: "nn",
            reason: format!(
                "the output has {} values, the program makes {n_out} ({output_shape:?})",
                output.len(),
            ),
        });
    }
    if let Some(v) = output.iter().find(|&&v| !in_act_range(i128::from(v))) {
        return Err(ZkError::BadInput {
            circuit: "nn",
            reason: format!("output value {v} is not a 32-bit activation"),
        });
    }
    let mut out = vec![mimc::task_binding(task_id), commitment];
    out.extend(pack(input));
    out.extend(pack(output));
    Ok(out)
}

/// A verifier for one program, with the program checked, its commitment computed and the
/// key's pairing precomputation done once: what a coordinator keeps per cached program, so
/// that each result costs only the packing and one multi-scalar multiplication.
#[derive(Clone)]
pub struct ProgramVerifier {
    program: Program,
    commitment: Fr,
    verifier: PreparedVerifier,
}

impl ProgramVerifier {
    /// Prepares `vk` for `program`, checking the program and the key's public-input count.
    pub fn new(vk: &VerifyingKey<Bn254>, program: &Program) -> Result<Self, ZkError> {
        program.check()?;
        let verifier = PreparedVerifier::any(vk);
        if verifier.num_public_inputs() != num_public_inputs(program) {
            return Err(mismatch(
                program,
                format!(
                    "the verifying key takes {} public inputs, the program {}",
                    verifier.num_public_inputs(),
                    num_public_inputs(program)
                ),
            ));
        }
        Ok(Self {
            program: program.clone(),
            commitment: program.commitment(),
            verifier,
        })
    }

    /// [`verify`] for this verifier's program and key.
    pub fn verify(
        &self,
        task_id: &[u8],
        input: &[i64],
        output: &[i64],
        proof: &Proof<Bn254>,
    ) -> Result<bool, ZkError> {
        check_input(&self.program, input)?;
        let public = assemble(
            self.commitment,
            &self.program.output.shape,
            task_id,
            input,
            output,
        )?;
        self.verifier.verify_inputs(&public, proof)
    }

    /// Checks `proof` against public inputs as they are exported (say, by snarkjs users):
    /// `[task_binding, model_commitment, packed input…, packed output…]`. A wrong count is
    /// [`ZkError::KeyMismatch`]; any changed element gives `Ok(false)` (the commitment is
    /// constrained to this program's, so another model's is refused too).
    pub fn verify_public(&self, public: &[Fr], proof: &Proof<Bn254>) -> Result<bool, ZkError> {
        self.verifier.verify_inputs(public, proof)
    }

    /// The program this verifier checks.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// [`Program::commitment`] of that program.
    pub fn commitment(&self) -> Fr {
        self.commitment
    }
}

/// Synthesises `program`'s circuit without a witness and counts it.
pub fn shape(program: &Program) -> Result<Shape, ZkError> {
    program.check()?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(SynthesisMode::Setup);
    NnCircuit {
        program,
        assignment: None,
    }
    .generate_constraints(cs.clone())?;
    cs.finalize();
    Ok(Shape {
        constraints: cs.num_constraints(),
        instance_variables: cs.num_instance_variables(),
        witness_variables: cs.num_witness_variables(),
    })
}

/// The circuit of `program` with its witness for `input`, its public inputs and the output
/// ([`evaluate`]): what [`prove`] hands to ark-groth16, public for tests and other backends.
pub fn witness_circuit<'a>(
    program: &'a Program,
    task_id: &[u8],
    input: &[i64],
) -> Result<(impl ConstraintSynthesizer<Fr> + 'a, Vec<Fr>, Vec<i64>), ZkError> {
    let output = evaluate(program, input)?;
    let public = public_inputs(program, task_id, input, &output)?;
    let circuit = NnCircuit {
        program,
        assignment: Some((public.clone(), input.to_vec())),
    };
    Ok((circuit, public, output))
}

/// Whether the witness for `input` satisfies `program`'s constraints, with `output` in
/// place of the true output when given (a debugging and testing aid; proving does not
/// need it).
pub fn is_satisfied(
    program: &Program,
    task_id: &[u8],
    input: &[i64],
    output: Option<&[i64]>,
) -> Result<bool, ZkError> {
    let output = match output {
        Some(o) => o.to_vec(),
        None => evaluate(program, input)?,
    };
    let public = public_inputs(program, task_id, input, &output)?;
    let cs = ConstraintSystem::<Fr>::new_ref();
    NnCircuit {
        program,
        assignment: Some((public, input.to_vec())),
    }
    .generate_constraints(cs.clone())?;
    cs.finalize();
    Ok(cs.is_satisfied()?)
}

/// A program's Groth16 key pair.
#[derive(Clone)]
pub struct ProgramKeys {
    /// [`Program::digest`] of the program the keys belong to.
    pub digest: [u8; 32],
    /// The proving key (contains a copy of the verifying key).
    pub proving_key: ProvingKey<Bn254>,
    /// The verifying key.
    pub verifying_key: VerifyingKey<Bn254>,
}

impl std::fmt::Debug for ProgramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgramKeys")
            .field("digest", &hex(&self.digest))
            .field("proving_key_variables", &self.proving_key.a_query.len())
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn mismatch(program: &Program, reason: String) -> ZkError {
    ZkError::KeyMismatch {
        circuit: format!("nn-{}", &hex(&program.digest())[..16]),
        reason,
    }
}

/// Runs a circuit-specific Groth16 setup for `program` (after [`Program::check`]).
///
/// Pass OS randomness in production ([`setup_with_os_rng`]); the randomness is the toxic
/// waste and is dropped when this returns.
pub fn setup(
    program: &Program,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<ProgramKeys, ZkError> {
    program.check()?;
    let circuit = NnCircuit {
        program,
        assignment: None,
    };
    let (proving_key, verifying_key) = Groth16::<Bn254>::circuit_specific_setup(circuit, rng)?;
    Ok(ProgramKeys {
        digest: program.digest(),
        proving_key,
        verifying_key,
    })
}

/// [`setup`] with the operating system's CSPRNG: what the coordinator runs.
pub fn setup_with_os_rng(program: &Program) -> Result<ProgramKeys, ZkError> {
    setup(program, &mut rand_core::OsRng)
}

impl ProgramKeys {
    /// Checks that the keys have the shape of `program`'s circuit (same numbers of public
    /// inputs and variables). This does not prove that they came from an honest setup.
    pub fn check_shape(&self, program: &Program) -> Result<(), ZkError> {
        let s = shape(program)?;
        let vars = s.instance_variables + s.witness_variables;
        let publics = self.verifying_key.gamma_abc_g1.len();
        if publics != s.instance_variables
            || self.proving_key.a_query.len() != vars
            || self.proving_key.vk != self.verifying_key
        {
            return Err(mismatch(
                program,
                format!(
                    "keys have {} variables and {} public inputs, the circuit {vars} and {} \
                     (or the embedded verifying key differs)",
                    self.proving_key.a_query.len(),
                    publics.saturating_sub(1),
                    s.instance_variables - 1
                ),
            ));
        }
        Ok(())
    }

    /// The proving key, compressed (it embeds the verifying key).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ZkError> {
        proving_key_to_bytes(&self.proving_key)
    }

    /// Reads keys written by [`ProgramKeys::to_bytes`] (or made elsewhere) and checks their
    /// shape against `program`.
    pub fn from_bytes(program: &Program, bytes: &[u8]) -> Result<Self, ZkError> {
        let (proving_key, verifying_key) = proving_key_from_bytes(bytes)?;
        let keys = Self {
            digest: program.digest(),
            proving_key,
            verifying_key,
        };
        keys.check_shape(program)?;
        Ok(keys)
    }

    /// Writes [`ProgramKeys::to_bytes`] to `path`.
    pub fn save(&self, path: &Path) -> Result<(), ZkError> {
        write_file(path, &self.to_bytes()?)
    }

    /// Reads keys saved by [`ProgramKeys::save`] for `program`.
    pub fn load(program: &Program, path: &Path) -> Result<Self, ZkError> {
        Self::from_bytes(program, &read_file(path)?)
    }
}

/// Evaluates `program` on `input` ([`evaluate`]), builds the witness and proves it with
/// `pk`; returns the output and the proof.
///
/// `task_id` is the 16 raw bytes of the task's UUID. The proof is checked against the key's
/// own verifying key before it is returned ([`ZkError::SelfCheckFailed`] otherwise, which is
/// what a key of another program of the same size gives). CPU-heavy: call it from a
/// blocking thread.
pub fn prove(
    program: &Program,
    pk: &ProvingKey<Bn254>,
    task_id: &[u8],
    input: &[i64],
) -> Result<(Vec<i64>, Proof<Bn254>), ZkError> {
    let (circuit, public, output) = witness_circuit(program, task_id, input)?;
    let verifier = PreparedVerifier::any(&pk.vk);
    if verifier.num_public_inputs() != public.len() {
        return Err(mismatch(
            program,
            format!(
                "the proving key takes {} public inputs, the program {}",
                verifier.num_public_inputs(),
                public.len()
            ),
        ));
    }
    let proof = Groth16::<Bn254>::prove(pk, circuit, &mut rand_core::OsRng)?;
    if !verifier.verify_inputs(&public, &proof)? {
        return Err(ZkError::SelfCheckFailed);
    }
    Ok((output, proof))
}

/// Verifies that `proof` shows `program` maps `input` to `output` for the task `task_id`.
///
/// `Ok(false)` means the proof is invalid (a tampered input or output, another task,
/// another program, keys of another program). Shapes that do not fit the program are
/// [`ZkError::BadInput`]; a key with another public-input count is [`ZkError::KeyMismatch`].
/// To verify many results of one program, keep a [`ProgramVerifier`].
pub fn verify(
    vk: &VerifyingKey<Bn254>,
    program: &Program,
    task_id: &[u8],
    input: &[i64],
    output: &[i64],
    proof: &Proof<Bn254>,
) -> Result<bool, ZkError> {
    ProgramVerifier::new(vk, program)?.verify(task_id, input, output, proof)
}
