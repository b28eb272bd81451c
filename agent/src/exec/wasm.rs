//! Sandboxed execution of `wasm_execution` tasks on the [`wasmi`] interpreter.
//!
//! A task is a WebAssembly binary that follows the WASI preview1 *command* ABI: it exports
//! `_start` (taking and returning nothing) and `memory`. The task's input bytes are its stdin and
//! its result is what it writes to stdout.
//!
//! # What a module may do
//!
//! - Import functions from `wasi_snapshot_preview1`, and only these: `fd_read` (fd 0),
//!   `fd_write` (fds 1 and 2), `fd_fdstat_get`, `fd_close`, `fd_seek`, `fd_prestat_get`,
//!   `fd_prestat_dir_name`, `args_sizes_get`, `args_get`, `environ_sizes_get`, `environ_get`,
//!   `proc_exit`, `random_get`, `clock_time_get`, `clock_res_get`, `sched_yield`, `poll_oneoff`.
//!   Any other import (another function, another module, an imported memory, table or global) is
//!   refused before anything runs ([`WasmError::UnsupportedImport`]).
//! - Use one linear memory up to [`WasmLimits::max_memory_bytes`] (tables count against the same
//!   guard). A `memory.grow` past the cap traps instead of returning -1, so the outcome is always
//!   [`WasmError::MemoryLimit`].
//!
//! # What it may not do
//!
//! - Touch a filesystem (there are no preopens), the network, the clock or randomness: those calls
//!   answer `ENOSYS`/`EBADF`, so a run is a pure function of (module, stdin) and re-running it
//!   elsewhere gives the same output and the same [`WasmOutput::fuel_consumed`].
//! - Have arguments or environment variables (both are empty).
//! - Carry a wasm `start` section: only `_start` runs, so every instruction is interruptible.
//! - Run past its fuel ([`WasmError::OutOfFuel`]), its wall clock ([`WasmError::WallClock`]),
//!   its output cap ([`WasmError::OutputTooLarge`], stdout and stderr together) or a cancel
//!   request ([`WasmError::Cancelled`]). Execution runs in fuel slices of [`FUEL_SLICE`] through
//!   wasmi's resumable calls; the clock and the cancel flag are checked between slices. Slicing
//!   does not change fuel accounting: the run stops at exactly the same instruction as a single
//!   call given the whole budget.
//!
//! Guest pointers are bounds-checked; a bad one makes the call return `EFAULT`, never a host panic.
//! Modules are compiled eagerly (lazy compilation would charge translation fuel on the first run
//! only) and cached by the SHA-256 of their bytes.
//!
//! Build note: wasmi dispatches by tail calls, which LLVM only turns into jumps when wasmi is built
//! optimised *and* without debug assertions. Otherwise every executed instruction adds a native
//! stack frame and a long loop overflows the thread's stack (the process aborts), so dev/test
//! profiles need `[profile.dev.package.wasmi] debug-assertions = false`.

use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};
use wasmi::{
    Caller, CompilationMode, Config, Engine, Error, ExternType, IntoFunc, Linker, Memory, Module,
    Store, StoreLimits, StoreLimitsBuilder, TrapCode, TypedResumableCall, ValType,
    errors::{ErrorKind, InstantiationError, MemoryError, TableError},
};

use ambient_protocol::FailureKind;

/// Fuel handed to the interpreter per slice; the wall clock and cancel flag are checked between
/// slices. wasmi burns roughly 1-4 G fuel/s in release builds, so a slice is a few milliseconds.
pub const FUEL_SLICE: u64 = 10_000_000;

/// How much of stderr [`WasmError::Exit`] keeps (the tail).
const STDERR_TAIL: usize = 1024;

/// Most `iovec`s accepted by one `fd_read`/`fd_write` (POSIX `IOV_MAX`).
const IOV_MAX: u32 = 1024;

const WASI: &str = "wasi_snapshot_preview1";
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ESPIPE: i32 = 70;

/// The supported imports and their signatures: `i` = i32, `I` = i64, results after `:`.
const WASI_IMPORTS: &[(&str, &str)] = &[
    ("args_get", "ii:i"),
    ("args_sizes_get", "ii:i"),
    ("environ_get", "ii:i"),
    ("environ_sizes_get", "ii:i"),
    ("clock_res_get", "ii:i"),
    ("clock_time_get", "iIi:i"),
    ("fd_close", "i:i"),
    ("fd_fdstat_get", "ii:i"),
    ("fd_prestat_get", "ii:i"),
    ("fd_prestat_dir_name", "iii:i"),
    ("fd_read", "iiii:i"),
    ("fd_seek", "iIii:i"),
    ("fd_write", "iiii:i"),
    ("poll_oneoff", "iiii:i"),
    ("proc_exit", "i:"),
    ("random_get", "ii:i"),
    ("sched_yield", ":i"),
];

/// Resource limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimits {
    /// Fuel budget (roughly one unit per executed instruction); deterministic across machines.
    pub fuel: u64,
    /// Cap on linear memory, in bytes (also applied to table elements).
    pub max_memory_bytes: usize,
    /// Cap on stdout and stderr together, in bytes.
    pub max_output_bytes: usize,
    /// Wall-clock budget for the whole run, compilation included.
    pub wall_clock: Duration,
}

/// What a successful run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmOutput {
    /// Bytes written to fd 1: the task's result.
    pub stdout: Vec<u8>,
    /// Bytes written to fd 2 (diagnostics).
    pub stderr: Vec<u8>,
    /// Fuel spent, instantiation included.
    pub fuel_consumed: u64,
    /// Lower-case hex SHA-256 of the module bytes.
    pub module_sha256: String,
}

/// Why a module was refused or a run failed.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// Not a valid WebAssembly binary (or it uses a refused feature such as a `start` section).
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module imports something the sandbox does not provide.
    #[error("unsupported import {module}.{name}")]
    UnsupportedImport {
        /// Import module name.
        module: String,
        /// Import field name.
        name: String,
    },
    /// No `_start: () -> ()` export.
    #[error("module has no `_start` function taking and returning nothing")]
    NoEntryPoint,
    /// The fuel budget ran out.
    #[error("out of fuel (budget {fuel})")]
    OutOfFuel {
        /// The budget that was exhausted.
        fuel: u64,
    },
    /// The module tried to use more memory than allowed.
    #[error("memory limit of {limit_bytes} bytes exceeded")]
    MemoryLimit {
        /// The cap in bytes.
        limit_bytes: usize,
    },
    /// The module trapped (unreachable, out-of-bounds access, stack overflow, ...).
    #[error("trap: {0}")]
    Trap(String),
    /// The module called `proc_exit` with a non-zero code.
    #[error("exited with code {code}")]
    Exit {
        /// The exit code.
        code: i32,
        /// The last ~1 KiB of stderr, lossily decoded as UTF-8.
        stderr: String,
    },
    /// The wall-clock budget ran out.
    #[error("wall-clock limit of {limit:?} exceeded")]
    WallClock {
        /// The budget that was exceeded.
        limit: Duration,
    },
    /// The caller's cancel flag was set.
    #[error("cancelled")]
    Cancelled,
    /// stdout plus stderr would exceed the cap.
    #[error("output exceeds {limit} bytes")]
    OutputTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
}

impl WasmError {
    /// Stable snake_case code for reports and metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::InvalidModule(_) => FailureKind::InvalidModule,
            Self::UnsupportedImport { .. } => FailureKind::UnsupportedImport,
            Self::NoEntryPoint => FailureKind::NoEntryPoint,
            Self::OutOfFuel { .. } => FailureKind::OutOfFuel,
            Self::MemoryLimit { .. } => FailureKind::MemoryLimit,
            Self::Trap(_) => FailureKind::Trap,
            Self::Exit { .. } => FailureKind::Exit,
            Self::WallClock { .. } => FailureKind::WallClock,
            Self::Cancelled => FailureKind::Cancelled,
            Self::OutputTooLarge { .. } => FailureKind::OutputTooLarge,
        }
    }
}

/// Runs WASI command modules under fuel, memory, output and time limits.
///
/// Holds one fuel-metering engine, the WASI linker and a bounded cache of compiled modules.
/// It is `Send + Sync`; share it behind an `Arc` and call [`WasmSandbox::run`] from blocking threads.
pub struct WasmSandbox {
    engine: Engine,
    linker: Linker<Host>,
    cache: Mutex<Cache>,
    capacity: usize,
}

#[derive(Default)]
struct Cache {
    modules: HashMap<String, (Module, u64)>,
    tick: u64,
}

impl WasmSandbox {
    /// Creates a sandbox caching up to `cache_capacity` compiled modules (0 disables the cache).
    pub fn new(cache_capacity: usize) -> Self {
        let engine = Engine::new(&engine_config());
        let linker = wasi_linker(&engine);
        Self {
            engine,
            linker,
            cache: Mutex::default(),
            capacity: cache_capacity,
        }
    }

    /// Runs `module` with `stdin` as its input until `_start` returns or calls `proc_exit(0)`.
    ///
    /// Blocking: callers run it on a blocking thread. Setting `cancel` stops the run within one
    /// fuel slice.
    pub fn run(
        &self,
        module: &[u8],
        stdin: &[u8],
        limits: &WasmLimits,
        cancel: &AtomicBool,
    ) -> Result<WasmOutput, WasmError> {
        self.run_paced(module, stdin, limits, cancel, &AtomicU32::new(100))
    }

    /// [`WasmSandbox::run`] under a duty cycle: after each fuel slice the thread sleeps so that it
    /// computes at most `duty_pct` percent (1–100, read before every slice, so it may change
    /// during the run) of the wall-clock time. Time spent sleeping does not count against
    /// [`WasmLimits::wall_clock`], and fuel accounting is unchanged.
    pub fn run_paced(
        &self,
        module: &[u8],
        stdin: &[u8],
        limits: &WasmLimits,
        cancel: &AtomicBool,
        duty_pct: &AtomicU32,
    ) -> Result<WasmOutput, WasmError> {
        let started = Instant::now();
        if cancel.load(Ordering::Relaxed) {
            return Err(WasmError::Cancelled);
        }
        let (module, module_sha256) = self.module(module)?;
        let limiter = StoreLimitsBuilder::new()
            .memory_size(limits.max_memory_bytes)
            .table_elements(limits.max_memory_bytes / 8)
            .instances(1)
            .memories(1)
            .tables(16)
            .trap_on_grow_failure(true)
            .build();
        let host = Host {
            stdin: stdin.to_vec(),
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output: limits.max_output_bytes,
            limiter,
            abort: None,
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limiter);
        let pace = Pace {
            duty_pct,
            cancel,
            slept: Duration::ZERO,
        };
        let result = self.execute(&mut store, &module, limits, pace, started);
        tracing::debug!(
            module = %module_sha256,
            outcome = %result.as_ref().map_or_else(|e| e.kind().to_string(), |_| "ok".into()),
            elapsed_ms = started.elapsed().as_millis(),
            "wasm run finished"
        );
        let fuel_consumed = result?;
        let host = store.into_data();
        Ok(WasmOutput {
            stdout: host.stdout,
            stderr: host.stderr,
            fuel_consumed,
            module_sha256,
        })
    }

    /// Instantiates `module` and drives `_start` in fuel slices; returns the fuel consumed.
    fn execute(
        &self,
        store: &mut Store<Host>,
        module: &Module,
        limits: &WasmLimits,
        mut pace: Pace<'_>,
        started: Instant,
    ) -> Result<u64, WasmError> {
        let cancel = pace.cancel;
        let internal = |e: Error| WasmError::Trap(e.to_string());
        // Fuel not yet handed to the store; the store never holds more than about one slice.
        let mut reserve = limits.fuel;
        let first = reserve.min(FUEL_SLICE);
        reserve -= first;
        store.set_fuel(first).map_err(internal)?;
        let instance = match self.linker.instantiate_and_start(&mut *store, module) {
            Ok(instance) => instance,
            Err(e) => {
                return Err(match classify(&e, store.data_mut(), limits) {
                    Some(err @ (WasmError::MemoryLimit { .. } | WasmError::OutOfFuel { .. })) => {
                        err
                    }
                    _ => WasmError::InvalidModule(e.to_string()),
                });
            }
        };
        let start = instance
            .get_typed_func::<(), ()>(&*store, "_start")
            .map_err(|_| WasmError::NoEntryPoint)?;
        let mut slice_started = Instant::now();
        let mut call = start.call_resumable(&mut *store, ());
        loop {
            let resumable = match call {
                Ok(TypedResumableCall::Finished(())) => break,
                Ok(TypedResumableCall::OutOfFuel(resumable)) => resumable,
                // Our host functions only fail to stop the guest (exit, output cap).
                Ok(TypedResumableCall::HostTrap(trap)) => {
                    match classify(trap.host_error(), store.data_mut(), limits) {
                        None => break,
                        Some(err) => return Err(err),
                    }
                }
                Err(e) => match classify(&e, store.data_mut(), limits) {
                    None => break,
                    Some(err) => return Err(err),
                },
            };
            // The store holds `have` < `required_fuel`; a single call with the whole budget
            // would trap here exactly when the reserve cannot cover the difference.
            let have = store.get_fuel().map_err(internal)?;
            let need = resumable.required_fuel().saturating_sub(have);
            if reserve == 0 || reserve < need {
                return Err(WasmError::OutOfFuel { fuel: limits.fuel });
            }
            pace.rest(slice_started.elapsed());
            if cancel.load(Ordering::Relaxed) {
                return Err(WasmError::Cancelled);
            }
            if started.elapsed().saturating_sub(pace.slept) >= limits.wall_clock {
                return Err(WasmError::WallClock {
                    limit: limits.wall_clock,
                });
            }
            let add = need.max(FUEL_SLICE).min(reserve);
            reserve -= add;
            store.set_fuel(have + add).map_err(internal)?;
            slice_started = Instant::now();
            call = resumable.resume(&mut *store);
        }
        let left = store.get_fuel().map_err(internal)?;
        Ok(limits.fuel - reserve - left)
    }

    /// Number of compiled modules currently cached.
    pub fn cached_modules(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .modules
            .len()
    }

    /// Returns the compiled module for `bytes` and its hex SHA-256, compiling it on a cache miss.
    fn module(&self, bytes: &[u8]) -> Result<(Module, String), WasmError> {
        let sha = hex::encode(Sha256::digest(bytes));
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.tick += 1;
            let tick = cache.tick;
            if let Some((module, used)) = cache.modules.get_mut(&sha) {
                *used = tick;
                return Ok((module.clone(), sha));
            }
        }
        // Compile outside the lock: it can take a while for a big module.
        let module = compile(&self.engine, bytes)?;
        if self.capacity > 0 {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            while cache.modules.len() >= self.capacity {
                let oldest = cache.modules.iter().min_by_key(|(_, (_, used))| *used);
                let Some(oldest) = oldest.map(|(key, _)| key.clone()) else {
                    break;
                };
                cache.modules.remove(&oldest);
            }
            let tick = cache.tick;
            cache.modules.insert(sha.clone(), (module.clone(), tick));
        }
        Ok((module, sha))
    }
}

/// The duty cycle of one run.
struct Pace<'a> {
    duty_pct: &'a AtomicU32,
    cancel: &'a AtomicBool,
    slept: Duration,
}

impl Pace<'_> {
    /// After a slice that computed for `ran`, sleeps `ran × (100 − duty) / duty`, in short naps
    /// that watch the cancel flag.
    fn rest(&mut self, ran: Duration) {
        let duty = self.duty_pct.load(Ordering::Relaxed).clamp(1, 100);
        if duty == 100 {
            return;
        }
        let until = Instant::now() + ran * (100 - duty) / duty;
        let start = Instant::now();
        while !self.cancel.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
        self.slept += start.elapsed();
    }
}

impl std::fmt::Debug for WasmSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSandbox")
            .field("cached_modules", &self.cached_modules())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Fuel metering on, eager compilation (fuel must not depend on cache state), no `start` section.
fn engine_config() -> Config {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .allow_start_fn(false);
    config
}

/// Compiles `bytes` and checks its imports and entry point.
fn compile(engine: &Engine, bytes: &[u8]) -> Result<Module, WasmError> {
    // wasmi's default `wat` feature would otherwise accept the text format as well.
    if !bytes.starts_with(b"\0asm") {
        return Err(WasmError::InvalidModule("not a WebAssembly binary".into()));
    }
    let module = Module::new(engine, bytes).map_err(|e| WasmError::InvalidModule(e.to_string()))?;
    for import in module.imports() {
        let signature = WASI_IMPORTS.iter().find(|(name, _)| *name == import.name());
        let supported = match (import.ty(), signature) {
            (ExternType::Func(ty), Some((_, signature))) if import.module() == WASI => {
                let (params, results) = signature.split_once(':').unwrap_or_default();
                let types = |s: &str| -> Vec<ValType> {
                    s.chars()
                        .map(|c| if c == 'I' { ValType::I64 } else { ValType::I32 })
                        .collect()
                };
                ty.params() == types(params) && ty.results() == types(results)
            }
            _ => false,
        };
        if !supported {
            return Err(WasmError::UnsupportedImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    match module.get_export("_start") {
        Some(ExternType::Func(ty)) if ty.params().is_empty() && ty.results().is_empty() => {
            Ok(module)
        }
        _ => Err(WasmError::NoEntryPoint),
    }
}

/// Maps a wasmi error to the sandbox's error; `None` means a clean `proc_exit(0)`.
fn classify(error: &Error, host: &mut Host, limits: &WasmLimits) -> Option<WasmError> {
    if let Some(abort) = host.abort.take() {
        return Some(abort);
    }
    if let Some(code) = error.i32_exit_status() {
        if code == 0 {
            return None;
        }
        let tail = &host.stderr[host.stderr.len().saturating_sub(STDERR_TAIL)..];
        return Some(WasmError::Exit {
            code,
            stderr: String::from_utf8_lossy(tail).into_owned(),
        });
    }
    // A memory or table whose initial size is over the cap fails instantiation.
    let memory_denied = matches!(
        error.kind(),
        ErrorKind::Memory(MemoryError::ResourceLimiterDeniedAllocation)
            | ErrorKind::Instantiation(
                InstantiationError::FailedToInstantiateMemory(
                    MemoryError::ResourceLimiterDeniedAllocation
                ) | InstantiationError::FailedToInstantiateTable(
                    TableError::ResourceLimiterDeniedAllocation
                )
            )
    );
    Some(match error.as_trap_code() {
        _ if memory_denied => WasmError::MemoryLimit {
            limit_bytes: limits.max_memory_bytes,
        },
        Some(TrapCode::GrowthOperationLimited) => WasmError::MemoryLimit {
            limit_bytes: limits.max_memory_bytes,
        },
        Some(TrapCode::OutOfFuel) => WasmError::OutOfFuel { fuel: limits.fuel },
        _ => WasmError::Trap(error.to_string()),
    })
}

/// Per-run state of the guest's WASI world.
struct Host {
    stdin: Vec<u8>,
    stdin_pos: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    max_output: usize,
    limiter: StoreLimits,
    /// Set by a host function that stops the guest for a reason wasmi cannot express.
    abort: Option<WasmError>,
}

/// Builds the `wasi_snapshot_preview1` linker. Every name in [`WASI_IMPORTS`] is defined here.
fn wasi_linker(engine: &Engine) -> Linker<Host> {
    type C<'a> = Caller<'a, Host>;
    fn def<P, R>(linker: &mut Linker<Host>, name: &str, func: impl IntoFunc<Host, P, R>) {
        // Cannot fail: shadowing is allowed, so a duplicate name would replace, not error.
        let _ = linker.func_wrap(WASI, name, func);
    }
    let mut l = Linker::new(engine);
    l.allow_shadowing(true);
    def(
        &mut l,
        "fd_read",
        |c: C, fd: i32, iovs: i32, n: i32, out: i32| errno(fd_read(c, fd, iovs, n, out)),
    );
    def(&mut l, "fd_write", fd_write);
    def(
        &mut l,
        "proc_exit",
        |_: C, code: i32| -> Result<(), Error> { Err(Error::i32_exit(code)) },
    );
    for name in ["args_sizes_get", "environ_sizes_get"] {
        def(&mut l, name, |mut c: C, count: i32, size: i32| {
            errno(with_memory(&mut c, |mem, _| {
                write_bytes(mem, count, &0u32.to_le_bytes())?;
                write_bytes(mem, size, &0u32.to_le_bytes())
            }))
        });
    }
    for name in ["args_get", "environ_get"] {
        def(&mut l, name, |_: C, _: i32, _: i32| SUCCESS);
    }
    def(&mut l, "fd_fdstat_get", |mut c: C, fd: i32, out: i32| {
        // fdstat: filetype u8 (2 = character_device), flags u16 @2, rights u64 @8 and @16.
        let rights: u64 = match fd {
            0 => 1 << 1,     // fd_read
            1 | 2 => 1 << 6, // fd_write
            _ => return EBADF,
        };
        let mut stat = [0u8; 24];
        stat[0] = 2;
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        errno(with_memory(&mut c, |mem, _| write_bytes(mem, out, &stat)))
    });
    def(&mut l, "fd_close", |_: C, fd: i32| {
        if (0..=2).contains(&fd) {
            SUCCESS
        } else {
            EBADF
        }
    });
    def(
        &mut l,
        "fd_seek",
        |_: C, fd: i32, _: i64, _: i32, _: i32| {
            if (0..=2).contains(&fd) { ESPIPE } else { EBADF }
        },
    );
    def(&mut l, "fd_prestat_get", |_: C, _: i32, _: i32| EBADF);
    def(
        &mut l,
        "fd_prestat_dir_name",
        |_: C, _: i32, _: i32, _: i32| EBADF,
    );
    def(&mut l, "random_get", |_: C, _: i32, _: i32| ENOSYS);
    def(&mut l, "clock_res_get", |_: C, _: i32, _: i32| ENOSYS);
    def(&mut l, "clock_time_get", |_: C, _: i32, _: i64, _: i32| {
        ENOSYS
    });
    def(
        &mut l,
        "poll_oneoff",
        |_: C, _: i32, _: i32, _: i32, _: i32| ENOSYS,
    );
    def(&mut l, "sched_yield", |_: C| SUCCESS);
    l
}

/// Turns a host-call result into the errno returned to the guest.
fn errno(result: Result<(), i32>) -> i32 {
    result.err().unwrap_or(SUCCESS)
}

/// Runs `f` on the guest's exported `memory` and the host state; `EFAULT` without a memory.
fn with_memory<R>(
    caller: &mut Caller<'_, Host>,
    f: impl FnOnce(&mut [u8], &mut Host) -> Result<R, i32>,
) -> Result<R, i32> {
    let memory: Memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or(EFAULT)?;
    let (mem, host) = memory.data_and_store_mut(caller);
    f(mem, host)
}

/// The guest range `[ptr, ptr + len)`, or `EFAULT` if any of it is outside memory.
fn guest_range(mem: &[u8], ptr: i32, len: usize) -> Result<std::ops::Range<usize>, i32> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len).ok_or(EFAULT)?;
    if end <= mem.len() {
        Ok(start..end)
    } else {
        Err(EFAULT)
    }
}

/// Copies `bytes` into guest memory at `ptr`.
fn write_bytes(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let range = guest_range(mem, ptr, bytes.len())?;
    mem.get_mut(range).ok_or(EFAULT)?.copy_from_slice(bytes);
    Ok(())
}

/// Writes `size` as a little-endian u32 at `ptr`.
fn write_size(mem: &mut [u8], ptr: i32, size: usize) -> Result<(), i32> {
    write_bytes(
        mem,
        ptr,
        &u32::try_from(size).map_err(|_| EINVAL)?.to_le_bytes(),
    )
}

/// Reads and bounds-checks an `iovec` array (`{buf: u32, len: u32}` each).
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<std::ops::Range<usize>>, i32> {
    let count = count as u32;
    if count > IOV_MAX {
        return Err(EINVAL);
    }
    let table = mem
        .get(guest_range(mem, iovs, count as usize * 8)?)
        .ok_or(EFAULT)?;
    table
        .chunks_exact(8)
        .map(|iov| {
            let &[b0, b1, b2, b3, l0, l1, l2, l3] = iov else {
                return Err(EFAULT);
            };
            let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
            guest_range(mem, i32::from_le_bytes([b0, b1, b2, b3]), len)
        })
        .collect()
}

/// `fd_read`: fills the iovecs from the rest of stdin; reads past the end return 0 bytes.
fn fd_read(
    mut caller: Caller<'_, Host>,
    fd: i32,
    iovs: i32,
    count: i32,
    nread: i32,
) -> Result<(), i32> {
    if fd != 0 {
        return Err(EBADF);
    }
    with_memory(&mut caller, |mem, host| {
        let buffers = iovecs(mem, iovs, count)?;
        guest_range(mem, nread, 4)?;
        let mut total = 0;
        for buffer in buffers {
            let input = host.stdin.get(host.stdin_pos..).unwrap_or_default();
            let n = input.len().min(buffer.len());
            let dest = mem.get_mut(buffer.start..buffer.start + n).ok_or(EFAULT)?;
            dest.copy_from_slice(input.get(..n).unwrap_or_default());
            host.stdin_pos += n;
            total += n;
            if n < buffer.len() {
                break;
            }
        }
        write_size(mem, nread, total)
    })
}

/// `fd_write`: appends the iovecs to stdout/stderr, or stops the guest past the output cap.
fn fd_write(
    mut caller: Caller<'_, Host>,
    fd: i32,
    iovs: i32,
    count: i32,
    nwritten: i32,
) -> Result<i32, Error> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let written = with_memory(&mut caller, |mem, host| {
        let buffers = iovecs(mem, iovs, count)?;
        guest_range(mem, nwritten, 4)?;
        let total: usize = buffers.iter().map(|b| b.len()).sum();
        if host.stdout.len() + host.stderr.len() + total > host.max_output {
            host.abort = Some(WasmError::OutputTooLarge {
                limit: host.max_output,
            });
            return Ok(None);
        }
        let sink = if fd == 1 {
            &mut host.stdout
        } else {
            &mut host.stderr
        };
        for buffer in buffers {
            sink.extend_from_slice(mem.get(buffer).ok_or(EFAULT)?);
        }
        write_size(mem, nwritten, total).map(|()| Some(()))
    });
    match written {
        Ok(Some(())) => Ok(SUCCESS),
        Ok(None) => Err(Error::new("output limit exceeded")),
        Err(errno) => Ok(errno),
    }
}

#[cfg(test)]
mod tests {
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

    fn module(body: &str) -> Vec<u8> {
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

    fn run(body: &str, stdin: &[u8], limits: &WasmLimits) -> Result<WasmOutput, WasmError> {
        WasmSandbox::new(4).run(&module(body), stdin, limits, &AtomicBool::new(false))
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
        let sandbox = WasmSandbox::new(4);
        let (wasm, cancel) = (module(body), AtomicBool::new(false));
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
        let err = WasmSandbox::new(1)
            .run(&module(SPIN), b"", &lim, &cancel)
            .expect_err("spins");
        handle.join().expect("setter thread");
        assert!(matches!(err, WasmError::Cancelled), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
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
        let body = r#"(memory (export "memory") 1)
            (func (export "_start") (local $i i32)
              (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
                       (br_if $l (i32.lt_u (local.get $i) (i32.const 100000000)))))"#;
        let sandbox = WasmSandbox::new(4);
        let (wasm, cancel) = (module(body), AtomicBool::new(false));
        let lim = WasmLimits {
            fuel: u64::MAX,
            // Shorter than the paced run takes: sleeping does not count against it.
            wall_clock: Duration::from_secs(60),
            ..limits()
        };
        let full = sandbox.run(&wasm, b"", &lim, &cancel).expect("run");
        let duty = AtomicU32::new(25);
        let (cpu0, t0) = (thread_cpu(), Instant::now());
        let paced = sandbox
            .run_paced(&wasm, b"", &lim, &cancel, &duty)
            .expect("paced run");
        let (cpu, wall) = (thread_cpu() - cpu0, t0.elapsed());
        assert_eq!(
            paced.fuel_consumed, full.fuel_consumed,
            "pacing changes no fuel"
        );
        assert!(
            wall >= Duration::from_millis(200),
            "too short to measure: {wall:?}"
        );
        let share = cpu.as_secs_f64() / wall.as_secs_f64();
        assert!(
            share < 0.40,
            "used {share:.2} of a core at a 25% duty cycle ({cpu:?} of {wall:?})"
        );

        // Cancelling while it sleeps stops it promptly.
        let duty = AtomicU32::new(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let setter = Arc::clone(&cancel);
        let stopper = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            setter.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let err = sandbox
            .run_paced(&module(SPIN), b"", &lim, &cancel, &duty)
            .expect_err("spins");
        let set_at = stopper.join().expect("stopper");
        assert!(matches!(err, WasmError::Cancelled), "{err:?}");
        assert!(
            set_at.elapsed() < Duration::from_millis(200),
            "{:?}",
            set_at.elapsed()
        );
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
        let go = |wasm: &[u8]| sandbox.run(wasm, b"", &limits(), &AtomicBool::new(false));
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

        let env =
            wat::parse_str(r#"(module (import "env" "foo" (func)) (func (export "_start")))"#)
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
            let wasm = wat::parse_str(format!(r#"(module {import} (func (export "_start")))"#))
                .expect("wat");
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
        assert!(compile(&sandbox.engine, &module(UPPER)).is_ok());
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
            format!(
                "(call $fd_write (i32.const {fd}) (i32.const {iovs}) (i32.const 1) (i32.const 8))"
            )
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
            .map(|(name, sig)| {
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
        let out = WasmSandbox::new(1).run(&wasm, b"", &limits(), &AtomicBool::new(false));
        assert!(out.is_ok(), "{out:?}");
    }

    #[test]
    fn caches_modules_by_hash() {
        let sandbox = WasmSandbox::new(2);
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
        let uncached = WasmSandbox::new(0);
        uncached
            .run(&module(UPPER), b"x", &limits(), &cancel)
            .expect("run");
        assert_eq!(uncached.cached_modules(), 0);
    }

    #[test]
    fn sandbox_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<WasmSandbox>();
    }
}
