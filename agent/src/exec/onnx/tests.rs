use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../tests/fixtures/onnx/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

struct Reference {
    inputs: BTreeMap<String, TensorJson>,
    outputs: BTreeMap<String, TensorJson>,
}

fn reference(name: &str) -> Reference {
    let v: serde_json::Value =
        serde_json::from_slice(&fixture(&name.replace(".onnx", ".json"))).unwrap();
    Reference {
        inputs: serde_json::from_value(v["inputs"].clone()).unwrap(),
        outputs: serde_json::from_value(v["outputs"].clone()).unwrap(),
    }
}

/// Largest absolute difference, after checking names, dtypes and shapes agree.
fn max_diff(got: &BTreeMap<String, TensorJson>, want: &BTreeMap<String, TensorJson>) -> f64 {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let mut worst = 0.0f64;
    for (name, w) in want {
        let g = &got[name];
        assert_eq!((&g.dtype, &g.shape), (&w.dtype, &w.shape), "{name}");
        for (a, b) in g.data.iter().zip(&w.data) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

fn check(name: &str, tolerance: f64) {
    let engine = OnnxEngine::new(8);
    let r = reference(name);
    let out = engine.run(&fixture(name), name, &r.inputs).unwrap();
    let diff = max_diff(&out.outputs, &r.outputs);
    assert!(
        diff <= tolerance,
        "{name}: max |tract - onnxruntime| = {diff}"
    );
    assert_eq!(out.device, "cpu");
}

#[test]
fn mlp_matches_onnxruntime() {
    check("mlp.onnx", 1e-5);
}

#[test]
fn cnn_matches_onnxruntime() {
    check("cnn.onnx", 1e-5);
}

#[test]
fn dynamic_batch_matches_onnxruntime() {
    check("mlp_dynamic.onnx", 1e-5);
    // And another batch size through the same engine: each row equals the batch-1 answer.
    let engine = OnnxEngine::new(8);
    let model = fixture("mlp_dynamic.onnx");
    let r = reference("mlp_dynamic.onnx");
    let x = &r.inputs["x"];
    let two = TensorJson {
        dtype: "float32".into(),
        shape: vec![2, 4],
        data: x.data[..8].to_vec(),
    };
    let out = engine
        .run(&model, "dyn", &BTreeMap::from([("x".to_string(), two)]))
        .unwrap();
    let y = &out.outputs["y"];
    assert_eq!(y.shape, vec![2, 3]);
    for (a, b) in y.data.iter().zip(&r.outputs["y"].data[..6]) {
        assert!((a - b).abs() < 1e-5);
    }
    assert_eq!(engine.cached_plans(), 1);
    engine
        .run(
            &model,
            "dyn",
            &BTreeMap::from([("x".to_string(), x.clone())]),
        )
        .unwrap();
    assert_eq!(engine.cached_plans(), 2, "one plan per input shape");
}

#[test]
fn pretrained_paddleocr_classifier_matches_onnxruntime() {
    check("ppocr_cls.onnx", 1e-4);
}

#[test]
fn broken_inputs_are_typed() {
    let engine = OnnxEngine::new(8);
    let mlp = fixture("mlp.onnx");
    let r = reference("mlp.onnx");
    let err = engine
        .run(&mlp[..mlp.len() / 2], "trunc", &r.inputs)
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ambient_protocol::FailureKind::InvalidModel,
        "{err}"
    );
    let err = engine
        .run(&fixture("unsupported.onnx"), "unsup", &r.inputs)
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ambient_protocol::FailureKind::UnsupportedOperator,
        "{err}"
    );

    let mut wrong_shape = r.inputs.clone();
    wrong_shape.insert(
        "x".into(),
        TensorJson {
            dtype: "float32".into(),
            shape: vec![1, 5],
            data: vec![0.0; 5],
        },
    );
    let err = engine.run(&mlp, "mlp", &wrong_shape).unwrap_err();
    assert!(matches!(err, OnnxError::Shape(_)), "{err}");

    let mut wrong_dtype = r.inputs.clone();
    wrong_dtype.get_mut("x").unwrap().dtype = "int64".into();
    let err = engine.run(&mlp, "mlp", &wrong_dtype).unwrap_err();
    assert!(matches!(err, OnnxError::Dtype(_)), "{err}");

    let mut bad_len = r.inputs.clone();
    bad_len.get_mut("x").unwrap().data.pop();
    assert!(matches!(
        engine.run(&mlp, "mlp", &bad_len).unwrap_err(),
        OnnxError::Shape(_)
    ));

    let unknown = BTreeMap::from([("nope".to_string(), r.inputs["x"].clone())]);
    assert!(matches!(
        engine.run(&mlp, "mlp", &unknown).unwrap_err(),
        OnnxError::InputNames(_)
    ));
}
