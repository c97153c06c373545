//! A parsed core module: the parts the merger needs, borrowed from the component's bytes.

use anyhow::{Result, bail};
use wasmparser::{
    ConstExpr, DataSectionReader, ElementSectionReader, Export, FuncType, FunctionBody, Global,
    GlobalType, Import, KnownCustom, Name, Parser, Payload, Table, TypeRef,
};

#[derive(Default)]
pub struct Module<'a> {
    pub types: Vec<FuncType>,
    pub imports: Vec<Import<'a>>,
    /// Type of every function, imported ones first.
    pub func_types: Vec<u32>,
    pub num_func_imports: u32,
    pub num_table_imports: u32,
    pub num_memory_imports: u32,
    pub num_global_imports: u32,
    pub tables: Vec<Table<'a>>,
    pub memories: Vec<wasmparser::MemoryType>,
    pub globals: Vec<Global<'a>>,
    /// Type of every global, imported ones first.
    pub global_types: Vec<GlobalType>,
    pub exports: Vec<Export<'a>>,
    pub start: Option<u32>,
    pub elements: Option<ElementSectionReader<'a>>,
    pub num_elements: u32,
    pub data: Option<DataSectionReader<'a>>,
    pub num_data: u32,
    pub code: Vec<FunctionBody<'a>>,
    /// `name` section function names (index in this module's function space).
    pub func_names: Vec<(u32, &'a str)>,
    pub is_shared_library: bool,
}

impl<'a> Module<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let mut m = Module::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::TypeSection(r) => {
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
                            TypeRef::Global(g) => {
                                m.global_types.push(g);
                                m.num_global_imports += 1;
                            }
                            TypeRef::Memory(_) => m.num_memory_imports += 1,
                            TypeRef::Table(_) => m.num_table_imports += 1,
                            TypeRef::Tag(_) => bail!("tags (exceptions) are unsupported"),
                        }
                        m.imports.push(imp);
                    }
                }
                Payload::FunctionSection(r) => {
                    for t in r {
                        m.func_types.push(t?);
                    }
                }
                Payload::TableSection(r) => {
                    for t in r {
                        m.tables.push(t?);
                    }
                }
                Payload::MemorySection(r) => {
                    for t in r {
                        m.memories.push(t?);
                    }
                }
                Payload::GlobalSection(r) => {
                    for g in r {
                        let g = g?;
                        m.global_types.push(g.ty);
                        m.globals.push(g);
                    }
                }
                Payload::TagSection(_) => bail!("tags (exceptions) are unsupported"),
                Payload::ExportSection(r) => {
                    for e in r {
                        m.exports.push(e?);
                    }
                }
                Payload::StartSection { func, .. } => m.start = Some(func),
                Payload::ElementSection(r) => {
                    m.num_elements = r.count();
                    m.elements = Some(r);
                }
                Payload::DataSection(r) => {
                    m.num_data = r.count();
                    m.data = Some(r);
                }
                Payload::CodeSectionEntry(body) => m.code.push(body),
                Payload::CustomSection(c) => {
                    if c.name() == "dylink.0" {
                        m.is_shared_library = true;
                    }
                    if let KnownCustom::Name(names) = c.as_known() {
                        // A malformed name section is not worth failing for.
                        for name in names.into_iter().flatten() {
                            if let Name::Function(map) = name {
                                for n in map.into_iter().flatten() {
                                    m.func_names.push((n.index, n.name));
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

    pub fn num_defined_funcs(&self) -> u32 {
        self.code.len() as u32
    }
}

/// A constant value of an i32/i64 global, for folding constant expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    I32(i32),
    I64(i64),
}

/// Evaluates `expr` if it is made only of integer constants, `global.get`s of globals whose
/// value is known (`value_of` maps the module's global index to it) and extended-const
/// arithmetic. `None` for anything else (references, floats, vectors).
pub fn eval_const(expr: &ConstExpr, value_of: impl Fn(u32) -> Option<Val>) -> Option<Val> {
    use wasmparser::Operator as Op;
    let mut stack: Vec<Val> = Vec::new();
    let mut ops = expr.get_operators_reader();
    loop {
        let op = ops.read().ok()?;
        match op {
            Op::I32Const { value } => stack.push(Val::I32(value)),
            Op::I64Const { value } => stack.push(Val::I64(value)),
            Op::GlobalGet { global_index } => stack.push(value_of(global_index)?),
            Op::I32Add | Op::I32Sub | Op::I32Mul => {
                let (Val::I32(b), Val::I32(a)) = (stack.pop()?, stack.pop()?) else {
                    return None;
                };
                stack.push(Val::I32(match op {
                    Op::I32Add => a.wrapping_add(b),
                    Op::I32Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                }));
            }
            Op::I64Add | Op::I64Sub | Op::I64Mul => {
                let (Val::I64(b), Val::I64(a)) = (stack.pop()?, stack.pop()?) else {
                    return None;
                };
                stack.push(Val::I64(match op {
                    Op::I64Add => a.wrapping_add(b),
                    Op::I64Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                }));
            }
            Op::End => break,
            _ => return None,
        }
    }
    if stack.len() == 1 { stack.pop() } else { None }
}

/// Whether `expr` reads any global.
pub fn uses_global(expr: &ConstExpr) -> bool {
    let mut ops = expr.get_operators_reader();
    while let Ok(op) = ops.read() {
        if let wasmparser::Operator::GlobalGet { .. } = op {
            return true;
        }
    }
    false
}
