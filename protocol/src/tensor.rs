//! Tensors as JSON, for `inference` tasks: `{"dtype": "float32", "shape": [1, 4], "data": [...]}`
//! with `data` in row-major order.

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
    /// Values, row-major. Integers are exact up to 2^53.
    pub data: Vec<f64>,
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

/// The result of an `inference` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceOutput {
    /// Output tensors by the model's output names.
    pub outputs: BTreeMap<String, TensorJson>,
    /// What ran it: `cpu`, or `cuda:0` for the first NVIDIA GPU.
    pub device: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses() {
        let v = serde_json::json!({"model_sha256": "ab", "tensors": {"x": {"dtype": "float32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}}});
        let i: InferenceInputs = serde_json::from_value(v).unwrap();
        assert_eq!(i.tensors["x"].shape, vec![1, 4]);
    }
}
