//! The bundled WASI kernels (`cli/wasm/*.wat`) under a host that reads and writes short: each
//! `fd_read` and `fd_write` call moves at most a few bytes of the first iovec only, as a standard
//! WASI runtime may. A kernel that ignored the count written would print a truncated result.

use ambient_cli::modules::{self, BUSY_OUTPUT, BUSY_WAT, PI_WAT, SUM_WAT};
use wasmi::{Caller, Engine, Linker, Module, Store};

/// The host's state: stdin and how far it was read, stdout, bytes per call, write calls made.
struct Host {
    stdin: Vec<u8>,
    pos: usize,
    stdout: Vec<u8>,
    chunk: usize,
    writes: usize,
}

/// The first iovec at `iovs`: (pointer, length).
fn first_iovec(caller: &Caller<'_, Host>, mem: &wasmi::Memory, iovs: i32) -> (usize, usize) {
    let mut iov = [0u8; 8];
    mem.read(caller, iovs as usize, &mut iov).unwrap();
    (
        u32::from_le_bytes(iov[..4].try_into().unwrap()) as usize,
        u32::from_le_bytes(iov[4..].try_into().unwrap()) as usize,
    )
}

/// Runs `wat` with `stdin`, `chunk` bytes at most per call; stdout and the write calls made.
fn run(wat: &str, stdin: &str, chunk: usize) -> (String, usize) {
    let engine = Engine::default();
    let module = Module::new(&engine, &modules::wasm(wat)[..]).unwrap();
    let host = Host {
        stdin: stdin.as_bytes().to_vec(),
        pos: 0,
        stdout: Vec::new(),
        chunk,
        writes: 0,
    };
    let mut store = Store::new(&engine, host);
    let mut linker = Linker::new(&engine);
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "fd_read",
            |mut caller: Caller<'_, Host>, fd: i32, iovs: i32, n: i32, nread: i32| -> i32 {
                assert_eq!(fd, 0);
                let mem = caller.get_export("memory").unwrap().into_memory().unwrap();
                let (ptr, len) = if n > 0 {
                    first_iovec(&caller, &mem, iovs)
                } else {
                    (0, 0)
                };
                let h = caller.data();
                let take = len.min(h.chunk).min(h.stdin.len() - h.pos);
                let bytes = h.stdin[h.pos..h.pos + take].to_vec();
                caller.data_mut().pos += take;
                mem.write(&mut caller, ptr, &bytes).unwrap();
                mem.write(&mut caller, nread as usize, &(take as u32).to_le_bytes())
                    .unwrap();
                0
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "wasi_snapshot_preview1",
            "fd_write",
            |mut caller: Caller<'_, Host>, fd: i32, iovs: i32, n: i32, nwritten: i32| -> i32 {
                assert_eq!(fd, 1);
                let mem = caller.get_export("memory").unwrap().into_memory().unwrap();
                let (ptr, len) = if n > 0 {
                    first_iovec(&caller, &mem, iovs)
                } else {
                    (0, 0)
                };
                let take = len.min(caller.data().chunk);
                let mut bytes = vec![0u8; take];
                mem.read(&caller, ptr, &mut bytes).unwrap();
                let h = caller.data_mut();
                h.stdout.extend_from_slice(&bytes);
                h.writes += 1;
                mem.write(&mut caller, nwritten as usize, &(take as u32).to_le_bytes())
                    .unwrap();
                0
            },
        )
        .unwrap();
    let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
    instance
        .get_typed_func::<(), ()>(&store, "_start")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    let h = store.into_data();
    (String::from_utf8(h.stdout).unwrap(), h.writes)
}

#[test]
fn kernels_print_whole_results_through_short_writes() {
    let input = r#"{"numbers":[1,22,333,4444,55555]}"#;
    let sum = format!(r#"{{"sum":{}}}"#, modules::expected_sum(input));
    let pi_input = r#"{"end":20000,"shard":1,"start":500}"#;
    let pi = format!(
        r#"{{"hits":{},"samples":19500}}"#,
        modules::expected_pi_hits(500, 20000)
    );
    for chunk in [1, 3, 1 << 16] {
        let (out, writes) = run(SUM_WAT, input, chunk);
        assert_eq!(out, sum, "sum.wat, {chunk} bytes per call");
        // One iovec per call at most: the prefix, the digits and the suffix take 3 calls or more.
        assert!(
            writes >= 3.max(sum.len().div_ceil(chunk)),
            "{writes} writes"
        );
        let (out, _) = run(PI_WAT, pi_input, chunk);
        assert_eq!(out, pi, "pi.wat, {chunk} bytes per call");
    }
    let (out, writes) = run(BUSY_WAT, "", 2);
    assert_eq!(out, format!(r#"{{"sum":{BUSY_OUTPUT}}}"#));
    assert!(writes >= out.len().div_ceil(2), "{writes} writes");
}
