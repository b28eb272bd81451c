//! Executors, one per task kind. Each is blocking code that callers run off the async workers.

#[cfg(feature = "wasm")]
pub mod wasm;

#[cfg(feature = "onnx")]
pub mod onnx;

#[cfg(feature = "zk")]
pub mod zk;

#[cfg(feature = "fl")]
pub mod fl;
