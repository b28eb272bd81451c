//! Task inputs of `zk_proof` as JSON, parsed once for the coordinator (which validates and
//! verifies) and the agent (which proves).

use std::str::FromStr as _;

use serde_json::Value;

use crate::{CircuitId, CircuitSpec, Fr, Inputs};

/// Reads a field element written as a canonical decimal string (no sign, no leading zeros),
/// refusing values that are not below the BN254 scalar modulus r.
pub fn parse_field(s: &str) -> Result<Fr, String> {
    let canonical = !s.is_empty()
        && s.len() <= 78
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return Err(format!(
            "{s:?} is not a decimal field element (digits only, no leading zeros)"
        ));
    }
    let f = Fr::from_str(s).map_err(|_| format!("{s:?} is not a field element"))?;
    if f.to_string() != s {
        return Err(format!(
            "{s:?} is not below the BN254 scalar field modulus r"
        ));
    }
    Ok(f)
}

/// Parses `zk_proof` inputs into a circuit instance and its inputs, refusing a size outside
/// the circuit's range ([`CircuitId::size_range`]; the error names the range).
///
/// `{"circuit": "hash_chain", "x": "<decimal field element>", "n": <steps>}` or
/// `{"circuit": "dot", "a": [i64...], "b": [i64...]}`.
pub fn parse_task_inputs(inputs: &Value) -> Result<(CircuitSpec, Inputs), String> {
    let obj = inputs
        .as_object()
        .ok_or("zk_proof inputs must be an object")?;
    let circuit = obj
        .get("circuit")
        .and_then(Value::as_str)
        .ok_or("zk_proof needs inputs.circuit (a circuit name)")?;
    let id = CircuitId::parse(circuit).map_err(|e| e.to_string())?;
    let allowed: &[&str] = match id {
        CircuitId::HashChain => &["circuit", "x", "n"],
        CircuitId::Dot => &["circuit", "a", "b"],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown {circuit} input {k:?} (it takes {})",
            allowed.join(", ")
        ));
    }
    let (size, inputs) = match id {
        CircuitId::HashChain => {
            let n = obj
                .get("n")
                .and_then(Value::as_u64)
                .ok_or("hash_chain needs inputs.n (a positive integer)")?;
            let x = obj
                .get("x")
                .and_then(Value::as_str)
                .ok_or("hash_chain needs inputs.x (a decimal string)")?;
            (n as usize, Inputs::HashChain { x: parse_field(x)? })
        }
        CircuitId::Dot => {
            let vec = |k: &str| -> Result<Vec<i64>, String> {
                obj.get(k)
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| format!("dot needs inputs.{k} (an array of 64-bit integers)"))
            };
            let (a, b) = (vec("a")?, vec("b")?);
            if a.len() != b.len() {
                return Err(format!(
                    "dot vectors have lengths {} and {}",
                    a.len(),
                    b.len()
                ));
            }
            (a.len(), Inputs::Dot { a, b })
        }
    };
    let spec = CircuitSpec::new(id, size).map_err(|e| e.to_string())?;
    Ok((spec, inputs))
}
