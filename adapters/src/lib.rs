//! `weft adapt`: turns a `weft:plugin/http-filter` component into a classic Proxy-Wasm 0.2.1
//! core module that a stock Envoy (or Istio's `WasmPlugin`) loads.
//!
//! A component built with wit-bindgen holds one *main* core module (it defines the memory,
//! `cabi_realloc`, the stack pointer and the data) and small shim modules that only wire
//! imports. [`adapt`] keeps the main module and links it with the **glue**
//! (`adapters/glue`, built for `wasm32-unknown-unknown` by this crate's build script) into one
//! core module with one memory:
//!
//! * every import of the main module (the world's `weft:plugin/*` functions, the resource
//!   intrinsics, the WASI 0.2 functions of Rust's `std`) is resolved to a glue function;
//! * every import of the glue from `weft:guest` is resolved to a main-module export
//!   (`cabi_realloc`, the `filter` exports, their `cabi_post_*`);
//! * the glue's memory import becomes the guest's memory and its `__stack_pointer` the guest's;
//! * the glue's root pointer becomes one new global;
//! * the output exports the glue's `proxy_*` functions, the memory, and the guest's
//!   `_initialize` if it has one; it imports only `env.proxy_*`.
//!
//! A component made of shared libraries (componentize-py) is first linked into one core module
//! (adapters/src/link), which then plays the main module.
//!
//! [`verify`] then checks the result the way Envoy will see it (see its docs); [`adapt`] always
//! runs it.

mod fuse;
mod link;
mod module;
pub mod oci;
mod verify;

pub use verify::{PROXY_EXPORTS, PROXY_IMPORTS, verify};

/// The glue module, built from adapters/glue by build.rs.
pub const GLUE: &[u8] = include_bytes!(env!("WEFT_PROXY_GLUE"));

/// The world a component must target to be adapted.
pub const WORLD: &str = "weft:plugin/http-filter@0.2.0";

/// Why a component cannot be adapted.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly component (no `\\0asm` header)")]
    NotWasm,
    /// A core module was given where a component was expected.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (or run `wasm-tools component new` on a wasm32-unknown-unknown build)"
    )]
    CoreModule,
    /// The binary does not parse.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// No core module that defines a memory and `cabi_realloc`.
    #[error("the component has no main core module (one that exports `memory` and `cabi_realloc`)")]
    NoMainModule,
    /// More than one core module with a memory (e.g. componentize-py output).
    #[error(
        "the component has {0} core modules with their own memory; weft adapt fuses components \
         with one main module (Rust/C guests built with wit-bindgen)"
    )]
    ManyMemories(usize),
    /// The component's core modules are linked at instantiation (componentize-py: libc,
    /// libpython and the app's bindings as `dylink.0` shared libraries; componentize-js with
    /// WASI features: SpiderMonkey and the preview1 adapter), and merging its core instances
    /// into one module failed.
    #[error(
        "the component is {modules} core modules linked when it is instantiated ({libraries} of \
         them shared libraries with `dylink.0`), and linking them into one module failed: {cause}"
    )]
    Link {
        /// Core modules in the component.
        modules: usize,
        /// How many of them are shared libraries.
        libraries: usize,
        /// What the linker could not do.
        cause: String,
    },
    /// The component targets another world.
    #[error(
        "the component targets the world `{found}`, not `{WORLD}`: only HTTP filters run in Envoy"
    )]
    WrongWorld {
        /// The world (or interface) the component exports.
        found: String,
    },
    /// The component imports something Proxy-Wasm cannot provide.
    #[error("the component imports `{import}`, which Proxy-Wasm cannot provide: {why}")]
    Unsupported {
        /// `module#name` of the import.
        import: String,
        /// What is missing.
        why: &'static str,
    },
    /// The component lacks an export the glue needs.
    #[error("the component does not export `{0}`; was it built against weft:plugin@0.2.0?")]
    MissingExport(String),
    /// The glue module breaks the rules (a build problem of weft itself).
    #[error("internal: the glue module {0}")]
    Glue(String),
    /// The fused module failed verification.
    #[error("the adapted module failed verification: {0}")]
    Verify(String),
}

/// The result of [`adapt`].
#[derive(Debug, Clone)]
pub struct Adapted {
    /// The Proxy-Wasm module.
    pub module: Vec<u8>,
    /// Imports of the component's main module and how each was satisfied.
    pub resolved: Vec<(String, String)>,
    /// Size of the component's main core module, for comparison (for a component of shared
    /// libraries, the size of the module they were linked into).
    pub main_module_size: usize,
    /// Core modules of the component that went into the output: 1, or every module of a
    /// component of shared libraries.
    pub core_modules: usize,
    /// What linking a component of shared libraries noticed (empty for one main module).
    pub notes: Vec<String>,
}

/// Adapts an http-filter component (its bytes) into a verified Proxy-Wasm 0.2.1 module.
pub fn adapt(component: &[u8]) -> Result<Adapted, AdaptError> {
    let main = fuse::main_module(component)?;
    let mut adapted = fuse::fuse(&main.bytes, GLUE)?;
    adapted.core_modules = main.core_modules;
    adapted.notes = main.notes;
    verify(&adapted.module)?;
    Ok(adapted)
}

/// An Envoy `http_filters` entry that loads `module_path` with `configuration` (JSON text).
pub fn envoy_snippet(name: &str, module_path: &str, configuration: &str) -> String {
    let config = configuration.replace('\'', "''");
    format!(
        r#"# Add to http_connection_manager.http_filters, before envoy.filters.http.router:
- name: envoy.filters.http.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      name: {name}
      root_id: {name}
      # weft filters may pause on the request headers and decide on the body; without this,
      # Envoy turns that pause into StopAllIterationAndWatermark and never calls the body
      # callbacks.
      allow_on_headers_stop_iteration: true
      # Fail closed: a plugin that traps answers 503 (set true to pass requests unfiltered).
      fail_open: false
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{config}'
      vm_config:
        vm_id: {name}
        runtime: envoy.wasm.runtime.v8
        code:
          local:
            filename: {module_path}
"#
    )
}
