//! Calibration of the credit unit: how many metered units of each kind of work one core of this
//! machine does per second, with the engines the agent runs and real workloads.
//!
//! `cargo run --release --locked -p ambient-agent --example calibrate [-- --runs 7]`
//!
//! | Kind | Unit | Workload |
//! |---|---|---|
//! | wasm | wasmi fuel, as the sandbox reports it | Monte-Carlo π in WAT (LCG, f64), 4M samples |
//! | inference | MACs ([`ambient_agent::exec::onnx::count_macs`]) | PaddleOCR's classifier (`tests/fixtures/onnx/ppocr_cls.onnx`), `[1,3,48,192]` |
//! | zk | R1CS constraints proved | `hash_chain` at n = 64 with [`ambient_zk::prove`] |
//! | fl | samples × epochs × parameters | [`train_local`] on the breast cancer data (569 × 30, standardised): logistic regression (a job's default, 31 parameters; `fl_steps_per_sec`), and an MLP 32-16 (1537; `fl_mlp_steps_per_sec`) |
//!
//! Each kind runs once to warm up, then `--runs` times (default 7); a run repeats the workload
//! for at least two seconds. The figure is the median rate, beside the slowest and fastest run.
//! Everything runs on one core at a time: the program restarts itself with
//! `RAYON_NUM_THREADS=1` so that Groth16 proving does not spread over the cores. A rate is per
//! second of CPU time the process used (Linux's `/proc/self/stat`, in ticks of 10 ms; wall time
//! elsewhere), so that other work on the machine does not count against it; the table says what
//! share of the wall time that was. It prints a table, then one JSON object.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ambient_agent::exec::onnx::OnnxEngine;
use ambient_agent::exec::wasm::{WasmLimits, WasmSandbox};
use ambient_fl::data::{FeatureStats, breast_cancer};
use ambient_fl::model::{LocalTraining, ModelSpec, train_local};
use ambient_protocol::TensorJson;
use anyhow::Context as _;

/// Monte-Carlo π: 4M points from a 64-bit LCG, each coordinate the top 53 bits as an f64 in
/// [0, 1); writes the number of hits inside the quarter circle to stdout as 8 bytes (LE).
const PI_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $next (param $s i64) (result i64)
    (i64.add (i64.mul (local.get $s) (i64.const 6364136223846793005)) (i64.const 1442695040888963407)))
  (func $unit (param $s i64) (result f64)
    (f64.mul (f64.convert_i64_u (i64.shr_u (local.get $s) (i64.const 11))) (f64.const 0x1p-53)))
  (func (export "_start") (local $i i32) (local $s i64) (local $x f64) (local $y f64) (local $hits i64)
    (local.set $s (i64.const 20261125))
    (loop $sample
      (local.set $s (call $next (local.get $s)))
      (local.set $x (call $unit (local.get $s)))
      (local.set $s (call $next (local.get $s)))
      (local.set $y (call $unit (local.get $s)))
      (if (f64.lt (f64.add (f64.mul (local.get $x) (local.get $x)) (f64.mul (local.get $y) (local.get $y))) (f64.const 1))
        (then (local.set $hits (i64.add (local.get $hits) (i64.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $sample (i32.lt_u (local.get $i) (i32.const 4000000))))
    (i64.store (i32.const 16) (local.get $hits))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
const PI_SAMPLES: u64 = 4_000_000;

/// Rates of one kind of work, in units per second on a core.
struct Rates {
    median: f64,
    min: f64,
    max: f64,
    /// On-core time over wall time, all runs together.
    on_core: f64,
}

/// CPU time of this process in seconds, threads that have exited included (Groth16's MSM
/// runs on short-lived rayon pools), where Linux says: utime + stime of `/proc/self/stat`.
fn on_core() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields 14 and 15 of the line: 12th and 13th after the command name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((tick(11)? + tick(12)?) as f64 / 100.0)
}

/// Runs `work` (which returns the units it did) once to warm up, then `runs` times, each
/// repeating it for at least two seconds.
fn measure(runs: usize, mut work: impl FnMut() -> anyhow::Result<u64>) -> anyhow::Result<Rates> {
    work()?;
    let mut rates = Vec::with_capacity(runs);
    let (mut busy, mut wall) = (0.0, 0.0);
    for _ in 0..runs {
        let (t, c) = (Instant::now(), on_core());
        let mut units = 0;
        while t.elapsed() < Duration::from_secs(2) {
            units += work()?;
        }
        let elapsed = t.elapsed().as_secs_f64();
        let used = match (c, on_core()) {
            (Some(c0), Some(c1)) if c1 > c0 => c1 - c0,
            _ => elapsed,
        };
        rates.push(units as f64 / used);
        (busy, wall) = (busy + used, wall + elapsed);
    }
    rates.sort_by(f64::total_cmp);
    Ok(Rates {
        median: rates[rates.len() / 2],
        min: rates[0],
        max: rates[rates.len() - 1],
        on_core: busy / wall,
    })
}

fn wasm(runs: usize) -> anyhow::Result<(Rates, u64)> {
    let module = wat::parse_str(PI_WAT)?;
    let sandbox = WasmSandbox::new(1);
    let limits = WasmLimits {
        fuel: 100 * ambient_protocol::FUEL_PER_SECOND,
        max_memory_bytes: 16 << 20,
        max_output_bytes: 1 << 10,
        wall_clock: Duration::from_secs(100),
    };
    let mut fuel = 0;
    let rates = measure(runs, || {
        let out = sandbox.run(&module, b"", &limits, &AtomicBool::new(false))?;
        let hits = u64::from_le_bytes(out.stdout[..].try_into()?);
        let pi = 4.0 * hits as f64 / PI_SAMPLES as f64;
        anyhow::ensure!((pi - std::f64::consts::PI).abs() < 0.01, "π came out {pi}");
        fuel = out.fuel_consumed;
        Ok(fuel)
    })?;
    Ok((rates, fuel))
}

fn inference(runs: usize) -> anyhow::Result<(Rates, u64)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/onnx");
    let model = std::fs::read(format!("{dir}/ppocr_cls.onnx")).context("ppocr_cls.onnx")?;
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{dir}/ppocr_cls.json"))?)?;
    let inputs: BTreeMap<String, TensorJson> = serde_json::from_value(reference["inputs"].clone())?;
    let engine = OnnxEngine::new(1);
    let once = || -> anyhow::Result<u64> {
        let ran = engine.run_on(&model, "ppocr_cls", &inputs, false)?;
        ran.macs.context("tract could not count the model's MACs")
    };
    // Through the agent's engine, as a task runs (JSON tensors in and out included).
    let macs = once()?;
    Ok((measure(runs, once)?, macs))
}

fn zk(runs: usize) -> anyhow::Result<(Rates, usize)> {
    use ambient_zk::{CircuitId, CircuitSpec, Fr, Inputs, prove, setup_with_os_rng, shape};
    let spec = CircuitSpec::new(CircuitId::HashChain, 64)?;
    let constraints = shape(&spec)?.constraints;
    let keys = setup_with_os_rng(&spec)?;
    let inputs = Inputs::HashChain { x: Fr::from(7u64) };
    let rates = measure(runs, || {
        prove(&keys, &spec, b"0123456789abcdef", &inputs)?;
        Ok(constraints as u64)
    })?;
    Ok((rates, constraints))
}

/// A round's local training of `spec` with a job's default hyper-parameters (5 epochs, batch 16,
/// lr 0.05, L2 1e-3).
fn fl(runs: usize, spec: &ModelSpec) -> anyhow::Result<Rates> {
    let mut data = breast_cancer();
    let (mean, std) = FeatureStats::from_dataset(&data).mean_std()?;
    data.standardize(&mean, &std)?;
    let weights = spec.init(1);
    let local = LocalTraining {
        epochs: 5,
        batch_size: 16,
        lr: 0.05,
        l2: 1e-3,
    };
    let steps = (data.len() * local.epochs * spec.num_params()) as u64;
    measure(runs, || {
        let (trained, loss) = train_local(spec, &weights, &data, &local, 1)?;
        anyhow::ensure!(loss.is_finite() && trained.len() == weights.len());
        Ok(steps)
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var("RAYON_NUM_THREADS").as_deref() != Ok("1") {
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(&args)
            .env("RAYON_NUM_THREADS", "1")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).context("--runs N")?.parse()?,
        None => 7,
    };
    anyhow::ensure!(runs >= 5, "--runs must be at least 5");
    let (wasm, fuel) = wasm(runs)?;
    let (inference, macs) = inference(runs)?;
    let (zk, constraints) = zk(runs)?;
    let logistic = ModelSpec::logistic(30);
    let fl_logistic = fl(runs, &logistic)?;
    let mlp = ModelSpec::mlp(30, &[32, 16]);
    let fl_mlp = fl(runs, &mlp)?;
    println!(
        "| Kind | Units per core-second (median) | Slowest run | Fastest run | On core | Workload |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |kind: &str, r: &Rates, what: String| {
        let (md, lo, hi, busy) = (r.median, r.min, r.max, 100.0 * r.on_core);
        println!("| {kind} | {md:.4e} | {lo:.4e} | {hi:.4e} | {busy:.0} % | {what} |");
    };
    row(
        "wasm fuel",
        &wasm,
        format!("π, {PI_SAMPLES} samples, {fuel} fuel"),
    );
    row(
        "inference MACs",
        &inference,
        format!("ppocr_cls, {macs} MACs"),
    );
    row(
        "zk constraints",
        &zk,
        format!("hash_chain 64, {constraints}"),
    );
    for (what, spec, rates) in [
        ("logistic", &logistic, &fl_logistic),
        ("MLP 32-16", &mlp, &fl_mlp),
    ] {
        let what = format!("{what}, {} parameters", spec.num_params());
        row("fl steps", rates, what);
    }
    let json = serde_json::json!({
        "wasm_fuel_per_sec": wasm.median.round(),
        "inference_macs_per_sec": inference.median.round(),
        "zk_constraints_per_sec": zk.median.round(),
        "fl_steps_per_sec": fl_logistic.median.round(),
        "fl_mlp_steps_per_sec": fl_mlp.median.round(),
        "runs": runs,
    });
    println!("{json}");
    Ok(())
}
