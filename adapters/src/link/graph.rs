//! The core-instance graph of a component: its core modules, core instances, the core index
//! spaces (functions, tables, memories, globals) and what each core item is, plus the little of
//! the component level the merge needs (imports, aliases, canon definitions, exports).
//!
//! Only the outermost component is read; nested components (wit-component's per-interface
//! shims) are skipped, which is enough for the core side.

use anyhow::{Context, Result, bail};
use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ComponentExternalKind,
    ComponentOuterAliasKind, ComponentType, ComponentTypeRef, ExternalKind, Instance, Parser,
    Payload,
};

/// One entry of a core index space (table, memory or global): always an alias of an export of a
/// core instance in components.
#[derive(Debug, Clone)]
pub struct CoreAlias<'a> {
    pub instance: u32,
    pub name: &'a str,
}

/// An entry of the core function index space.
#[derive(Debug, Clone)]
pub enum CoreFunc<'a> {
    /// An export of a core instance.
    Alias(CoreAlias<'a>),
    /// `canon lower` of a component function.
    Lower {
        func: u32,
        options: Vec<CanonicalOption>,
    },
    ResourceNew(u32),
    ResourceRep(u32),
    ResourceDrop(u32),
    /// Any other canon built-in (async, threads, ...): unsupported if reached.
    Other(String),
}

/// A core instance.
#[derive(Debug, Clone)]
pub enum CoreInstance<'a> {
    /// `(instantiate module (with name instance)*)`
    Instantiate {
        module: u32,
        args: Vec<(&'a str, u32)>,
    },
    /// A bag of core items: `(name, kind, index in that kind's core index space)`.
    FromExports(Vec<(&'a str, ExternalKind, u32)>),
}

/// An entry of the component function index space.
#[derive(Debug, Clone)]
pub enum CompFunc<'a> {
    Import(String),
    /// An export of a component instance.
    Alias {
        instance: u32,
        name: &'a str,
    },
    Lift {
        core_func: u32,
        options: Vec<CanonicalOption>,
    },
    /// Re-export (a component export of a function makes a new index).
    Export {
        of: u32,
    },
}

/// An entry of the component instance index space.
#[derive(Debug, Clone)]
pub enum CompInstance {
    Import(String),
    Other,
}

/// An entry of the component type index space (only what naming resources needs).
#[derive(Debug, Clone)]
pub enum CompType<'a> {
    /// A resource type defined by this component (one of its exported resources).
    Resource,
    /// An export of a component instance (an imported resource, typically).
    Alias {
        instance: u32,
        name: &'a str,
    },
    /// Re-export of type `of`.
    Export {
        of: u32,
    },
    Other,
}

#[derive(Default)]
pub struct Graph<'a> {
    pub modules: Vec<&'a [u8]>,
    pub core_instances: Vec<CoreInstance<'a>>,
    pub core_funcs: Vec<CoreFunc<'a>>,
    pub core_tables: Vec<CoreAlias<'a>>,
    pub core_memories: Vec<CoreAlias<'a>>,
    pub core_globals: Vec<CoreAlias<'a>>,
    pub comp_funcs: Vec<CompFunc<'a>>,
    pub comp_instances: Vec<CompInstance>,
    pub comp_types: Vec<CompType<'a>>,
    /// Arguments of nested-component instantiations that pass a type: `(arg name, type index)`.
    /// wit-component passes exported resources to its export shims as `import-type-<name>`.
    pub type_args: Vec<(&'a str, u32)>,
    /// Top-level component exports: `(name, kind, index)`.
    pub exports: Vec<(String, ComponentExternalKind, u32)>,
    /// Destructors of the component's own resources: `(resource type, core function)`.
    pub dtors: Vec<(u32, u32)>,
}

impl<'a> Graph<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" || bytes[4..8] == [1, 0, 0, 0] {
            bail!("not a WebAssembly component");
        }
        let mut g = Graph::default();
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload?;
            // Sections of nested modules/components: only track nesting.
            match &payload {
                Payload::ModuleSection {
                    unchecked_range, ..
                } => {
                    if depth == 0 {
                        g.modules.push(&bytes[unchecked_range.clone()]);
                    }
                    depth += 1;
                    continue;
                }
                Payload::ComponentSection { .. } => {
                    depth += 1;
                    continue;
                }
                Payload::End(_) => {
                    depth = depth.saturating_sub(1);
                    continue;
                }
                _ if depth > 0 => continue,
                _ => {}
            }
            match payload {
                Payload::InstanceSection(r) => {
                    for i in r {
                        g.core_instances.push(match i? {
                            Instance::Instantiate { module_index, args } => {
                                CoreInstance::Instantiate {
                                    module: module_index,
                                    args: args.iter().map(|a| (a.name, a.index)).collect(),
                                }
                            }
                            Instance::FromExports(exports) => CoreInstance::FromExports(
                                exports.iter().map(|e| (e.name, e.kind, e.index)).collect(),
                            ),
                        });
                    }
                }
                Payload::ComponentAliasSection(r) => {
                    for a in r {
                        match a? {
                            ComponentAlias::CoreInstanceExport {
                                kind,
                                instance_index,
                                name,
                            } => {
                                let alias = CoreAlias {
                                    instance: instance_index,
                                    name,
                                };
                                match kind {
                                    ExternalKind::Func | ExternalKind::FuncExact => {
                                        g.core_funcs.push(CoreFunc::Alias(alias))
                                    }
                                    ExternalKind::Table => g.core_tables.push(alias),
                                    ExternalKind::Memory => g.core_memories.push(alias),
                                    ExternalKind::Global => g.core_globals.push(alias),
                                    ExternalKind::Tag => bail!("core tag aliases are unsupported"),
                                }
                            }
                            ComponentAlias::InstanceExport {
                                kind,
                                instance_index,
                                name,
                            } => match kind {
                                ComponentExternalKind::Func => g.comp_funcs.push(CompFunc::Alias {
                                    instance: instance_index,
                                    name,
                                }),
                                ComponentExternalKind::Type => g.comp_types.push(CompType::Alias {
                                    instance: instance_index,
                                    name,
                                }),
                                ComponentExternalKind::Instance => {
                                    g.comp_instances.push(CompInstance::Other)
                                }
                                ComponentExternalKind::Module => {
                                    bail!("aliased core modules are unsupported")
                                }
                                _ => {}
                            },
                            ComponentAlias::Outer { kind, .. } => match kind {
                                ComponentOuterAliasKind::CoreModule => {
                                    bail!("outer-aliased core modules are unsupported")
                                }
                                ComponentOuterAliasKind::Type => g.comp_types.push(CompType::Other),
                                _ => {}
                            },
                        }
                    }
                }
                Payload::ComponentCanonicalSection(r) => {
                    for c in r {
                        match c? {
                            CanonicalFunction::Lift {
                                core_func_index,
                                options,
                                ..
                            } => g.comp_funcs.push(CompFunc::Lift {
                                core_func: core_func_index,
                                options: options.to_vec(),
                            }),
                            CanonicalFunction::Lower {
                                func_index,
                                options,
                            } => g.core_funcs.push(CoreFunc::Lower {
                                func: func_index,
                                options: options.to_vec(),
                            }),
                            CanonicalFunction::ResourceNew { resource } => {
                                g.core_funcs.push(CoreFunc::ResourceNew(resource))
                            }
                            CanonicalFunction::ResourceRep { resource } => {
                                g.core_funcs.push(CoreFunc::ResourceRep(resource))
                            }
                            CanonicalFunction::ResourceDrop { resource } => {
                                g.core_funcs.push(CoreFunc::ResourceDrop(resource))
                            }
                            other => g.core_funcs.push(CoreFunc::Other(format!("{other:?}"))),
                        }
                    }
                }
                Payload::ComponentImportSection(r) => {
                    for i in r {
                        let i = i?;
                        let name = i.name.name.to_string();
                        match i.ty {
                            ComponentTypeRef::Func(_) => g.comp_funcs.push(CompFunc::Import(name)),
                            ComponentTypeRef::Instance(_) => {
                                g.comp_instances.push(CompInstance::Import(name))
                            }
                            ComponentTypeRef::Type(_) => g.comp_types.push(CompType::Other),
                            ComponentTypeRef::Module(_) => {
                                bail!("imported core modules are unsupported")
                            }
                            _ => {}
                        }
                    }
                }
                Payload::ComponentExportSection(r) => {
                    for e in r {
                        let e = e?;
                        let name = e.name.name.to_string();
                        g.exports.push((name, e.kind, e.index));
                        match e.kind {
                            ComponentExternalKind::Func => {
                                g.comp_funcs.push(CompFunc::Export { of: e.index })
                            }
                            ComponentExternalKind::Instance => {
                                g.comp_instances.push(CompInstance::Other)
                            }
                            ComponentExternalKind::Type => {
                                g.comp_types.push(CompType::Export { of: e.index })
                            }
                            _ => {}
                        }
                    }
                }
                Payload::ComponentTypeSection(r) => {
                    for t in r {
                        g.comp_types.push(match t? {
                            ComponentType::Resource { dtor, .. } => {
                                if let Some(d) = dtor {
                                    g.dtors.push((g.comp_types.len() as u32, d));
                                }
                                CompType::Resource
                            }
                            _ => CompType::Other,
                        });
                    }
                }
                Payload::ComponentInstanceSection(r) => {
                    for i in r {
                        if let wasmparser::ComponentInstance::Instantiate { args, .. } = i? {
                            for a in args.iter() {
                                if a.kind == ComponentExternalKind::Type {
                                    g.type_args.push((a.name, a.index));
                                }
                            }
                        }
                        g.comp_instances.push(CompInstance::Other);
                    }
                }
                Payload::ComponentStartSection { .. } => bail!("component start is unsupported"),
                _ => {}
            }
        }
        Ok(g)
    }

    /// `(module, field)` under which the merged module imports component function `func` when
    /// it is lowered: the imported instance's name and the function's name in it.
    pub fn lowered_name(&self, func: u32) -> Result<(String, String)> {
        match self.comp_funcs.get(func as usize) {
            Some(CompFunc::Alias { instance, name }) => {
                match self.comp_instances.get(*instance as usize) {
                    Some(CompInstance::Import(iname)) => Ok((iname.clone(), name.to_string())),
                    _ => bail!("lowered function {name} is not from an imported instance"),
                }
            }
            Some(CompFunc::Import(name)) => Ok(("$root".into(), name.clone())),
            Some(CompFunc::Export { of, .. }) => self.lowered_name(*of),
            other => bail!("lowering component function {func} ({other:?}) is unsupported"),
        }
    }

    /// `(interface, resource)` naming component resource type `ty`; `exported` when the
    /// component defines it (so its intrinsics are `[export]interface`).
    pub fn resource_name(&self, ty: u32) -> Result<(String, String, bool)> {
        match self.comp_types.get(ty as usize) {
            Some(CompType::Alias { instance, name }) => {
                match self.comp_instances.get(*instance as usize) {
                    Some(CompInstance::Import(iname)) => {
                        Ok((iname.clone(), name.to_string(), false))
                    }
                    _ => bail!("resource {name} is not from an imported instance"),
                }
            }
            Some(CompType::Resource) => {
                // wit-component hands a defined resource to the shim component of the exported
                // interface as `import-type-<name>`; the interface name is found by the caller
                // (from the consuming core import), so only the resource name is known here.
                let name = self
                    .type_args
                    .iter()
                    .find(|(_, t)| *t == ty)
                    .map(|(n, _)| n.strip_prefix("import-type-").unwrap_or(n).to_string())
                    .with_context(|| format!("cannot name defined resource type {ty}"))?;
                Ok((String::new(), name, true))
            }
            Some(CompType::Export { of, .. }) => self.resource_name(*of),
            other => bail!("resource type {ty} ({other:?}) cannot be named"),
        }
    }
}
