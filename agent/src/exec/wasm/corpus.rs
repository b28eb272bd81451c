//! The project's whole wasm corpus and a hostile corpus, run on every engine of this build:
//! stdout, failure kind and message, and fuel must be byte-identical (`run_everywhere`), and each
//! module must end the way the sandbox contract says.
//!
//! The project's corpus: the kernels the CLI, the demo and the tests ship (`cli/wasm/*.wat`) and
//! three C programs built with clang and wasi-libc (`agent/benches/wasm/*.c`, the `.wasm` files
//! beside them).

use super::tests::run_everywhere;
use super::*;

const SUM_WAT: &str = include_str!("../../../../cli/wasm/sum.wat");
const PI_WAT: &str = include_str!("../../../../cli/wasm/pi.wat");
const BUSY_WAT: &str = include_str!("../../../../cli/wasm/busy.wat");
const SPIN_WAT: &str = include_str!("../../../../cli/wasm/spin.wat");
const MEMORY_BOMB_WAT: &str = include_str!("../../../../cli/wasm/memory_bomb.wat");
const PI_C: &[u8] = include_bytes!("../../../benches/wasm/pi.wasm");
const NBODY_C: &[u8] = include_bytes!("../../../benches/wasm/nbody.wasm");
const SORT_C: &[u8] = include_bytes!("../../../benches/wasm/sort.wasm");

fn limits() -> WasmLimits {
    WasmLimits {
        fuel: 5_000_000_000,
        max_memory_bytes: 16 << 20,
        max_output_bytes: 1 << 20,
        wall_clock: Duration::from_secs(120),
    }
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("corpus WAT must parse")
}

/// Runs `wasm` everywhere and returns its stdout as text.
fn stdout(wasm: &[u8], stdin: &str) -> String {
    let out = run_everywhere(wasm, stdin.as_bytes(), &limits())
        .unwrap_or_else(|e| panic!("{stdin}: {e:?}"));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs `wasm` everywhere under `lim`; the error (the same on every engine).
fn failure(wasm: &[u8], lim: &WasmLimits) -> WasmError {
    match run_everywhere(wasm, b"", lim) {
        Ok(out) => panic!("expected a failure, got {out:?}"),
        Err(e) => e,
    }
}

/// The π kernel's answer, computed here.
fn pi_hits(start: u64, end: u64) -> u64 {
    (start..end)
        .filter(|&s| {
            let mut z = (s + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let (x, y) = (z >> 32, z & 0xffff_ffff);
            x * x <= !(y * y)
        })
        .count() as u64
}

#[test]
fn the_projects_kernels_agree_on_every_engine() {
    let sum = wat(SUM_WAT);
    assert_eq!(
        stdout(&sum, r#"{"numbers":[1,22,333,4444]}"#),
        r#"{"sum":4800}"#
    );
    assert_eq!(stdout(&sum, ""), r#"{"sum":0}"#);
    let pi = wat(PI_WAT);
    let pi_c = PI_C;
    for (start, end) in [(0, 0), (0, 1), (100, 12_345), (1_000_000, 1_300_000)] {
        let input = format!(r#"{{"end":{end},"shard":3,"start":{start}}}"#);
        let want = format!(
            r#"{{"hits":{},"samples":{}}}"#,
            pi_hits(start, end),
            end - start
        );
        assert_eq!(stdout(&pi, &input), want, "pi.wat {input}");
        assert_eq!(stdout(pi_c, &input), want, "pi.c {input}");
    }
    // busy.wat, shortened (the full one is a second of wasmi).
    let busy = wat(&BUSY_WAT.replace("300000000", "3000000"));
    assert_eq!(stdout(&busy, ""), r#"{"sum":4499998500000}"#);
}

#[test]
fn c_programs_agree_on_every_engine() {
    // Floating point all the way: the same bits on both engines.
    assert_eq!(
        stdout(NBODY_C, r#"{"steps":1000}"#),
        r#"{"before":-0.169075164,"after":-0.169087605}"#
    );
    assert_eq!(
        stdout(SORT_C, r#"{"n":100000,"seed":7}"#),
        r#"{"n":100000,"min":78936,"max":4294951285,"fnv":12161358123519860948}"#
    );
    // malloc past the memory cap: memory.grow traps, on both engines.
    let big = run_everywhere(
        SORT_C,
        br#"{"n":1000000,"seed":7}"#,
        &WasmLimits {
            max_memory_bytes: 2 << 20,
            ..limits()
        },
    )
    .expect_err("4 MB of numbers in 2 MiB");
    assert!(
        matches!(big, WasmError::MemoryLimit { limit_bytes } if limit_bytes == 2 << 20),
        "{big:?}"
    );
    let tiny = run_everywhere(
        SORT_C,
        br#"{"n":10,"seed":7}"#,
        &WasmLimits {
            max_output_bytes: 8,
            ..limits()
        },
    )
    .expect_err("output cap");
    assert!(
        matches!(tiny, WasmError::OutputTooLarge { limit: 8 }),
        "{tiny:?}"
    );
    let short = run_everywhere(
        NBODY_C,
        br#"{"steps":100000}"#,
        &WasmLimits {
            fuel: 10_000_000,
            ..limits()
        },
    )
    .expect_err("out of fuel");
    assert!(
        matches!(short, WasmError::OutOfFuel { fuel: 10_000_000 }),
        "{short:?}"
    );
}

#[test]
fn hostile_modules_fail_the_same_way_everywhere() {
    let lim = WasmLimits {
        fuel: 20_000_000,
        ..limits()
    };
    let kind = |wasm: &[u8]| failure(wasm, &lim).kind();
    assert_eq!(kind(&wat(SPIN_WAT)), FailureKind::OutOfFuel);
    assert_eq!(kind(&wat(MEMORY_BOMB_WAT)), FailureKind::MemoryLimit);
    let tail_spin = r#"(module (memory (export "memory") 1)
        (func $f (return_call $f)) (func (export "_start") (call $f)))"#;
    assert_eq!(
        kind(&wat(tail_spin)),
        FailureKind::OutOfFuel,
        "tail calls use no stack"
    );
    let table_bomb = r#"(module (memory (export "memory") 1) (table 0 funcref)
        (func (export "_start") (loop $g (drop (table.grow (ref.null func) (i32.const 1000))) (br $g))))"#;
    assert_eq!(kind(&wat(table_bomb)), FailureKind::MemoryLimit);
    let deep = r#"(module (memory (export "memory") 1)
        (func $f (call $f)) (func (export "_start") (call $f)))"#;
    let mutual = r#"(module (memory (export "memory") 1)
        (func $a (call $b)) (func $b (call $a)) (func (export "_start") (call $a)))"#;
    for m in [deep, mutual] {
        let err = failure(&wat(m), &lim);
        assert!(
            matches!(&err, WasmError::Trap(m) if m == "call stack exhausted"),
            "{err:?}"
        );
    }

    // One trap of each kind, with one message on both engines.
    let traps = [
        ("unreachable", "wasm `unreachable` instruction executed"),
        (
            "(drop (i32.div_u (i32.const 1) (i32.const 0)))",
            "integer divide by zero",
        ),
        (
            "(drop (i64.rem_s (i64.const 1) (i64.const 0)))",
            "integer divide by zero",
        ),
        (
            "(drop (i32.div_s (i32.const 0x80000000) (i32.const -1)))",
            "integer overflow",
        ),
        (
            "(drop (i32.trunc_f32_s (f32.const nan)))",
            "invalid conversion to integer",
        ),
        (
            "(drop (i64.trunc_f64_u (f64.const 1e300)))",
            "integer overflow",
        ),
        (
            "(drop (i32.load (i32.const 65535)))",
            "out of bounds memory access",
        ),
        (
            "(i64.store (i32.const -1) (i64.const 1))",
            "out of bounds memory access",
        ),
        (
            "(memory.fill (i32.const 65000) (i32.const 0) (i32.const 1000))",
            "out of bounds memory access",
        ),
        (
            "(memory.copy (i32.const 0) (i32.const 65000) (i32.const 1000))",
            "out of bounds memory access",
        ),
        (
            "(call_indirect (type $v) (i32.const 0))",
            "uninitialized element 2",
        ),
        (
            "(call_indirect (type $v) (i32.const 9))",
            "undefined element: out of bounds table access",
        ),
        (
            "(call_indirect (type $i) (i32.const 0) (i32.const 1))",
            "indirect call type mismatch",
        ),
        (
            "(drop (table.get (i32.const 9)))",
            "undefined element: out of bounds table access",
        ),
    ];
    for (code, message) in traps {
        let m = format!(
            r#"(module (type $v (func)) (type $i (func (param i32)))
                (memory (export "memory") 1) (table 2 funcref) (elem (i32.const 1) $nop)
                (func $nop) (func (export "_start") {code}))"#
        );
        let err = failure(&wat(&m), &lim);
        assert!(
            matches!(&err, WasmError::Trap(got) if got == message),
            "{code}: {err:?}"
        );
    }
    // Segments out of bounds fail instantiation, alike.
    let segments = [
        (
            r#"(module (memory (export "memory") 1) (data (i32.const 65535) "ab") (func (export "_start")))"#,
            "invalid module: instantiation: out of bounds memory access",
        ),
        (
            r#"(module (memory (export "memory") 1) (table 1 funcref) (elem (i32.const 1) $s) (func $s) (func (export "_start")))"#,
            "invalid module: instantiation: undefined element: out of bounds table access",
        ),
    ];
    for (m, message) in segments {
        assert_eq!(failure(&wat(m), &lim).to_string(), message, "{m}");
    }

    // Past the memory's own maximum, or the address space, memory.grow returns -1 (then this
    // module exits with the code it got back + 2, so -1 exits 1).
    for delta in ["2", "0x10001", "-1"] {
        let m = format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1 2)
                (func (export "_start") (call $exit (i32.add (i32.const 2) (memory.grow (i32.const {delta}))))))"#
        );
        let err = failure(&wat(&m), &lim);
        assert!(
            matches!(err, WasmError::Exit { code: 1, .. }),
            "{delta}: {err:?}"
        );
    }

    // Refused before running, with the same words.
    let refused = [
        (
            "definitely not wasm".as_bytes().to_vec(),
            FailureKind::InvalidModule,
        ),
        (b"\0asm\x01\0\0\0\x05".to_vec(), FailureKind::InvalidModule),
        (
            wat(r#"(module (func $s) (start $s) (func (export "_start")))"#),
            FailureKind::InvalidModule,
        ),
        (
            wat(r#"(module (func (export "_start") (drop (i32x4.splat (i32.const 1)))))"#),
            FailureKind::InvalidModule,
        ),
        (
            wat(r#"(module (memory 1) (memory 1) (func (export "_start")))"#),
            FailureKind::InvalidModule,
        ),
        (
            wat(r#"(module (global externref (ref.null extern)) (func (export "_start")))"#),
            FailureKind::InvalidModule,
        ),
        (
            wat(r#"(module (memory 1 1 shared) (func (export "_start")))"#),
            FailureKind::InvalidModule,
        ),
        (
            wat(r#"(module (import "env" "f" (func)) (func (export "_start")))"#),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(
                r#"(module (import "wasi_snapshot_preview1" "path_open" (func)) (func (export "_start")))"#,
            ),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32) (result i32))) (func (export "_start")))"#,
            ),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(r#"(module (import "env" "memory" (memory 1)) (func (export "_start")))"#),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(r#"(module (import "env" "g" (global i32)) (func (export "_start")))"#),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(r#"(module (import "env" "t" (table 1 funcref)) (func (export "_start")))"#),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(
                r#"(module (import "ambient:meter" "refuel" (func (param i64) (result i64))) (func (export "_start")))"#,
            ),
            FailureKind::UnsupportedImport,
        ),
        (
            wat(r#"(module (func (export "main")))"#),
            FailureKind::NoEntryPoint,
        ),
        (
            wat(r#"(module (func (export "_start") (result i32) (i32.const 0)))"#),
            FailureKind::NoEntryPoint,
        ),
        (
            wat(
                r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32))) (export "_start" (func $e)))"#,
            ),
            FailureKind::NoEntryPoint,
        ),
        (
            wat(r#"(module (global (export "_start") i32 (i32.const 0)))"#),
            FailureKind::NoEntryPoint,
        ),
    ];
    for (wasm, want) in refused {
        assert_eq!(
            failure(&wasm, &lim).kind(),
            want,
            "{:?}",
            String::from_utf8_lossy(&wasm)
        );
    }
}

#[test]
fn floats_are_canonical_everywhere() {
    // Writes the bits of NaNs made in several ways, and of ordinary results, as 8 hex digits.
    let m = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (global $p (mut i32) (i32.const 1024))
        (func $hex32 (param $v i32) (local $i i32)
          (loop $l
            (i32.store8 (global.get $p) (i32.load8_u offset=0 (i32.and (i32.shr_u (local.get $v) (i32.const 28)) (i32.const 15))))
            (global.set $p (i32.add (global.get $p) (i32.const 1)))
            (local.set $v (i32.shl (local.get $v) (i32.const 4)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get $i) (i32.const 8))))
          (i32.store8 (global.get $p) (i32.const 32))
          (global.set $p (i32.add (global.get $p) (i32.const 1))))
        (func $hex64 (param $v i64)
          (call $hex32 (i32.wrap_i64 (i64.shr_u (local.get $v) (i64.const 32))))
          (call $hex32 (i32.wrap_i64 (local.get $v))))
        (data (i32.const 0) "0123456789abcdef")
        (func (export "_start")
          (call $hex32 (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
          (call $hex32 (i32.reinterpret_f32 (f32.sqrt (f32.const -1))))
          (call $hex32 (i32.reinterpret_f32 (f32.add (f32.const -nan:0x1234) (f32.const 1))))
          (call $hex32 (i32.reinterpret_f32 (f32.demote_f64 (f64.const -nan:0x8000000000001))))
          (call $hex64 (i64.reinterpret_f64 (f64.div (f64.const 0) (f64.const 0))))
          (call $hex64 (i64.reinterpret_f64 (f64.mul (f64.const -nan:0x4) (f64.const 2))))
          (call $hex64 (i64.reinterpret_f64 (f64.promote_f32 (f32.const -nan:0x7))))
          (call $hex64 (i64.reinterpret_f64 (f64.min (f64.const -0) (f64.const 0))))
          (call $hex64 (i64.reinterpret_f64 (f64.nearest (f64.const 2.5))))
          (call $hex32 (i32.reinterpret_f32 (f32.neg (f32.const -nan:0x1234))))
          (i32.store (i32.const 16) (i32.const 1024))
          (i32.store (i32.const 20) (i32.sub (global.get $p) (i32.const 1024)))
          (drop (call $w (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#);
    let out = stdout(&m, "");
    assert_eq!(
        out,
        "7fc00000 7fc00000 7fc00000 7fc00000 7ff80000 00000000 7ff80000 00000000 \
         7ff80000 00000000 80000000 00000000 40000000 00000000 7f801234 ",
        "canonical NaNs; neg only flips the sign bit"
    );
}

#[test]
fn the_metered_stack_ends_recursion_at_the_same_depth_everywhere() {
    // $f recurses n times with `extra` i64 locals live across each call; the deepest n that
    // fits follows from the frame weights, on both engines.
    let run = |extra: u32, n: u32| {
        let locals: String = (0..extra).map(|i| format!("(local $l{i} i64)")).collect();
        let sets: String = (0..extra)
            .map(|i| format!("(local.set $l{i} (i64.extend_i32_u (local.get $n)))"))
            .collect();
        let sum: String = (0..extra)
            .map(|i| format!("(global.set $acc (i64.add (global.get $acc) (local.get $l{i})))"))
            .collect();
        let m = format!(
            r#"(module (memory (export "memory") 1) (global $acc (mut i64) (i64.const 0))
                (func $f (param $n i32) {locals} {sets}
                  (if (local.get $n) (then (call $f (i32.sub (local.get $n) (i32.const 1)))))
                  {sum})
                (func (export "_start") (call $f (i32.const {n}))))"#
        );
        run_everywhere(&wat(&m), b"", &limits())
    };
    for extra in [0, 40, 300] {
        // $f: FRAME_BASE + (1 + extra) locals + a height of 2; `_start`: FRAME_BASE + 1.
        let frame = FRAME_BASE + 1 + extra + 2;
        let frames = (STACK_UNITS - (FRAME_BASE + 1)) / frame;
        let deepest = frames - 1;
        run(extra, deepest).unwrap_or_else(|e| panic!("{extra} locals, n = {deepest}: {e:?}"));
        let err = run(extra, deepest + 1).expect_err("one frame too many");
        assert!(
            matches!(&err, WasmError::Trap(m) if m == "call stack exhausted"),
            "{err:?}"
        );
    }
}
