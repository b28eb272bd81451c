//! The wasmtime engine (`wasm-jit`): Cranelift compiles the metered module to native code. Its
//! own fuel and epoch interruption stay off (the module meters itself), NaNs are canonicalised
//! as on wasmi, and the proposals are those the front end lets through.
//!
//! Compiled code can be kept on disk ([`Jit::set_code_cache`]) under
//! `<dir>/<module sha256>-<fingerprint>.cwasm`, where the fingerprint covers the wasmtime
//! version, the engine's settings and the metering scheme. Each file starts with the SHA-256 of
//! the rest, checked before wasmtime loads it.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, Error, FuncType, Linker, Module, OptLevel, Store, Strategy, Trap, Val, ValType,
};

use super::{Ended, EngineError, Host, Stopped, TrapKind, host_functions, meter, sig_kinds};

/// Native stack the JIT's code may use: the metered stack needs at most half of it (16 bytes a
/// slot of [`meter::STACK_UNITS`]). Runs happen on tokio's blocking threads (2 MiB stacks).
const MAX_WASM_STACK: usize = 1 << 20;

/// Compiled modules kept on disk at most; the oldest go first.
const DISK_ENTRIES: usize = 256;

/// wasmtime with the sandbox's host linked.
pub(super) struct Jit {
    engine: Engine,
    linker: Linker<Host>,
    /// Where compiled code is kept, when it is.
    code_dir: Mutex<Option<PathBuf>>,
    /// What cached code must have been compiled for.
    fingerprint: String,
}

impl Jit {
    /// The engine, or why wasmtime refused to start on this machine.
    pub(super) fn new() -> Result<Jit, String> {
        let mut config = Config::new();
        config
            .strategy(Strategy::Cranelift)
            .cranelift_opt_level(OptLevel::Speed)
            .cranelift_nan_canonicalization(true)
            .consume_fuel(false)
            .epoch_interruption(false)
            .max_wasm_stack(MAX_WASM_STACK)
            .wasm_backtrace_max_frames(None::<NonZeroUsize>)
            .wasm_simd(false)
            .wasm_relaxed_simd(false);
        let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
        let mut linker = Linker::<Host>::new(&engine);
        link_host!(
            linker,
            |params, results| FuncType::new(&engine, params, results),
            Error::msg("stopped by the host")
        );
        let mut h = std::collections::hash_map::DefaultHasher::new();
        super::WasmEngine::Wasmtime.name().hash(&mut h);
        meter::METER_VERSION.hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Jit {
            engine,
            linker,
            code_dir: Mutex::new(None),
            fingerprint: format!("{:016x}", h.finish()),
        })
    }

    /// Keeps compiled code in `dir` from now on.
    pub(super) fn set_code_cache(&self, dir: PathBuf) {
        if let Err(e) = private_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "no on-disk wasm code cache");
            return;
        }
        *self.code_dir.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir);
    }

    fn code_path(&self, sha: &str) -> Option<PathBuf> {
        let dir = self.code_dir.lock().unwrap_or_else(PoisonError::into_inner);
        let name = format!("{sha}-{}.cwasm", self.fingerprint);
        dir.as_ref().map(|d| d.join(name))
    }

    /// The module of sha256 `sha` compiled earlier, from the on-disk cache.
    pub(super) fn cached(&self, sha: &str) -> Option<Module> {
        let path = self.code_path(sha)?;
        let file = std::fs::read(&path).ok()?;
        let (sum, code) = file.split_at_checked(32)?;
        if Sha256::digest(code).as_slice() != sum {
            tracing::warn!(path = %path.display(), "corrupt compiled wasm dropped");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        match load(&self.engine, code) {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "compiled wasm not loaded");
                None
            }
        }
    }

    /// Compiles a metered module (the original's sha256 is `sha`) and keeps the code on disk.
    pub(super) fn compile(&self, wasm: &[u8], sha: &str) -> Result<Module, String> {
        let module = Module::new(&self.engine, wasm).map_err(|e| e.to_string())?;
        if let Some(path) = self.code_path(sha)
            && let Err(e) = store_code(&module, &path)
        {
            tracing::debug!(path = %path.display(), error = %e, "compiled wasm not kept");
        }
        Ok(module)
    }

    /// Instantiates `module` and runs `_start` to its end.
    pub(super) fn run(&self, module: &Module, host: Host) -> (Host, Ended) {
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| host);
        let instance = match self.linker.instantiate(&mut store, module) {
            Ok(instance) => instance,
            Err(e) => {
                let end = Ended {
                    fuel: None,
                    error: Some(engine_error(&e, true)),
                };
                return (store.into_data(), end);
            }
        };
        let error = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
            Ok(start) => start
                .call(&mut store, ())
                .err()
                .map(|e| engine_error(&e, false)),
            // `meter` checked the entry point.
            Err(e) => Some(engine_error(&e, false)),
        };
        let fuel = instance
            .get_global(&mut store, meter::FUEL_EXPORT)
            .and_then(|g| g.get(&mut store).i64());
        (store.into_data(), Ended { fuel, error })
    }
}

/// Loads code this agent compiled and wrote.
#[allow(unsafe_code)]
fn load(engine: &Engine, code: &[u8]) -> Result<Module, Error> {
    // SAFETY: `Module::deserialize` trusts its input to be code wasmtime produced. These bytes
    // come from `store_code` of this agent: the file sits in the agent's own data directory,
    // created 0700 (`private_dir`), it is written whole before it is renamed into place, and
    // its SHA-256 was checked against the hash stored with it just before this call. wasmtime
    // itself refuses code of another version or other settings, and the file name carries the
    // engine's fingerprint.
    unsafe { Module::deserialize(engine, code) }
}

/// Writes `module`'s code to `path`: the SHA-256 of the code, then the code, through a
/// temporary file renamed into place.
fn store_code(module: &Module, path: &Path) -> Result<(), Error> {
    let code = module.serialize()?;
    let mut file = Vec::with_capacity(32 + code.len());
    file.extend_from_slice(&Sha256::digest(&code));
    file.extend_from_slice(&code);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &file)?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        prune(dir);
    }
    Ok(())
}

/// Keeps at most [`DISK_ENTRIES`] compiled modules in `dir`, dropping the least recently
/// written.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= DISK_ENTRIES {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - DISK_ENTRIES] {
        let _ = std::fs::remove_file(path);
    }
}

/// Creates `dir` readable by this user only, if it is missing, and refuses one that others may
/// read or write: code loaded from it runs as this agent ([`load`]).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(std::io::Error::other(format!(
                "its mode is {:o}: others may write code there; make it 0700",
                mode & 0o777
            )));
        }
    }
    Ok(())
}

/// A wasmtime value as an i64 (i32s sign-extended).
fn value(v: &Val) -> i64 {
    match v {
        Val::I32(v) => i64::from(*v),
        Val::I64(v) => *v,
        _ => 0,
    }
}

fn engine_error(e: &Error, instantiating: bool) -> EngineError {
    let trap = e.downcast_ref::<Trap>().and_then(|trap| {
        Some(match trap {
            Trap::UnreachableCodeReached => TrapKind::Unreachable,
            Trap::MemoryOutOfBounds => TrapKind::MemoryOutOfBounds,
            Trap::TableOutOfBounds => TrapKind::TableOutOfBounds,
            Trap::IndirectCallToNull => TrapKind::IndirectCallToNull,
            Trap::IntegerDivisionByZero => TrapKind::IntegerDivisionByZero,
            Trap::IntegerOverflow => TrapKind::IntegerOverflow,
            Trap::BadConversionToInteger => TrapKind::BadConversionToInteger,
            Trap::StackOverflow => TrapKind::StackOverflow,
            Trap::BadSignature => TrapKind::BadSignature,
            _ => return None,
        })
    });
    EngineError {
        instantiating,
        trap,
        detail: format!("{e:#}"),
    }
}

impl wasmtime::ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, Error> {
        Host::memory_growing(self, desired, maximum)
            .map_err(|Stopped| Error::msg("memory limit exceeded"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, Error> {
        Host::table_growing(self, desired, maximum)
            .map_err(|Stopped| Error::msg("table limit exceeded"))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        // wasmparser's own limit; `meter` validated the module against it.
        100
    }

    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::wasm::{WasmEngine, WasmLimits, WasmSandbox};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn compiled_code_is_kept_on_disk_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let code = dir.path().join("wasm-code");
        let wasm = wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "fd_write"
                  (func $w (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 1) (data (i32.const 8) "hi")
                (func (export "_start")
                  (i32.store (i32.const 0) (i32.const 8)) (i32.store (i32.const 4) (i32.const 2))
                  (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))))"#,
        )
        .expect("wat");
        let sha = hex::encode(Sha256::digest(&wasm));
        let limits = WasmLimits {
            fuel: 1_000_000,
            max_memory_bytes: 1 << 20,
            max_output_bytes: 1 << 10,
            wall_clock: Duration::from_secs(30),
        };
        let run = || {
            WasmSandbox::with_engine(WasmEngine::Wasmtime, 4)
                .with_code_cache(code.clone())
                .run(&wasm, b"", &limits, &AtomicBool::new(false))
                .expect("run")
        };
        let first = run();
        assert_eq!(first.stdout, b"hi");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&code).expect("dir").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        }
        let files: Vec<_> = std::fs::read_dir(&code)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].to_string_lossy().contains(&sha));

        // A new engine loads it instead of compiling.
        let jit = Jit::new().expect("jit");
        jit.set_code_cache(code.clone());
        assert!(jit.cached(&sha).is_some());
        assert_eq!(run(), first);

        // A damaged file is dropped, and the module compiled again.
        let mut bytes = std::fs::read(&files[0]).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&files[0], &bytes).expect("write");
        assert!(jit.cached(&sha).is_none());
        assert!(!files[0].exists(), "the damaged file is removed");
        assert_eq!(run(), first);
        assert!(jit.cached(&sha).is_some(), "compiled and kept again");
    }
}
