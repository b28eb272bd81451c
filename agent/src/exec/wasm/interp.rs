//! The wasmi engine: the interpreter every build has. It runs the metered module with its own
//! fuel metering off and a heap stack deeper than the metered stack can reach.

use wasmi::{
    CompilationMode, Config, Engine, Error, FuncType, Linker, Module, Store, TrapCode, Val,
    ValType,
    errors::{ErrorKind, InstantiationError},
};
use wasmi_core::LimiterError;

use super::{Ended, EngineError, Host, Stopped, TrapKind, host_functions, meter, sig_kinds};

/// wasmi with the sandbox's host linked.
pub(super) struct Interp {
    engine: Engine,
    linker: Linker<Host>,
}

impl Interp {
    pub(super) fn new() -> Interp {
        let mut config = Config::default();
        config
            .compilation_mode(CompilationMode::Eager)
            .allow_start_fn(false)
            // The metered stack ends a recursion long before these: every frame weighs at
            // least `FRAME_BASE` slots of `STACK_UNITS`, and a slot is 8 bytes here.
            .set_max_recursion_depth((meter::STACK_UNITS / meter::FRAME_BASE) as usize + 64)
            .set_max_stack_height(64 << 20);
        let engine = Engine::new(&config);
        let mut linker = Linker::<Host>::new(&engine);
        link_host!(
            linker,
            |params, results| FuncType::new(params, results),
            Error::new("stopped by the host")
        );
        Interp { engine, linker }
    }

    /// Compiles a metered module.
    pub(super) fn compile(&self, wasm: &[u8]) -> Result<Module, String> {
        Module::new(&self.engine, wasm).map_err(|e| e.to_string())
    }

    /// Instantiates `module` and runs `_start` to its end.
    pub(super) fn run(&self, module: &Module, host: Host) -> (Host, Ended) {
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| host);
        let instance = match self.linker.instantiate_and_start(&mut store, module) {
            Ok(instance) => instance,
            Err(e) => {
                let end = Ended {
                    fuel: None,
                    error: Some(engine_error(&e, true)),
                };
                return (store.into_data(), end);
            }
        };
        let error = match instance.get_typed_func::<(), ()>(&store, "_start") {
            Ok(start) => start
                .call(&mut store, ())
                .err()
                .map(|e| engine_error(&e, false)),
            // `meter` checked the entry point.
            Err(e) => Some(engine_error(&e, false)),
        };
        let fuel = instance
            .get_global(&store, meter::FUEL_EXPORT)
            .and_then(|g| g.get(&store).i64());
        (store.into_data(), Ended { fuel, error })
    }
}

/// A wasmi value as an i64 (i32s sign-extended).
fn value(v: &Val) -> i64 {
    match v {
        Val::I32(v) => i64::from(*v),
        Val::I64(v) => *v,
        _ => 0,
    }
}

fn engine_error(e: &Error, instantiating: bool) -> EngineError {
    let trap = e.as_trap_code().and_then(|code| {
        Some(match code {
            TrapCode::UnreachableCodeReached => TrapKind::Unreachable,
            TrapCode::MemoryOutOfBounds => TrapKind::MemoryOutOfBounds,
            TrapCode::TableOutOfBounds => TrapKind::TableOutOfBounds,
            TrapCode::IndirectCallToNull => TrapKind::IndirectCallToNull,
            TrapCode::IntegerDivisionByZero => TrapKind::IntegerDivisionByZero,
            TrapCode::IntegerOverflow => TrapKind::IntegerOverflow,
            TrapCode::BadConversionToInteger => TrapKind::BadConversionToInteger,
            TrapCode::StackOverflow => TrapKind::StackOverflow,
            TrapCode::BadSignature => TrapKind::BadSignature,
            _ => return None,
        })
    });
    // wasmi reports an element segment out of its table as an instantiation error; it is the
    // table access trap the spec (and wasmtime) raise.
    let segment = matches!(
        e.kind(),
        ErrorKind::Instantiation(InstantiationError::ElementSegmentDoesNotFit { .. })
    );
    let trap = trap.or(segment.then_some(TrapKind::TableOutOfBounds));
    EngineError {
        instantiating,
        trap,
        detail: e.to_string(),
    }
}

impl wasmi::ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Host::memory_growing(self, desired, maximum)
            .map_err(|Stopped| LimiterError::ResourceLimiterDeniedAllocation)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Host::table_growing(self, desired, maximum)
            .map_err(|Stopped| LimiterError::ResourceLimiterDeniedAllocation)
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
