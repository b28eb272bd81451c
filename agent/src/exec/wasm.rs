//! Sandboxed execution of `wasm_execution` tasks (and `computation` shards, which run as
//! `wasm_execution`) on one of two engines with one contract: the [`wasmi`] interpreter, which
//! every build has, and wasmtime's Cranelift JIT with the `wasm-jit` feature, which desktops and
//! servers build by default. The same module and stdin give the same stdout, the same failure
//! kind and message, and the same fuel on both, so replicas on either engine compare by hash.
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
//!   [`WasmError::MemoryLimit`]. A grow past the memory's own declared maximum returns -1, as the
//!   spec says.
//! - Use the Wasm proposals both engines run alike: mutable globals, sign extension, saturating
//!   conversions, multi-value, bulk memory, reference types (`funcref` only), tail calls,
//!   extended constants, memory64. Floating-point NaNs are canonicalised, so float results are
//!   the same bits everywhere. SIMD, threads, GC types and exceptions are refused
//!   ([`WasmError::InvalidModule`]).
//!
//! # What it may not do
//!
//! - Touch a filesystem (there are no preopens), the network, the clock or randomness: those calls
//!   answer `ENOSYS`/`EBADF`, so a run is a pure function of (module, stdin) and re-running it
//!   elsewhere, on either engine, gives the same output and the same
//!   [`WasmOutput::fuel_consumed`].
//! - Have arguments or environment variables (both are empty).
//! - Carry a wasm `start` section: only `_start` runs, so every instruction is interruptible.
//! - Run past its fuel ([`WasmError::OutOfFuel`]), its wall clock ([`WasmError::WallClock`]),
//!   its output cap ([`WasmError::OutputTooLarge`], stdout and stderr together), a cancel
//!   request ([`WasmError::Cancelled`]) or its stack ([`WasmError::Trap`] `call stack
//!   exhausted`). Fuel and the stack are metered by code the front end compiles into the module
//!   (`meter`), not by the engine, so they are the same on both engines: the budget is handed
//!   out in slices of [`FUEL_SLICE`], and the clock, the cancel flag and the duty cycle are
//!   checked between slices. Slicing does not change fuel accounting: a run succeeds exactly
//!   when the fuel it was charged is within its budget.
//!
//! Guest pointers are bounds-checked; a bad one makes the call return `EFAULT`, never a host panic.
//! Traps carry one message per kind on both engines (wasmi 2.0's wording). Modules are checked,
//! metered and compiled once and cached by the SHA-256 of their bytes; with the JIT, compiled
//! code can also be kept on disk ([`WasmSandbox::with_code_cache`]).
//!
//! # Layout
//! - `meter`: the front end: validation, import and entry checks, fuel and stack metering.
//! - `interp`: the wasmi engine.
//! - `jit`: the wasmtime engine (`wasm-jit`), and its on-disk code cache.
//!
//! Build note: wasmi dispatches by tail calls, which LLVM only turns into jumps when wasmi is built
//! optimised *and* without debug assertions. Otherwise every executed instruction adds a native
//! stack frame and a long loop overflows the thread's stack (the process aborts), so dev/test
//! profiles need `[profile.dev.package.wasmi] debug-assertions = false`.

/// Links the sandbox's host functions into a linker of either engine. wasmi and wasmtime spell
/// linkers, values and memories alike; they differ only in how a function type and an error are
/// made, which the caller gives: `link_host!(linker, |params, results| <FuncType>, <Error>)`.
/// The call site provides `host_functions`, `sig_kinds`, `value`, `Stopped`, `Val` and `ValType`.
macro_rules! link_host {
    ($linker:expr, |$params:ident, $results:ident| $func_type:expr, $stopped:expr) => {
        for (module, name, sig, f) in host_functions() {
            let (params, results) = sig_kinds(sig);
            let types = |wide: &[bool]| -> Vec<ValType> {
                wide.iter()
                    .map(|&w| if w { ValType::I64 } else { ValType::I32 })
                    .collect()
            };
            let ($params, $results) = (types(&params), types(&results));
            let ty = $func_type;
            let wide_result = results.first().copied();
            // Names are unique, so linking cannot fail.
            let _ = $linker.func_new(module, name, ty, move |mut caller, args, out| {
                let args: Vec<i64> = args.iter().map(value).collect();
                let memory = caller.get_export("memory").and_then(|e| e.into_memory());
                let result = match memory {
                    Some(memory) => {
                        let (mem, host) = memory.data_and_store_mut(&mut caller);
                        host.call(f, &args, Some(mem))
                    }
                    None => caller.data_mut().call(f, &args, None),
                };
                match (result, out.first_mut(), wide_result) {
                    (Err(Stopped), ..) => Err($stopped),
                    (Ok(Some(v)), Some(slot), Some(true)) => {
                        *slot = Val::I64(v);
                        Ok(())
                    }
                    (Ok(Some(v)), Some(slot), _) => {
                        *slot = Val::I32(v as i32);
                        Ok(())
                    }
                    _ => Ok(()),
                }
            });
        }
    };
}

#[cfg(test)]
mod corpus;
mod interp;
#[cfg(feature = "wasm-jit")]
mod jit;
mod meter;
#[cfg(test)]
mod tests;

use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use ambient_protocol::FailureKind;

pub use meter::{FRAME_BASE, STACK_UNITS};

/// Fuel handed to a run per slice; the wall clock, the cancel flag and the duty cycle are checked
/// between slices. The interpreter burns roughly 0.3–1 G fuel/s and the JIT 2–5 G fuel/s, so a
/// slice is a few milliseconds.
pub const FUEL_SLICE: u64 = 10_000_000;

/// How much of stderr [`WasmError::Exit`] keeps (the tail).
const STDERR_TAIL: usize = 1024;

/// `": <what stderr says>"`, or nothing when it said nothing.
fn said(stderr: &str) -> String {
    match stderr.trim() {
        "" => String::new(),
        text => format!(": {text}"),
    }
}

/// Most `iovec`s accepted by one `fd_read`/`fd_write` (POSIX `IOV_MAX`).
const IOV_MAX: u32 = 1024;

const WASI: &str = "wasi_snapshot_preview1";
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ESPIPE: i32 = 70;

/// The supported imports, their signatures (`i` = i32, `I` = i64, results after `:`) and what
/// implements them.
const WASI_IMPORTS: &[(&str, &str, Wasi)] = &[
    ("args_get", "ii:i", Wasi::Succeed),
    ("args_sizes_get", "ii:i", Wasi::ZeroSizes),
    ("environ_get", "ii:i", Wasi::Succeed),
    ("environ_sizes_get", "ii:i", Wasi::ZeroSizes),
    ("clock_res_get", "ii:i", Wasi::NoSys),
    ("clock_time_get", "iIi:i", Wasi::NoSys),
    ("fd_close", "i:i", Wasi::FdClose),
    ("fd_fdstat_get", "ii:i", Wasi::FdFdstatGet),
    ("fd_prestat_get", "ii:i", Wasi::BadFd),
    ("fd_prestat_dir_name", "iii:i", Wasi::BadFd),
    ("fd_read", "iiii:i", Wasi::FdRead),
    ("fd_seek", "iIii:i", Wasi::FdSeek),
    ("fd_write", "iiii:i", Wasi::FdWrite),
    ("poll_oneoff", "iiii:i", Wasi::NoSys),
    ("proc_exit", "i:", Wasi::ProcExit),
    ("random_get", "ii:i", Wasi::NoSys),
    ("sched_yield", ":i", Wasi::Succeed),
];

/// What a WASI import does; one implementation for both engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wasi {
    /// Returns success and writes nothing (`args_get`, `environ_get`, `sched_yield`).
    Succeed,
    /// Writes two zero counts (`args_sizes_get`, `environ_sizes_get`).
    ZeroSizes,
    /// `ENOSYS`: no clock, randomness or polling.
    NoSys,
    /// `EBADF`: no preopened directories.
    BadFd,
    FdClose,
    FdFdstatGet,
    FdRead,
    FdSeek,
    FdWrite,
    ProcExit,
}

/// A host function of the sandbox, as both engines link it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostFn {
    /// A function of the WASI subset.
    Wasi(Wasi),
    /// `ambient:meter` `refuel`: the metered tank ran dry.
    Refuel,
    /// `ambient:meter` `stack_exhausted`: the metered stack is full.
    StackExhausted,
}

/// Every host function: (module, name, signature, function).
fn host_functions() -> impl Iterator<Item = (&'static str, &'static str, &'static str, HostFn)> {
    WASI_IMPORTS
        .iter()
        .map(|&(name, sig, f)| (WASI, name, sig, HostFn::Wasi(f)))
        .chain([
            (meter::METER_MODULE, meter::REFUEL, "I:I", HostFn::Refuel),
            (
                meter::METER_MODULE,
                meter::STACK_EXHAUSTED,
                ":",
                HostFn::StackExhausted,
            ),
        ])
}

/// Resource limits for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimits {
    /// Fuel budget (one unit per executed Wasm operator, as `meter` counts them); the same on
    /// every machine and on both engines.
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
    /// Fuel charged: the same on both engines.
    pub fuel_consumed: u64,
    /// Lower-case hex SHA-256 of the module bytes.
    pub module_sha256: String,
    /// The engine that ran it.
    pub engine: WasmEngine,
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
    /// The module trapped (unreachable, out-of-bounds access, stack exhausted, ...); the message
    /// is the same on both engines.
    #[error("trap: {0}")]
    Trap(String),
    /// The module called `proc_exit` with a non-zero code. What it wrote last on stderr is part
    /// of the message (the same on every engine), so the submitter reads why.
    #[error("exited with code {code}{}", said(.stderr))]
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

/// A trap, in words both engines share. The messages are wasmi 2.0's, so agents of this release
/// agree with the wasmi-only agents before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrapKind {
    Unreachable,
    MemoryOutOfBounds,
    TableOutOfBounds,
    IndirectCallToNull,
    IntegerDivisionByZero,
    IntegerOverflow,
    BadConversionToInteger,
    StackOverflow,
    BadSignature,
}

impl TrapKind {
    fn message(self) -> &'static str {
        match self {
            Self::Unreachable => "wasm `unreachable` instruction executed",
            Self::MemoryOutOfBounds => "out of bounds memory access",
            Self::TableOutOfBounds => "undefined element: out of bounds table access",
            Self::IndirectCallToNull => "uninitialized element 2",
            Self::IntegerDivisionByZero => "integer divide by zero",
            Self::IntegerOverflow => "integer overflow",
            Self::BadConversionToInteger => "invalid conversion to integer",
            Self::StackOverflow => "call stack exhausted",
            Self::BadSignature => "indirect call type mismatch",
        }
    }
}

/// The engine that runs modules. Both run the same metered module under the same host, so the
/// choice changes speed, not results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WasmEngine {
    /// wasmi 2.0, an interpreter: small, portable, quick to start. Every build has it.
    Wasmi,
    /// wasmtime 48 with Cranelift, a JIT: about ten times faster on compute-bound modules.
    #[cfg(feature = "wasm-jit")]
    Wasmtime,
}

impl WasmEngine {
    /// The engine this build runs tasks on: wasmtime with `wasm-jit`, wasmi otherwise.
    pub const DEFAULT: WasmEngine = {
        #[cfg(feature = "wasm-jit")]
        {
            WasmEngine::Wasmtime
        }
        #[cfg(not(feature = "wasm-jit"))]
        {
            WasmEngine::Wasmi
        }
    };

    /// Every engine this build has.
    pub const ALL: &'static [WasmEngine] = &[
        WasmEngine::Wasmi,
        #[cfg(feature = "wasm-jit")]
        WasmEngine::Wasmtime,
    ];

    /// Name and version, for health reports, results and logs: `wasmi-2.0.0` or
    /// `wasmtime-48.0.8`.
    pub fn name(self) -> &'static str {
        match self {
            WasmEngine::Wasmi => "wasmi-2.0.0",
            #[cfg(feature = "wasm-jit")]
            WasmEngine::Wasmtime => "wasmtime-48.0.8",
        }
    }

    /// The engine the config chose (validated: a build without the JIT refuses `wasmtime`).
    pub fn chosen(choice: Option<crate::config::WasmEngineChoice>) -> WasmEngine {
        use crate::config::WasmEngineChoice;
        match choice {
            None => WasmEngine::DEFAULT,
            Some(WasmEngineChoice::Wasmi) => WasmEngine::Wasmi,
            #[cfg(feature = "wasm-jit")]
            Some(WasmEngineChoice::Wasmtime) => WasmEngine::Wasmtime,
            #[cfg(not(feature = "wasm-jit"))]
            Some(WasmEngineChoice::Wasmtime) => WasmEngine::Wasmi,
        }
    }
}

impl std::fmt::Display for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The share of a core a run may use, read before every slice so that it may change while the
/// run goes on.
pub trait DutyCycle: Send + Sync {
    /// The duty cycle in percent, 1–100 (values outside are clamped).
    fn duty_pct(&self) -> u32;
}

impl DutyCycle for AtomicU32 {
    fn duty_pct(&self) -> u32 {
        self.load(Ordering::Relaxed)
    }
}

/// What a run watches while it runs: the caller's cancel flag and, optionally, a duty cycle.
/// Both are shared handles, since the run's host state outlives no borrow.
#[derive(Clone)]
pub struct RunControl {
    cancel: Arc<AtomicBool>,
    duty: Option<Arc<dyn DutyCycle>>,
}

impl RunControl {
    /// Runs at full speed until `cancel` is set.
    pub fn new(cancel: Arc<AtomicBool>) -> RunControl {
        RunControl { cancel, duty: None }
    }

    /// Runs under a duty cycle: after each fuel slice the thread sleeps so that it computes at
    /// most `duty` percent of the wall-clock time. Time spent sleeping does not count against
    /// [`WasmLimits::wall_clock`], and fuel accounting is unchanged.
    pub fn paced(mut self, duty: Arc<dyn DutyCycle>) -> RunControl {
        self.duty = Some(duty);
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn duty_pct(&self) -> u32 {
        self.duty
            .as_ref()
            .map_or(100, |d| d.duty_pct())
            .clamp(1, 100)
    }
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("cancelled", &self.cancelled())
            .field("duty_pct", &self.duty_pct())
            .finish()
    }
}

/// Runs WASI command modules under fuel, memory, output and time limits.
///
/// Holds one engine with the WASI host linked, and a bounded cache of checked, metered and
/// compiled modules. It is `Send + Sync`; share it behind an `Arc` and call [`WasmSandbox::run`]
/// or [`WasmSandbox::run_with`] from blocking threads.
pub struct WasmSandbox {
    backend: Backend,
    cache: Mutex<Cache>,
    capacity: usize,
}

/// An engine with the host linked.
enum Backend {
    Wasmi(interp::Interp),
    #[cfg(feature = "wasm-jit")]
    Wasmtime(jit::Jit),
}

/// A module compiled for one engine (cheap to clone).
#[derive(Clone)]
enum Compiled {
    Wasmi(wasmi::Module),
    #[cfg(feature = "wasm-jit")]
    Wasmtime(wasmtime::Module),
}

#[derive(Default)]
struct Cache {
    modules: HashMap<String, (Compiled, u64)>,
    tick: u64,
}

impl WasmSandbox {
    /// Creates a sandbox on this build's engine ([`WasmEngine::DEFAULT`]) caching up to
    /// `cache_capacity` compiled modules (0 disables the cache).
    pub fn new(cache_capacity: usize) -> Self {
        Self::with_engine(WasmEngine::DEFAULT, cache_capacity)
    }

    /// Creates a sandbox on `engine`, caching up to `cache_capacity` compiled modules.
    /// Should the JIT not start on this machine (a target Cranelift lacks), it runs on wasmi,
    /// with a warning: [`WasmSandbox::engine`] says which it got.
    pub fn with_engine(engine: WasmEngine, cache_capacity: usize) -> Self {
        let backend = match engine {
            WasmEngine::Wasmi => Backend::Wasmi(interp::Interp::new()),
            #[cfg(feature = "wasm-jit")]
            WasmEngine::Wasmtime => match jit::Jit::new() {
                Ok(jit) => Backend::Wasmtime(jit),
                Err(e) => {
                    tracing::warn!(error = %e, "no JIT on this machine: wasm runs on wasmi");
                    Backend::Wasmi(interp::Interp::new())
                }
            },
        };
        Self {
            backend,
            cache: Mutex::default(),
            capacity: cache_capacity,
        }
    }

    /// Keeps compiled code in `dir` as well (created 0700 if missing), so that a restarted agent
    /// does not compile a module again. Only the JIT has code worth keeping: on wasmi this does
    /// nothing.
    pub fn with_code_cache(self, dir: PathBuf) -> Self {
        #[cfg(feature = "wasm-jit")]
        if let Backend::Wasmtime(jit) = &self.backend {
            jit.set_code_cache(dir);
            return self;
        }
        let _ = dir;
        self
    }

    /// The engine this sandbox runs modules on.
    pub fn engine(&self) -> WasmEngine {
        match self.backend {
            Backend::Wasmi(_) => WasmEngine::Wasmi,
            #[cfg(feature = "wasm-jit")]
            Backend::Wasmtime(_) => WasmEngine::Wasmtime,
        }
    }

    /// Runs `module` with `stdin` as its input until `_start` returns or calls `proc_exit(0)`.
    ///
    /// Blocking: callers run it on a blocking thread. `cancel` is read when the run starts; to
    /// stop a run while it goes on, use [`WasmSandbox::run_with`].
    pub fn run(
        &self,
        module: &[u8],
        stdin: &[u8],
        limits: &WasmLimits,
        cancel: &AtomicBool,
    ) -> Result<WasmOutput, WasmError> {
        let cancel = Arc::new(AtomicBool::new(cancel.load(Ordering::Relaxed)));
        self.run_with(module, stdin, limits, RunControl::new(cancel))
    }

    /// [`WasmSandbox::run`] under `control`: setting its cancel flag stops the run within one
    /// fuel slice, and its duty cycle paces it.
    pub fn run_with(
        &self,
        module: &[u8],
        stdin: &[u8],
        limits: &WasmLimits,
        control: RunControl,
    ) -> Result<WasmOutput, WasmError> {
        let started = Instant::now();
        if control.cancelled() {
            return Err(WasmError::Cancelled);
        }
        let (compiled, module_sha256) = self.module(module)?;
        let host = Host::new(stdin, limits, control, started);
        let (host, end) = match (&self.backend, &compiled) {
            (Backend::Wasmi(engine), Compiled::Wasmi(module)) => engine.run(module, host),
            #[cfg(feature = "wasm-jit")]
            (Backend::Wasmtime(engine), Compiled::Wasmtime(module)) => engine.run(module, host),
            // A sandbox only ever compiles for its own engine.
            #[cfg(feature = "wasm-jit")]
            _ => {
                return Err(WasmError::InvalidModule(
                    "compiled for another engine".into(),
                ));
            }
        };
        let result = conclude(host, end, limits);
        tracing::debug!(
            module = %module_sha256,
            engine = %self.engine(),
            outcome = %result.as_ref().map_or_else(|e| e.kind().to_string(), |_| "ok".into()),
            elapsed_ms = started.elapsed().as_millis(),
            "wasm run finished"
        );
        let (host, fuel_consumed) = result?;
        Ok(WasmOutput {
            stdout: host.stdout,
            stderr: host.stderr,
            fuel_consumed,
            module_sha256,
            engine: self.engine(),
        })
    }

    /// Number of compiled modules currently cached.
    pub fn cached_modules(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .modules
            .len()
    }

    /// Returns the compiled module for `bytes` and its hex SHA-256, checking, metering and
    /// compiling it on a cache miss.
    fn module(&self, bytes: &[u8]) -> Result<(Compiled, String), WasmError> {
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
        // Meter and compile outside the lock: it can take a while for a big module.
        let module = self.compile(bytes, &sha)?;
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

    /// Checks and meters `bytes` (the front end both engines share), then compiles the result.
    fn compile(&self, bytes: &[u8], sha: &str) -> Result<Compiled, WasmError> {
        #[cfg(feature = "wasm-jit")]
        if let Backend::Wasmtime(jit) = &self.backend
            && let Some(module) = jit.cached(sha)
        {
            return Ok(Compiled::Wasmtime(module));
        }
        let metered = meter::prepare(bytes)?;
        // The front end validated the module, so an engine that refuses the metered one is a
        // bug of ours; it is still only this module's failure.
        let refused = |e: String| {
            tracing::warn!(module = %sha, engine = %self.engine(), error = %e, "metered module refused");
            WasmError::InvalidModule(format!("the engine refused the metered module: {e}"))
        };
        Ok(match &self.backend {
            Backend::Wasmi(engine) => {
                Compiled::Wasmi(engine.compile(&metered.wasm).map_err(refused)?)
            }
            #[cfg(feature = "wasm-jit")]
            Backend::Wasmtime(engine) => {
                Compiled::Wasmtime(engine.compile(&metered.wasm, sha).map_err(refused)?)
            }
        })
    }
}

impl std::fmt::Debug for WasmSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmSandbox")
            .field("engine", &self.engine())
            .field("cached_modules", &self.cached_modules())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// How an engine's run of `_start` ended, before the shared classification.
struct Ended {
    /// The fuel global when it ended (absent when instantiation failed).
    fuel: Option<i64>,
    /// The engine's error, if the run did not return normally.
    error: Option<EngineError>,
}

/// An engine error, reduced to what both engines can say alike.
struct EngineError {
    /// It happened while instantiating (data or element segments), not while running.
    instantiating: bool,
    /// The trap, when it was one.
    trap: Option<TrapKind>,
    /// The engine's own words, for logs only: they differ between engines.
    detail: String,
}

/// Turns how a run ended into its result, the same way for both engines: the reason a host
/// function stopped the guest comes first, then the engine's error, then the fuel budget.
fn conclude(mut host: Host, end: Ended, limits: &WasmLimits) -> Result<(Host, u64), WasmError> {
    match (host.stop.take(), end.error) {
        (Some(Stop::Fail(e)), _) => Err(e),
        (Some(Stop::Exit(code)), _) if code != 0 => {
            let tail = &host.stderr[host.stderr.len().saturating_sub(STDERR_TAIL)..];
            Err(WasmError::Exit {
                code,
                stderr: String::from_utf8_lossy(tail).into_owned(),
            })
        }
        (None, Some(e)) => {
            tracing::debug!(error = %e.detail, "wasm engine error");
            let what = e.trap.map_or("failed", TrapKind::message);
            Err(if e.instantiating {
                WasmError::InvalidModule(format!("instantiation: {what}"))
            } else {
                WasmError::Trap(what.to_owned())
            })
        }
        // `_start` returned, or called `proc_exit(0)`.
        _ => {
            let consumed = host.meter.settle(end.fuel.unwrap_or(0), limits)?;
            Ok((host, consumed))
        }
    }
}

/// Why a host function stopped the guest. The first reason wins.
enum Stop {
    /// `proc_exit(code)`.
    Exit(i32),
    /// A limit, a cancel request, or the metered stack.
    Fail(WasmError),
}

/// The guest was stopped by a host function; the reason is in [`Host::stop`].
struct Stopped;

/// Per-run state of the guest's world, the same for both engines: stdio, the fuel meter, the
/// memory guard, and why the guest was stopped.
struct Host {
    stdin: Vec<u8>,
    stdin_pos: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    max_output: usize,
    max_memory: usize,
    max_table_elements: usize,
    meter: Meter,
    stop: Option<Stop>,
}

impl Host {
    fn new(stdin: &[u8], limits: &WasmLimits, control: RunControl, started: Instant) -> Host {
        Host {
            stdin: stdin.to_vec(),
            stdin_pos: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output: limits.max_output_bytes,
            max_memory: limits.max_memory_bytes,
            max_table_elements: limits.max_memory_bytes / 8,
            meter: Meter {
                budget: limits.fuel,
                handed: 0,
                wall_clock: limits.wall_clock,
                control,
                started,
                slice_started: Instant::now(),
                slept: Duration::ZERO,
            },
            stop: None,
        }
    }

    /// Stops the guest for `reason` (the first reason is kept).
    fn stop(&mut self, reason: Stop) -> Stopped {
        self.stop.get_or_insert(reason);
        Stopped
    }

    /// The memory guard: whether linear memory may grow to `desired` bytes. Over the cap it
    /// stops the guest (`Err`); past the memory's own `maximum` it refuses (`memory.grow`
    /// returns -1), before the cap is looked at, so both engines agree whatever they check
    /// first.
    fn memory_growing(&mut self, desired: usize, maximum: Option<usize>) -> Result<bool, Stopped> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if desired > self.max_memory {
            return Err(self.stop(Stop::Fail(WasmError::MemoryLimit {
                limit_bytes: self.max_memory,
            })));
        }
        Ok(true)
    }

    /// The same guard for table elements.
    fn table_growing(&mut self, desired: usize, maximum: Option<usize>) -> Result<bool, Stopped> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        if desired > self.max_table_elements {
            return Err(self.stop(Stop::Fail(WasmError::MemoryLimit {
                limit_bytes: self.max_memory,
            })));
        }
        Ok(true)
    }

    /// Calls host function `f` with `args` (i32s sign-extended); `mem` is the guest's exported
    /// `memory`, when it has one. Returns the result, if the function has one.
    fn call(
        &mut self,
        f: HostFn,
        args: &[i64],
        mem: Option<&mut [u8]>,
    ) -> Result<Option<i64>, Stopped> {
        let arg = |i: usize| args.get(i).copied().unwrap_or_default() as i32;
        let errno = |r: Result<(), i32>| Ok(Some(i64::from(r.err().unwrap_or(SUCCESS))));
        let wasi = match f {
            HostFn::Refuel => {
                let fuel = args.first().copied().unwrap_or_default();
                return match self.meter.refuel(fuel) {
                    Ok(fuel) => Ok(Some(fuel)),
                    Err(e) => Err(self.stop(Stop::Fail(e))),
                };
            }
            HostFn::StackExhausted => {
                let trap = WasmError::Trap(TrapKind::StackOverflow.message().into());
                return Err(self.stop(Stop::Fail(trap)));
            }
            HostFn::Wasi(wasi) => wasi,
        };
        match wasi {
            Wasi::Succeed => errno(Ok(())),
            Wasi::NoSys => errno(Err(ENOSYS)),
            Wasi::BadFd => errno(Err(EBADF)),
            Wasi::ProcExit => Err(self.stop(Stop::Exit(arg(0)))),
            Wasi::FdClose => errno(if (0..=2).contains(&arg(0)) {
                Ok(())
            } else {
                Err(EBADF)
            }),
            Wasi::FdSeek => errno(Err(if (0..=2).contains(&arg(0)) {
                ESPIPE
            } else {
                EBADF
            })),
            Wasi::ZeroSizes => errno(mem.ok_or(EFAULT).and_then(|mem| {
                write_bytes(mem, arg(0), &0u32.to_le_bytes())?;
                write_bytes(mem, arg(1), &0u32.to_le_bytes())
            })),
            Wasi::FdFdstatGet => {
                // fdstat: filetype u8 (2 = character_device), flags u16 @2, rights u64 @8 and @16.
                let rights: u64 = match arg(0) {
                    0 => 1 << 1,     // fd_read
                    1 | 2 => 1 << 6, // fd_write
                    _ => return errno(Err(EBADF)),
                };
                let mut stat = [0u8; 24];
                stat[0] = 2;
                stat[8..16].copy_from_slice(&rights.to_le_bytes());
                errno(
                    mem.ok_or(EFAULT)
                        .and_then(|mem| write_bytes(mem, arg(1), &stat)),
                )
            }
            Wasi::FdRead => errno(self.fd_read(mem, arg(0), arg(1), arg(2), arg(3))),
            Wasi::FdWrite => match self.fd_write(mem, arg(0), arg(1), arg(2), arg(3)) {
                Ok(r) => errno(r),
                Err(stopped) => Err(stopped),
            },
        }
    }

    /// `fd_read`: fills the iovecs from the rest of stdin; reads past the end return 0 bytes.
    fn fd_read(
        &mut self,
        mem: Option<&mut [u8]>,
        fd: i32,
        iovs: i32,
        count: i32,
        nread: i32,
    ) -> Result<(), i32> {
        if fd != 0 {
            return Err(EBADF);
        }
        let mem = mem.ok_or(EFAULT)?;
        let buffers = iovecs(mem, iovs, count)?;
        guest_range(mem, nread, 4)?;
        let mut total = 0;
        for buffer in buffers {
            let input = self.stdin.get(self.stdin_pos..).unwrap_or_default();
            let n = input.len().min(buffer.len());
            let dest = mem.get_mut(buffer.start..buffer.start + n).ok_or(EFAULT)?;
            dest.copy_from_slice(input.get(..n).unwrap_or_default());
            self.stdin_pos += n;
            total += n;
            if n < buffer.len() {
                break;
            }
        }
        write_size(mem, nread, total)
    }

    /// `fd_write`: appends the iovecs to stdout/stderr, or stops the guest past the output cap.
    fn fd_write(
        &mut self,
        mem: Option<&mut [u8]>,
        fd: i32,
        iovs: i32,
        count: i32,
        nwritten: i32,
    ) -> Result<Result<(), i32>, Stopped> {
        if fd != 1 && fd != 2 {
            return Ok(Err(EBADF));
        }
        let Some(mem) = mem else {
            return Ok(Err(EFAULT));
        };
        let buffers = match iovecs(mem, iovs, count).and_then(|b| {
            guest_range(mem, nwritten, 4)?;
            Ok(b)
        }) {
            Ok(b) => b,
            Err(errno) => return Ok(Err(errno)),
        };
        let total: usize = buffers.iter().map(|b| b.len()).sum();
        if self.stdout.len() + self.stderr.len() + total > self.max_output {
            let limit = self.max_output;
            return Err(self.stop(Stop::Fail(WasmError::OutputTooLarge { limit })));
        }
        let sink = if fd == 1 {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        for buffer in buffers {
            match mem.get(buffer) {
                Some(bytes) => sink.extend_from_slice(bytes),
                None => return Ok(Err(EFAULT)),
            }
        }
        Ok(write_size(mem, nwritten, total))
    }
}

/// The fuel budget of one run and the pace it runs at.
struct Meter {
    budget: u64,
    /// Fuel handed to the module's tank so far.
    handed: u64,
    wall_clock: Duration,
    control: RunControl,
    started: Instant,
    slice_started: Instant,
    /// Time spent sleeping for the duty cycle (not counted against the wall clock).
    slept: Duration,
}

impl Meter {
    /// The module's tank is at `fuel` (< 0: overdrawn): stops the run if the fuel charged so far
    /// is over the budget, then rests for the duty cycle, checks the cancel flag and the wall
    /// clock, and returns the tank refilled with the next slice (never more than the budget).
    fn refuel(&mut self, fuel: i64) -> Result<i64, WasmError> {
        let deficit = if fuel < 0 { fuel.unsigned_abs() } else { 0 };
        let reserve = self.budget - self.handed;
        if deficit > reserve {
            return Err(WasmError::OutOfFuel { fuel: self.budget });
        }
        self.rest(self.slice_started.elapsed());
        if self.control.cancelled() {
            return Err(WasmError::Cancelled);
        }
        if self.started.elapsed().saturating_sub(self.slept) >= self.wall_clock {
            return Err(WasmError::WallClock {
                limit: self.wall_clock,
            });
        }
        let add = FUEL_SLICE.max(deficit).min(reserve);
        self.handed += add;
        self.slice_started = Instant::now();
        Ok(fuel.saturating_add_unsigned(add))
    }

    /// The run ended with the tank at `fuel`: the fuel it was charged, if within the budget.
    fn settle(&self, fuel: i64, limits: &WasmLimits) -> Result<u64, WasmError> {
        let consumed = i128::from(self.handed) - i128::from(fuel);
        u64::try_from(consumed)
            .ok()
            .filter(|&c| c <= self.budget)
            .ok_or(WasmError::OutOfFuel { fuel: limits.fuel })
    }

    /// After a slice that computed for `ran`, sleeps `ran × (100 − duty) / duty`, in short naps
    /// that watch the cancel flag.
    fn rest(&mut self, ran: Duration) {
        let duty = self.control.duty_pct();
        if duty == 100 {
            return;
        }
        let until = Instant::now() + ran * (100 - duty) / duty;
        let start = Instant::now();
        while !self.control.cancelled() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
        self.slept += start.elapsed();
    }
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

/// Value kinds of a host signature (`i`/`I` letters).
fn sig_kinds(sig: &str) -> (Vec<bool>, Vec<bool>) {
    let (params, results) = sig.split_once(':').unwrap_or_default();
    let wide = |s: &str| s.chars().map(|c| c == 'I').collect();
    (wide(params), wide(results))
}
