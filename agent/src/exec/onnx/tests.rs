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

/// The model's multiply-accumulates for `batch` copies of the first row of its reference input.
fn macs(name: &str, batch: usize) -> Option<u64> {
    let mut inputs = reference(name).inputs;
    let x = inputs.get_mut("x").unwrap();
    x.data = x.data[..x.shape[1..].iter().product()].repeat(batch);
    x.shape[0] = batch;
    let ran = OnnxEngine::new(8).run_on(&fixture(name), name, &inputs, false);
    ran.unwrap().macs
}

#[test]
fn macs_are_the_graphs_multiply_accumulates() {
    // Gemm x[N,4]·w1ᵀ[4,8], then Gemm [N,8]·w2ᵀ[8,3]: N·(4·8 + 8·3). The bias adds, Relu and
    // Softmax cost no multiply-accumulate in tract's cost model.
    assert_eq!(macs("mlp_dynamic.onnx", 1), Some(56));
    assert_eq!(
        macs("mlp_dynamic.onnx", 2),
        Some(2 * 56),
        "the batch counts"
    );
    assert_eq!(macs("mlp_dynamic.onnx", 5), Some(5 * 56));
    // Conv 1→4 channels, 3×3, padded, over 8×8: 64 points · 4 · 9; then Gemm [1,64]·[64,10].
    assert_eq!(macs("cnn.onnx", 1), Some(64 * 4 * 9 + 64 * 10));
    // A loop body counts once per step: LSTM of hidden size 3 over 3 steps of 2 features, each
    // step X·Wᵀ [1,2]·[2,12] and H·Rᵀ [1,3]·[3,12] (tract's fused cell epilogue costs none).
    let (model, doc) = conformance_case("lstm_reverse");
    let inputs = serde_json::from_value(doc["inputs"].clone()).unwrap();
    let ran = OnnxEngine::new(8).run_on(&model, "lstm", &inputs, false);
    assert_eq!(ran.unwrap().macs, Some(3 * (2 * 12 + 3 * 12)));
    // Cached beside the plan: the second run reports the same count.
    let engine = OnnxEngine::new(8);
    let r = reference("mlp.onnx");
    let model = fixture("mlp.onnx");
    for _ in 0..2 {
        let ran = engine.run_on(&model, "mlp", &r.inputs, false).unwrap();
        assert_eq!(ran.macs, Some(56));
    }
    assert_eq!(engine.cached_plans(), 1);
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

// ONNX conformance: cases of ONNX's backend node tests with onnx's expected outputs, and small
// models that use a refused attribute (tests/onnx-conformance/fixtures/, written by
// scripts/onnx-conformance-fixtures.py). The whole suite runs through a local network in
// scripts/onnx-conformance.

fn conformance_fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../tests/onnx-conformance/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn conformance_case(name: &str) -> (Vec<u8>, serde_json::Value) {
    let doc = serde_json::from_slice(&conformance_fixture(&format!("{name}.json"))).unwrap();
    (conformance_fixture(&format!("{name}.onnx")), doc)
}

/// Runs a node test case and holds it to onnx's expected outputs (rtol 1e-3; atol 1e-5, the
/// float32 tolerance onnxruntime's own backend tests use).
fn check_conformance(name: &str) {
    let (model, doc) = conformance_case(name);
    let inputs: BTreeMap<String, TensorJson> =
        serde_json::from_value(doc["inputs"].clone()).unwrap();
    let want: BTreeMap<String, TensorJson> =
        serde_json::from_value(doc["outputs"].clone()).unwrap();
    let out = OnnxEngine::new(8)
        .run(&model, name, &inputs)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        out.outputs.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{name}: output names"
    );
    for (output, w) in &want {
        let g = &out.outputs[output];
        assert_eq!(
            (&g.dtype, &g.shape),
            (&w.dtype, &w.shape),
            "{name}: {output}"
        );
        for (i, (a, b)) in g.data.iter().zip(&w.data).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-3 * b.abs(),
                "{name}: {output}[{i}] = {a}, onnx expects {b}"
            );
        }
    }
}

fn refusal(name: &str) -> OnnxError {
    let (model, doc) = conformance_case(name);
    let inputs: BTreeMap<String, TensorJson> =
        serde_json::from_value(doc["inputs"].clone()).unwrap();
    let err = OnnxEngine::new(8)
        .run(&model, name, &inputs)
        .expect_err("a refused model ran");
    assert_eq!(
        err.kind(),
        ambient_protocol::FailureKind::UnsupportedOperator,
        "{name}: {err}"
    );
    err
}

#[test]
fn reverse_recurrences_run_backwards() {
    // tract 0.23.9 ignores direction=reverse and runs these forwards.
    check_conformance("lstm_reverse");
    check_conformance("gru_reverse");
    check_conformance("simple_rnn_reverse");
}

#[test]
fn space_to_depth_crd_mode() {
    // tract 0.23.9 ignores `mode` and answers in DCR order.
    check_conformance("spacetodepth_crd_mode_example");
}

#[test]
fn swish_alpha_and_swiglu() {
    // tract 0.23.9 drops Swish's `alpha` and lacks SwiGLU.
    check_conformance("swiglu_alpha_expanded");
    check_conformance("swiglu_alpha");
}

#[test]
fn outputs_are_named_by_the_graph() {
    // `present_key` is an Identity of a value that tract's optimiser merges with others; the
    // answer must keep the graph's output names.
    check_conformance("attention_4d_causal_with_past_and_present_expanded");
}

#[test]
fn attention_matches_onnx() {
    // KV cache with present outputs and a bottom-right causal mask; grouped-query 3-D
    // attention; softcap with the qk_matmul_output output.
    check_conformance("attention_4d_causal_with_past_and_present");
    check_conformance("attention_3d_gqa");
    check_conformance("attention_4d_with_qk_matmul_softcap");
}

#[test]
fn lp_pool_and_value_dependent_shapes() {
    check_conformance("lppool_1d_default");
    // Resize's scales come as an input: prepared with the request's values as constants.
    check_conformance("resize_downsample_scales_linear");
}

#[test]
fn ignored_attributes_are_refused() {
    let err = refusal("refuse_lstm_clip");
    assert!(err.to_string().contains("LSTM with clip=0.5"), "{err}");
    let err = refusal("refuse_gru_activations");
    assert!(err.to_string().contains("GRU with activations"), "{err}");
    let err = refusal("refuse_attention_nonpad");
    assert!(
        err.to_string()
            .contains("Attention with input nonpad_kv_seqlen"),
        "{err}"
    );
    let err = refusal("refuse_attention_contrib");
    assert!(
        err.to_string()
            .contains("Attention from domain com.microsoft"),
        "{err}"
    );
}
