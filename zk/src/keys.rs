//! Setup, key (de)serialisation and the prepared verifier.

use std::path::Path;

use ark_bn254::{Bn254, Fr, G1Projective};
use ark_ec::VariableBaseMSM;
use ark_groth16::{Groth16, PreparedVerifyingKey, Proof, ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize, Compress, Validate};
use ark_snark::SNARK;
use ark_std::rand::{CryptoRng, RngCore};

use crate::circuits::{Circuit, CircuitSpec, PublicInputs, shape};
use crate::error::ZkError;

/// Number of public inputs of every circuit (`task_binding`, `input_commitment`,
/// `output_commitment`).
pub const NUM_PUBLIC_INPUTS: usize = 3;

/// A circuit instance's Groth16 key pair.
///
/// The proving key goes to nodes; the verifying key stays with the coordinator (and is
/// published, as snarkjs JSON, for independent verification).
#[derive(Clone)]
pub struct Keys {
    /// The circuit instance these keys belong to.
    pub spec: CircuitSpec,
    /// The proving key (contains a copy of the verifying key).
    pub proving_key: ProvingKey<Bn254>,
    /// The verifying key.
    pub verifying_key: VerifyingKey<Bn254>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("spec", &self.spec)
            .field("proving_key_variables", &self.proving_key.a_query.len())
            .finish_non_exhaustive()
    }
}

/// Runs a circuit-specific Groth16 setup for `spec`.
///
/// Pass OS randomness in production (see [`setup_with_os_rng`]); the randomness is the toxic
/// waste and is dropped when this returns. Whoever controls it can forge proofs.
pub fn setup(spec: &CircuitSpec, rng: &mut (impl RngCore + CryptoRng)) -> Result<Keys, ZkError> {
    let circuit = Circuit {
        spec: *spec,
        assignment: None,
    };
    let (proving_key, verifying_key) = Groth16::<Bn254>::circuit_specific_setup(circuit, rng)?;
    Ok(Keys {
        spec: *spec,
        proving_key,
        verifying_key,
    })
}

/// [`setup`] with the operating system's CSPRNG: what the coordinator runs.
pub fn setup_with_os_rng(spec: &CircuitSpec) -> Result<Keys, ZkError> {
    setup(spec, &mut rand_core::OsRng)
}

fn check_verifying_key(vk: &VerifyingKey<Bn254>, circuit: &str) -> Result<(), ZkError> {
    if vk.gamma_abc_g1.len() != NUM_PUBLIC_INPUTS + 1 {
        return Err(ZkError::KeyMismatch {
            circuit: circuit.to_owned(),
            reason: format!(
                "verifying key takes {} public inputs, circuits here take {NUM_PUBLIC_INPUTS}",
                vk.gamma_abc_g1.len().saturating_sub(1)
            ),
        });
    }
    Ok(())
}

impl Keys {
    /// Checks that the keys have the shape of `spec`'s constraint system (same number of
    /// variables and public inputs). This does not prove that they came from an honest setup.
    pub fn check_shape(&self) -> Result<(), ZkError> {
        let name = self.spec.to_string();
        check_verifying_key(&self.verifying_key, &name)?;
        let s = shape(&self.spec)?;
        let vars = s.instance_variables + s.witness_variables;
        if self.proving_key.a_query.len() != vars || self.proving_key.vk != self.verifying_key {
            return Err(ZkError::KeyMismatch {
                circuit: name,
                reason: format!(
                    "proving key has {} variables, the circuit {vars} (or its embedded \
                     verifying key differs)",
                    self.proving_key.a_query.len()
                ),
            });
        }
        Ok(())
    }

    /// The proving key, compressed (it embeds the verifying key).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ZkError> {
        proving_key_to_bytes(&self.proving_key)
    }

    /// Reads keys written by [`Keys::to_bytes`] (or converted from elsewhere, such as an MPC
    /// ceremony) and checks their shape against `spec`.
    ///
    /// Points are decompressed (so on the curve) but the proving key's points are not
    /// subgroup-checked, which is slow for large keys: a bad proving key can only make
    /// proofs that fail, and [`crate::prove`] checks each proof before returning it.
    pub fn from_bytes(spec: &CircuitSpec, bytes: &[u8]) -> Result<Self, ZkError> {
        let (proving_key, verifying_key) = proving_key_from_bytes(bytes)?;
        check_verifying_key(&verifying_key, &spec.to_string())?;
        let keys = Self {
            spec: *spec,
            proving_key,
            verifying_key,
        };
        keys.check_shape()?;
        Ok(keys)
    }

    /// Writes [`Keys::to_bytes`] to `path`.
    pub fn save(&self, path: &Path) -> Result<(), ZkError> {
        write_file(path, &self.to_bytes()?)
    }

    /// Reads keys saved by [`Keys::save`] (or made elsewhere) for `spec`.
    pub fn load(spec: &CircuitSpec, path: &Path) -> Result<Self, ZkError> {
        Self::from_bytes(spec, &read_file(path)?)
    }
}

/// A proving key, compressed (it embeds its verifying key, first).
pub fn proving_key_to_bytes(pk: &ProvingKey<Bn254>) -> Result<Vec<u8>, ZkError> {
    let mut out = Vec::with_capacity(pk.serialized_size(Compress::Yes));
    pk.serialize_compressed(&mut out)?;
    Ok(out)
}

/// Reads a compressed proving key of any circuit and returns it with its verifying key.
///
/// The verifying key is fully validated (on curve, in subgroup); the proving key's points
/// are only decompressed (so on the curve), because subgroup checks are slow for large keys
/// and a bad proving key can only make proofs that fail. Callers check the shape against
/// their circuit ([`Keys::from_bytes`], [`crate::nn::ProgramKeys::from_bytes`]).
pub fn proving_key_from_bytes(
    bytes: &[u8],
) -> Result<(ProvingKey<Bn254>, VerifyingKey<Bn254>), ZkError> {
    let proving_key =
        ProvingKey::<Bn254>::deserialize_with_mode(bytes, Compress::Yes, Validate::No)?;
    let mut vk_bytes = Vec::new();
    proving_key.vk.serialize_compressed(&mut vk_bytes)?;
    // The verifying key is the part soundness rests on: validate it fully.
    let verifying_key = VerifyingKey::<Bn254>::deserialize_compressed(vk_bytes.as_slice())?;
    Ok((proving_key, verifying_key))
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ZkError> {
    std::fs::write(path, bytes).map_err(|source| ZkError::Io {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ZkError> {
    std::fs::read(path).map_err(|source| ZkError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A verifying key, compressed.
pub fn verifying_key_to_bytes(vk: &VerifyingKey<Bn254>) -> Result<Vec<u8>, ZkError> {
    let mut out = Vec::new();
    vk.serialize_compressed(&mut out)?;
    Ok(out)
}

/// Reads and fully validates (on curve, in subgroup) a compressed verifying key.
pub fn verifying_key_from_bytes(bytes: &[u8]) -> Result<VerifyingKey<Bn254>, ZkError> {
    let vk = VerifyingKey::<Bn254>::deserialize_compressed(bytes)?;
    check_verifying_key(&vk, "(unknown)")?;
    Ok(vk)
}

/// The verifying key at the head of a compressed proving key ([`Keys::to_bytes`]), fully
/// validated (on curve, in subgroup), without decoding the rest.
///
/// A compressed proving key starts with its verifying key, so this costs microseconds where
/// [`Keys::from_bytes`] takes seconds on a large key: what a verifier needs of keys made
/// elsewhere. It does not check the proving key's shape; a node decoding it does.
pub fn verifying_key_from_proving_key(bytes: &[u8]) -> Result<VerifyingKey<Bn254>, ZkError> {
    let vk = VerifyingKey::<Bn254>::deserialize_compressed(bytes)?;
    check_verifying_key(&vk, "(unknown)")?;
    Ok(vk)
}

/// Writes a compressed verifying key to `path`.
pub fn save_verifying_key(vk: &VerifyingKey<Bn254>, path: &Path) -> Result<(), ZkError> {
    write_file(path, &verifying_key_to_bytes(vk)?)
}

/// Reads a verifying key written by [`save_verifying_key`] (or made elsewhere).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey<Bn254>, ZkError> {
    verifying_key_from_bytes(&read_file(path)?)
}

/// A proof, compressed (128 bytes on BN254).
pub fn proof_to_bytes(proof: &Proof<Bn254>) -> Result<Vec<u8>, ZkError> {
    let mut out = Vec::new();
    proof.serialize_compressed(&mut out)?;
    Ok(out)
}

/// Reads and fully validates a compressed proof: points must be on the curve and in the
/// prime-order subgroup, or this fails.
pub fn proof_from_bytes(bytes: &[u8]) -> Result<Proof<Bn254>, ZkError> {
    Ok(Proof::<Bn254>::deserialize_compressed(bytes)?)
}

/// A verifying key with its pairing precomputation done once, for verifying many proofs.
#[derive(Clone)]
pub struct PreparedVerifier {
    pvk: PreparedVerifyingKey<Bn254>,
}

impl PreparedVerifier {
    /// Prepares `vk`, checking that it takes exactly three public inputs (the registry's
    /// circuits).
    pub fn new(vk: &VerifyingKey<Bn254>) -> Result<Self, ZkError> {
        check_verifying_key(vk, "(unknown)")?;
        Ok(Self::any(vk))
    }

    /// Prepares `vk` whatever its number of public inputs (a program's circuit, see
    /// [`crate::nn`]); use [`PreparedVerifier::verify_inputs`] with it.
    pub fn any(vk: &VerifyingKey<Bn254>) -> Self {
        Self {
            pvk: ark_groth16::prepare_verifying_key(vk),
        }
    }

    /// The number of public inputs the key takes.
    pub fn num_public_inputs(&self) -> usize {
        self.pvk.vk.gamma_abc_g1.len().saturating_sub(1)
    }

    /// Checks `proof` against `public`. `Ok(false)` means the proof is invalid for these
    /// public inputs.
    pub fn verify(&self, public: &PublicInputs, proof: &Proof<Bn254>) -> Result<bool, ZkError> {
        // ark-groth16 zips inputs with the key's bases, silently ignoring extras, so the
        // count is fixed here by construction (three fields, three bases).
        let inputs: [Fr; NUM_PUBLIC_INPUTS] = [
            public.task_binding,
            public.input_commitment,
            public.output_commitment,
        ];
        self.verify_inputs(&inputs, proof)
    }

    /// Checks `proof` against any number of public inputs, which must be exactly as many as
    /// the key takes (else [`ZkError::KeyMismatch`]: ark-groth16 would silently ignore
    /// extras). The inputs are combined with one multi-scalar multiplication, so a hundred of
    /// them add well under a millisecond.
    pub fn verify_inputs(&self, inputs: &[Fr], proof: &Proof<Bn254>) -> Result<bool, ZkError> {
        let bases = &self.pvk.vk.gamma_abc_g1;
        if inputs.len() + 1 != bases.len() {
            return Err(ZkError::KeyMismatch {
                circuit: "(unknown)".into(),
                reason: format!(
                    "the verifying key takes {} public inputs, {} were given",
                    bases.len().saturating_sub(1),
                    inputs.len()
                ),
            });
        }
        let prepared = G1Projective::msm_unchecked(&bases[1..], inputs) + bases[0];
        Ok(Groth16::<Bn254>::verify_proof_with_prepared_inputs(
            &self.pvk, proof, &prepared,
        )?)
    }
}
