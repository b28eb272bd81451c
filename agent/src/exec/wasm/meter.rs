//! The sandbox's front end, one for both engines: it validates a module, checks its imports and
//! entry point, and compiles fuel and stack metering into the module itself. Both engines then
//! run the same metered module with their own metering off, so fuel, `out_of_fuel` and
//! `call stack exhausted` come out the same on wasmi and on wasmtime by construction.
//!
//! # Fuel
//! Fuel is counted per executed Wasm operator of the *submitted* module: 0 for `nop`, `drop`,
//! `block`, `loop`, `unreachable`, `return`, `else` and `end`, 1 for every other operator (the
//! default cost table of wasmi 2.0 and of wasmtime). Each straight run of code, from one control
//! operator to the next, is charged as a whole when it is entered, to a mutable `i64` global. At
//! every function entry and loop header, a negative tank calls the host's `refuel`, which hands
//! out the next slice of the budget, or stops the run with `out_of_fuel` when the fuel charged
//! so far is over the budget, and checks the cancel flag, the wall clock and the duty cycle.
//! The host checks the budget once more when the run ends, so a run succeeds exactly when the
//! fuel it was charged is within its budget.
//!
//! # Stack
//! Each call adds the callee's frame weight ([`FRAME_BASE`] + parameters + locals + the largest
//! operand stack height of its body, all in value slots) to a second global, and takes it off
//! when the function returns. Over [`STACK_UNITS`] the call traps with
//! `call stack exhausted`. The engines' own stacks are set well above what this allows, so the
//! deterministic limit is the one a deep recursion meets, on either engine.
//!
//! # What comes out
//! The metered module imports `ambient:meter` `refuel: (i64) -> i64` and
//! `stack_exhausted: () -> ()` after the module's own imports (so the module's functions move up
//! by two), exports only `_start`, `memory` and the fuel global ([`FUEL_EXPORT`]), and drops
//! custom sections.

use std::collections::HashMap;

use wasm_encoder::reencode::Reencode;
use wasm_encoder::{
    BlockType, CodeSection, ConstExpr, DataCountSection, DataSection, ElementSection, EntityType,
    ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType, ImportSection,
    Instruction, MemorySection, TableSection, TypeSection,
};
use wasmparser::{
    ExternalKind, FuncValidatorAllocations, Operator, Parser, Payload, TypeRef, ValidPayload,
    Validator, WasmFeatures,
};

use super::{WASI, WASI_IMPORTS, WasmError};

/// Import module of the metering functions: outside `wasi_snapshot_preview1`, so a submitted
/// module can never import them itself.
pub(crate) const METER_MODULE: &str = "ambient:meter";
/// `refuel: (i64) -> i64`: takes the (negative) tank, returns it refilled, or stops the run.
pub(crate) const REFUEL: &str = "refuel";
/// `stack_exhausted: () -> ()`: stops the run with `call stack exhausted`.
pub(crate) const STACK_EXHAUSTED: &str = "stack_exhausted";
/// The exported fuel global: fuel handed out but not yet charged (negative when overdrawn).
pub(crate) const FUEL_EXPORT: &str = "ambient:fuel";

/// Slots every frame weighs on top of its parameters, locals and operand stack (return address,
/// saved registers, the engine's frame header).
pub const FRAME_BASE: u32 = 4;
/// Stack budget in value slots. A frame of the smallest weight ([`FRAME_BASE`]) allows 8192
/// nested calls; wasmi 2.0 alone allowed 1000. wasmtime gets 1 MiB of native stack for it
/// (at most 16 bytes a slot with a 2× margin), wasmi a heap stack deeper than it can reach.
pub const STACK_UNITS: u32 = 32 * 1024;

/// Version of the metering scheme, part of the on-disk code cache key: cached code of another
/// scheme is never used.
#[cfg_attr(not(feature = "wasm-jit"), allow(dead_code))]
pub(crate) const METER_VERSION: u32 = 1;

/// Fuel cost of one operator of the submitted module.
fn cost(op: &Operator<'_>) -> i64 {
    match op {
        Operator::Nop
        | Operator::Drop
        | Operator::Block { .. }
        | Operator::Loop { .. }
        | Operator::Unreachable
        | Operator::Return
        | Operator::Else
        | Operator::End => 0,
        _ => 1,
    }
}

/// Whether `op` ends a straight run of code (control transfers in or out after it).
fn ends_run(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::End
            | Operator::Br { .. }
            | Operator::BrIf { .. }
            | Operator::BrTable { .. }
            | Operator::Return
            | Operator::Unreachable
            | Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
    )
}

/// The Wasm proposals the sandbox accepts: what both engines run the same way. No SIMD (relaxed
/// SIMD is not deterministic, and the lean build's wasmi has none), no threads, no GC types (so
/// no `externref`), no exceptions, one memory.
fn features() -> WasmFeatures {
    WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::FLOATS
        | WasmFeatures::MEMORY64
}

/// A module checked and metered, ready for either engine.
pub(crate) struct Metered {
    /// The metered module's bytes.
    pub(crate) wasm: Vec<u8>,
}

/// Validates `bytes`, checks its imports and entry point, and meters it.
pub(crate) fn prepare(bytes: &[u8]) -> Result<Metered, WasmError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(WasmError::InvalidModule("not a WebAssembly binary".into()));
    }
    let invalid = |e: wasmparser::BinaryReaderError| WasmError::InvalidModule(e.to_string());
    let mut m = Meter::default();
    let mut validator = Validator::new_with_features(features());
    let mut allocs = FuncValidatorAllocations::default();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        let valid = validator.payload(&payload).map_err(invalid)?;
        match payload {
            Payload::TypeSection(s) => {
                for ty in s.clone().into_iter_err_on_gc_types() {
                    let ty = ty.map_err(invalid)?;
                    m.types.push((ty.params().to_vec(), ty.results().to_vec()));
                }
                m.re.parse_type_section(&mut m.types_out, s)
                    .map_err(encode)?;
            }
            Payload::ImportSection(s) => {
                for import in s {
                    m.import(import.map_err(invalid)?)?;
                }
            }
            Payload::FunctionSection(s) => {
                for ty in s {
                    let ty = ty.map_err(invalid)?;
                    m.funcs.push(ty);
                    m.functions_out.function(ty);
                }
            }
            Payload::TableSection(s) => {
                m.re.parse_table_section(&mut m.tables_out, s)
                    .map_err(encode)?
            }
            Payload::MemorySection(s) => {
                m.re.parse_memory_section(&mut m.memories_out, s)
                    .map_err(encode)?
            }
            Payload::GlobalSection(s) => {
                m.defined_globals = s.count();
                m.re.parse_global_section(&mut m.globals_out, s)
                    .map_err(encode)?;
            }
            Payload::ExportSection(s) => {
                for export in s {
                    let export = export.map_err(invalid)?;
                    if export.name == "_start" || export.name == "memory" {
                        m.exports
                            .push((export.name.to_owned(), export.kind, export.index));
                    }
                }
            }
            Payload::StartSection { .. } => {
                return Err(WasmError::InvalidModule(
                    "a start section is not allowed: only `_start` runs".into(),
                ));
            }
            Payload::ElementSection(s) => {
                m.re.parse_element_section(&mut m.elements_out, s)
                    .map_err(encode)?
            }
            Payload::DataCountSection { count, .. } => m.data_count = Some(count),
            Payload::DataSection(s) => {
                m.re.parse_data_section(&mut m.data_out, s)
                    .map_err(encode)?
            }
            Payload::CodeSectionEntry(_) => {
                let ValidPayload::Func(func, body) = valid else {
                    return Err(WasmError::InvalidModule(
                        "a function body out of place".into(),
                    ));
                };
                let mut fv = func.into_validator(std::mem::take(&mut allocs));
                fv.read_locals(&mut body.get_binary_reader())
                    .map_err(invalid)?;
                let mut ops = body.get_operators_reader().map_err(invalid)?;
                let mut height = 0;
                while !ops.eof() {
                    let (op, offset) = ops.read_with_offset().map_err(invalid)?;
                    fv.op(offset, &op).map_err(invalid)?;
                    height = height.max(fv.operand_stack_height());
                }
                fv.finish(ops.original_position()).map_err(invalid)?;
                let locals = fv.len_locals();
                allocs = fv.into_allocations();
                m.function(&body, locals, height)?;
            }
            _ => {}
        }
    }
    // Validation errors come first, then the imports, then the entry point.
    if let Some((module, name)) = m.unsupported.take() {
        return Err(WasmError::UnsupportedImport { module, name });
    }
    let start = m.exports.iter().find(|(name, ..)| name == "_start");
    let entry = match start {
        Some((_, ExternalKind::Func, index)) => m.func_type(*index),
        _ => None,
    };
    match entry {
        Some((params, results)) if params.is_empty() && results.is_empty() => {}
        _ => return Err(WasmError::NoEntryPoint),
    }
    Ok(Metered { wasm: m.finish() })
}

/// A re-encoding error; the module validated, so it would be a bug here.
fn encode(e: wasm_encoder::reencode::Error) -> WasmError {
    WasmError::InvalidModule(format!("cannot meter the module: {e}"))
}

/// Function indices of the metered module: the two metering imports come after the module's
/// own imported functions.
#[derive(Default)]
struct Remap {
    imported_funcs: u32,
}

impl Reencode for Remap {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> u32 {
        if func < self.imported_funcs {
            func
        } else {
            func + 2
        }
    }
}

type Sig = (Vec<wasmparser::ValType>, Vec<wasmparser::ValType>);

/// The module being metered: what was read so far and the sections being written.
#[derive(Default)]
struct Meter {
    re: Remap,
    /// Function types, by type index.
    types: Vec<Sig>,
    /// Type index of each imported function, then of each defined function.
    imported: Vec<u32>,
    funcs: Vec<u32>,
    imported_globals: u32,
    defined_globals: u32,
    /// The first import outside the sandbox's WASI subset.
    unsupported: Option<(String, String)>,
    /// `_start` and `memory`, as the module exports them (original indices).
    exports: Vec<(String, ExternalKind, u32)>,
    /// Types added for multi-value wrapper blocks, by result list.
    block_types: HashMap<Vec<wasmparser::ValType>, u32>,
    added_types: Vec<Vec<wasmparser::ValType>>,
    data_count: Option<u32>,
    types_out: TypeSection,
    imports_out: ImportSection,
    functions_out: FunctionSection,
    tables_out: TableSection,
    memories_out: MemorySection,
    globals_out: GlobalSection,
    elements_out: ElementSection,
    code_out: CodeSection,
    data_out: DataSection,
}

impl Meter {
    /// Checks one import against the WASI subset and copies it.
    fn import(&mut self, import: wasmparser::Import<'_>) -> Result<(), WasmError> {
        let supported = match import.ty {
            TypeRef::Func(ty) if import.module == WASI => {
                let sig = WASI_IMPORTS.iter().find(|(name, ..)| *name == import.name);
                match (sig, self.types.get(ty as usize)) {
                    (Some((_, sig, _)), Some((params, results))) => {
                        let (p, r) = sig.split_once(':').unwrap_or_default();
                        val_types(p) == *params && val_types(r) == *results
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !supported && self.unsupported.is_none() {
            self.unsupported = Some((import.module.to_owned(), import.name.to_owned()));
        }
        match import.ty {
            TypeRef::Func(ty) => {
                self.imported.push(ty);
                self.re.imported_funcs += 1;
            }
            TypeRef::Global(_) => self.imported_globals += 1,
            _ => {}
        }
        self.re
            .parse_import(&mut self.imports_out, import)
            .map_err(encode)
    }

    /// The signature of function `index` (original numbering).
    fn func_type(&self, index: u32) -> Option<&Sig> {
        let index = index as usize;
        let ty = match index.checked_sub(self.imported.len()) {
            None => self.imported.get(index)?,
            Some(defined) => self.funcs.get(defined)?,
        };
        self.types.get(*ty as usize)
    }

    /// Type indices of `refuel`, `stack_exhausted`, then the wrapper block types.
    fn refuel_type(&self) -> u32 {
        self.types.len() as u32
    }

    fn fuel_global(&self) -> u32 {
        self.imported_globals + self.defined_globals
    }

    fn depth_global(&self) -> u32 {
        self.fuel_global() + 1
    }

    /// The block type of a body wrapper returning `results`.
    fn block_type(&mut self, results: &[wasmparser::ValType]) -> Result<BlockType, WasmError> {
        Ok(match results {
            [] => BlockType::Empty,
            [one] => BlockType::Result(self.re.val_type(*one).map_err(encode)?),
            many => {
                let next = self.refuel_type() + 2 + self.added_types.len() as u32;
                let index = *self.block_types.entry(many.to_vec()).or_insert(next);
                if index == next {
                    self.added_types.push(many.to_vec());
                }
                BlockType::FunctionType(index)
            }
        })
    }

    /// Meters one function body: `locals` counts parameters too, `height` is the body's largest
    /// operand stack height.
    fn function(
        &mut self,
        body: &wasmparser::FunctionBody<'_>,
        locals: u32,
        height: u32,
    ) -> Result<(), WasmError> {
        let invalid = |e: wasmparser::BinaryReaderError| WasmError::InvalidModule(e.to_string());
        let index = self.imported.len() + self.code_out.len() as usize;
        let results = self
            .func_type(index as u32)
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        let wrapper = self.block_type(&results)?;
        let weight = FRAME_BASE.saturating_add(locals).saturating_add(height);
        let (fuel, depth) = (self.fuel_global(), self.depth_global());
        let refuel = self.re.imported_funcs;
        let exhausted = refuel + 1;
        let mut func = self
            .re
            .new_function_with_parsed_locals(body)
            .map_err(encode)?;

        // Prologue: push the frame on the metered stack, then open the wrapper block that all
        // returns leave through.
        let weight = Instruction::I32Const(weight.min(i32::MAX as u32) as i32);
        func.instruction(&Instruction::GlobalGet(depth))
            .instruction(&weight)
            .instruction(&Instruction::I32Add)
            .instruction(&Instruction::GlobalSet(depth))
            .instruction(&Instruction::GlobalGet(depth))
            .instruction(&Instruction::I32Const(STACK_UNITS as i32))
            .instruction(&Instruction::I32GtU)
            .instruction(&Instruction::If(BlockType::Empty))
            .instruction(&Instruction::Call(exhausted))
            .instruction(&Instruction::End)
            .instruction(&Instruction::Block(wrapper));

        let mut run = Run {
            ops: Vec::new(),
            cost: 0,
            check: true,
            fuel,
            refuel,
            depth,
            weight: weight.clone(),
        };
        let mut nesting = 0u32;
        let mut ops = body.get_operators_reader().map_err(invalid)?;
        while !ops.eof() {
            let op = ops.read().map_err(invalid)?;
            run.cost += cost(&op);
            let ends = ends_run(&op);
            let is_loop = matches!(op, Operator::Loop { .. });
            let mut last = false;
            match op {
                Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                    nesting += 1;
                    run.ops.push(Item::Op(op));
                }
                Operator::End if nesting == 0 => {
                    // The end of the body closes the wrapper block.
                    run.ops.push(Item::Op(op));
                    last = true;
                }
                Operator::End => {
                    nesting -= 1;
                    run.ops.push(Item::Op(op));
                }
                // Returns leave through the wrapper block, so the frame is popped once.
                Operator::Return => run.ops.push(Item::Op(Operator::Br {
                    relative_depth: nesting,
                })),
                Operator::ReturnCall { .. } | Operator::ReturnCallIndirect { .. } => {
                    run.ops.push(Item::Pop);
                    run.ops.push(Item::Op(op));
                }
                op => run.ops.push(Item::Op(op)),
            }
            if ends {
                run.flush(&mut func, &mut self.re)?;
                run.check = is_loop;
            }
            if last {
                break;
            }
        }
        run.flush(&mut func, &mut self.re)?;
        pop_frame(&mut func, depth, &weight);
        func.instruction(&Instruction::End);
        self.code_out.function(&func);
        Ok(())
    }

    /// Writes the metered module.
    fn finish(mut self) -> Vec<u8> {
        use wasm_encoder::ValType::I64;
        // Types: the module's, `refuel`, `stack_exhausted`, then the wrapper block types.
        self.types_out.ty().function([I64], [I64]);
        self.types_out.ty().function([], []);
        for results in std::mem::take(&mut self.added_types) {
            let results: Vec<_> = results
                .into_iter()
                .filter_map(|t| self.re.val_type(t).ok())
                .collect();
            self.types_out.ty().function([], results);
        }
        let refuel_type = self.refuel_type();
        self.imports_out
            .import(METER_MODULE, REFUEL, EntityType::Function(refuel_type));
        self.imports_out.import(
            METER_MODULE,
            STACK_EXHAUSTED,
            EntityType::Function(refuel_type + 1),
        );
        let mutable = |val_type| GlobalType {
            val_type,
            mutable: true,
            shared: false,
        };
        self.globals_out
            .global(mutable(I64), &ConstExpr::i64_const(0))
            .global(
                mutable(wasm_encoder::ValType::I32),
                &ConstExpr::i32_const(0),
            );
        let mut exports = ExportSection::new();
        for (name, kind, index) in &self.exports {
            let index = self.re.external_index(*kind, *index);
            exports.export(name, self.re.export_kind(*kind), index);
        }
        exports.export(FUEL_EXPORT, ExportKind::Global, self.fuel_global());

        let mut module = wasm_encoder::Module::new();
        module
            .section(&self.types_out)
            .section(&self.imports_out)
            .section(&self.functions_out);
        if !self.tables_out.is_empty() {
            module.section(&self.tables_out);
        }
        if !self.memories_out.is_empty() {
            module.section(&self.memories_out);
        }
        module.section(&self.globals_out).section(&exports);
        if !self.elements_out.is_empty() {
            module.section(&self.elements_out);
        }
        if let Some(count) = self.data_count {
            module.section(&DataCountSection { count });
        }
        module.section(&self.code_out);
        if !self.data_out.is_empty() {
            module.section(&self.data_out);
        }
        module.finish()
    }
}

/// `i`/`I` signature letters as value types.
fn val_types(s: &str) -> Vec<wasmparser::ValType> {
    s.chars()
        .map(|c| {
            if c == 'I' {
                wasmparser::ValType::I64
            } else {
                wasmparser::ValType::I32
            }
        })
        .collect()
}

/// Takes the frame's weight off the metered stack.
fn pop_frame(func: &mut Function, depth: u32, weight: &Instruction<'_>) {
    func.instruction(&Instruction::GlobalGet(depth))
        .instruction(weight)
        .instruction(&Instruction::I32Sub)
        .instruction(&Instruction::GlobalSet(depth));
}

/// What a straight run of code holds before it is written.
enum Item<'a> {
    /// An operator of the module (returns already turned into branches).
    Op(Operator<'a>),
    /// The frame leaves by a tail call: pop it first.
    Pop,
}

/// A straight run of code: charged as a whole when it is entered.
struct Run<'a> {
    ops: Vec<Item<'a>>,
    cost: i64,
    /// Whether entering it checks the tank (function entries and loop headers).
    check: bool,
    /// The fuel global, the `refuel` import, the depth global and this frame's weight.
    fuel: u32,
    refuel: u32,
    depth: u32,
    weight: Instruction<'static>,
}

impl Run<'_> {
    /// Writes the charge, the check, then the run's operators.
    fn flush(&mut self, func: &mut Function, re: &mut Remap) -> Result<(), WasmError> {
        let (fuel, refuel) = (self.fuel, self.refuel);
        if self.cost > 0 {
            func.instruction(&Instruction::GlobalGet(fuel))
                .instruction(&Instruction::I64Const(self.cost))
                .instruction(&Instruction::I64Sub)
                .instruction(&Instruction::GlobalSet(fuel));
        }
        if self.check {
            func.instruction(&Instruction::GlobalGet(fuel))
                .instruction(&Instruction::I64Const(0))
                .instruction(&Instruction::I64LtS)
                .instruction(&Instruction::If(BlockType::Empty))
                .instruction(&Instruction::GlobalGet(fuel))
                .instruction(&Instruction::Call(refuel))
                .instruction(&Instruction::GlobalSet(fuel))
                .instruction(&Instruction::End);
        }
        for item in self.ops.drain(..) {
            match item {
                Item::Op(op) => {
                    func.instruction(&re.instruction(op).map_err(encode)?);
                }
                // The callee's prologue pushes its own weight.
                Item::Pop => pop_frame(func, self.depth, &self.weight),
            }
        }
        self.cost = 0;
        self.check = false;
        Ok(())
    }
}
