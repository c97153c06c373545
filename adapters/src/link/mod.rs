//! Linking a component's core instance graph into one core module.
//!
//! componentize-py's components are a dozen core modules instantiated against each other when
//! the component is instantiated: a main module holding the memory and the heap snapshot, the
//! WASI preview1 adapter, libc, libpython, the componentize-py runtime and the app's bindings as
//! shared libraries (`dylink.0`), and wit-component's shim and fixup modules that wire the
//! lowered imports. [`link`] does what an engine does at instantiation, once and ahead of time:
//! it resolves every import of every instance to the item some other instance exports (so the
//! libraries share one memory, one function table, one `__stack_pointer` and the GOT globals)
//! and writes one core module whose imports are the component's lowered functions, named
//! `interface#function` as wit-bindgen names them, and whose exports are the lifted functions
//! under their core names. The fuser then treats it as the component's main module.
//!
//! * [`graph`] reads the component level (core modules, instances, canon definitions, aliases);
//! * [`core`] parses core modules and folds constant expressions;
//! * [`merge`] resolves, lays out and emits the merged module.

mod core;
mod graph;
mod merge;

/// A component's core instances merged into one core module.
pub(crate) struct Linked {
    /// The merged core module.
    pub module: Vec<u8>,
    /// What the merge noticed (imports lowered twice with different options, start functions).
    pub notes: Vec<String>,
}

/// Merges the core instance graph of `component` into one core module.
pub(crate) fn link(component: &[u8]) -> anyhow::Result<Linked> {
    // The graph walk trusts the component's indices: validate it first, so a malformed one is
    // an error naming the problem, not an out-of-range panic.
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(component)
        .map_err(|e| anyhow::anyhow!("the component does not validate: {e}"))?;
    let graph = graph::Graph::parse(component)?;
    let merged = merge::Merger::new(&graph)?.run()?;
    Ok(Linked {
        module: merged.module,
        notes: merged.notes,
    })
}
