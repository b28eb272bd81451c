//! `computation` tasks: a wasm kernel mapped over shards across nodes, then reduced here. The
//! submission names the shards (a list, or a range split evenly); the task becomes a parent that
//! is never assigned itself and one replicated `wasm_execution` task per shard
//! ([`crate::scheduler::shards`] runs them).
//!
//! Built-in reducers, applied to the shard outputs in shard order:
//!
//! - `sum`, `min`, `max`: every output is a number, or every output is an object whose values are
//!   numbers (reduced key by key; keys missing from a shard count as absent);
//! - `concat`: the outputs as an array, in shard order.
//!
//! Integers stay exact (i64/u64 arithmetic) while every value is an integer.

use ambient_protocol::{Requirements, TaskType};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::config::Limits;
use crate::scheduler::{KindState, Sharded, TaskRecord};
use crate::submission::{Accepted, SubmitError};

/// Most shards one `computation` task may have.
pub const MAX_SHARDS: usize = 4096;

/// Checks a `computation` submission: its kernel becomes the artifact, its shards and reducer
/// are parsed.
pub(crate) fn check(accepted: &mut Accepted, limits: &Limits) -> Result<(), SubmitError> {
    if accepted.submission.wasm_module.is_some() {
        return Err(SubmitError::InvalidInputs(
            "a computation's kernel goes in inputs.kernel_base64".into(),
        ));
    }
    let (kernel, shards, reduce) = parse(&accepted.submission.inputs)?;
    accepted.artifact = Some(super::wasm::module(&kernel, limits)?);
    accepted.shards = Some((shards, reduce));
    Ok(())
}

/// Splits an accepted computation into its parent and one shard task per input. The kernel is in
/// the blob store: the parent keeps only its address.
pub(crate) fn build(
    mut task: TaskRecord,
    inputs: Vec<Value>,
    reduce: Reduce,
    now: DateTime<Utc>,
) -> (TaskRecord, Vec<TaskRecord>) {
    let id = task.id;
    let artifact = task.artifact_sha256.clone();
    if let Some(obj) = task.inputs.as_object_mut() {
        obj.remove("kernel_base64");
        obj.insert("kernel_sha256".into(), artifact.clone().into());
    }
    let shards: Vec<TaskRecord> = inputs
        .into_iter()
        .enumerate()
        .map(|(k, input)| {
            let mut s = TaskRecord::new(
                Uuid::new_v4(),
                task.submitter.clone(),
                TaskType::WasmExecution,
                input,
                Requirements {
                    min_nodes: 1,
                    ..task.requirements.clone()
                },
                artifact.clone(),
                now,
            );
            s.parent = Some(id);
            s.shard = Some(k as u32);
            s
        })
        .collect();
    task.kind = KindState::Sharded(Sharded {
        shards: shards.iter().map(|s| s.id).collect(),
        outputs: Default::default(),
        nodes: Vec::new(),
        reduce,
    });
    (task, shards)
}

/// A reducer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// Σ.
    Sum,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// An array of the outputs.
    Concat,
}

impl Reduce {
    /// Parses a wire name.
    pub fn from_wire(s: &str) -> Option<Reduce> {
        Some(match s {
            "sum" => Reduce::Sum,
            "min" => Reduce::Min,
            "max" => Reduce::Max,
            "concat" => Reduce::Concat,
            _ => return None,
        })
    }
}

/// Why shard outputs could not be reduced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReduceError {
    /// A field of object outputs is not a number in every shard.
    #[error("field {0:?} is not a number in every shard output")]
    FieldNotNumeric(String),
    /// The outputs are neither all numbers nor all objects.
    #[error("{0:?} needs every shard output to be a number or an object of numbers")]
    NotNumeric(Reduce),
    /// Nothing to reduce.
    #[error("no values to reduce")]
    Empty,
    /// `concat` asked to fold numbers.
    #[error("concat is not a numeric reduction")]
    ConcatNotNumeric,
    /// An integer result beyond 64 bits.
    #[error("integer sum overflows 64 bits")]
    Overflow,
    /// A float result that is infinite or NaN.
    #[error("result is not a finite number")]
    NotFinite,
}

/// Applies `reduce` to `outputs` (in shard order).
pub fn apply(reduce: Reduce, outputs: &[Value]) -> Result<Value, ReduceError> {
    if reduce == Reduce::Concat {
        return Ok(Value::Array(outputs.to_vec()));
    }
    if outputs.iter().all(Value::is_number) {
        return fold(reduce, outputs.iter().filter_map(Value::as_number));
    }
    if outputs.iter().all(Value::is_object) {
        let mut keys: Vec<&String> = outputs
            .iter()
            .filter_map(Value::as_object)
            .flat_map(Map::keys)
            .collect();
        keys.sort();
        keys.dedup();
        let mut out = Map::new();
        for k in keys {
            let vals: Vec<&Value> = outputs.iter().filter_map(|o| o.get(k)).collect();
            if !vals.iter().all(|v| v.is_number()) {
                return Err(ReduceError::FieldNotNumeric(k.clone()));
            }
            out.insert(
                k.clone(),
                fold(reduce, vals.into_iter().filter_map(Value::as_number))?,
            );
        }
        return Ok(Value::Object(out));
    }
    Err(ReduceError::NotNumeric(reduce))
}

fn fold<'a>(reduce: Reduce, nums: impl Iterator<Item = &'a Number>) -> Result<Value, ReduceError> {
    let nums: Vec<&Number> = nums.collect();
    if nums.is_empty() {
        return Err(ReduceError::Empty);
    }
    if nums.iter().all(|n| n.is_i64() || n.is_u64()) {
        let ints: Vec<i128> = nums
            .iter()
            .map(|n| {
                n.as_i64()
                    .map(i128::from)
                    .or(n.as_u64().map(i128::from))
                    .unwrap_or(0)
            })
            .collect();
        let r = match reduce {
            Reduce::Sum => ints.iter().sum(),
            Reduce::Min => ints.iter().copied().min().unwrap_or(0),
            Reduce::Max => ints.iter().copied().max().unwrap_or(0),
            Reduce::Concat => return Err(ReduceError::ConcatNotNumeric),
        };
        return if let Ok(v) = i64::try_from(r) {
            Ok(Value::from(v))
        } else if let Ok(v) = u64::try_from(r) {
            Ok(Value::from(v))
        } else {
            Err(ReduceError::Overflow)
        };
    }
    let fl: Vec<f64> = nums.iter().filter_map(|n| n.as_f64()).collect();
    let r = match reduce {
        Reduce::Sum => fl.iter().sum(),
        Reduce::Min => fl.iter().copied().fold(f64::INFINITY, f64::min),
        Reduce::Max => fl.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Concat => return Err(ReduceError::ConcatNotNumeric),
    };
    Number::from_f64(r)
        .map(Value::Number)
        .ok_or(ReduceError::NotFinite)
}

/// `{"kernel_base64", "shards": [...] | "range": {"start", "end", "shards"}, "reduce"}`.
fn parse(
    inputs: &serde_json::Value,
) -> Result<(String, Vec<serde_json::Value>, Reduce), SubmitError> {
    let bad = |m: String| SubmitError::InvalidInputs(m);
    let obj = inputs
        .as_object()
        .ok_or_else(|| bad("computation inputs must be an object".into()))?;
    for k in obj.keys() {
        if !["kernel_base64", "shards", "range", "reduce"].contains(&k.as_str()) {
            return Err(bad(format!("unknown computation input {k:?}")));
        }
    }
    let kernel = obj
        .get("kernel_base64")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("computation needs inputs.kernel_base64 (a wasm module)".into()))?;
    let reduce_name = obj
        .get("reduce")
        .and_then(|v| v.as_str())
        .unwrap_or("concat");
    let reduce = Reduce::from_wire(reduce_name).ok_or_else(|| {
        bad(format!(
            "reduce {reduce_name:?} is not one of sum, min, max, concat (wasm reducers are not \
             supported yet)"
        ))
    })?;
    let shards = match (obj.get("shards"), obj.get("range")) {
        (Some(serde_json::Value::Array(list)), None) => list.clone(),
        (None, Some(range)) => {
            let get = |k: &str| {
                range
                    .get(k)
                    .and_then(|v| v.as_u64())
                    .ok_or_else(|| bad(format!("range.{k} must be a non-negative integer")))
            };
            let (start, end, n) = (get("start")?, get("end")?, get("shards")?);
            if end <= start || n == 0 || n > end - start || n as usize > MAX_SHARDS {
                return Err(bad(format!(
                    "range needs start < end and 1 ≤ shards ≤ min(end - start, {MAX_SHARDS})"
                )));
            }
            let span = end - start;
            (0..n)
                .map(|k| {
                    let s = start + span * k / n;
                    let e = start + span * (k + 1) / n;
                    serde_json::json!({"start": s, "end": e, "shard": k})
                })
                .collect()
        }
        _ => return Err(bad("give exactly one of shards (an array) and range".into())),
    };
    if shards.is_empty() || shards.len() > MAX_SHARDS {
        return Err(bad(format!("a computation has 1 to {MAX_SHARDS} shards")));
    }
    Ok((kernel.to_string(), shards, reduce))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reducers() {
        let xs = [json!(3), json!(-1), json!(10)];
        assert_eq!(apply(Reduce::Sum, &xs).unwrap(), json!(12));
        assert_eq!(apply(Reduce::Min, &xs).unwrap(), json!(-1));
        assert_eq!(apply(Reduce::Max, &xs).unwrap(), json!(10));
        assert_eq!(apply(Reduce::Concat, &xs).unwrap(), json!([3, -1, 10]));
        let objs = [json!({"hits": 3, "n": 10}), json!({"hits": 4, "n": 10})];
        assert_eq!(
            apply(Reduce::Sum, &objs).unwrap(),
            json!({"hits": 7, "n": 20})
        );
        assert_eq!(
            apply(Reduce::Sum, &[json!(0.5), json!(0.25)]).unwrap(),
            json!(0.75)
        );
        assert!(apply(Reduce::Sum, &[json!("a")]).is_err());
        assert!(apply(Reduce::Sum, &[json!({"a": "x"})]).is_err());
        let big = [json!(u64::MAX), json!(1)];
        assert!(apply(Reduce::Sum, &big).is_err());
    }
}

#[cfg(test)]
mod sharding_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_split_evenly_and_exactly() {
        let (_, shards, reduce) = parse(
            &json!({"kernel_base64": "x", "range": {"start": 0, "end": 1000000000, "shards": 64}, "reduce": "sum"}),
        )
        .unwrap();
        assert_eq!(reduce, Reduce::Sum);
        assert_eq!(shards.len(), 64);
        assert_eq!(shards[0]["start"], 0);
        assert_eq!(shards[63]["end"], 1000000000u64);
        let total: u64 = shards
            .iter()
            .map(|s| s["end"].as_u64().unwrap() - s["start"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 1000000000);
        for w in shards.windows(2) {
            assert_eq!(w[0]["end"], w[1]["start"]);
        }
    }
}
