//! `wasm_execution` tasks: a WASI module run on `min_nodes` nodes, whose answers settle by
//! quorum ([`crate::scheduler::quorum`]). The module is checked here once, at submission.

use crate::config::Limits;
use crate::submission::{Accepted, SubmitError, decode};

/// Checks a `wasm_execution` submission: its module is decoded, validated and becomes the task's
/// artifact.
pub(crate) fn check(accepted: &mut Accepted, limits: &Limits) -> Result<(), SubmitError> {
    let b64 = accepted
        .submission
        .wasm_module
        .take()
        .ok_or(SubmitError::MissingModule)?;
    accepted.artifact = Some(module(&b64, limits)?);
    Ok(())
}

/// Decodes and validates a base64 wasm module; returns its sha256 and bytes. Shared with
/// `computation`, whose kernel is a wasm module too.
pub(crate) fn module(b64: &str, limits: &Limits) -> Result<(String, Vec<u8>), SubmitError> {
    let bytes = decode(b64, limits.max_module_bytes)?;
    let engine = wasmi::Engine::default();
    wasmi::Module::validate(&engine, &bytes)
        .map_err(|e| SubmitError::InvalidWasm(e.to_string()))?;
    Ok((ambient_protocol::sha256_hex(&bytes), bytes))
}
