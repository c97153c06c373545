//! Fusing the component's main core module with the glue into one core module.

use std::collections::HashMap;

use wasm_encoder::reencode::{Error as ReencodeError, Reencode};
use wasm_encoder::{
    CodeSection, ConstExpr, DataCountSection, DataSection, ElementSection, EntityType, ExportKind,
    ExportSection, Function, FunctionSection, GlobalSection, GlobalType, ImportSection,
    Instruction, MemorySection, Module as Encoder, StartSection, TableSection, TypeSection,
    ValType,
};
use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

use crate::module::Module;
use crate::{AdaptError, Adapted};

/// The export of the main module that marks an http-filter component.
const FILTER_MARK: &str = "weft:plugin/filter@0.1.0#[constructor]http-stream";

/// Finds the main core module of `component` and checks it targets the http-filter world.
pub(crate) fn main_module(component: &[u8]) -> Result<&[u8], AdaptError> {
    if component.len() < 8 || &component[..4] != b"\0asm" {
        return Err(AdaptError::NotWasm);
    }
    if component[4..8] == [1, 0, 0, 0] {
        return Err(AdaptError::CoreModule);
    }
    let mut modules = Vec::new();
    let mut depth = 0usize;
    let mut component_exports = Vec::new();
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|e| AdaptError::Invalid(e.to_string()))?;
        match payload {
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                if depth == 0 {
                    let module = component.get(unchecked_range).ok_or_else(|| {
                        AdaptError::Invalid(
                            "a core module runs past the end (truncated file?)".into(),
                        )
                    })?;
                    modules.push(module);
                }
                depth += 1;
            }
            Payload::ComponentSection { .. } => depth += 1,
            Payload::ComponentExportSection(r) if depth == 0 => {
                for e in r {
                    let e = e.map_err(|e| AdaptError::Invalid(e.to_string()))?;
                    component_exports.push(e.name.name.to_string());
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let mut mains = Vec::new();
    let mut with_memory = 0;
    for bytes in modules {
        let m = Module::parse(bytes).map_err(|e| AdaptError::Invalid(e.to_string()))?;
        if m.num_memories > 0 {
            with_memory += 1;
        }
        if m.has_export("memory") && m.has_export("cabi_realloc") {
            mains.push((bytes, m));
        }
    }
    if with_memory > 1 {
        return Err(AdaptError::ManyMemories(with_memory));
    }
    let Some((bytes, main)) = mains.into_iter().next() else {
        return Err(AdaptError::NoMainModule);
    };
    if main.export_func(FILTER_MARK).is_none() {
        let found = world_of(&component_exports, &main);
        return Err(AdaptError::WrongWorld { found });
    }
    Ok(bytes)
}

/// Names the world a non-filter component targets, from what it exports.
fn world_of(component_exports: &[String], main: &Module) -> String {
    let has = |iface: &str| component_exports.iter().any(|e| e.starts_with(iface));
    let spans = has("weft:plugin/spans@");
    let logs = has("weft:plugin/logs@");
    match (spans, logs) {
        (true, true) => "weft:plugin/otlp-processor@0.1.0".into(),
        (true, false) => "weft:plugin/span-processor@0.1.0".into(),
        (false, true) => "weft:plugin/log-transform@0.1.0".into(),
        _ if main.has_export("_start") || has("wasi:cli/run@") => {
            "wasi:cli/command (a program, not a plugin)".into()
        }
        _ if component_exports.is_empty() => "(none: the component exports nothing)".into(),
        _ => format!("(exports {})", component_exports.join(", ")),
    }
}

/// `wasi:cli/stdout@0.2.3` → `wasi:cli/stdout@0.2`: the glue implements every 0.2.x.
fn normalize(module: &str) -> String {
    if let Some((iface, version)) = module.split_once('@')
        && iface.starts_with("wasi:")
        && let Some(rest) = version.strip_prefix("0.2")
        && (rest.is_empty() || rest.starts_with('.'))
    {
        return format!("{iface}@0.2");
    }
    module.to_string()
}

/// Why an unresolved import cannot be provided.
fn unsupported_reason(module: &str) -> &'static str {
    if module.starts_with("wasi:filesystem") {
        "Envoy gives Wasm filters no filesystem"
    } else if module.starts_with("wasi:sockets") {
        "Envoy gives Wasm filters no sockets (use dispatch-http-call)"
    } else if module.starts_with("wasi:http") {
        "wasi:http is not Proxy-Wasm; write the filter against weft:plugin/http-filter"
    } else if module.starts_with("wasi:") {
        "this WASI function has no Proxy-Wasm equivalent"
    } else {
        "it is not part of the weft:plugin/http-filter world"
    }
}

/// Index maps from one input module into the output.
struct Remap {
    funcs: Vec<u32>,
    globals: Vec<u32>,
    types_offset: u32,
    name: &'static str,
    /// Whether the module may use its tables (the glue may not: its empty table is dropped).
    tables: bool,
}

impl Reencode for Remap {
    type Error = String;

    fn function_index(&mut self, func: u32) -> Result<u32, ReencodeError<String>> {
        self.funcs.get(func as usize).copied().ok_or_else(|| {
            ReencodeError::UserError(format!("{}: function {func} out of range", self.name))
        })
    }

    fn global_index(&mut self, global: u32) -> Result<u32, ReencodeError<String>> {
        self.globals.get(global as usize).copied().ok_or_else(|| {
            ReencodeError::UserError(format!("{}: global {global} out of range", self.name))
        })
    }

    fn type_index(&mut self, ty: u32) -> Result<u32, ReencodeError<String>> {
        Ok(ty + self.types_offset)
    }

    fn table_index(&mut self, table: u32) -> Result<u32, ReencodeError<String>> {
        if self.tables {
            Ok(table)
        } else {
            Err(ReencodeError::UserError(format!(
                "{} uses table {table} (function pointers are not allowed in the glue)",
                self.name
            )))
        }
    }

    fn memory_index(&mut self, memory: u32) -> Result<u32, ReencodeError<String>> {
        // One memory in the output: the guest's (the glue imports it).
        if memory == 0 {
            Ok(0)
        } else {
            Err(ReencodeError::UserError(format!(
                "{}: memory {memory}",
                self.name
            )))
        }
    }
}

fn enc_err(e: ReencodeError<String>) -> AdaptError {
    AdaptError::Invalid(format!("re-encoding: {e}"))
}

/// Fuses `main` (the component's main module) with `glue`.
pub(crate) fn fuse(main_bytes: &[u8], glue_bytes: &[u8]) -> Result<Adapted, AdaptError> {
    let main = Module::parse(main_bytes).map_err(|e| AdaptError::Invalid(e.to_string()))?;
    let glue = Module::parse(glue_bytes).map_err(|e| AdaptError::Glue(e.to_string()))?;
    check_glue(&glue)?;
    if main.num_global_imports > 0 || main.num_memory_imports > 0 || main.num_table_imports > 0 {
        return Err(AdaptError::Unsupported {
            import: main
                .imports
                .iter()
                .find(|i| !matches!(i.ty, TypeRef::Func(_)))
                .map(|i| format!("{}#{}", i.module, i.name))
                .unwrap_or_default(),
            why: "a main module importing memories, tables or globals is not supported",
        });
    }

    // Glue exports by name (what the guest's imports resolve to).
    let glue_exports: HashMap<&str, u32> = glue
        .exports
        .iter()
        .filter(|e| e.kind == ExternalKind::Func)
        .map(|e| (e.name, e.index))
        .collect();

    // Output function index space: [proxy imports][main's functions][glue's functions][synth].
    let mut proxy_imports: Vec<(&str, u32)> = Vec::new(); // (name, glue type)
    let mut glue_import_out: Vec<Option<u32>> = Vec::new();
    for imp in glue.imports.iter() {
        if let TypeRef::Func(t) = imp.ty {
            if imp.module == "env" {
                glue_import_out.push(Some(proxy_imports.len() as u32));
                proxy_imports.push((imp.name, t));
            } else {
                glue_import_out.push(None);
            }
        }
    }
    let p = proxy_imports.len() as u32;
    let main_defined = main.num_funcs() - main.num_func_imports;
    let glue_defined = glue.num_funcs() - glue.num_func_imports;
    let main_base = p;
    let glue_base = p + main_defined;
    let synth_base = glue_base + glue_defined;
    let (f_state_get, f_state_set, f_noop_post) = (synth_base, synth_base + 1, synth_base + 2);

    let glue_func_out = |idx: u32| -> Option<u32> {
        if idx < glue.num_func_imports {
            None
        } else {
            Some(glue_base + idx - glue.num_func_imports)
        }
    };

    // The main module's imports → glue functions.
    let mut resolved = Vec::new();
    let mut main_funcs = Vec::with_capacity(main.num_funcs() as usize);
    for imp in main.imports.iter() {
        let TypeRef::Func(_) = imp.ty else { continue };
        let key = format!("{}#{}", normalize(imp.module), imp.name);
        let out = glue_exports
            .get(key.as_str())
            .and_then(|&i| glue_func_out(i));
        match out {
            Some(o) => {
                resolved.push((format!("{}#{}", imp.module, imp.name), key));
                main_funcs.push(o);
            }
            None => {
                return Err(AdaptError::Unsupported {
                    import: format!("{}#{}", imp.module, imp.name),
                    why: unsupported_reason(imp.module),
                });
            }
        }
    }
    for j in 0..main_defined {
        main_funcs.push(main_base + j);
    }

    // The glue's imports → proxy imports, main exports, or synthesized functions.
    let mut glue_funcs = Vec::with_capacity(glue.num_funcs() as usize);
    let mut fi = 0usize;
    for imp in glue.imports.iter() {
        let TypeRef::Func(_) = imp.ty else { continue };
        let out = match (imp.module, imp.name) {
            ("env", _) => glue_import_out[fi].unwrap_or(u32::MAX),
            ("weft:glue", "state") => f_state_get,
            ("weft:glue", "set_state") => f_state_set,
            ("weft:guest", name) => match main.export_func(name) {
                Some(idx) => main_funcs[idx as usize],
                None if name.starts_with("cabi_post_") => f_noop_post,
                None => return Err(AdaptError::MissingExport(name.to_string())),
            },
            (module, name) => {
                return Err(AdaptError::Glue(format!("imports unknown {module}#{name}")));
            }
        };
        glue_funcs.push(out);
        fi += 1;
    }
    for j in 0..glue_defined {
        glue_funcs.push(glue_base + j);
    }

    // Globals: the main module's, then the glue's (its stack pointer is the guest's), then the
    // glue's root pointer.
    let main_sp = main
        .stack_pointer()
        .ok_or_else(|| AdaptError::Unsupported {
            import: "__stack_pointer".into(),
            why: "the main module has no recognizable shadow-stack pointer",
        })?;
    let glue_sp = glue
        .stack_pointer()
        .ok_or_else(|| AdaptError::Glue("has no __stack_pointer".into()))?;
    let main_globals: Vec<u32> = (0..main.num_globals()).collect();
    let mut glue_globals = Vec::new();
    let mut glue_kept_globals = Vec::new();
    let mut next_global = main.num_globals();
    for g in 0..glue.num_globals() {
        if g == glue_sp {
            glue_globals.push(main_sp);
        } else {
            glue_globals.push(next_global);
            glue_kept_globals.push(g);
            next_global += 1;
        }
    }
    let state_global = next_global;

    let main_types = main.types.len() as u32;
    let glue_types = glue.types.len() as u32;
    let t_get = main_types + glue_types; // () -> i32
    let t_set = t_get + 1; // (i32) -> ()

    let mut rm = Remap {
        funcs: main_funcs,
        globals: main_globals,
        types_offset: 0,
        name: "main module",
        tables: true,
    };
    let mut rg = Remap {
        funcs: glue_funcs,
        globals: glue_globals,
        types_offset: main_types,
        name: "glue",
        tables: false,
    };

    let mut out = Encoder::new();

    // Types.
    let mut types = TypeSection::new();
    if let Some(r) = main.type_section.clone() {
        rm.parse_type_section(&mut types, r).map_err(enc_err)?;
    }
    if let Some(r) = glue.type_section.clone() {
        rg.parse_type_section(&mut types, r).map_err(enc_err)?;
    }
    types.ty().function([], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    out.section(&types);

    // Imports: only env.proxy_*.
    let mut imports = ImportSection::new();
    for (name, t) in &proxy_imports {
        imports.import("env", name, EntityType::Function(t + main_types));
    }
    out.section(&imports);

    // Functions.
    let mut funcs = FunctionSection::new();
    for t in &main.func_types[main.num_func_imports as usize..] {
        funcs.function(*t);
    }
    for t in &glue.func_types[glue.num_func_imports as usize..] {
        funcs.function(t + main_types);
    }
    funcs.function(t_get);
    funcs.function(t_set);
    funcs.function(t_set);
    out.section(&funcs);

    // Tables and memory: the main module's.
    if let Some(r) = main.tables.clone() {
        let mut tables = TableSection::new();
        rm.parse_table_section(&mut tables, r).map_err(enc_err)?;
        out.section(&tables);
    }
    if let Some(r) = main.memories.clone() {
        let mut mems = MemorySection::new();
        rm.parse_memory_section(&mut mems, r).map_err(enc_err)?;
        out.section(&mems);
    }

    // Globals.
    let mut globals = GlobalSection::new();
    if let Some(r) = main.globals.clone() {
        rm.parse_global_section(&mut globals, r).map_err(enc_err)?;
    }
    if let Some(r) = glue.globals.clone() {
        for (i, g) in r.into_iter().enumerate() {
            let g = g.map_err(|e| AdaptError::Glue(e.to_string()))?;
            if glue_kept_globals.contains(&(i as u32 + glue.num_global_imports)) {
                rg.parse_global(&mut globals, g).map_err(enc_err)?;
            }
        }
    }
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(0),
    );
    out.section(&globals);

    // Exports: the memory, the glue's Proxy-Wasm entry points, and `_initialize`.
    let mut exports = ExportSection::new();
    for e in &main.exports {
        if e.kind == ExternalKind::Memory {
            exports.export("memory", ExportKind::Memory, e.index);
        }
    }
    for e in &glue.exports {
        if e.kind == ExternalKind::Func
            && (e.name.starts_with("proxy_on_") || e.name.starts_with("proxy_abi_version_"))
        {
            let idx = rg.funcs[e.index as usize];
            exports.export(e.name, ExportKind::Func, idx);
        }
    }
    if let Some(init) = main.export_func("_initialize") {
        exports.export("_initialize", ExportKind::Func, rm.funcs[init as usize]);
    }
    out.section(&exports);

    if let Some(start) = main.start {
        out.section(&StartSection {
            function_index: rm.funcs[start as usize],
        });
    }
    if let Some(r) = main.elements.clone() {
        let mut elems = ElementSection::new();
        rm.parse_element_section(&mut elems, r).map_err(enc_err)?;
        out.section(&elems);
    }
    if let Some(count) = main.data_count {
        out.section(&DataCountSection { count });
    }

    // Code.
    let mut code = CodeSection::new();
    for body in main.code.iter().cloned() {
        rm.parse_function_body(&mut code, body).map_err(enc_err)?;
    }
    for body in glue.code.iter().cloned() {
        rg.parse_function_body(&mut code, body).map_err(enc_err)?;
    }
    let mut get = Function::new([]);
    get.instruction(&Instruction::GlobalGet(state_global));
    get.instruction(&Instruction::End);
    code.function(&get);
    let mut set = Function::new([]);
    set.instruction(&Instruction::LocalGet(0));
    set.instruction(&Instruction::GlobalSet(state_global));
    set.instruction(&Instruction::End);
    code.function(&set);
    let mut noop = Function::new([]);
    noop.instruction(&Instruction::End);
    code.function(&noop);
    out.section(&code);

    if let Some(r) = main.data.clone() {
        let mut data = DataSection::new();
        rm.parse_data_section(&mut data, r).map_err(enc_err)?;
        out.section(&data);
    }

    let _ = f_noop_post;
    Ok(Adapted {
        module: out.finish(),
        resolved,
        main_module_size: main_bytes.len(),
    })
}

/// The glue must follow the rules that let it live inside the guest's module.
fn check_glue(glue: &Module) -> Result<(), AdaptError> {
    if glue.num_data > 0 {
        return Err(AdaptError::Glue(format!(
            "has {} data segments (it would overwrite the guest's memory)",
            glue.num_data
        )));
    }
    if glue.num_memories > 0 {
        return Err(AdaptError::Glue(
            "defines a memory instead of importing env.memory".into(),
        ));
    }
    // wasm-ld always declares an indirect-function table; with no elements it is unused (and any
    // instruction that uses a table fails the glue's re-encoding).
    if glue.num_table_imports > 0 || glue.elements.is_some() {
        return Err(AdaptError::Glue(
            "has table elements (function pointers are not allowed)".into(),
        ));
    }
    if glue.start.is_some() {
        return Err(AdaptError::Glue("has a start function".into()));
    }
    Ok(())
}
