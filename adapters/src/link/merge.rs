//! Merging a component's core instance graph into one core module.
//!
//! 1. **Resolve** ([`Merger::resolve`]): walk the core instances in order, as an engine would
//!    instantiate them. A `FromExports` instance is a bag of core items; an `Instantiate`
//!    instance binds each import of its module to an item exported by its argument instances
//!    and gives the module's own functions/tables/memories/globals fresh slots of the merged
//!    module. Items are symbolic: a function is either a function defined by some module
//!    instance or a canon-made core function (`canon lower`, `resource.new/rep/drop`).
//! 2. **Lay out** ([`Merger::layout`]): the canon-made functions that are used become the
//!    merged module's imports (deduplicated by name and canon options), then the defined
//!    functions of every module instance follow in instantiation order; types are interned.
//! 3. **Emit** ([`Merger::emit`]): every section is the concatenation of the module instances'
//!    sections, re-encoded with their index maps. Constant expressions that read a global
//!    (data/element offsets `global.get $__memory_base`, globals initialized from imported
//!    globals) are folded to constants, because those globals were imports and are now
//!    defined ones. Start functions run in instantiation order from one synthesized start.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, anyhow, bail};
use wasm_encoder::reencode::{Error as ReencodeError, Reencode, RoundtripReencoder};
use wasm_encoder::{
    CodeSection, ConstExpr, CustomSection, DataCountSection, DataSection, ElementSection,
    EntityType, ExportKind, ExportSection, Function, FunctionSection, GlobalSection, ImportSection,
    Instruction, MemorySection, NameMap, NameSection, StartSection, TableSection, TypeSection,
};
use wasmparser::{CanonicalOption, ExternalKind, FuncType, TypeRef};

use super::core::{Module, Val, eval_const, uses_global};
use super::graph::{CoreFunc, CoreInstance, Graph};

/// A function, before the merged module's function index space is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FuncRef {
    /// A canon-made core function: its index in the component's core function space.
    Canon(u32),
    /// Defined function `local` (0-based among defined ones) of module instance `inst`.
    Def { inst: usize, local: u32 },
}

/// A core item as a core instance exports it.
#[derive(Debug, Clone, Copy)]
enum Item {
    Func(FuncRef),
    Table(u32),
    Memory(u32),
    Global(u32),
}

/// One instantiation of a core module.
struct ModInst {
    /// Index of the core module in the component.
    module: usize,
    /// Index of the core instance in the component.
    instance: u32,
    /// Every function of the module (imports first).
    funcs: Vec<FuncRef>,
    tables: Vec<u32>,
    memories: Vec<u32>,
    /// Merged index of every global of the module (imports first).
    globals: Vec<u32>,
    /// Set by the layout.
    func_index: Vec<u32>,
    types: Vec<u32>,
    data_base: u32,
    elem_base: u32,
}

/// An import of the merged module: one canon-made core function.
#[derive(Debug, Clone)]
pub struct MergedImport {
    pub module: String,
    pub field: String,
    pub ty: u32,
    /// Canon options, resolved: `memory=<export> realloc=<export> encoding=...`.
    pub options: String,
}

/// What the merge produced, for the caller's report.
pub struct Merged {
    pub module: Vec<u8>,
    /// What the merge noticed, then one line per module instance: what it is and where its
    /// functions went.
    pub notes: Vec<String>,
}

pub struct Merger<'g, 'a> {
    g: &'g Graph<'a>,
    modules: Vec<Module<'a>>,
    inst_exports: Vec<HashMap<&'a str, Item>>,
    insts: Vec<ModInst>,
    /// Merged table/memory/global counts so far.
    n_tables: u32,
    n_memories: u32,
    n_globals: u32,
    /// Where each merged global comes from: (module instance, local global index).
    global_src: Vec<(usize, u32)>,
    /// Layout results.
    imports: Vec<MergedImport>,
    canon_import: HashMap<u32, u32>,
    types: Vec<FuncType>,
    type_ids: HashMap<FuncType, u32>,
    global_consts: Vec<Option<Val>>,
    notes: Vec<String>,
    /// The merged global every library's `__stack_pointer` import is bound to.
    stack_pointer: Option<u32>,
}

fn enc<E: std::fmt::Display>(e: ReencodeError<E>) -> anyhow::Error {
    anyhow!("re-encoding: {e}")
}

impl<'g, 'a> Merger<'g, 'a> {
    pub fn new(g: &'g Graph<'a>) -> Result<Self> {
        let modules = g
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| Module::parse(m).with_context(|| format!("core module {i}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Merger {
            g,
            modules,
            inst_exports: Vec::new(),
            insts: Vec::new(),
            n_tables: 0,
            n_memories: 0,
            n_globals: 0,
            global_src: Vec::new(),
            imports: Vec::new(),
            canon_import: HashMap::new(),
            types: Vec::new(),
            type_ids: HashMap::new(),
            global_consts: Vec::new(),
            notes: Vec::new(),
            stack_pointer: None,
        })
    }

    pub fn run(mut self) -> Result<Merged> {
        self.resolve()?;
        self.layout()?;
        self.emit()
    }

    // ---------------------------------------------------------------- resolve

    /// The item at `index` of the component's core index space of `kind`.
    fn core_item(&self, kind: ExternalKind, index: u32) -> Result<Item> {
        let alias = match kind {
            ExternalKind::Func | ExternalKind::FuncExact => {
                match self.g.core_funcs.get(index as usize) {
                    Some(CoreFunc::Alias(a)) => Some(a),
                    Some(CoreFunc::Other(what)) => bail!("unsupported canon built-in {what}"),
                    Some(_) => return Ok(Item::Func(FuncRef::Canon(index))),
                    None => bail!("core func {index} out of range"),
                }
            }
            ExternalKind::Table => self.g.core_tables.get(index as usize),
            ExternalKind::Memory => self.g.core_memories.get(index as usize),
            ExternalKind::Global => self.g.core_globals.get(index as usize),
            ExternalKind::Tag => None,
        }
        .with_context(|| format!("core {kind:?} {index} out of range"))?;
        self.inst_exports
            .get(alias.instance as usize)
            .and_then(|e| e.get(alias.name))
            .copied()
            .with_context(|| {
                format!(
                    "core instance {} has no export {:?}",
                    alias.instance, alias.name
                )
            })
    }

    fn resolve(&mut self) -> Result<()> {
        for (i, inst) in self.g.core_instances.iter().enumerate() {
            let exports = match inst {
                CoreInstance::FromExports(items) => {
                    let mut map = HashMap::new();
                    for (name, kind, index) in items {
                        map.insert(*name, self.core_item(*kind, *index)?);
                    }
                    map
                }
                CoreInstance::Instantiate { module, args } => self
                    .instantiate(i as u32, *module as usize, args)
                    .with_context(|| {
                        format!("instantiating core module {module} (core instance {i})")
                    })?,
            };
            self.inst_exports.push(exports);
        }
        Ok(())
    }

    fn instantiate(
        &mut self,
        instance: u32,
        module: usize,
        args: &[(&'a str, u32)],
    ) -> Result<HashMap<&'a str, Item>> {
        let ord = self.insts.len();
        let m = &self.modules[module];
        let mut mi = ModInst {
            module,
            instance,
            funcs: Vec::new(),
            tables: Vec::new(),
            memories: Vec::new(),
            globals: Vec::new(),
            func_index: Vec::new(),
            types: Vec::new(),
            data_base: 0,
            elem_base: 0,
        };
        for imp in &m.imports {
            let (_, arg) = args
                .iter()
                .find(|(name, _)| *name == imp.module)
                .with_context(|| format!("no instantiation argument {:?}", imp.module))?;
            let item = self
                .inst_exports
                .get(*arg as usize)
                .and_then(|e| e.get(imp.name))
                .copied()
                .with_context(|| {
                    format!(
                        "import {}#{}: core instance {arg} has no such export",
                        imp.module, imp.name
                    )
                })?;
            match (imp.ty, item) {
                (TypeRef::Func(_) | TypeRef::FuncExact(_), Item::Func(f)) => mi.funcs.push(f),
                (TypeRef::Table(_), Item::Table(t)) => mi.tables.push(t),
                (TypeRef::Memory(_), Item::Memory(x)) => mi.memories.push(x),
                (TypeRef::Global(_), Item::Global(x)) => {
                    // The libraries import the main module's shadow-stack pointer; the fuser
                    // finds it by this name.
                    if imp.name == "__stack_pointer" {
                        self.stack_pointer = Some(x);
                    }
                    mi.globals.push(x)
                }
                (ty, item) => bail!(
                    "import {}#{} of type {ty:?} bound to {item:?}",
                    imp.module,
                    imp.name
                ),
            }
        }
        for local in 0..m.num_defined_funcs() {
            mi.funcs.push(FuncRef::Def { inst: ord, local });
        }
        for _ in &m.tables {
            mi.tables.push(self.n_tables);
            self.n_tables += 1;
        }
        for _ in &m.memories {
            mi.memories.push(self.n_memories);
            self.n_memories += 1;
        }
        for (j, _) in m.globals.iter().enumerate() {
            mi.globals.push(self.n_globals);
            self.global_src.push((ord, m.num_global_imports + j as u32));
            self.n_globals += 1;
        }
        let mut exports = HashMap::new();
        for e in &m.exports {
            let i = e.index as usize;
            let item = match e.kind {
                ExternalKind::Func | ExternalKind::FuncExact => Item::Func(mi.funcs[i]),
                ExternalKind::Table => Item::Table(mi.tables[i]),
                ExternalKind::Memory => Item::Memory(mi.memories[i]),
                ExternalKind::Global => Item::Global(mi.globals[i]),
                ExternalKind::Tag => bail!("tags are unsupported"),
            };
            exports.insert(e.name, item);
        }
        self.insts.push(mi);
        Ok(exports)
    }

    // ---------------------------------------------------------------- layout

    fn intern(&mut self, ty: &FuncType) -> u32 {
        if let Some(&i) = self.type_ids.get(ty) {
            return i;
        }
        let i = self.types.len() as u32;
        self.types.push(ty.clone());
        self.type_ids.insert(ty.clone(), i);
        i
    }

    /// The instantiation-argument name under which the first consumer of canon function
    /// `func` imports it (e.g. `[export]weft:plugin/filter@0.2.0`).
    fn consumer_module_name(&self, func: u32) -> Option<&'a str> {
        let bag = self.g.core_instances.iter().position(|inst| {
            matches!(inst, CoreInstance::FromExports(items)
                if items.iter().any(|(_, k, i)| *k == ExternalKind::Func && *i == func))
        })? as u32;
        self.g.core_instances.iter().find_map(|inst| match inst {
            CoreInstance::Instantiate { args, .. } => {
                args.iter().find(|(_, i)| *i == bag).map(|(name, _)| *name)
            }
            _ => None,
        })
    }

    /// A readable name for core instance `inst`: the instantiation-argument name another
    /// instantiation passes it under (`libc.so`, `libpython3.14.so`, ...), if any.
    fn instance_label(&self, inst: u32) -> Option<&'a str> {
        self.g.core_instances.iter().find_map(|i| match i {
            CoreInstance::Instantiate { args, .. } => args
                .iter()
                .find(|(name, i)| *i == inst && *name != "env")
                .map(|(name, _)| *name),
            _ => None,
        })
    }

    /// `(module, field)` of the merged import for canon function `func`.
    fn canon_name(&self, func: u32) -> Result<(String, String)> {
        let (kind, ty) = match &self.g.core_funcs[func as usize] {
            CoreFunc::Lower { func, .. } => return self.g.lowered_name(*func),
            CoreFunc::ResourceNew(t) => ("resource-new", *t),
            CoreFunc::ResourceRep(t) => ("resource-rep", *t),
            CoreFunc::ResourceDrop(t) => ("resource-drop", *t),
            other => bail!("core func {func} ({other:?}) is not canon-made"),
        };
        let (iface, name, exported) = self.g.resource_name(ty)?;
        let module = if exported {
            self.consumer_module_name(func)
                .with_context(|| format!("no consumer names the interface of resource {name}"))?
                .to_string()
        } else {
            iface
        };
        Ok((module, format!("[{kind}]{name}")))
    }

    /// Final index of `f` (after the layout).
    fn func_index(&self, f: FuncRef) -> Result<u32> {
        match f {
            FuncRef::Canon(c) => self
                .canon_import
                .get(&c)
                .copied()
                .with_context(|| format!("canon function {c} was not laid out")),
            FuncRef::Def { inst, local } => {
                let mi = &self.insts[inst];
                let m = &self.modules[mi.module];
                Ok(mi.func_index[(m.num_func_imports + local) as usize])
            }
        }
    }

    /// A core function of the component (a canon option's realloc, a lift's core function).
    fn component_core_func(&self, index: u32) -> Result<FuncRef> {
        match self.core_item(ExternalKind::Func, index)? {
            Item::Func(f) => Ok(f),
            other => bail!("core func {index} resolved to {other:?}"),
        }
    }

    fn layout(&mut self) -> Result<()> {
        // Types of every module instance.
        for k in 0..self.insts.len() {
            let m = self.insts[k].module;
            let types: Vec<FuncType> = self.modules[m].types.clone();
            self.insts[k].types = types.iter().map(|t| self.intern(t)).collect();
        }

        // Imports: canon functions some module imports, in order of first use.
        let mut by_key: HashMap<(String, String, String), u32> = HashMap::new();
        let mut uses: Vec<(u32, u32)> = Vec::new(); // (canon func, merged type)
        for mi in &self.insts {
            let m = &self.modules[mi.module];
            for (i, f) in mi.funcs[..m.num_func_imports as usize].iter().enumerate() {
                if let FuncRef::Canon(c) = f {
                    uses.push((*c, mi.types[m.func_types[i] as usize]));
                }
            }
        }
        for (c, ty) in uses {
            if self.canon_import.contains_key(&c) {
                continue;
            }
            let (module, field) = self.canon_name(c)?;
            let options = match &self.g.core_funcs[c as usize] {
                CoreFunc::Lower { options, .. } => options.clone(),
                _ => Vec::new(),
            };
            let options = self.describe_options(&options)?;
            let key = (module.clone(), field.clone(), options.clone());
            let idx = match by_key.get(&key) {
                Some(&i) => i,
                None => {
                    let i = self.imports.len() as u32;
                    if self
                        .imports
                        .iter()
                        .any(|imp| imp.module == module && imp.field == field)
                    {
                        self.notes.push(format!(
                            "{module}#{field} is lowered more than once with different options \
                             (imported once per option set; see the weft-canon section)"
                        ));
                    }
                    self.imports.push(MergedImport {
                        module,
                        field,
                        ty,
                        options,
                    });
                    by_key.insert(key, i);
                    i
                }
            };
            self.canon_import.insert(c, idx);
        }

        // Defined functions, instance by instance.
        let mut next = self.imports.len() as u32;
        let (mut data, mut elems) = (0, 0);
        for k in 0..self.insts.len() {
            let m = &self.modules[self.insts[k].module];
            let (nd, ne, nfi, ndef) = (
                m.num_data,
                m.num_elements,
                m.num_func_imports,
                m.num_defined_funcs(),
            );
            self.insts[k].data_base = data;
            self.insts[k].elem_base = elems;
            data += nd;
            elems += ne;
            // Imports first: resolved below, once every instance has its base.
            self.insts[k].func_index = vec![u32::MAX; nfi as usize];
            for _ in 0..ndef {
                self.insts[k].func_index.push(next);
                next += 1;
            }
        }
        for k in 0..self.insts.len() {
            let nfi = self.modules[self.insts[k].module].num_func_imports as usize;
            for i in 0..nfi {
                let f = self.insts[k].funcs[i];
                self.insts[k].func_index[i] = self.func_index(f)?;
            }
        }

        // Constant values of the merged globals (in order: initializers only read earlier
        // globals, which in the merged order are earlier ones too).
        for gi in 0..self.global_src.len() {
            let (k, local) = self.global_src[gi];
            let mi = &self.insts[k];
            let m = &self.modules[mi.module];
            let g = &m.globals[(local - m.num_global_imports) as usize];
            let v = if g.ty.mutable {
                None
            } else {
                eval_const(&g.init_expr, |i| {
                    let merged = *mi.globals.get(i as usize)?;
                    *self.global_consts.get(merged as usize)?
                })
            };
            self.global_consts.push(v);
        }
        Ok(())
    }

    /// A canon option list as `memory=… realloc=… encoding=…` (realloc as a merged export).
    fn describe_options(&self, options: &[CanonicalOption]) -> Result<String> {
        let mut out = Vec::new();
        for o in options {
            out.push(match o {
                CanonicalOption::UTF8 => "encoding=utf8".to_string(),
                CanonicalOption::UTF16 => "encoding=utf16".to_string(),
                CanonicalOption::CompactUTF16 => "encoding=latin1+utf16".to_string(),
                CanonicalOption::Memory(m) => match self.core_item(ExternalKind::Memory, *m)? {
                    Item::Memory(x) => format!("memory={x}"),
                    other => bail!("memory option resolved to {other:?}"),
                },
                CanonicalOption::Realloc(f) => {
                    format!("realloc={}", self.realloc_export_name(*f)?)
                }
                CanonicalOption::PostReturn(f) => {
                    format!("post-return={}", self.core_func_name(*f))
                }
                other => bail!("canon option {other:?} is unsupported"),
            });
        }
        Ok(out.join(" "))
    }

    /// The export name of the merged module for realloc core function `f`: its original core
    /// export name, made unique per distinct function (`cabi_realloc`, `cabi_import_realloc`,
    /// `cabi_realloc.2`, ...).
    fn realloc_export_name(&self, f: u32) -> Result<String> {
        let target = self.component_core_func(f)?;
        Ok(self.realloc_names()?.remove(&target).unwrap_or_default())
    }

    /// Every function used as a realloc in any canon option, with its export name.
    fn realloc_names(&self) -> Result<HashMap<FuncRef, String>> {
        let mut reallocs: Vec<(FuncRef, String)> = Vec::new();
        let mut all_opts: Vec<&[CanonicalOption]> = Vec::new();
        // Lifts first so the lift's realloc of the first export gets the plain name.
        for f in &self.g.comp_funcs {
            if let super::graph::CompFunc::Lift { options, .. } = f {
                all_opts.push(options);
            }
        }
        for f in &self.g.core_funcs {
            if let CoreFunc::Lower { options, .. } = f {
                all_opts.push(options);
            }
        }
        for opts in all_opts {
            for o in opts {
                if let CanonicalOption::Realloc(r) = o {
                    let target = self.component_core_func(*r)?;
                    if reallocs.iter().any(|(t, _)| *t == target) {
                        continue;
                    }
                    let (base, label) = match &self.g.core_funcs[*r as usize] {
                        CoreFunc::Alias(a) => (a.name.to_string(), self.instance_label(a.instance)),
                        _ => ("realloc".into(), None),
                    };
                    // The first keeps its name; others are qualified with the library that
                    // defines them (`cabi_realloc@libc.so`), or numbered.
                    let mut name = base.clone();
                    if let Some(l) = label
                        && reallocs.iter().any(|(_, x)| *x == name)
                    {
                        name = format!("{base}@{l}");
                    }
                    let mut n = 1;
                    while reallocs.iter().any(|(_, x)| *x == name) {
                        n += 1;
                        name = format!("{base}.{n}");
                    }
                    reallocs.push((target, name));
                }
            }
        }
        Ok(reallocs.into_iter().collect())
    }

    // ---------------------------------------------------------------- emit

    fn remap(&self, k: usize) -> Remap<'_> {
        let mi = &self.insts[k];
        Remap {
            funcs: &mi.func_index,
            globals: &mi.globals,
            tables: &mi.tables,
            memories: &mi.memories,
            types: &mi.types,
            data_base: mi.data_base,
            elem_base: mi.elem_base,
            global_consts: &self.global_consts,
            folded: 0,
            unfolded: 0,
        }
    }

    fn emit(self) -> Result<Merged> {
        let mut out = wasm_encoder::Module::new();
        let mut notes = self.notes.clone();

        // Types (plus `() -> ()` for a synthesized start).
        let mut types = TypeSection::new();
        let mut rt = RoundtripReencoder;
        for t in &self.types {
            let params = t
                .params()
                .iter()
                .map(|v| rt.val_type(*v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(enc)?;
            let results = t
                .results()
                .iter()
                .map(|v| rt.val_type(*v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(enc)?;
            types.ty().function(params, results);
        }
        let starts: Vec<u32> = self
            .insts
            .iter()
            .filter_map(|mi| {
                self.modules[mi.module]
                    .start
                    .map(|s| mi.func_index[s as usize])
            })
            .collect();
        let unit_ty = self.types.len() as u32;
        if starts.len() > 1 {
            types.ty().function([], []);
        }
        out.section(&types);

        // Imports.
        let mut imports = ImportSection::new();
        for imp in &self.imports {
            imports.import(&imp.module, &imp.field, EntityType::Function(imp.ty));
        }
        out.section(&imports);

        // Functions.
        let mut funcs = FunctionSection::new();
        for mi in &self.insts {
            let m = &self.modules[mi.module];
            for t in &m.func_types[m.num_func_imports as usize..] {
                funcs.function(mi.types[*t as usize]);
            }
        }
        let total_defined: u32 = funcs.len();
        let synth_start = self.imports.len() as u32 + total_defined;
        if starts.len() > 1 {
            funcs.function(unit_ty);
        }
        out.section(&funcs);

        // Tables and memories.
        let mut tables = TableSection::new();
        let mut mems = MemorySection::new();
        for k in 0..self.insts.len() {
            let m = &self.modules[self.insts[k].module];
            let mut r = self.remap(k);
            for t in &m.tables {
                r.parse_table(&mut tables, t.clone()).map_err(enc)?;
            }
            for mem in &m.memories {
                mems.memory(r.memory_type(*mem).map_err(enc)?);
            }
        }
        out.section(&tables);
        out.section(&mems);

        // Globals (initializers folded where they read other globals).
        let mut globals = GlobalSection::new();
        let (mut folded, mut unfolded) = (0, 0);
        for k in 0..self.insts.len() {
            let m = &self.modules[self.insts[k].module];
            let mut r = self.remap(k);
            for g in &m.globals {
                r.parse_global(&mut globals, g.clone()).map_err(enc)?;
            }
            folded += r.folded;
            unfolded += r.unfolded;
        }
        out.section(&globals);

        // Exports: lifted core functions and their post-returns, memory, reallocs.
        let mut exports = ExportSection::new();
        let mut exported: HashMap<String, u32> = HashMap::new();
        let mut add = |name: String, kind: ExportKind, idx: u32| -> Result<()> {
            match exported.get(&name) {
                Some(&i) if i == idx => Ok(()),
                Some(_) => bail!("two different items would be exported as {name:?}"),
                None => {
                    exports.export(&name, kind, idx);
                    exported.insert(name.clone(), idx);
                    Ok(())
                }
            }
        };
        let mut lift_lines = Vec::new();
        let mut memory = None;
        for f in &self.g.comp_funcs {
            let super::graph::CompFunc::Lift { core_func, options } = f else {
                continue;
            };
            let name = self.core_func_name(*core_func);
            let idx = self.func_index(self.component_core_func(*core_func)?)?;
            add(name.clone(), ExportKind::Func, idx)?;
            for o in options {
                match o {
                    CanonicalOption::PostReturn(p) => {
                        let pidx = self.func_index(self.component_core_func(*p)?)?;
                        add(self.core_func_name(*p), ExportKind::Func, pidx)?;
                    }
                    CanonicalOption::Memory(m) => {
                        if let Item::Memory(x) = self.core_item(ExternalKind::Memory, *m)? {
                            memory = Some(x);
                        }
                    }
                    _ => {}
                }
            }
            lift_lines.push(format!("lift {name} {}", self.describe_options(options)?));
        }
        // Destructors of the component's own resources, exported as wit-bindgen names them
        // (`interface#[dtor]resource`): the glue calls them when a handle is dropped. The
        // interface is the one whose `[export]…#[resource-new]` intrinsic the bindings import.
        for &(ty, d) in &self.g.dtors {
            let (_, resource, _) = self.g.resource_name(ty)?;
            let new = format!("[resource-new]{resource}");
            let iface = self
                .imports
                .iter()
                .find(|i| i.field == new && i.module.starts_with("[export]"))
                .map(|i| i.module.trim_start_matches("[export]").to_string())
                .with_context(|| format!("no interface defines the resource {resource}"))?;
            let idx = self.func_index(self.component_core_func(d)?)?;
            add(format!("{iface}#[dtor]{resource}"), ExportKind::Func, idx)?;
        }
        if memory.is_none() && self.n_memories > 0 {
            memory = Some(0);
        }
        if let Some(x) = memory {
            add("memory".into(), ExportKind::Memory, x)?;
        }
        let mut reallocs: Vec<(FuncRef, String)> = self.realloc_names()?.into_iter().collect();
        reallocs.sort_by(|a, b| a.1.cmp(&b.1));
        for (f, name) in reallocs {
            add(name, ExportKind::Func, self.func_index(f)?)?;
        }
        out.section(&exports);

        // Start.
        match starts.as_slice() {
            [] => {}
            [one] => {
                out.section(&StartSection {
                    function_index: *one,
                });
            }
            _ => {
                out.section(&StartSection {
                    function_index: synth_start,
                });
                notes.push(format!(
                    "{} start functions run from one synthesized start, after every \
                     instance's segments were applied",
                    starts.len()
                ));
            }
        }

        // Elements.
        let mut elems = ElementSection::new();
        for k in 0..self.insts.len() {
            let m = &self.modules[self.insts[k].module];
            if let Some(r) = m.elements.clone() {
                let mut re = self.remap(k);
                re.parse_element_section(&mut elems, r).map_err(enc)?;
                folded += re.folded;
                unfolded += re.unfolded;
            }
        }
        out.section(&elems);

        // Data count (always valid; needed if any body uses memory.init / data.drop).
        let total_data: u32 = self
            .insts
            .iter()
            .map(|mi| self.modules[mi.module].num_data)
            .sum();
        out.section(&DataCountSection { count: total_data });

        // Code.
        let mut code = CodeSection::new();
        for k in 0..self.insts.len() {
            let m = &self.modules[self.insts[k].module];
            let mut r = self.remap(k);
            for body in &m.code {
                r.parse_function_body(&mut code, body.clone())
                    .map_err(enc)?;
            }
        }
        if starts.len() > 1 {
            let mut f = Function::new([]);
            for s in &starts {
                f.instruction(&Instruction::Call(*s));
            }
            f.instruction(&Instruction::End);
            code.function(&f);
        }
        out.section(&code);

        // Data.
        let mut data = DataSection::new();
        for k in 0..self.insts.len() {
            let m = &self.modules[self.insts[k].module];
            if let Some(r) = m.data.clone() {
                let mut re = self.remap(k);
                re.parse_data_section(&mut data, r).map_err(enc)?;
                folded += re.folded;
                unfolded += re.unfolded;
            }
        }
        out.section(&data);
        notes.push(format!(
            "{folded} constant expressions reading globals folded to constants, {unfolded} kept \
             as global.get (need the GC-era const-expr rules)"
        ));

        // Canon options of every import and lift, for the host side.
        let mut canon = String::new();
        for (i, imp) in self.imports.iter().enumerate() {
            canon.push_str(&format!(
                "import {i} {}#{} {}\n",
                imp.module, imp.field, imp.options
            ));
        }
        for l in &lift_lines {
            canon.push_str(l);
            canon.push('\n');
        }
        out.section(&CustomSection {
            name: "weft-canon".into(),
            data: canon.as_bytes().into(),
        });

        // Names, so traps have readable backtraces.
        let mut fnames = NameMap::new();
        let mut named: BTreeMap<u32, String> = BTreeMap::new();
        for (i, imp) in self.imports.iter().enumerate() {
            named.insert(i as u32, format!("{}#{}", imp.module, imp.field));
        }
        for mi in &self.insts {
            let m = &self.modules[mi.module];
            for (idx, name) in &m.func_names {
                if *idx >= m.num_func_imports
                    && let Some(&out_idx) = mi.func_index.get(*idx as usize)
                {
                    named.entry(out_idx).or_insert_with(|| name.to_string());
                }
            }
        }
        if starts.len() > 1 {
            named.insert(synth_start, "weft-link:start".into());
        }
        for (i, n) in &named {
            fnames.append(*i, n);
        }
        let mut names = NameSection::new();
        names.functions(&fnames);
        if let Some(sp) = self.stack_pointer {
            let mut gnames = NameMap::new();
            gnames.append(sp, "__stack_pointer");
            names.globals(&gnames);
        }
        out.section(&names);

        let layout: Vec<String> = self
            .insts
            .iter()
            .map(|mi| {
                let m = &self.modules[mi.module];
                let first = mi.func_index.get(m.num_func_imports as usize).copied();
                format!(
                    "core instance {:2} = module {:2} {:34} {:>5} imports ({} funcs), {:5} funcs \
                     (merged index {}..), {:3} globals, {:4} data, {:2} elem segs{}",
                    mi.instance,
                    mi.module,
                    self.instance_label(mi.instance)
                        .unwrap_or(if mi.module == 0 { "(main)" } else { "" }),
                    m.imports.len(),
                    m.num_func_imports,
                    m.num_defined_funcs(),
                    first.map_or("-".into(), |f| f.to_string()),
                    m.globals.len(),
                    m.num_data,
                    m.num_elements,
                    if m.is_shared_library {
                        ", dylink.0"
                    } else {
                        ""
                    },
                )
            })
            .collect();
        notes.extend(layout);
        Ok(Merged {
            module: out.finish(),
            notes,
        })
    }

    /// The name a core function of the component has: its alias's export name.
    fn core_func_name(&self, f: u32) -> String {
        match &self.g.core_funcs[f as usize] {
            CoreFunc::Alias(a) => a.name.to_string(),
            _ => format!("core-func-{f}"),
        }
    }
}

/// Index maps of one module instance into the merged module, folding constant expressions.
struct Remap<'m> {
    funcs: &'m [u32],
    globals: &'m [u32],
    tables: &'m [u32],
    memories: &'m [u32],
    types: &'m [u32],
    data_base: u32,
    elem_base: u32,
    global_consts: &'m [Option<Val>],
    folded: u32,
    unfolded: u32,
}

fn oob(what: &str, i: u32) -> ReencodeError<String> {
    ReencodeError::UserError(format!("{what} {i} out of range"))
}

impl Reencode for Remap<'_> {
    type Error = String;

    fn function_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        self.funcs
            .get(i as usize)
            .copied()
            .ok_or_else(|| oob("function", i))
    }
    fn global_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        self.globals
            .get(i as usize)
            .copied()
            .ok_or_else(|| oob("global", i))
    }
    fn table_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        self.tables
            .get(i as usize)
            .copied()
            .ok_or_else(|| oob("table", i))
    }
    fn memory_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        self.memories
            .get(i as usize)
            .copied()
            .ok_or_else(|| oob("memory", i))
    }
    fn type_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        self.types
            .get(i as usize)
            .copied()
            .ok_or_else(|| oob("type", i))
    }
    fn data_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        Ok(self.data_base + i)
    }
    fn element_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        Ok(self.elem_base + i)
    }
    fn tag_index(&mut self, i: u32) -> Result<u32, ReencodeError<String>> {
        Err(oob("tag", i))
    }

    fn const_expr(
        &mut self,
        expr: wasmparser::ConstExpr,
    ) -> Result<ConstExpr, ReencodeError<String>> {
        if uses_global(&expr) {
            let (globals, consts) = (self.globals, self.global_consts);
            let value = eval_const(&expr, |i| *consts.get(*globals.get(i as usize)? as usize)?);
            match value {
                Some(Val::I32(v)) => {
                    self.folded += 1;
                    return Ok(ConstExpr::i32_const(v));
                }
                Some(Val::I64(v)) => {
                    self.folded += 1;
                    return Ok(ConstExpr::i64_const(v));
                }
                None => self.unfolded += 1,
            }
        }
        wasm_encoder::reencode::utils::const_expr(self, expr)
    }
}
