//! The wasm engines side by side, in one run: the sandbox on wasmi, the sandbox on the JIT
//! (`wasm-jit`), bare wasmtime (default settings, no limits, no metering, stub WASI) and the
//! same C code built natively, on the project's Monte Carlo π kernel (`cli/wasm/pi.wat`, and
//! `pi.c` built for WASI) and a floating-point C/WASI program (`nbody.c`).
//!
//! ```text
//! cargo bench -p ambient-agent --bench wasm_engines --no-default-features --features wasm-jit
//! cargo bench -p ambient-agent --bench wasm_engines --no-default-features --features wasm-jit \
//!     -- --runs 3 --samples 20000000 --steps 2000000 --only n-body
//! ```
//!
//! Each figure is the median of `--runs` runs (5) after one warm-up run that also compiles
//! the module (the sandbox caches compiled modules, as the agent does). Native builds use `cc`
//! (and `clang` when there is one) at `-O2`; a missing compiler leaves its rows out. The `.wasm`
//! files were built with `clang --target=wasm32-wasi -O2 -Wl,--strip-all` (clang 14,
//! wasi-libc); `--rebuild-wasm` rebuilds them first when such a clang is there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ambient_agent::exec::wasm::{RunControl, WasmEngine, WasmLimits, WasmSandbox};

const PI_WAT: &str = include_str!("../../cli/wasm/pi.wat");

fn main() {
    let mut runs = 5usize;
    let mut samples = 20_000_000u64;
    let mut steps = 1_000_000u64;
    let mut rebuild = false;
    let mut only = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match a.as_str() {
            "--runs" => runs = num("--runs").max(1) as usize,
            "--samples" => samples = num("--samples"),
            "--steps" => steps = num("--steps"),
            "--rebuild-wasm" => rebuild = true,
            "--only" => only = args.next().unwrap_or_default(),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/wasm");
    if rebuild {
        rebuild_wasm(&here);
    }
    let tmp = std::env::temp_dir().join(format!("ambient-wasm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");

    let pi_input = format!(r#"{{"end":{samples},"shard":0,"start":0}}"#);
    let nbody_input = format!(r#"{{"steps":{steps}}}"#);
    let workloads = [
        Workload {
            name: format!("π kernel, pi.wat ({samples} samples)"),
            wasm: wat::parse_str(PI_WAT).expect("pi.wat"),
            native: Some(here.join("pi.c")),
            stdin: pi_input.clone(),
        },
        Workload {
            name: format!("π kernel, pi.c → WASI ({samples} samples)"),
            wasm: std::fs::read(here.join("pi.wasm")).expect("pi.wasm"),
            native: None,
            stdin: pi_input,
        },
        Workload {
            name: format!("n-body, nbody.c → WASI ({steps} steps)"),
            wasm: std::fs::read(here.join("nbody.wasm")).expect("nbody.wasm"),
            native: Some(here.join("nbody.c")),
            stdin: nbody_input,
        },
    ];
    let compilers: Vec<&str> = ["cc", "clang"]
        .into_iter()
        .filter(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();

    println!(
        "# wasm engines, {} ({} CPUs), median of {runs} runs\n",
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| Workload | Runner | Median | Compile | × native | × bare wasmtime | wasmi ÷ it |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for w in workloads.iter().filter(|w| w.name.contains(&only)) {
        let mut rows: Vec<Row> = Vec::new();
        let mut expected: Option<Vec<u8>> = None;
        let mut check = |runner: &str, out: &[u8]| match &expected {
            None => expected = Some(out.to_vec()),
            Some(e) => assert_eq!(
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(e),
                "{runner} printed something else on {}",
                w.name
            ),
        };
        for engine in WasmEngine::ALL {
            let (row, out) = sandbox(*engine, w, runs);
            check(&row.runner, &out);
            rows.push(row);
        }
        for nan in [false, true] {
            let (row, out) = bare_wasmtime(w, runs, nan);
            check(&row.runner, &out);
            rows.push(row);
        }
        if let Some(src) = &w.native {
            for cc in &compilers {
                if let Some((row, out)) = native(cc, src, &tmp, w, runs) {
                    check(&row.runner, &out);
                    rows.push(row);
                }
            }
        }
        let find = |prefix: &str| {
            rows.iter()
                .find(|r| r.runner.starts_with(prefix))
                .map(|r| r.median)
        };
        let native_best = rows
            .iter()
            .filter(|r| r.runner.starts_with("native"))
            .map(|r| r.median)
            .min();
        let bare = find("bare wasmtime");
        let wasmi = find("sandbox, wasmi");
        for r in &rows {
            let ratio = |base: Option<Duration>| {
                base.map_or("".into(), |b| {
                    format!("{:.2}", r.median.as_secs_f64() / b.as_secs_f64())
                })
            };
            let speedup = wasmi.map_or("".into(), |b| {
                format!("{:.1}", b.as_secs_f64() / r.median.as_secs_f64())
            });
            println!(
                "| {} | {} | {:.1} ms | {} | {} | {} | {} |",
                w.name,
                r.runner,
                r.median.as_secs_f64() * 1e3,
                r.compile
                    .map_or("".into(), |c| format!("{:.1} ms", c.as_secs_f64() * 1e3)),
                ratio(native_best),
                ratio(bare),
                speedup,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

struct Workload {
    name: String,
    wasm: Vec<u8>,
    native: Option<PathBuf>,
    stdin: String,
}

struct Row {
    runner: String,
    median: Duration,
    /// First run minus the median: compiling (and for the sandbox, checking and metering).
    compile: Option<Duration>,
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Times `f` once cold and `runs` times warm.
fn timed(runs: usize, mut f: impl FnMut() -> Vec<u8>) -> (Duration, Duration, Vec<u8>) {
    let t0 = Instant::now();
    let out = f();
    let first = t0.elapsed();
    let times = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            let _ = f();
            t0.elapsed()
        })
        .collect();
    (first, median(times), out)
}

fn sandbox(engine: WasmEngine, w: &Workload, runs: usize) -> (Row, Vec<u8>) {
    let sandbox = WasmSandbox::with_engine(engine, 4);
    let limits = WasmLimits {
        fuel: u64::MAX / 2,
        max_memory_bytes: 256 << 20,
        max_output_bytes: 1 << 20,
        wall_clock: Duration::from_secs(600),
    };
    let (first, median, out) = timed(runs, || {
        let control = RunControl::new(Arc::new(AtomicBool::new(false)));
        sandbox
            .run_with(&w.wasm, w.stdin.as_bytes(), &limits, control)
            .unwrap_or_else(|e| panic!("{engine} on {}: {e}", w.name))
            .stdout
    });
    let row = Row {
        runner: format!("sandbox, {}", sandbox.engine()),
        median,
        compile: Some(first.saturating_sub(median)),
    };
    (row, out)
}

/// wasmtime as it comes: default settings, no fuel, no limits, no NaN canonicalisation, the
/// module unmetered, and stub WASI (stdin, stdout, exit; every other call succeeds).
/// With `nan`, NaN canonicalisation on (what the sandbox needs to agree with wasmi).
fn bare_wasmtime(w: &Workload, runs: usize, nan: bool) -> (Row, Vec<u8>) {
    use wasmtime::{Caller, Engine, Extern, Linker, Module, Store, Val};
    struct Io {
        stdin: Vec<u8>,
        pos: usize,
        stdout: Vec<u8>,
    }
    fn mem<'a>(c: &'a mut Caller<'_, Io>) -> (&'a mut [u8], &'a mut Io) {
        match c.get_export("memory") {
            Some(Extern::Memory(m)) => m.data_and_store_mut(c),
            _ => panic!("no memory"),
        }
    }
    fn u32_at(m: &[u8], at: usize) -> usize {
        u32::from_le_bytes(m[at..at + 4].try_into().expect("4 bytes")) as usize
    }
    let mut config = wasmtime::Config::new();
    config.cranelift_nan_canonicalization(nan);
    let engine = Engine::new(&config).expect("engine");
    let t0 = Instant::now();
    let module = Module::new(&engine, &w.wasm).expect("bare compile");
    let compile = t0.elapsed();
    let mut linker = Linker::<Io>::new(&engine);
    for import in module.imports() {
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            panic!("bare wasmtime links functions only");
        };
        let name = import.name().to_owned();
        linker
            .func_new(
                import.module(),
                import.name(),
                ty,
                move |mut c, args, results| {
                    let arg = |i: usize| args[i].unwrap_i32() as usize;
                    match name.as_str() {
                        "proc_exit" => return Err(wasmtime::Error::msg("exit")),
                        "fd_read" => {
                            let (m, io) = mem(&mut c);
                            let (buf, len) = (u32_at(m, arg(1)), u32_at(m, arg(1) + 4));
                            let n = len.min(io.stdin.len() - io.pos);
                            m[buf..buf + n].copy_from_slice(&io.stdin[io.pos..io.pos + n]);
                            io.pos += n;
                            m[arg(3)..arg(3) + 4].copy_from_slice(&(n as u32).to_le_bytes());
                        }
                        "fd_write" => {
                            let (m, io) = mem(&mut c);
                            let mut total = 0;
                            for i in 0..arg(2) {
                                let (buf, len) =
                                    (u32_at(m, arg(1) + 8 * i), u32_at(m, arg(1) + 8 * i + 4));
                                if arg(0) == 1 {
                                    io.stdout.extend_from_slice(&m[buf..buf + len]);
                                }
                                total += len;
                            }
                            m[arg(3)..arg(3) + 4].copy_from_slice(&(total as u32).to_le_bytes());
                        }
                        _ => {}
                    }
                    if let Some(r) = results.first_mut() {
                        *r = Val::I32(0);
                    }
                    Ok(())
                },
            )
            .expect("link");
    }
    let (_, median, out) = timed(runs, || {
        let io = Io {
            stdin: w.stdin.as_bytes().to_vec(),
            pos: 0,
            stdout: Vec::new(),
        };
        let mut store = Store::new(&engine, io);
        let instance = linker
            .instantiate(&mut store, &module)
            .expect("instantiate");
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start");
        let _ = start.call(&mut store, ()); // proc_exit(0) ends it with an error
        store.into_data().stdout
    });
    let row = Row {
        runner: if nan {
            "bare wasmtime + NaN canonicalisation".into()
        } else {
            "bare wasmtime (default settings)".into()
        },
        median,
        compile: Some(compile),
    };
    (row, out)
}

/// Builds `src` with `cc -O2` and times the executable (process start included, about 1 ms).
fn native(cc: &str, src: &Path, tmp: &Path, w: &Workload, runs: usize) -> Option<(Row, Vec<u8>)> {
    let exe = tmp.join(format!("{}-{cc}", src.file_stem()?.to_string_lossy()));
    let built = Command::new(cc)
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(src)
        .arg("-lm")
        .status()
        .ok()?;
    if !built.success() {
        return None;
    }
    let version = Command::new(cc).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version.lines().next().unwrap_or(cc).to_owned();
    let (_, median, out) = timed(runs, || {
        let mut child = Command::new(&exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("native run");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(w.stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("native output").stdout
    });
    let row = Row {
        runner: format!("native -O2, {version}"),
        median,
        compile: None,
    };
    Some((row, out))
}

/// Rebuilds the C/WASI programs with clang and wasi-libc.
fn rebuild_wasm(dir: &Path) {
    for name in ["pi", "nbody", "sort"] {
        let status = Command::new("clang")
            .args(["--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o"])
            .arg(dir.join(format!("{name}.wasm")))
            .arg(dir.join(format!("{name}.c")))
            .arg("-lm")
            .status();
        match status {
            Ok(s) if s.success() => eprintln!("rebuilt {name}.wasm"),
            other => eprintln!("could not rebuild {name}.wasm: {other:?}"),
        }
    }
}
