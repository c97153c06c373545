//! A parsed core module: what the fuser needs of it, borrowed from the input bytes.

use wasmparser::{
    BinaryReaderError, DataSectionReader, ElementSectionReader, Export, ExternalKind, FunctionBody,
    GlobalSectionReader, GlobalType, Import, KnownCustom, MemorySectionReader, Name, Parser,
    Payload, TableSectionReader, TypeRef, TypeSectionReader, ValType,
};

/// A core module's parts.
#[derive(Default)]
pub(crate) struct Module<'a> {
    pub types: Vec<wasmparser::FuncType>,
    pub type_section: Option<TypeSectionReader<'a>>,
    pub imports: Vec<Import<'a>>,
    /// Type of every function, imported ones first.
    pub func_types: Vec<u32>,
    pub num_func_imports: u32,
    pub num_global_imports: u32,
    pub num_memory_imports: u32,
    pub num_table_imports: u32,
    pub tables: Option<TableSectionReader<'a>>,
    pub memories: Option<MemorySectionReader<'a>>,
    pub num_memories: u32,
    pub globals: Option<GlobalSectionReader<'a>>,
    pub global_types: Vec<GlobalType>,
    pub exports: Vec<Export<'a>>,
    pub start: Option<u32>,
    pub elements: Option<ElementSectionReader<'a>>,
    pub data: Option<DataSectionReader<'a>>,
    pub data_count: Option<u32>,
    pub num_data: u32,
    pub code: Vec<FunctionBody<'a>>,
    /// Global names from the `name` section, if the module kept one.
    pub global_names: Vec<(u32, String)>,
}

impl<'a> Module<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BinaryReaderError> {
        let mut m = Module::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::TypeSection(r) => {
                    m.type_section = Some(r.clone());
                    for ty in r.into_iter_err_on_gc_types() {
                        m.types.push(ty?);
                    }
                }
                Payload::ImportSection(r) => {
                    for imp in r.into_imports() {
                        let imp = imp?;
                        match imp.ty {
                            TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                                m.func_types.push(t);
                                m.num_func_imports += 1;
                            }
                            TypeRef::Global(_) => m.num_global_imports += 1,
                            TypeRef::Memory(_) => m.num_memory_imports += 1,
                            TypeRef::Table(_) => m.num_table_imports += 1,
                            TypeRef::Tag(_) => {}
                        }
                        m.imports.push(imp);
                    }
                }
                Payload::FunctionSection(r) => {
                    for t in r {
                        m.func_types.push(t?);
                    }
                }
                Payload::TableSection(r) => m.tables = Some(r),
                Payload::MemorySection(r) => {
                    m.num_memories = r.count();
                    m.memories = Some(r);
                }
                Payload::GlobalSection(r) => {
                    for g in r.clone() {
                        m.global_types.push(g?.ty);
                    }
                    m.globals = Some(r);
                }
                Payload::ExportSection(r) => {
                    for e in r {
                        m.exports.push(e?);
                    }
                }
                Payload::StartSection { func, .. } => m.start = Some(func),
                Payload::ElementSection(r) => m.elements = Some(r),
                Payload::DataCountSection { count, .. } => m.data_count = Some(count),
                Payload::DataSection(r) => {
                    m.num_data = r.count();
                    m.data = Some(r);
                }
                Payload::CodeSectionEntry(body) => m.code.push(body),
                Payload::CustomSection(c) => {
                    if let KnownCustom::Name(names) = c.as_known() {
                        for name in names.into_iter().flatten() {
                            if let Name::Global(map) = name {
                                for n in map.into_iter().flatten() {
                                    m.global_names.push((n.index, n.name.to_string()));
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }

    /// The function exported as `name`, if any.
    pub fn export_func(&self, name: &str) -> Option<u32> {
        self.exports
            .iter()
            .find(|e| e.name == name && e.kind == ExternalKind::Func)
            .map(|e| e.index)
    }

    pub fn has_export(&self, name: &str) -> bool {
        self.exports.iter().any(|e| e.name == name)
    }

    /// The shadow-stack pointer: the global named `__stack_pointer`, or else (stripped modules)
    /// global 0 if it is a mutable i32, which is where wasm-ld always puts it.
    pub fn stack_pointer(&self) -> Option<u32> {
        if let Some((i, _)) = self
            .global_names
            .iter()
            .find(|(_, n)| n == "__stack_pointer")
        {
            return Some(*i);
        }
        if self.num_global_imports == 0 {
            let g = self.global_types.first()?;
            if g.mutable && g.content_type == ValType::I32 {
                return Some(0);
            }
        }
        None
    }

    pub fn num_funcs(&self) -> u32 {
        self.func_types.len() as u32
    }

    pub fn num_globals(&self) -> u32 {
        self.num_global_imports + self.global_types.len() as u32
    }
}
