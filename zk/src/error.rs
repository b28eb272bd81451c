//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while setting up, proving, verifying or (de)serialising.
///
/// A proof that simply does not verify is *not* an error: [`crate::verify`] returns `Ok(false)`.
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// The circuit name is not in the registry.
    #[error("unknown circuit {0:?} (known circuits: hash_chain, dot)")]
    UnknownCircuit(String),

    /// The circuit size parameter is out of range.
    #[error("circuit {circuit}: size {size} is out of range ({min}..={max})")]
    BadSize {
        /// Circuit name.
        circuit: &'static str,
        /// Requested size.
        size: usize,
        /// Smallest size accepted.
        min: usize,
        /// Largest size accepted.
        max: usize,
    },

    /// The inputs or the claimed output do not fit the circuit.
    #[error("bad inputs for circuit {circuit}: {reason}")]
    BadInput {
        /// Circuit name.
        circuit: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// Keys were used with a circuit (or size) other than the one they were made for,
    /// or their shape does not match the circuit.
    #[error("keys do not match circuit {circuit}: {reason}")]
    KeyMismatch {
        /// The circuit (`name-size`) the caller asked for.
        circuit: String,
        /// What does not match.
        reason: String,
    },

    /// Bytes could not be turned into a key or a proof (or the reverse).
    #[error("serialization: {0}")]
    Serialization(#[from] ark_serialize::SerializationError),

    /// arkworks failed while building or proving the constraint system.
    #[error("constraint synthesis: {0}")]
    Synthesis(#[from] ark_relations::gr1cs::SynthesisError),

    /// Reading or writing a key file failed.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A neural-network program ([`crate::nn::Program`]) is malformed or too large: shapes that do
    /// not chain, weight counts that do not match, or sizes beyond the documented caps.
    #[error("bad program: {0}")]
    BadProgram(String),

    /// A model uses something this crate cannot prove (for the ONNX front end: an operator
    /// or attribute with no circuit).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A fixed-point value left its range while evaluating a program (an activation outside
    /// the 32-bit range, an `Exp` input above its domain): nothing is computed or proved.
    #[error("overflow in layer {layer} ({op}): {reason}")]
    Overflow {
        /// Index of the layer in [`crate::nn::Program::layers`].
        layer: usize,
        /// The layer's kind ([`crate::nn::op_name`]).
        op: &'static str,
        /// What left its range.
        reason: String,
    },

    /// The proof just produced does not verify against the keys' own verifying key.
    ///
    /// This means the witness does not satisfy the circuit (a bug) or the proving key does
    /// not belong to the verifying key; either way the proof is not handed out.
    #[error("the freshly made proof does not verify against its own verifying key")]
    SelfCheckFailed,
}
