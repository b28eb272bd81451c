//! Built-in reducers of sharded `computation` tasks, applied by the coordinator to the shard
//! outputs in shard order.
//!
//! - `sum`, `min`, `max`: every output is a number, or every output is an object whose values are
//!   numbers (reduced key by key; keys missing from a shard count as absent);
//! - `concat`: the outputs as an array, in shard order.
//!
//! Integers stay exact (i64/u64 arithmetic) while every value is an integer.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

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

/// Applies `reduce` to `outputs` (in shard order).
pub fn apply(reduce: Reduce, outputs: &[Value]) -> Result<Value, String> {
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
                return Err(format!("field {k:?} is not a number in every shard output"));
            }
            out.insert(
                k.clone(),
                fold(reduce, vals.into_iter().filter_map(Value::as_number))?,
            );
        }
        return Ok(Value::Object(out));
    }
    Err(format!(
        "{reduce:?} needs every shard output to be a number or an object of numbers"
    ))
}

fn fold<'a>(reduce: Reduce, nums: impl Iterator<Item = &'a Number>) -> Result<Value, String> {
    let nums: Vec<&Number> = nums.collect();
    if nums.is_empty() {
        return Err("no values to reduce".into());
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
            Reduce::Concat => return Err("concat is not a numeric reduction".into()),
        };
        return if let Ok(v) = i64::try_from(r) {
            Ok(Value::from(v))
        } else if let Ok(v) = u64::try_from(r) {
            Ok(Value::from(v))
        } else {
            Err("integer sum overflows 64 bits".into())
        };
    }
    let fl: Vec<f64> = nums.iter().filter_map(|n| n.as_f64()).collect();
    let r = match reduce {
        Reduce::Sum => fl.iter().sum(),
        Reduce::Min => fl.iter().copied().fold(f64::INFINITY, f64::min),
        Reduce::Max => fl.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Reduce::Concat => return Err("concat is not a numeric reduction".into()),
    };
    Number::from_f64(r)
        .map(Value::Number)
        .ok_or_else(|| "result is not a finite number".into())
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
