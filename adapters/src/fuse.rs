//! Fusing the component's main core module with the glue into one core module.

use std::borrow::Cow;
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
const FILTER_MARK: &str = "weft:plugin/filter@0.2.0#[constructor]http-stream";

/// Whether a core module is a shared library of the dynamic-linking convention (it has a
/// `dylink.0` custom section).
fn is_shared_library(module: &[u8]) -> bool {
    Parser::new(0)
        .parse_all(module)
        .any(|p| matches!(p, Ok(Payload::CustomSection(c)) if c.name() == "dylink.0"))
}

/// The module the glue is fused with.
pub(crate) struct MainModule<'a> {
    /// The component's main module, or the module its shared libraries were linked into.
    pub bytes: Cow<'a, [u8]>,
    /// How many core modules of the component it holds.
    pub core_modules: usize,
    /// What the linker noticed.
    pub notes: Vec<String>,
}

/// Whether a core module imports WASI preview 1 (`wasi_snapshot_preview1`): a main module that
/// wit-component links with its preview1 adapter module (componentize-js with stdio, clocks or
/// random enabled).
fn imports_preview1(module: &[u8]) -> bool {
    Parser::new(0).parse_all(module).any(|p| match p {
        Ok(Payload::ImportSection(r)) => r
            .into_imports()
            .any(|i| i.is_ok_and(|i| i.module == "wasi_snapshot_preview1")),
        _ => false,
    })
}

/// Finds the main core module of `component` and checks it targets the http-filter world. A
/// component whose core modules import each other beyond wit-component's shims (shared
/// libraries, or a main module that imports WASI preview 1 from wit-component's adapter module)
/// is linked into one module first.
pub(crate) fn main_module(component: &[u8]) -> Result<MainModule<'_>, AdaptError> {
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
    let libraries = modules.iter().filter(|m| is_shared_library(m)).count();
    if libraries > 0 || modules.iter().any(|m| imports_preview1(m)) {
        let linked = crate::link::link(component).map_err(|e| AdaptError::Link {
            modules: modules.len(),
            libraries,
            cause: format!("{e:#}"),
        })?;
        let m = Module::parse(&linked.module).map_err(|e| AdaptError::Link {
            modules: modules.len(),
            libraries,
            cause: e.to_string(),
        })?;
        if m.export_func(FILTER_MARK).is_none() {
            let found = world_of(&component_exports, &m);
            return Err(AdaptError::WrongWorld { found });
        }
        return Ok(MainModule {
            bytes: Cow::Owned(linked.module),
            core_modules: modules.len(),
            notes: linked.notes,
        });
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
    Ok(MainModule {
        bytes: Cow::Borrowed(bytes),
        core_modules: 1,
        notes: Vec::new(),
    })
}

/// Names the world a non-filter component targets, from what it exports.
fn world_of(component_exports: &[String], main: &Module) -> String {
    let has = |iface: &str| component_exports.iter().any(|e| e.starts_with(iface));
    let batch = (
        has("weft:plugin/otlp-traces@"),
        has("weft:plugin/otlp-logs@"),
    );
    let typed = (has("weft:plugin/spans@"), has("weft:plugin/logs@"));
    match (batch, typed) {
        ((true, true), _) => "weft:plugin/otlp-processor@0.2.0".into(),
        ((true, false), _) => "weft:plugin/span-processor@0.2.0".into(),
        ((false, true), _) => "weft:plugin/log-transform@0.2.0".into(),
        (_, (true, true)) => "weft:plugin/typed-otlp-processor@0.2.0".into(),
        (_, (true, false)) => "weft:plugin/typed-span-processor@0.2.0".into(),
        (_, (false, true)) => "weft:plugin/typed-log-transform@0.2.0".into(),
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

/// Whether an import is a method, static function or destructor of a WASI resource that no
/// function the glue provides ever hands out: Envoy gives filters no filesystem and no sockets,
/// so `get-directories` answers no preopened directories and `create-tcp-socket`,
/// `create-udp-socket` and `resolve-addresses` answer `access-denied`. No descriptor, socket or
/// resolver stream can then exist, and the fuser satisfies these imports with functions that trap
/// (`unreachable`). Language runtimes (libc, CPython) link them whether or not a plugin uses
/// files or sockets.
fn unobtainable(module: &str, name: &str) -> bool {
    let resource_fn = ["[method]", "[static]", "[resource-drop]"]
        .iter()
        .any(|p| name.starts_with(p));
    let module = normalize(module);
    let unobtainable_iface = matches!(
        module.as_str(),
        "wasi:filesystem/types@0.2"
            | "wasi:sockets/tcp@0.2"
            | "wasi:sockets/udp@0.2"
            | "wasi:sockets/ip-name-lookup@0.2"
    );
    resource_fn && unobtainable_iface
}

/// Index maps from one input module into the output.
struct Remap {
    /// Output index of every function of the module, imported ones first.
    funcs: Vec<u32>,
    /// Output index of every global of the module.
    globals: Vec<u32>,
    /// Where the module's types start in the output's type section.
    types_offset: u32,
    /// The module, for error messages.
    name: &'static str,
    /// Whether the module may use its tables (the glue may not: its empty table is dropped).
    tables: bool,
    /// Calls (by output function index) written as one instruction instead: the glue's calls of
    /// the state getter and setter become `global.get`/`global.set` of the root pointer, its
    /// calls of the synthesized no-op post-returns become `drop` or nothing. They are a call or
    /// two in every callback.
    inline: HashMap<u32, Inline>,
}

/// What a call of a synthesized function is written as (see [`Remap::inline`]).
#[derive(Debug, Clone, Copy)]
enum Inline {
    GlobalGet(u32),
    GlobalSet(u32),
    Drop,
    Nop,
}

impl Reencode for Remap {
    type Error = String;

    fn instruction<'a>(
        &mut self,
        op: wasmparser::Operator<'a>,
    ) -> Result<Instruction<'a>, ReencodeError<String>> {
        if let wasmparser::Operator::Call { function_index } = op {
            let out = self.function_index(function_index)?;
            if let Some(inline) = self.inline.get(&out) {
                return Ok(match *inline {
                    Inline::GlobalGet(g) => Instruction::GlobalGet(g),
                    Inline::GlobalSet(g) => Instruction::GlobalSet(g),
                    Inline::Drop => Instruction::Drop,
                    Inline::Nop => Instruction::Nop,
                });
            }
        }
        wasm_encoder::reencode::utils::instruction(self, op)
    }

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

/// Fuses `main` (the component's main module) with `glue`: [`plan`] decides where everything
/// goes, then the `emit_*` steps write the output's sections in the order the binary format
/// requires.
pub(crate) fn fuse(main_bytes: &[u8], glue_bytes: &[u8]) -> Result<Adapted, AdaptError> {
    let main = Module::parse(main_bytes).map_err(|e| AdaptError::Invalid(e.to_string()))?;
    let glue = Module::parse(glue_bytes).map_err(|e| AdaptError::Glue(e.to_string()))?;
    check_glue(&glue)?;
    check_main_imports(&main)?;
    let mut plan = plan(&main, &glue)?;

    let mut out = Encoder::new();
    emit_types(&mut out, &main, &glue, &mut plan)?;
    emit_imports(&mut out, &plan);
    emit_functions(&mut out, &main, &glue, &plan);
    emit_tables_and_memory(&mut out, &main, &mut plan)?;
    emit_globals(&mut out, &main, &glue, &mut plan)?;
    emit_exports(&mut out, &main, &glue, &plan);
    emit_start_elements_and_data_count(&mut out, &main, &mut plan)?;
    emit_code(&mut out, &main, &glue, &mut plan)?;
    emit_data(&mut out, &main, &mut plan)?;

    Ok(Adapted {
        module: out.finish(),
        resolved: plan.resolved,
        main_module_size: main_bytes.len(),
        core_modules: 1,
        notes: Vec::new(),
    })
}

/// The main module may import functions only: its memory, tables and globals must be its own
/// (the glue resolves functions, nothing else).
fn check_main_imports(main: &Module) -> Result<(), AdaptError> {
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
    Ok(())
}

/// Where every item of the two inputs goes in the output, decided before anything is written.
///
/// The output's function index space is
/// `[glue's env.proxy_* imports][main's functions][glue's functions][synthesized]`, where the
/// synthesized functions are the state getter and setter (`weft:glue.state` / `set_state`) and
/// two no-op `cabi_post_*` for guest exports that have none (one taking the export's `i32`
/// result, one for exports without results), then one trapping function per [`unobtainable`]
/// import. Its globals are the main module's,
/// then the glue's except its stack pointer (which becomes the guest's), then the glue's root
/// pointer. Its types are the main module's, then the glue's, then the getter, setter and
/// `() -> ()` types.
/// Memory and tables are the main module's alone.
struct Plan<'a> {
    /// The glue's `env` function imports, in order: `(name, glue type index)`. They are the only
    /// imports of the output.
    proxy_imports: Vec<(&'a str, u32)>,
    /// Index maps of the main module.
    main: Remap,
    /// Index maps of the glue.
    glue: Remap,
    /// The glue's defined globals that are copied (all but its stack pointer).
    glue_kept_globals: Vec<u32>,
    /// The output global that holds the glue's root pointer.
    state_global: u32,
    /// Number of types of the main module: the glue's types follow them.
    main_types: u32,
    /// The type `() -> i32` of the state getter.
    t_get: u32,
    /// The type `(i32) -> ()` of the state setter and of the no-op post-return.
    t_set: u32,
    /// The type `() -> ()` of the no-op post-return of exports without results.
    t_unit: u32,
    /// Imports of the main module and what satisfied each (reported in [`Adapted`]).
    resolved: Vec<(String, String)>,
    /// Types (main-module type indices) of the trapping functions that satisfy
    /// [`unobtainable`] imports, in output order after the other synthesized functions.
    traps: Vec<u32>,
}

/// Output function indices of the main module and the glue, with what resolves their imports.
struct FunctionPlan<'a> {
    proxy_imports: Vec<(&'a str, u32)>,
    main_funcs: Vec<u32>,
    glue_funcs: Vec<u32>,
    /// The synthesized state getter, setter, and no-op post-returns `(i32)` and `()`.
    synth: [u32; 4],
    resolved: Vec<(String, String)>,
    traps: Vec<u32>,
}

/// Lays out the output (see [`Plan`]): resolves the imports of both modules and maps their
/// function, global and type indices.
fn plan<'a>(main: &Module<'a>, glue: &Module<'a>) -> Result<Plan<'a>, AdaptError> {
    let FunctionPlan {
        proxy_imports,
        main_funcs,
        glue_funcs,
        synth: [f_state_get, f_state_set, f_noop_post, f_noop_unit],
        resolved,
        traps,
    } = plan_functions(main, glue)?;
    let GlobalPlan {
        main_globals,
        glue_globals,
        glue_kept_globals,
        state_global,
    } = plan_globals(main, glue)?;

    let main_types = main.types.len() as u32;
    let glue_types = glue.types.len() as u32;
    let t_get = main_types + glue_types; // () -> i32
    let t_set = t_get + 1; // (i32) -> ()
    let t_unit = t_get + 2; // () -> ()

    Ok(Plan {
        proxy_imports,
        main: Remap {
            funcs: main_funcs,
            globals: main_globals,
            types_offset: 0,
            name: "main module",
            tables: true,
            inline: HashMap::new(),
        },
        glue: Remap {
            funcs: glue_funcs,
            globals: glue_globals,
            types_offset: main_types,
            name: "glue",
            tables: false,
            inline: HashMap::from([
                (f_state_get, Inline::GlobalGet(state_global)),
                (f_state_set, Inline::GlobalSet(state_global)),
                (f_noop_post, Inline::Drop),
                (f_noop_unit, Inline::Nop),
            ]),
        },
        glue_kept_globals,
        state_global,
        main_types,
        t_get,
        t_set,
        t_unit,
        resolved,
        traps,
    })
}

/// The function index space: the main module's imports resolve to glue exports (with WASI
/// versions normalized), the glue's imports to `env` imports of the output, main-module
/// exports, or the synthesized functions.
fn plan_functions<'a>(
    main: &Module<'a>,
    glue: &Module<'a>,
) -> Result<FunctionPlan<'a>, AdaptError> {
    // Glue exports by name (what the guest's imports resolve to).
    let glue_exports: HashMap<&str, u32> = glue
        .exports
        .iter()
        .filter(|e| e.kind == ExternalKind::Func)
        .map(|e| (e.name, e.index))
        .collect();

    // [proxy imports][main's functions][glue's functions][synth].
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
    let (f_state_get, f_state_set, f_noop_post, f_noop_unit) =
        (synth_base, synth_base + 1, synth_base + 2, synth_base + 3);

    let glue_func_out = |idx: u32| -> Option<u32> {
        if idx < glue.num_func_imports {
            None
        } else {
            Some(glue_base + idx - glue.num_func_imports)
        }
    };

    // The main module's imports → glue functions.
    let mut resolved = Vec::new();
    let mut traps = Vec::new();
    let f_traps = synth_base + 4;
    let mut main_funcs = Vec::with_capacity(main.num_funcs() as usize);
    for imp in main.imports.iter() {
        let TypeRef::Func(ty) = imp.ty else { continue };
        let key = format!("{}#{}", normalize(imp.module), imp.name);
        let out = glue_exports
            .get(key.as_str())
            .and_then(|&i| glue_func_out(i));
        match out {
            Some(o) => {
                resolved.push((format!("{}#{}", imp.module, imp.name), key));
                main_funcs.push(o);
            }
            None if unobtainable(imp.module, imp.name) => {
                resolved.push((format!("{}#{}", imp.module, imp.name), "unreachable".into()));
                main_funcs.push(f_traps + traps.len() as u32);
                traps.push(ty);
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
        let TypeRef::Func(t) = imp.ty else { continue };
        let out = match (imp.module, imp.name) {
            ("env", _) => glue_import_out[fi].unwrap_or(u32::MAX),
            ("weft:glue", "state") => f_state_get,
            ("weft:glue", "set_state") => f_state_set,
            ("weft:guest", name) => match main.export_func(name) {
                Some(idx) => main_funcs[idx as usize],
                // Exports without results have post-returns without parameters.
                None if name.starts_with("cabi_post_") => {
                    match glue.types.get(t as usize).map(|ty| ty.params().is_empty()) {
                        Some(true) => f_noop_unit,
                        _ => f_noop_post,
                    }
                }
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

    Ok(FunctionPlan {
        proxy_imports,
        main_funcs,
        glue_funcs,
        synth: [f_state_get, f_state_set, f_noop_post, f_noop_unit],
        resolved,
        traps,
    })
}

/// Output global indices of the main module and the glue.
struct GlobalPlan {
    main_globals: Vec<u32>,
    glue_globals: Vec<u32>,
    /// The glue's globals that are copied (all but its stack pointer).
    glue_kept_globals: Vec<u32>,
    /// The glue's root pointer (a new global after all the others).
    state_global: u32,
}

/// The global index space: the main module's globals, then the glue's (its stack pointer is
/// the guest's), then the glue's root pointer.
fn plan_globals(main: &Module, glue: &Module) -> Result<GlobalPlan, AdaptError> {
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
    Ok(GlobalPlan {
        main_globals,
        glue_globals,
        glue_kept_globals,
        state_global: next_global,
    })
}

/// Type section: the main module's types, the glue's, then `() -> i32` and `(i32) -> ()`.
fn emit_types(
    out: &mut Encoder,
    main: &Module,
    glue: &Module,
    plan: &mut Plan,
) -> Result<(), AdaptError> {
    let mut types = TypeSection::new();
    if let Some(r) = main.type_section.clone() {
        plan.main
            .parse_type_section(&mut types, r)
            .map_err(enc_err)?;
    }
    if let Some(r) = glue.type_section.clone() {
        plan.glue
            .parse_type_section(&mut types, r)
            .map_err(enc_err)?;
    }
    types.ty().function([], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    types.ty().function([], []);
    out.section(&types);
    Ok(())
}

/// Import section: only the glue's `env.proxy_*` functions.
fn emit_imports(out: &mut Encoder, plan: &Plan) {
    let mut imports = ImportSection::new();
    for (name, t) in &plan.proxy_imports {
        imports.import("env", name, EntityType::Function(t + plan.main_types));
    }
    out.section(&imports);
}

/// Function section: the main module's defined functions, the glue's, then the state getter,
/// the state setter and the no-op post-return.
fn emit_functions(out: &mut Encoder, main: &Module, glue: &Module, plan: &Plan) {
    let mut funcs = FunctionSection::new();
    for t in &main.func_types[main.num_func_imports as usize..] {
        funcs.function(*t);
    }
    for t in &glue.func_types[glue.num_func_imports as usize..] {
        funcs.function(t + plan.main_types);
    }
    funcs.function(plan.t_get);
    funcs.function(plan.t_set);
    funcs.function(plan.t_set);
    funcs.function(plan.t_unit);
    for t in &plan.traps {
        funcs.function(*t);
    }
    out.section(&funcs);
}

/// Table and memory sections: the main module's (the glue has neither that it uses).
fn emit_tables_and_memory(
    out: &mut Encoder,
    main: &Module,
    plan: &mut Plan,
) -> Result<(), AdaptError> {
    if let Some(r) = main.tables.clone() {
        let mut tables = TableSection::new();
        plan.main
            .parse_table_section(&mut tables, r)
            .map_err(enc_err)?;
        out.section(&tables);
    }
    if let Some(r) = main.memories.clone() {
        let mut mems = MemorySection::new();
        plan.main
            .parse_memory_section(&mut mems, r)
            .map_err(enc_err)?;
        out.section(&mems);
    }
    Ok(())
}

/// Global section: the main module's globals, the glue's kept ones, and the root pointer
/// (a mutable i32, 0 until the glue's first call).
fn emit_globals(
    out: &mut Encoder,
    main: &Module,
    glue: &Module,
    plan: &mut Plan,
) -> Result<(), AdaptError> {
    let mut globals = GlobalSection::new();
    if let Some(r) = main.globals.clone() {
        plan.main
            .parse_global_section(&mut globals, r)
            .map_err(enc_err)?;
    }
    if let Some(r) = glue.globals.clone() {
        for (i, g) in r.into_iter().enumerate() {
            let g = g.map_err(|e| AdaptError::Glue(e.to_string()))?;
            if plan
                .glue_kept_globals
                .contains(&(i as u32 + glue.num_global_imports))
            {
                plan.glue.parse_global(&mut globals, g).map_err(enc_err)?;
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
    Ok(())
}

/// Export section: the memory, the glue's Proxy-Wasm entry points, and `_initialize`.
fn emit_exports(out: &mut Encoder, main: &Module, glue: &Module, plan: &Plan) {
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
            let idx = plan.glue.funcs[e.index as usize];
            exports.export(e.name, ExportKind::Func, idx);
        }
    }
    if let Some(init) = main.export_func("_initialize") {
        exports.export(
            "_initialize",
            ExportKind::Func,
            plan.main.funcs[init as usize],
        );
    }
    out.section(&exports);
}

/// Start, element and data-count sections: the main module's, if it has them.
fn emit_start_elements_and_data_count(
    out: &mut Encoder,
    main: &Module,
    plan: &mut Plan,
) -> Result<(), AdaptError> {
    if let Some(start) = main.start {
        out.section(&StartSection {
            function_index: plan.main.funcs[start as usize],
        });
    }
    if let Some(r) = main.elements.clone() {
        let mut elems = ElementSection::new();
        plan.main
            .parse_element_section(&mut elems, r)
            .map_err(enc_err)?;
        out.section(&elems);
    }
    if let Some(count) = main.data_count {
        out.section(&DataCountSection { count });
    }
    Ok(())
}

/// Code section: the main module's bodies, the glue's (re-encoded with their index maps), then
/// the synthesized getter, setter and the two no-ops.
fn emit_code(
    out: &mut Encoder,
    main: &Module,
    glue: &Module,
    plan: &mut Plan,
) -> Result<(), AdaptError> {
    let mut code = CodeSection::new();
    for body in main.code.iter().cloned() {
        plan.main
            .parse_function_body(&mut code, body)
            .map_err(enc_err)?;
    }
    for body in glue.code.iter().cloned() {
        plan.glue
            .parse_function_body(&mut code, body)
            .map_err(enc_err)?;
    }
    let mut get = Function::new([]);
    get.instruction(&Instruction::GlobalGet(plan.state_global));
    get.instruction(&Instruction::End);
    code.function(&get);
    let mut set = Function::new([]);
    set.instruction(&Instruction::LocalGet(0));
    set.instruction(&Instruction::GlobalSet(plan.state_global));
    set.instruction(&Instruction::End);
    code.function(&set);
    let mut noop = Function::new([]);
    noop.instruction(&Instruction::End);
    code.function(&noop);
    code.function(&noop);
    let mut trap = Function::new([]);
    trap.instruction(&Instruction::Unreachable);
    trap.instruction(&Instruction::End);
    for _ in &plan.traps {
        code.function(&trap);
    }
    out.section(&code);
    Ok(())
}

/// Data section: the main module's (the glue has none, see [`check_glue`]).
fn emit_data(out: &mut Encoder, main: &Module, plan: &mut Plan) -> Result<(), AdaptError> {
    if let Some(r) = main.data.clone() {
        let mut data = DataSection::new();
        plan.main
            .parse_data_section(&mut data, r)
            .map_err(enc_err)?;
        out.section(&data);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{MemoryType, TypeSection as Types};

    /// A main module that exports everything the glue imports from `weft:guest` (each a
    /// function that returns zeros), a memory and a stack pointer, and imports `imports`.
    fn synthetic_main(imports: &[(&str, &str)]) -> Vec<u8> {
        let glue = Module::parse(crate::GLUE).expect("the glue parses");
        let guest: Vec<(&str, &wasmparser::FuncType)> = glue
            .imports
            .iter()
            .filter(|i| i.module == "weft:guest" && !i.name.starts_with("cabi_post_"))
            .filter_map(|i| match i.ty {
                TypeRef::Func(t) => Some((i.name, &glue.types[t as usize])),
                _ => None,
            })
            .collect();
        let mut types = Types::new();
        for (_, ty) in &guest {
            let params: Vec<ValType> = ty.params().iter().map(|_| ValType::I32).collect();
            let results: Vec<ValType> = ty.results().iter().map(|_| ValType::I32).collect();
            types.ty().function(params, results);
        }
        let unit = guest.len() as u32;
        types.ty().function([], []);
        let mut imps = ImportSection::new();
        for (module, name) in imports {
            imps.import(module, name, EntityType::Function(unit));
        }
        let mut funcs = FunctionSection::new();
        let mut code = CodeSection::new();
        for (i, (_, ty)) in guest.iter().enumerate() {
            funcs.function(i as u32);
            let mut f = Function::new([]);
            for _ in ty.results() {
                f.instruction(&Instruction::I32Const(0));
            }
            f.instruction(&Instruction::End);
            code.function(&f);
        }
        let mut mems = MemorySection::new();
        mems.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut globals = GlobalSection::new();
        globals.global(
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(65536),
        );
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        for (i, (name, _)) in guest.iter().enumerate() {
            exports.export(name, ExportKind::Func, imports.len() as u32 + i as u32);
        }
        let mut m = Encoder::new();
        m.section(&types)
            .section(&imps)
            .section(&funcs)
            .section(&mems)
            .section(&globals)
            .section(&exports)
            .section(&code);
        m.finish()
    }

    #[test]
    fn a_main_module_fuses_into_a_module_that_verifies() {
        let main = synthetic_main(&[("wasi:cli/stdout@0.2.3", "get-stdout")]);
        let adapted = fuse(&main, crate::GLUE).expect("fuses");
        crate::verify(&adapted.module).expect("verifies");
        assert_eq!(
            adapted.resolved,
            [(
                "wasi:cli/stdout@0.2.3#get-stdout".to_string(),
                "wasi:cli/stdout@0.2#get-stdout".to_string()
            )]
        );
        let out = Module::parse(&adapted.module).expect("parses");
        assert!(out.imports.iter().all(|i| i.module == "env"));
        assert_eq!(out.num_memories, 1);
        assert_eq!(out.num_data, 0);
        // The glue's root pointer is one global more than the main module's and the glue's
        // (whose stack pointer became the main module's).
        let glue = Module::parse(crate::GLUE).expect("parses");
        assert_eq!(out.num_globals(), 1 + glue.num_globals());
    }

    #[test]
    fn an_import_the_glue_does_not_provide_is_refused_with_its_reason() {
        let main = synthetic_main(&[("wasi:filesystem/types@0.2.0", "open-at")]);
        match fuse(&main, crate::GLUE) {
            Err(AdaptError::Unsupported { import, why }) => {
                assert_eq!(import, "wasi:filesystem/types@0.2.0#open-at");
                assert!(why.contains("no filesystem"), "{why}");
            }
            other => panic!("{:?}", other.map(|a| a.resolved)),
        }
    }

    #[test]
    fn methods_of_resources_the_glue_never_hands_out_trap() {
        let main = synthetic_main(&[
            ("wasi:sockets/tcp-create-socket@0.2.0", "create-tcp-socket"),
            ("wasi:sockets/tcp@0.2.0", "[method]tcp-socket.start-connect"),
            ("wasi:sockets/tcp@0.2.0", "[resource-drop]tcp-socket"),
            ("wasi:filesystem/types@0.2.0", "[method]descriptor.read"),
        ]);
        let adapted = fuse(&main, crate::GLUE).expect("fuses");
        crate::verify(&adapted.module).expect("verifies");
        let how: Vec<&str> = adapted.resolved.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(
            how,
            [
                "wasi:sockets/tcp-create-socket@0.2#create-tcp-socket",
                "unreachable",
                "unreachable",
                "unreachable"
            ]
        );
        // Not a method of a resource: refused, as before.
        assert!(!unobtainable("wasi:sockets/tcp@0.2.0", "start-connect"));
        assert!(!unobtainable(
            "wasi:io/streams@0.2.0",
            "[method]input-stream.read"
        ));
    }

    #[test]
    fn the_output_calls_no_synthesized_accessor_or_no_op() {
        let main_bytes = synthetic_main(&[]);
        let main = Module::parse(&main_bytes).expect("parses");
        let glue = Module::parse(crate::GLUE).expect("parses");
        let inlined: Vec<u32> = plan(&main, &glue)
            .expect("plans")
            .glue
            .inline
            .into_keys()
            .collect();
        assert_eq!(inlined.len(), 4);
        let adapted = fuse(&main_bytes, crate::GLUE).expect("fuses");
        let mut calls = 0;
        for payload in Parser::new(0).parse_all(&adapted.module) {
            if let Ok(Payload::CodeSectionEntry(body)) = payload {
                let mut ops = body.get_operators_reader().expect("operators");
                while !ops.eof() {
                    if let wasmparser::Operator::Call { function_index } = ops.read().expect("op") {
                        calls += 1;
                        assert!(
                            !inlined.contains(&function_index),
                            "a call of synthesized function {function_index} is left"
                        );
                    }
                }
            }
        }
        assert!(calls > 100, "{calls} calls: the glue's code was scanned");
    }

    #[test]
    fn wasi_versions_are_normalized_to_0_2_only() {
        assert_eq!(normalize("wasi:cli/stdout@0.2.3"), "wasi:cli/stdout@0.2");
        assert_eq!(normalize("wasi:cli/stdout@0.2"), "wasi:cli/stdout@0.2");
        assert_eq!(
            normalize("wasi:cli/stdout@0.20.1"),
            "wasi:cli/stdout@0.20.1"
        );
        assert_eq!(normalize("wasi:cli/stdout@0.3.0"), "wasi:cli/stdout@0.3.0");
        assert_eq!(normalize("weft:plugin/log@0.2.0"), "weft:plugin/log@0.2.0");
    }

    #[test]
    fn a_core_module_or_non_wasm_input_is_not_a_component() {
        assert!(matches!(main_module(b"hello"), Err(AdaptError::NotWasm)));
        let core = synthetic_main(&[]);
        assert!(matches!(main_module(&core), Err(AdaptError::CoreModule)));
    }
}
