//! The WebAssembly modules the demo, the tests and the benchmark run, built from WAT in
//! `cli/wasm/` with the `wat` crate.

/// `sum.wat`: sums every unsigned integer in its input text and prints `{"sum":N}`.
pub const SUM_WAT: &str = include_str!("../wasm/sum.wat");
/// `spin.wat`: an infinite loop.
pub const SPIN_WAT: &str = include_str!("../wasm/spin.wat");
/// `memory_bomb.wat`: grows memory for ever.
pub const MEMORY_BOMB_WAT: &str = include_str!("../wasm/memory_bomb.wat");

/// `busy.wat`: sums 0..300 000 000, about a second of work; prints `{"sum":44999999850000000}`.
pub const BUSY_WAT: &str = include_str!("../wasm/busy.wat");
/// What `busy.wat` prints.
pub const BUSY_OUTPUT: u64 = 300_000_000u64 * (300_000_000 - 1) / 2;

/// `pi.wat`: the Monte Carlo π kernel of sharded computations; prints `{"hits":H,"samples":N}`
/// for its range shard.
pub const PI_WAT: &str = include_str!("../wasm/pi.wat");

/// What `pi.wat` counts for sample indices `[start, end)`, done in Rust.
pub fn expected_pi_hits(start: u64, end: u64) -> u64 {
    (start..end)
        .filter(|&i| {
            let mut z = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let (x, y) = (z >> 32, z & 0xffff_ffff);
            x * x <= !(y * y)
        })
        .count() as u64
}

/// Compiles WAT text to a wasm binary.
pub fn wasm(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).unwrap_or_else(|e| panic!("bundled WAT does not compile: {e}"))
}

/// What `sum.wat` computes, done in Rust: the reference a test or the demo checks against.
pub fn expected_sum(input: &str) -> u64 {
    input
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap_or(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_compile() {
        for m in [SUM_WAT, SPIN_WAT, MEMORY_BOMB_WAT, BUSY_WAT, PI_WAT] {
            assert!(wasm(m).starts_with(b"\0asm"));
        }
        assert_eq!(expected_sum(r#"{"numbers":[1,22,333]}"#), 356);
    }

    /// The kernels print what the Rust references compute, under the agent's executor.
    #[test]
    fn kernels_print_the_reference_results() {
        use ambient_agent::exec::wasm::{WasmLimits, WasmSandbox};
        use std::sync::atomic::AtomicBool;
        let sandbox = WasmSandbox::new(0);
        let limits = WasmLimits {
            fuel: 10_000_000_000,
            max_memory_bytes: 1 << 20,
            max_output_bytes: 1 << 10,
            wall_clock: std::time::Duration::from_secs(120),
        };
        let run = |wat: &str, stdin: &str| {
            let out = sandbox
                .run(
                    &wasm(wat),
                    stdin.as_bytes(),
                    &limits,
                    &AtomicBool::new(false),
                )
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        let input = r#"{"numbers":[1,22,333,4444]}"#;
        assert_eq!(
            run(SUM_WAT, input),
            format!(r#"{{"sum":{}}}"#, expected_sum(input))
        );
        assert_eq!(
            run(PI_WAT, r#"{"end":12345,"shard":3,"start":100}"#),
            format!(
                r#"{{"hits":{},"samples":12245}}"#,
                expected_pi_hits(100, 12345)
            )
        );
        assert_eq!(run(BUSY_WAT, ""), format!(r#"{{"sum":{BUSY_OUTPUT}}}"#));
    }
}
