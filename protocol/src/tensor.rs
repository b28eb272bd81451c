//! Tensors as JSON, for `inference` tasks: `{"dtype": "float32", "shape": [1, 4], "data": [...]}`
//! with `data` in row-major order.
//!
//! JSON numbers have no NaN or infinities, so `data` writes those three values as the strings
//! `"NaN"`, `"Infinity"` and `"-Infinity"` (JavaScript's and Python's names for them) and reads
//! them back, in inputs and in results alike; every other value is a JSON number.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A named tensor's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorJson {
    /// One of `float32`, `float64`, `int32`, `int64`, `uint8`.
    pub dtype: String,
    /// Dimensions; the product must equal `data.len()`.
    pub shape: Vec<usize>,
    /// Values, row-major. Integers are exact up to 2^53. NaN and ±∞ travel as `"NaN"`,
    /// `"Infinity"` and `"-Infinity"`.
    #[serde(with = "non_finite")]
    pub data: Vec<f64>,
}

/// `data` as JSON: numbers, with NaN and ±∞ as strings.
mod non_finite {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(data: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(data.len()))?;
        for &x in data {
            match x {
                x if x.is_finite() => seq.serialize_element(&x)?,
                x if x.is_nan() => seq.serialize_element("NaN")?,
                x if x > 0.0 => seq.serialize_element("Infinity")?,
                _ => seq.serialize_element("-Infinity")?,
            }
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        d.deserialize_seq(Values)
    }

    struct Values;

    impl<'de> Visitor<'de> for Values {
        type Value = Vec<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(r#"an array of numbers (NaN and ±∞ as "NaN", "Infinity", "-Infinity")"#)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f64>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(v) = seq.next_element::<Value>()? {
                out.push(v.0);
            }
            Ok(out)
        }
    }

    /// One element: a number, or one of the three names.
    struct Value(f64);

    impl<'de> de::Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
            d.deserialize_any(ValueVisitor)
        }
    }

    struct ValueVisitor;

    impl Visitor<'_> for ValueVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(r#"a number, "NaN", "Infinity" or "-Infinity""#)
        }

        fn visit_f64<E: de::Error>(self, x: f64) -> Result<Value, E> {
            Ok(Value(x))
        }

        fn visit_i64<E: de::Error>(self, x: i64) -> Result<Value, E> {
            Ok(Value(x as f64))
        }

        fn visit_u64<E: de::Error>(self, x: u64) -> Result<Value, E> {
            Ok(Value(x as f64))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
            match s {
                "NaN" => Ok(Value(f64::NAN)),
                "Infinity" => Ok(Value(f64::INFINITY)),
                "-Infinity" => Ok(Value(f64::NEG_INFINITY)),
                other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
            }
        }
    }
}

impl TensorJson {
    /// Checks that `data` has as many values as `shape` calls for; the error names the tensor.
    pub fn check_len(&self, name: &str) -> Result<(), String> {
        let n: usize = self.shape.iter().product();
        if n == self.data.len() {
            Ok(())
        } else {
            Err(format!(
                "tensor {name}: shape {:?} needs {n} values, data has {}",
                self.shape,
                self.data.len()
            ))
        }
    }
}

/// The `inputs` of an `inference` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceInputs {
    /// A model uploaded with `PUT /api/v1/blobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_sha256: Option<String>,
    /// A small model inline, base64 (replaced by `model_sha256` once accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_base64: Option<String>,
    /// Input tensors by the model's input names.
    pub tensors: BTreeMap<String, TensorJson>,
}

impl InferenceInputs {
    /// Each tensor as `(name, shape, data)`.
    pub fn views(&self) -> impl Iterator<Item = (&str, &[usize], &[f64])> {
        self.tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.shape.as_slice(), t.data.as_slice()))
    }
}

/// The result of an `inference` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceOutput {
    /// Output tensors by the model's output names.
    pub outputs: BTreeMap<String, TensorJson>,
    /// What ran it: `cpu`, or `cuda:0` for the first NVIDIA GPU (`cpu` for a proved run).
    pub device: String,
    /// With `require_proof`: the output in fixed point, which the proof is about. `outputs`
    /// is then these values over `2^frac_bits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantised: Option<QuantisedTensor>,
    /// With `require_proof`: the Groth16 proof (compressed arkworks points, base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// With `require_proof`: the proof's public inputs, decimal: `[task_binding,
    /// model_commitment, packed input…, packed output…]`. The coordinator writes the ones it
    /// recomputed and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_inputs: Option<Vec<String>>,
    /// With `require_proof`, written by the coordinator: the commitment to the model's
    /// quantised weights (decimal), which the proof binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_commitment: Option<String>,
    /// With `require_proof`, written by the coordinator: an a priori bound on the distance
    /// between `outputs` and the real-number evaluation of the model with the same quantised
    /// weights (absent past an `Exp`, whose relative error has no absolute bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_bound: Option<f64>,
    /// With `require_proof`, written by the coordinator: the model circuit's constraints,
    /// what the proof is priced by (at `zk_proof`'s rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<u64>,
}

/// A tensor in fixed point: each value `q` stands for `q / 2^frac_bits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantisedTensor {
    /// The scale's bits.
    pub frac_bits: u32,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_travel_as_their_names() {
        let t = TensorJson {
            dtype: "float32".into(),
            shape: vec![5],
            data: vec![1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"dtype":"float32","shape":[5],"data":[1.5,"NaN","Infinity","-Infinity",-0.0]}"#
        );
        let back: TensorJson = serde_json::from_str(&json).unwrap();
        assert_eq!(back.data[0], 1.5);
        assert!(back.data[1].is_nan());
        assert_eq!(back.data[2..4], [f64::INFINITY, f64::NEG_INFINITY]);
        assert!(back.data[4] == 0.0 && back.data[4].is_sign_negative());
        let v = serde_json::json!({"dtype": "int64", "shape": [2], "data": [3, -4]});
        let ints: TensorJson = serde_json::from_value(v).unwrap();
        assert_eq!(ints.data, [3.0, -4.0]);
        for bad in [r#"["nan"]"#, r#"[null]"#, r#"[true]"#, r#"[[1]]"#] {
            let body = format!(r#"{{"dtype":"float32","shape":[1],"data":{bad}}}"#);
            assert!(serde_json::from_str::<TensorJson>(&body).is_err(), "{bad}");
        }
    }

    #[test]
    fn issue_example_parses() {
        let v = serde_json::json!({"model_sha256": "ab", "tensors": {"x": {"dtype": "float32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}}});
        let i: InferenceInputs = serde_json::from_value(v).unwrap();
        assert_eq!(i.tensors["x"].shape, vec![1, 4]);
    }
}
