//! Task templates (`templates/`) end to end: the coordinator lists them, renders each with its
//! defaults and with overrides, and each rendered body, submitted as a user would, gives the
//! output its template promises on a real cluster: π from the sharded kernel (exactly the hits a
//! Rust count gives), the photo filter's image byte for byte against a Rust filter of the same
//! input, the MLP's probabilities against numpy's, a verified hash-chain proof, and a federated
//! job over data sets the agents hold.
//!
//! The artefacts are checked against their sources too: the wasm modules are rebuilt with
//! clang and wasi-libc where they are installed (`AMBIENT_REQUIRE_WASI_CLANG=1` makes their
//! absence a failure), the sample image with python3, the ONNX model where a python with the
//! `onnx` package is found (`AMBIENT_ONNX_PYTHON`, or scripts/onnx-conformance's venv).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ambient_agent::exec::wasm::{WasmError, WasmLimits, WasmSandbox};
use ambient_cli::client::{Client, ClientError};
use ambient_cli::modules::expected_pi_hits;
use ambient_e2e::Cluster;
use ambient_fl::data::{breast_cancer, non_iid_split};
use ambient_protocol::{TaskInfo, TaskStatus, TemplateRender};
use base64::Engine as _;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn template_file(path: &str) -> Vec<u8> {
    std::fs::read(repo().join("templates").join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64")
}

// ---- a PGM/PPM image and the photo filter, in Rust: the reference the wasm module must equal.

#[derive(Debug, Clone, PartialEq)]
struct Image {
    width: usize,
    height: usize,
    /// 1 (PGM) or 3 (PPM).
    channels: usize,
    pixels: Vec<u8>,
}

impl Image {
    fn parse(bytes: &[u8]) -> Image {
        let channels = match &bytes[..2] {
            b"P5" => 1,
            b"P6" => 3,
            other => panic!("not P5/P6: {other:?}"),
        };
        // Three header numbers (no comments in what the module writes), one whitespace, pixels.
        let mut i = 2;
        let mut numbers = [0usize; 3];
        for n in &mut numbers {
            while bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            while bytes[i].is_ascii_digit() {
                *n = *n * 10 + (bytes[i] - b'0') as usize;
                i += 1;
            }
        }
        let [width, height, maxval] = numbers;
        assert_eq!(maxval, 255);
        let pixels = bytes[i + 1..].to_vec();
        assert_eq!(pixels.len(), width * height * channels);
        Image {
            width,
            height,
            channels,
            pixels,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let magic = if self.channels == 1 { "P5" } else { "P6" };
        let mut out = format!("{magic}\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.pixels);
        out
    }

    fn luma(&self) -> Vec<u8> {
        self.pixels
            .chunks(self.channels)
            .map(|p| match p {
                [g] => *g,
                [r, g, b] => ((77 * *r as u32 + 150 * *g as u32 + 29 * *b as u32 + 128) >> 8) as u8,
                _ => unreachable!(),
            })
            .collect()
    }

    /// grayscale, blur or edge, as templates/photo-filter/filter.c says.
    fn filtered(&self, filter: &str) -> Image {
        let (w, h) = (self.width as i64, self.height as i64);
        let at = |x: i64, y: i64| (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize;
        let (channels, pixels) = match filter {
            "grayscale" => (1, self.luma()),
            "blur" => {
                let c = self.channels;
                let mut out = vec![0u8; self.pixels.len()];
                for y in 0..h {
                    for x in 0..w {
                        for k in 0..c {
                            let mut sum = 0u32;
                            for dy in -1..=1 {
                                for dx in -1..=1 {
                                    sum += self.pixels[at(x + dx, y + dy) * c + k] as u32;
                                }
                            }
                            out[(y * w + x) as usize * c + k] = ((sum + 4) / 9) as u8;
                        }
                    }
                }
                (c, out)
            }
            "edge" => {
                let g = self.luma();
                let p = |x: i64, y: i64| g[at(x, y)] as i32;
                let mut out = vec![0u8; g.len()];
                for y in 0..h {
                    for x in 0..w {
                        let gx = p(x + 1, y - 1) + 2 * p(x + 1, y) + p(x + 1, y + 1)
                            - p(x - 1, y - 1)
                            - 2 * p(x - 1, y)
                            - p(x - 1, y + 1);
                        let gy = p(x - 1, y + 1) + 2 * p(x, y + 1) + p(x + 1, y + 1)
                            - p(x - 1, y - 1)
                            - 2 * p(x, y - 1)
                            - p(x + 1, y - 1);
                        out[(y * w + x) as usize] = ((gx.abs() + gy.abs()) / 2).min(255) as u8;
                    }
                }
                (1, out)
            }
            other => panic!("no filter {other}"),
        };
        Image {
            width: self.width,
            height: self.height,
            channels,
            pixels,
        }
    }

    /// A `width`×`height` image of seeded noise.
    fn noise(width: usize, height: usize, channels: usize, seed: u64) -> Image {
        let mut s = seed;
        let pixels = (0..width * height * channels)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (s >> 56) as u8
            })
            .collect();
        Image {
            width,
            height,
            channels,
            pixels,
        }
    }
}

/// The output a photo-filter run must give for `image` under `filter`.
fn filter_reference(image: &Image, filter: &str) -> Value {
    let out = image.filtered(filter);
    json!({"filter": filter, "width": out.width, "height": out.height, "image": b64(&out.encode())})
}

fn sandbox_run(module: &[u8], stdin: &[u8]) -> Result<Vec<u8>, String> {
    let limits = WasmLimits {
        fuel: 30 * ambient_protocol::FUEL_PER_SECOND,
        max_memory_bytes: 256 << 20,
        max_output_bytes: 1 << 20,
        wall_clock: Duration::from_secs(120),
    };
    WasmSandbox::new(0)
        .run(module, stdin, &limits, &AtomicBool::new(false))
        .map(|o| o.stdout)
        .map_err(|e| match e {
            WasmError::Exit { code, stderr } => format!("exit {code}: {stderr}"),
            e => e.to_string(),
        })
}

// ---- the modules under the agent's sandbox, no cluster.

/// The photo filter equals the Rust reference on colour and grey images of odd sizes, 1×1
/// included, for every filter, and refuses bad inputs with exit code 1 and a sentence on stderr
/// saying why.
#[test]
fn photo_filter_module_equals_the_rust_reference() {
    let module = template_file("photo-filter/filter.wasm");
    let sample = Image::parse(&template_file("photo-filter/sample.ppm"));
    let images = [
        sample,
        Image::noise(1, 1, 3, 1),
        Image::noise(1, 7, 1, 2),
        Image::noise(13, 1, 3, 3),
        Image::noise(37, 23, 3, 4),
        Image::noise(40, 31, 1, 5),
    ];
    for image in &images {
        for filter in ["grayscale", "blur", "edge"] {
            // The agent gives the inputs as compact JSON, keys sorted; an extra key is ignored.
            let stdin = json!({"filter": filter, "image": b64(&image.encode()), "note": [1, {"a": "\u{e9}\"}"}]});
            let out = sandbox_run(&module, stdin.to_string().as_bytes()).unwrap();
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(
                out,
                filter_reference(image, filter),
                "{filter} on {}×{}×{}",
                image.width,
                image.height,
                image.channels
            );
        }
    }
    // A PPM with a comment in its header reads like one without.
    let plain = Image::noise(5, 4, 3, 9);
    let mut commented = b"P6\n# a comment\n5 4\n255\n".to_vec();
    commented.extend_from_slice(&plain.pixels);
    let stdin = json!({"filter": "edge", "image": b64(&commented)}).to_string();
    let out: Value =
        serde_json::from_slice(&sandbox_run(&module, stdin.as_bytes()).unwrap()).unwrap();
    assert_eq!(out, filter_reference(&plain, "edge"));

    let good = b64(&images[1].encode());
    for (stdin, says) in [
        (json!({"filter": "sepia", "image": good}), "unknown filter"),
        (
            json!({"filter": "edge", "image": "not base64!"}),
            "not standard padded base64",
        ),
        (
            json!({"filter": "edge", "image": b64(b"P3\n1 1\n255\n0 0 0")}),
            "not a binary PGM",
        ),
        (
            json!({"filter": "edge", "image": b64(b"P5\n2 2\n65535\n")}),
            "maxval 255",
        ),
        (
            json!({"filter": "edge", "image": b64(b"P5\n4 4\n255\n\x01")}),
            "shorter than its header",
        ),
        (json!({"filter": "edge"}), "no \"image\""),
        (json!({"image": good}), "no \"filter\""),
        (json!({"filter": 3, "image": good}), "must be strings"),
    ] {
        let e = sandbox_run(&module, stdin.to_string().as_bytes()).unwrap_err();
        assert!(e.contains(says), "{stdin}: {e}");
    }
}

/// The π kernel counts the same hits as the Rust count, over any range.
#[test]
fn pi_module_counts_the_reference_hits() {
    let module = template_file("pi/pi.wasm");
    for (start, end, shard) in [
        (0u64, 0u64, 0u64),
        (0, 1, 0),
        (100, 12_345, 3),
        (999_000, 1_000_000, 7),
    ] {
        let stdin = json!({"start": start, "end": end, "shard": shard}).to_string();
        let out = sandbox_run(&module, stdin.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                r#"{{"hits":{},"samples":{}}}"#,
                expected_pi_hits(start, end),
                end - start
            )
        );
    }
    let e = sandbox_run(&module, br#"{"start":5,"end":2}"#).unwrap_err();
    assert!(e.contains("S <= E"), "{e}");
}

// ---- the artefacts against their sources.

/// Runs `program args` in `dir`; None when the program cannot be started.
fn run(program: &str, args: &[&str]) -> Option<std::process::Output> {
    std::process::Command::new(program).args(args).output().ok()
}

/// The wasm modules are what their build scripts make of their C sources: the same bytes with
/// the clang that made them (14.0.6), the same outputs with another.
#[test]
fn wasm_artefacts_rebuild_from_their_sources() {
    let clang = run("clang", &["--version"]);
    let have = clang.as_ref().is_some_and(|o| o.status.success())
        && Path::new("/usr/lib/wasm32-wasi/libc.a").exists();
    if !have {
        assert!(
            std::env::var_os("AMBIENT_REQUIRE_WASI_CLANG").is_none(),
            "AMBIENT_REQUIRE_WASI_CLANG is set, but clang or wasi-libc is missing"
        );
        eprintln!("clang or wasi-libc is not installed: the wasm templates were not rebuilt");
        return;
    }
    let same_clang =
        String::from_utf8_lossy(&clang.unwrap().stdout).contains("clang version 14.0.6");
    let dir = tempfile::tempdir().unwrap();
    for (template, file) in [("pi", "pi.wasm"), ("photo-filter", "filter.wasm")] {
        let out = dir.path().join(file);
        let script = repo().join("templates").join(template).join("build.sh");
        let built = std::process::Command::new(&script)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&built.stderr)
        );
        let rebuilt = std::fs::read(&out).unwrap();
        let committed = template_file(&format!("{template}/{file}"));
        if same_clang {
            assert!(
                rebuilt == committed,
                "templates/{template}/{file} is not what build.sh makes of its source"
            );
            continue;
        }
        // Another clang compiles differently: the two must still answer alike.
        let stdin = match template {
            "pi" => json!({"start": 10, "end": 54_321, "shard": 0}),
            _ => json!({"filter": "edge", "image": b64(&template_file("photo-filter/sample.ppm"))}),
        }
        .to_string();
        assert_eq!(
            sandbox_run(&rebuilt, stdin.as_bytes()),
            sandbox_run(&committed, stdin.as_bytes()),
            "templates/{template}/{file} does not answer like a fresh build of its source"
        );
    }
}

/// The photo filter's sample image is what make_sample.py writes.
#[test]
fn sample_image_comes_from_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sample.ppm");
    let script = repo().join("templates/photo-filter/make_sample.py");
    let Some(o) = run(
        "python3",
        &[script.to_str().unwrap(), out.to_str().unwrap()],
    ) else {
        eprintln!("no python3: the sample image was not rebuilt");
        return;
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == template_file("photo-filter/sample.ppm"));
}

/// A python that can import onnx and numpy: AMBIENT_ONNX_PYTHON, scripts/onnx-conformance's
/// venv, or python3.
fn onnx_python() -> Option<String> {
    let venv = repo().join("target/.venv-onnx-conformance/bin/python");
    let candidates = [
        std::env::var("AMBIENT_ONNX_PYTHON").ok(),
        venv.exists().then(|| venv.display().to_string()),
        Some("python3".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|py| run(py, &["-c", "import onnx, numpy"]).is_some_and(|o| o.status.success()))
}

/// The MLP and its reference output are what make_model.py writes.
#[test]
fn onnx_model_comes_from_its_script() {
    let Some(py) = onnx_python() else {
        eprintln!("no python with onnx and numpy: the ONNX template's model was not rebuilt");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo().join("templates/onnx-mlp/make_model.py");
    let o = run(
        &py,
        &[script.to_str().unwrap(), dir.path().to_str().unwrap()],
    )
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["mlp.onnx", "reference.json"] {
        assert!(
            std::fs::read(dir.path().join(file)).unwrap()
                == template_file(&format!("onnx-mlp/{file}")),
            "templates/onnx-mlp/{file} is not what make_model.py writes"
        );
    }
}

/// templates/README.md's table names every template, in the order the coordinator lists them,
/// with its task type and the true size of each artefact.
#[test]
fn the_templates_readme_lists_every_template() {
    let text = crate::docs::workspace_file("templates/README.md");
    let rows = crate::docs::table(&text, "", "# Task templates");
    let templates = ambient_coordinator::templates::Templates::bundled().unwrap();
    let documented: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    let listed: Vec<(&str, &str)> = templates
        .list()
        .iter()
        .map(|t| (t.info().name.as_str(), t.info().task_type.as_str()))
        .collect();
    assert_eq!(documented, listed);
    // "16 256 bytes": thousands apart by a space.
    let spaced = |n: usize| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(' ');
            }
            out.push(c);
        }
        out
    };
    for file in [
        "pi/pi.wasm",
        "photo-filter/filter.wasm",
        "photo-filter/sample.ppm",
        "onnx-mlp/mlp.onnx",
    ] {
        let name = file.rsplit('/').next().unwrap();
        let size = spaced(template_file(file).len());
        assert!(
            text.contains(&format!("`{name}`, {size} bytes")),
            "templates/README.md does not say {name} is {size} bytes"
        );
    }
}

// ---- on a cluster.

async fn render(client: &Client, name: &str, set: Value) -> Value {
    let req = TemplateRender {
        set: set.as_object().unwrap().clone(),
    };
    client.render_template(name, &req).await.unwrap().submission
}

async fn run_template(client: &Client, name: &str, set: Value, wait: Duration) -> TaskInfo {
    let body = render(client, name, set).await;
    let info = client
        .submit_raw(serde_json::to_vec(&body).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let info = client.wait(info.task_id, wait, |_| {}).await.unwrap();
    assert_eq!(info.status, TaskStatus::Completed, "{name}: {info:?}");
    info
}

fn output(info: &TaskInfo) -> &Value {
    &info.result.as_ref().expect("a result")["output"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_runs_and_gives_its_expected_output() {
    let mut c = Cluster::embedded(3).await.unwrap();
    // The federated template needs nodes that hold its data set: a third of it each.
    let parts = non_iid_split(&breast_cancer(), 3, 0, 0.3).unwrap();
    let rows: usize = parts.iter().map(|p| p.len()).sum();
    c.hold_datasets("breast_cancer", &parts).await.unwrap();
    let client = c.client();
    let wait = Duration::from_secs(120);

    let list = client.templates().await.unwrap();
    let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pi",
            "photo-filter",
            "onnx-mlp",
            "zk-hash-chain",
            "federated"
        ]
    );
    let info = |name: &str| list.iter().find(|t| t.name == name).unwrap();

    // Refusals name what is wrong; rendering needs a key like every submitter route.
    let e = client
        .render_template("mandelbrot", &TemplateRender::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Api { status: 404, body } if body.error == "unknown_template"),
        "{e}"
    );
    let mut set = serde_json::Map::new();
    set.insert("sample".into(), json!(5));
    let e = client
        .render_template("pi", &TemplateRender { set })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Api { status: 400, body }
            if body.error == "invalid_template_param" && body.message.contains("samples, shards")),
        "{e}"
    );
    let e = Client::new(&c.conn.api_url, "wrong-key-wrong-key")
        .templates()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("unauthorized"));
    // A rendered body is only a body: the submission checks still apply to it.
    let body = render(&client, "pi", json!({"shards": 5000})).await;
    let e = client
        .submit_raw(serde_json::to_vec(&body).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(&e, ClientError::Api { status: 400, .. }), "{e}");

    // pi: 2·10⁶ samples, given as a float as the CLI sends 2e6, in 8 shards.
    let done = run_template(&client, "pi", json!({"samples": 2e6, "shards": 8}), wait).await;
    let out = output(&done);
    let (hits, samples) = (
        out["hits"].as_u64().unwrap(),
        out["samples"].as_u64().unwrap(),
    );
    assert_eq!((hits, samples), (expected_pi_hits(0, 2_000_000), 2_000_000));
    let pi = 4.0 * hits as f64 / samples as f64;
    assert!(
        (pi - std::f64::consts::PI).abs() < 5.0 * 1.64 / (samples as f64).sqrt(),
        "π ≈ {pi}"
    );

    // photo-filter: its default (the sample's edges), and each filter on a grey image of ours.
    let sample = Image::parse(&template_file("photo-filter/sample.ppm"));
    let done = run_template(&client, "photo-filter", json!({}), wait).await;
    assert_eq!(output(&done), &filter_reference(&sample, "edge"));
    let grey = Image::noise(29, 17, 1, 42);
    for filter in ["grayscale", "blur", "edge"] {
        let set = json!({"filter": filter, "image": b64(&grey.encode())});
        let done = run_template(&client, "photo-filter", set, wait).await;
        assert_eq!(output(&done), &filter_reference(&grey, filter), "{filter}");
        let image = Image::parse(&unb64(&output(&done)["image"]));
        assert_eq!((image.width, image.height, image.channels), (29, 17, 1));
    }
    // A bad image fails the task with the filter's own sentence from stderr.
    let body = render(&client, "photo-filter", json!({"image": b64(b"GIF89a")})).await;
    let failed = client
        .submit_raw(serde_json::to_vec(&body).unwrap())
        .await
        .unwrap();
    let failed = client.wait(failed.task_id, wait, |_| {}).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed, "{failed:?}");
    let error = failed.error.unwrap_or_default();
    assert!(
        error.starts_with("exit: exited with code 1: ")
            && error.len() > "exit: exited with code 1: ".len(),
        "{error}"
    );

    // onnx-mlp: the default input against numpy's reference, and probabilities for another.
    let reference: Value =
        serde_json::from_slice(&template_file("onnx-mlp/reference.json")).unwrap();
    let done = run_template(&client, "onnx-mlp", json!({}), wait).await;
    let y = &output(&done)["outputs"]["y"];
    assert_eq!(
        (&y["dtype"], &y["shape"]),
        (&json!("float32"), &json!([1, 3]))
    );
    for (got, want) in y["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["y"].as_array().unwrap())
    {
        let (got, want) = (got.as_f64().unwrap(), want.as_f64().unwrap());
        assert!(
            (got - want).abs() < 1e-5,
            "y = {y}, numpy says {}",
            reference["y"]
        );
        // The template's sentence quotes the same values.
        assert!(
            info("onnx-mlp")
                .expected_output
                .contains(&format!("{want:.6}"))
        );
    }
    let done = run_template(&client, "onnx-mlp", json!({"x": [3, 0, -2, 1]}), wait).await;
    let sum: f64 = output(&done)["outputs"]["y"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-5, "{sum}");

    // zk-hash-chain: y = h⁶⁴(x), with a verified proof, for the default x and another.
    for x in [7u64, 123_456_789] {
        let set = if x == 7 { json!({}) } else { json!({"x": x}) };
        let done = run_template(&client, "zk-hash-chain", set, wait).await;
        let y = ambient_zk::mimc::hash_chain(ambient_zk::Fr::from(x), 64).to_string();
        assert_eq!(output(&done)["y"], json!(y));
        assert!(done.proof_id.is_some(), "{done:?}");
        if x == 7 {
            assert!(
                info("zk-hash-chain").expected_output.contains(&y[..12]),
                "y = {y}"
            );
        }
    }

    // federated: 2 rounds over the three agents' parts.
    let done = run_template(
        &client,
        "federated",
        json!({"rounds": 2}),
        Duration::from_secs(300),
    )
    .await;
    let out = output(&done);
    assert_eq!(out["total_rows"], json!(rows));
    assert_eq!(out["rounds"].as_array().unwrap().len(), 2);
    assert_eq!(out["secure_aggregation"], json!(true));
    assert!(out["rounds"][1]["train_loss"].as_f64().unwrap().is_finite());
    c.shutdown().await;
}
