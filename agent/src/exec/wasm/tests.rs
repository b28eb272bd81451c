//! The sandbox contract, checked on every engine this build has: each test runs its module on
//! all of them and requires the same outcome.

use super::*;
use std::{sync::Arc, thread};

const IMPORTS: &str = r#"
    (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"#;

/// Reads stdin in 7-byte chunks and writes it back upper-cased.
const UPPER: &str = r#"
    (memory (export "memory") 1)
    (func (export "_start") (local $n i32) (local $i i32) (local $c i32)
      (loop $read
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 7))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (local.set $n (i32.load (i32.const 16)))
        (if (local.get $n) (then
          (local.set $i (i32.const 0))
          (block $done (loop $up
            (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
            (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
            (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
              (then (i32.store8 (i32.add (i32.const 1024) (local.get $i)) (i32.sub (local.get $c) (i32.const 32)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $up)))
          (i32.store (i32.const 32) (i32.const 1024))
          (i32.store (i32.const 36) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 20)))
          (br $read)))))"#;

/// Writes the sum of all stdin bytes as decimal ASCII.
const BYTE_SUM: &str = r#"
    (memory (export "memory") 1)
    (func (export "_start") (local $n i32) (local $i i32) (local $sum i32) (local $p i32)
      (loop $read
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (local.set $n (i32.load (i32.const 16)))
        (local.set $i (i32.const 0))
        (block $done (loop $add
          (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $sum (i32.add (local.get $sum) (i32.load8_u (i32.add (i32.const 1024) (local.get $i)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $add)))
        (br_if $read (local.get $n)))
      ;; digits are written backwards, ending at 200
      (local.set $p (i32.const 200))
      (loop $digit
        (local.set $p (i32.sub (local.get $p) (i32.const 1)))
        (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $sum) (i32.const 10))))
        (local.set $sum (i32.div_u (local.get $sum) (i32.const 10)))
        (br_if $digit (local.get $sum)))
      (i32.store (i32.const 32) (local.get $p))
      (i32.store (i32.const 36) (i32.sub (i32.const 200) (local.get $p)))
      (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 20))))"#;

const SPIN: &str = r#"(memory (export "memory") 1) (func (export "_start") (loop $l (br $l)))"#;

pub(super) fn module(body: &str) -> Vec<u8> {
    wat::parse_str(format!("(module {IMPORTS} {body})")).expect("test WAT must parse")
}

fn limits() -> WasmLimits {
    WasmLimits {
        fuel: 100_000_000,
        max_memory_bytes: 16 << 20,
        max_output_bytes: 1 << 20,
        wall_clock: Duration::from_secs(60),
    }
}

/// One sandbox per engine of this build.
fn sandboxes(cache_capacity: usize) -> Vec<WasmSandbox> {
    WasmEngine::ALL
        .iter()
        .map(|&e| WasmSandbox::with_engine(e, cache_capacity))
        .collect()
}

/// Runs `wasm` on every engine; the outcomes must be the same (output, fuel, or error with
/// its message). Returns wasmi's.
pub(super) fn run_everywhere(
    wasm: &[u8],
    stdin: &[u8],
    limits: &WasmLimits,
) -> Result<WasmOutput, WasmError> {
    let mut outcomes = sandboxes(4).into_iter().map(|s| {
        (
            s.engine(),
            s.run(wasm, stdin, limits, &AtomicBool::new(false)),
        )
    });
    let (_, first) = outcomes.next().expect("wasmi is always there");
    let same = |r: &Result<WasmOutput, WasmError>| match r {
        Ok(out) => format!("{:?}", (&out.stdout, &out.stderr, out.fuel_consumed)),
        Err(e) => format!("{e:?}"),
    };
    for (engine, other) in outcomes {
        assert_eq!(same(&other), same(&first), "{engine} differs from wasmi");
    }
    first
}

fn run(body: &str, stdin: &[u8], limits: &WasmLimits) -> Result<WasmOutput, WasmError> {
    run_everywhere(&module(body), stdin, limits)
}

/// Calls `call` (a WAT expression returning i32) and exits with its result as the code.
fn probe(imports: &str, call: &str) -> i32 {
    let body = format!(
        r#"{imports} (memory (export "memory") 1)
           (func (export "_start") (call $proc_exit {call}))"#
    );
    match run(&body, b"", &limits()) {
        Ok(_) => 0,
        Err(WasmError::Exit { code, .. }) => code,
        Err(other) => panic!("probe failed: {other:?}"),
    }
}

#[test]
fn uppercases_stdin() {
    let input = b"Hello, wasm sandbox! 123 abc_xyz {}";
    let out = run(UPPER, input, &limits()).expect("run");
    assert_eq!(out.stdout, input.to_ascii_uppercase());
    assert!(out.stderr.is_empty());
    assert!(out.fuel_consumed > 0);
    assert_eq!(
        out.module_sha256,
        hex::encode(Sha256::digest(module(UPPER)))
    );
}

#[test]
fn byte_sum_matches_rust() {
    let inputs: [&[u8]; 4] = [b"", b"a", br#"{"a":12,"b":30}"#, &[0xff; 10_000]];
    for input in inputs {
        let out = run(BYTE_SUM, input, &limits()).expect("run");
        let expected: u32 = input.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(
            String::from_utf8(out.stdout).expect("ascii"),
            expected.to_string()
        );
    }
}

#[test]
fn fuel_is_deterministic_and_exact_across_slices() {
    // A few fuel per iteration over 10M iterations: several slices.
    let body = r#"(memory (export "memory") 1)
        (func (export "_start") (local $i i32)
          (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $l (i32.lt_u (local.get $i) (i32.const 10000000)))))"#;
    let (wasm, cancel) = (module(body), AtomicBool::new(false));
    let mut fuel = Vec::new();
    for sandbox in sandboxes(4) {
        let first = sandbox.run(&wasm, b"", &limits(), &cancel).expect("run");
        assert!(
            first.fuel_consumed > 3 * FUEL_SLICE,
            "{}",
            first.fuel_consumed
        );
        let again = sandbox.run(&wasm, b"", &limits(), &cancel).expect("run");
        assert_eq!(first.fuel_consumed, again.fuel_consumed);
        let exact = WasmLimits {
            fuel: first.fuel_consumed,
            ..limits()
        };
        assert_eq!(
            sandbox
                .run(&wasm, b"", &exact, &cancel)
                .expect("run")
                .fuel_consumed,
            exact.fuel
        );
        let short = WasmLimits {
            fuel: first.fuel_consumed - 1,
            ..limits()
        };
        let err = sandbox
            .run(&wasm, b"", &short, &cancel)
            .expect_err("one short");
        assert!(
            matches!(err, WasmError::OutOfFuel { fuel } if fuel == short.fuel),
            "{err:?}"
        );
        fuel.push(first.fuel_consumed);
    }
    assert!(
        fuel.windows(2).all(|w| w[0] == w[1]),
        "fuel differs between engines: {fuel:?}"
    );
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let err = run(
        SPIN,
        b"",
        &WasmLimits {
            fuel: 10_000,
            ..limits()
        },
    )
    .expect_err("spins");
    assert!(
        matches!(err, WasmError::OutOfFuel { fuel: 10_000 }),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::OutOfFuel);
}

#[test]
fn infinite_loop_is_cancelled_from_another_thread() {
    for sandbox in sandboxes(1) {
        let cancel = Arc::new(AtomicBool::new(false));
        let setter = Arc::clone(&cancel);
        let handle = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            setter.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let lim = WasmLimits {
            fuel: u64::MAX,
            ..limits()
        };
        let err = sandbox
            .run_with(&module(SPIN), b"", &lim, RunControl::new(cancel))
            .expect_err("spins");
        handle.join().expect("setter thread");
        assert!(matches!(err, WasmError::Cancelled), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

/// This thread's CPU time (user + system) from procfs, in clock ticks of 10 ms.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = after
        .split(' ')
        .skip(11)
        .take(2)
        .map(|x| x.parse().expect("tick count"))
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

#[test]
#[cfg(target_os = "linux")]
fn duty_cycle_gives_the_cpu_back() {
    let body = |n: u32| {
        format!(
            r#"(memory (export "memory") 1)
            (func (export "_start") (local $i i32)
              (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                       (br_if $l (i32.lt_u (local.get $i) (i32.const {n})))))"#
        )
    };
    let lim = WasmLimits {
        fuel: u64::MAX,
        // Shorter than the paced run takes: sleeping does not count against it.
        wall_clock: Duration::from_secs(60),
        ..limits()
    };
    for sandbox in sandboxes(4) {
        // About 100 ms of work at full speed, whatever the engine.
        let mut n = 10_000_000;
        let (wasm, full) = loop {
            let wasm = module(&body(n));
            let t0 = Instant::now();
            let full = sandbox
                .run(&wasm, b"", &lim, &AtomicBool::new(false))
                .expect("run");
            if t0.elapsed() >= Duration::from_millis(80) || n >= 1_000_000_000 {
                break (wasm, full);
            }
            n *= 4;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let paced_at = |pct: u32, cancel: &Arc<AtomicBool>| {
            RunControl::new(Arc::clone(cancel)).paced(Arc::new(AtomicU32::new(pct)))
        };
        let (cpu0, t0) = (thread_cpu(), Instant::now());
        let paced = sandbox
            .run_with(&wasm, b"", &lim, paced_at(25, &cancel))
            .expect("paced run");
        let (cpu, wall) = (thread_cpu() - cpu0, t0.elapsed());
        assert_eq!(
            paced.fuel_consumed, full.fuel_consumed,
            "pacing changes no fuel"
        );
        assert!(
            wall >= Duration::from_millis(200),
            "too short to measure on {}: {wall:?}",
            sandbox.engine()
        );
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        assert!(
            share < 0.40,
            "{} used {share:.2} of a core at a 25% duty cycle ({cpu:?} of {wall:?})",
            sandbox.engine()
        );

        // Cancelling while it sleeps stops it promptly.
        let setter = Arc::clone(&cancel);
        let stopper = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            setter.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let err = sandbox
            .run_with(&module(SPIN), b"", &lim, paced_at(1, &cancel))
            .expect_err("spins");
        let set_at = stopper.join().expect("stopper");
        assert!(matches!(err, WasmError::Cancelled), "{err:?}");
        assert!(
            set_at.elapsed() < Duration::from_millis(200),
            "{:?}",
            set_at.elapsed()
        );
    }
}

#[test]
fn infinite_loop_hits_the_wall_clock() {
    let started = Instant::now();
    let wall_clock = Duration::from_millis(200);
    let err = run(
        SPIN,
        b"",
        &WasmLimits {
            fuel: u64::MAX,
            wall_clock,
            ..limits()
        },
    )
    .expect_err("spins");
    assert!(
        matches!(err, WasmError::WallClock { limit } if limit == wall_clock),
        "{err:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= wall_clock && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[test]
fn memory_bombs_hit_the_memory_limit() {
    let trapping = r#"(memory (export "memory") 1)
        (func (export "_start")
          (loop $g (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
                   (br $g)))"#;
    let looping = r#"(memory (export "memory") 1)
        (func (export "_start") (loop $g (drop (memory.grow (i32.const 1))) (br $g)))"#;
    let too_big_at_start = r#"(memory (export "memory") 512) (func (export "_start"))"#;
    for body in [trapping, looping, too_big_at_start] {
        let err = run(body, b"", &limits()).expect_err("bomb");
        assert!(
            matches!(err, WasmError::MemoryLimit { limit_bytes } if limit_bytes == 16 << 20),
            "{err:?}"
        );
    }
    // Growing up to the cap is fine: 1 + 255 pages = 16 MiB.
    let within = r#"(memory (export "memory") 1)
        (func (export "_start") (if (i32.eq (memory.grow (i32.const 255)) (i32.const -1))
                                    (then unreachable)))"#;
    run(within, b"", &limits()).expect("within the cap");
}

#[test]
fn refuses_bad_modules() {
    let sandbox = WasmSandbox::new(4);
    let go = |wasm: &[u8]| run_everywhere(wasm, b"", &limits());
    assert!(matches!(
        go(b"definitely not wasm"),
        Err(WasmError::InvalidModule(_))
    ));
    assert!(matches!(
        go(b"\0asm\x01\0\0\0\x05"),
        Err(WasmError::InvalidModule(_))
    ));
    assert!(
        matches!(go(b"(module)"), Err(WasmError::InvalidModule(_))),
        "text format"
    );
    let start_section = module(r#"(func $s) (start $s) (func (export "_start"))"#);
    assert!(matches!(
        go(&start_section),
        Err(WasmError::InvalidModule(_))
    ));

    let env = wat::parse_str(r#"(module (import "env" "foo" (func)) (func (export "_start")))"#)
        .expect("wat");
    let err = go(&env).expect_err("env import");
    assert!(
        matches!(&err, WasmError::UnsupportedImport { module, name }
        if module == "env" && name == "foo"),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::UnsupportedImport);
    for import in [
        r#"(import "wasi_snapshot_preview1" "path_open" (func (param i32) (result i32)))"#,
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32) (result i32)))"#,
        r#"(import "wasi_snapshot_preview1" "memory" (memory 1))"#,
    ] {
        let wasm =
            wat::parse_str(format!(r#"(module {import} (func (export "_start")))"#)).expect("wat");
        assert!(
            matches!(go(&wasm), Err(WasmError::UnsupportedImport { .. })),
            "{import}"
        );
    }

    for body in [
        r#"(func (export "main"))"#,
        r#"(func (export "_start") (param i32))"#,
    ] {
        assert!(
            matches!(go(&module(body)), Err(WasmError::NoEntryPoint)),
            "{body}"
        );
    }
    assert!(meter::prepare(&module(UPPER)).is_ok());
    for wasm in [&b"not wasm"[..], &env, &start_section] {
        let _ = sandbox.run(wasm, b"", &limits(), &AtomicBool::new(false));
    }
    assert_eq!(
        sandbox.cached_modules(),
        0,
        "refused modules are not cached"
    );
}

#[test]
fn proc_exit_codes() {
    let body = |code: i32| {
        format!(
            r#"(memory (export "memory") 1) (data (i32.const 100) "boom")
            (func (export "_start")
              (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 4))
              (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
              (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
              (call $proc_exit (i32.const {code})) unreachable)"#
        )
    };
    let err = run(&body(3), b"", &limits()).expect_err("exit 3");
    assert!(
        matches!(&err, WasmError::Exit { code: 3, stderr } if stderr == "boom"),
        "{err:?}"
    );
    assert_eq!(err.kind(), FailureKind::Exit);
    assert_eq!(err.to_string(), "exited with code 3: boom");
    let out = run(&body(0), b"", &limits()).expect("exit 0 is success");
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"boom"[..], &b"boom"[..])
    );
}

#[test]
fn traps_are_reported() {
    let err = run(r#"(func (export "_start") unreachable)"#, b"", &limits()).expect_err("trap");
    assert!(
        matches!(&err, WasmError::Trap(msg) if msg.contains("unreachable")),
        "{err:?}"
    );
}

#[test]
fn output_cap() {
    // Writes 100 bytes `$times` times.
    let body = |times: i32| {
        format!(
            r#"(memory (export "memory") 1)
            (func (export "_start") (local $i i32)
              (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 100))
              (loop $w
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $w (i32.lt_s (local.get $i) (i32.const {times})))))"#
        )
    };
    let lim = WasmLimits {
        max_output_bytes: 1000,
        ..limits()
    };
    assert_eq!(
        run(&body(10), b"", &lim)
            .expect("exactly at the cap")
            .stdout
            .len(),
        1000
    );
    let err = run(&body(i32::MAX), b"", &lim).expect_err("too much");
    assert!(
        matches!(err, WasmError::OutputTooLarge { limit: 1000 }),
        "{err:?}"
    );
}

#[test]
fn wasi_calls_return_the_right_errno() {
    let write = |fd: i32, iovs: u32| {
        format!("(call $fd_write (i32.const {fd}) (i32.const {iovs}) (i32.const 1) (i32.const 8))")
    };
    assert_eq!(
        probe("", &write(1, 0xffff_fff0)),
        EFAULT,
        "iovec array out of memory"
    );
    let oob_buffer =
        "(i32.store (i32.const 0) (i32.const 65530)) (i32.store (i32.const 4) (i32.const 100))";
    assert_eq!(
        probe(
            "",
            &format!("(block (result i32) {oob_buffer} {})", write(1, 0))
        ),
        EFAULT
    );
    assert_eq!(probe("", &write(3, 0)), EBADF);
    assert_eq!(probe("", &write(1, 0)), SUCCESS, "zero-length write");
    let read = "(call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 70000))";
    assert_eq!(probe("", read), EFAULT, "nread pointer out of memory");

    let wasi = |name: &str, sig: &str| {
        format!(r#"(import "wasi_snapshot_preview1" "{name}" (func ${name} {sig}))"#)
    };
    let ii = "(param i32 i32) (result i32)";
    let calls = [
        (wasi("fd_seek", "(param i32 i64 i32 i32) (result i32)"),
         "(call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 0))", ESPIPE),
        (wasi("fd_prestat_get", ii), "(call $fd_prestat_get (i32.const 3) (i32.const 0))", EBADF),
        (wasi("random_get", ii), "(call $random_get (i32.const 0) (i32.const 8))", ENOSYS),
        (wasi("clock_time_get", "(param i32 i64 i32) (result i32)"),
         "(call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 0))", ENOSYS),
        (wasi("fd_fdstat_get", ii), "(call $fd_fdstat_get (i32.const 5) (i32.const 0))", EBADF),
        (wasi("fd_fdstat_get", ii),
         "(block (result i32) (drop (call $fd_fdstat_get (i32.const 1) (i32.const 0))) (i32.load8_u (i32.const 0)))",
         2),
        (wasi("args_sizes_get", ii),
         "(block (result i32) (i32.store (i32.const 0) (i32.const -1)) (i32.store (i32.const 4) (i32.const -1))
           (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
           (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 4))))", 0),
        (wasi("environ_sizes_get", ii), "(call $environ_sizes_get (i32.const 65535) (i32.const 0))", EFAULT),
    ];
    for (import, call, expected) in calls {
        assert_eq!(probe(&import, call), expected, "{call}");
    }
}

#[test]
fn every_supported_import_links() {
    let imports: String = WASI_IMPORTS
        .iter()
        .map(|(name, sig, _)| {
            let (params, results) = sig.split_once(':').expect("sig");
            let ty = |s: &str| {
                s.chars()
                    .map(|c| if c == 'I' { " i64" } else { " i32" })
                    .collect::<String>()
            };
            format!(
                r#"(import "wasi_snapshot_preview1" "{name}" (func (param{}) (result{})))"#,
                ty(params),
                ty(results)
            )
        })
        .collect();
    let wasm = wat::parse_str(format!(
        r#"(module {imports} (memory (export "memory") 1) (func (export "_start")))"#
    ))
    .expect("wat");
    let out = run_everywhere(&wasm, b"", &limits());
    assert!(out.is_ok(), "{out:?}");
}

#[test]
fn caches_modules_by_hash() {
    for engine in WasmEngine::ALL {
        let sandbox = WasmSandbox::with_engine(*engine, 2);
        let cancel = AtomicBool::new(false);
        for _ in 0..2 {
            sandbox
                .run(&module(UPPER), b"x", &limits(), &cancel)
                .expect("run");
        }
        assert_eq!(sandbox.cached_modules(), 1);
        sandbox
            .run(&module(BYTE_SUM), b"x", &limits(), &cancel)
            .expect("run");
        sandbox
            .run(
                &module(SPIN),
                b"",
                &WasmLimits {
                    fuel: 10,
                    ..limits()
                },
                &cancel,
            )
            .expect_err("spin");
        assert_eq!(sandbox.cached_modules(), 2, "capacity bound");
        let uncached = WasmSandbox::with_engine(*engine, 0);
        uncached
            .run(&module(UPPER), b"x", &limits(), &cancel)
            .expect("run");
        assert_eq!(uncached.cached_modules(), 0);
    }
}

#[test]
fn sandbox_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WasmSandbox>();
}
