//! The verify step: an adapted module is exactly what a Proxy-Wasm 0.2.1 host expects.

use wasmparser::{FuncType, ValType, Validator, WasmFeatures};

use crate::AdaptError;
use crate::module::Module;

use ValType::{I32, I64};

/// Host functions the output may import (module `env`), with their Proxy-Wasm 0.2.1 signatures.
pub const PROXY_IMPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("proxy_log", &[I32, I32, I32], &[I32]),
    ("proxy_get_log_level", &[I32], &[I32]),
    ("proxy_get_current_time_nanoseconds", &[I32], &[I32]),
    ("proxy_set_tick_period_milliseconds", &[I32], &[I32]),
    ("proxy_get_buffer_bytes", &[I32, I32, I32, I32, I32], &[I32]),
    ("proxy_set_buffer_bytes", &[I32, I32, I32, I32, I32], &[I32]),
    ("proxy_get_header_map_pairs", &[I32, I32, I32], &[I32]),
    (
        "proxy_get_header_map_value",
        &[I32, I32, I32, I32, I32],
        &[I32],
    ),
    (
        "proxy_replace_header_map_value",
        &[I32, I32, I32, I32, I32],
        &[I32],
    ),
    (
        "proxy_add_header_map_value",
        &[I32, I32, I32, I32, I32],
        &[I32],
    ),
    ("proxy_remove_header_map_value", &[I32, I32, I32], &[I32]),
    (
        "proxy_send_local_response",
        &[I32, I32, I32, I32, I32, I32, I32, I32],
        &[I32],
    ),
    ("proxy_get_property", &[I32, I32, I32, I32], &[I32]),
    ("proxy_get_shared_data", &[I32, I32, I32, I32, I32], &[I32]),
    ("proxy_set_shared_data", &[I32, I32, I32, I32, I32], &[I32]),
    ("proxy_define_metric", &[I32, I32, I32, I32], &[I32]),
    ("proxy_increment_metric", &[I32, I64], &[I32]),
    ("proxy_record_metric", &[I32, I64], &[I32]),
    (
        "proxy_http_call",
        &[I32, I32, I32, I32, I32, I32, I32, I32, I32, I32],
        &[I32],
    ),
];

/// Functions the output exports for the host, with their signatures; all are required.
pub const PROXY_EXPORTS: &[(&str, &[ValType], &[ValType])] = &[
    ("proxy_abi_version_0_2_1", &[], &[]),
    ("proxy_on_memory_allocate", &[I32], &[I32]),
    ("proxy_on_context_create", &[I32, I32], &[]),
    ("proxy_on_vm_start", &[I32, I32], &[I32]),
    ("proxy_on_configure", &[I32, I32], &[I32]),
    ("proxy_on_tick", &[I32], &[]),
    ("proxy_on_request_headers", &[I32, I32, I32], &[I32]),
    ("proxy_on_request_body", &[I32, I32, I32], &[I32]),
    ("proxy_on_request_trailers", &[I32, I32], &[I32]),
    ("proxy_on_response_headers", &[I32, I32, I32], &[I32]),
    ("proxy_on_response_body", &[I32, I32, I32], &[I32]),
    ("proxy_on_response_trailers", &[I32, I32], &[I32]),
    ("proxy_on_done", &[I32], &[I32]),
    ("proxy_on_log", &[I32], &[]),
    ("proxy_on_delete", &[I32], &[]),
    (
        "proxy_on_http_call_response",
        &[I32, I32, I32, I32, I32],
        &[],
    ),
];

fn sig_matches(ty: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    ty.params() == params && ty.results() == results
}

/// Checks that `module` is a valid core module that imports only known `env.proxy_*` functions
/// with their ABI signatures, defines and exports exactly one memory, exports every Proxy-Wasm
/// entry point with its signature, and exports nothing else (but `_initialize`).
pub fn verify(module: &[u8]) -> Result<(), AdaptError> {
    let fail = |msg: String| Err(AdaptError::Verify(msg));
    let features = WasmFeatures::MUTABLE_GLOBAL
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::REFERENCE_TYPES
        | WasmFeatures::SIMD
        | WasmFeatures::FLOATS
        | WasmFeatures::CALL_INDIRECT_OVERLONG;
    if let Err(e) = Validator::new_with_features(features).validate_all(module) {
        return fail(format!("invalid module: {e}"));
    }
    let m = Module::parse(module).map_err(|e| AdaptError::Verify(e.to_string()))?;
    let func_type = |idx: u32| -> Option<&FuncType> {
        m.func_types
            .get(idx as usize)
            .and_then(|t| m.types.get(*t as usize))
    };
    let mut func_import = 0u32;
    for imp in &m.imports {
        let name = format!("{}.{}", imp.module, imp.name);
        let wasmparser::TypeRef::Func(t) = imp.ty else {
            return fail(format!("unexpected non-function import `{name}`"));
        };
        let Some((_, params, results)) = PROXY_IMPORTS
            .iter()
            .find(|(n, _, _)| imp.module == "env" && *n == imp.name)
        else {
            return fail(format!("unexpected import `{name}`"));
        };
        let ty = &m.types[t as usize];
        if !sig_matches(ty, params, results) {
            return fail(format!(
                "import `{name}` has signature {ty}, not the Proxy-Wasm one"
            ));
        }
        func_import += 1;
    }
    debug_assert_eq!(func_import, m.num_func_imports);
    if m.num_memories != 1 || m.num_memory_imports != 0 {
        return fail(format!(
            "expected exactly one defined memory, found {} defined and {} imported",
            m.num_memories, m.num_memory_imports
        ));
    }
    let mut memory_exported = false;
    for e in &m.exports {
        match e.kind {
            wasmparser::ExternalKind::Memory if e.name == "memory" => memory_exported = true,
            wasmparser::ExternalKind::Func if e.name == "_initialize" => {
                let ok = func_type(e.index).is_some_and(|t| sig_matches(t, &[], &[]));
                if !ok {
                    return fail("`_initialize` must take and return nothing".into());
                }
            }
            wasmparser::ExternalKind::Func => {
                let Some((_, params, results)) =
                    PROXY_EXPORTS.iter().find(|(n, _, _)| *n == e.name)
                else {
                    return fail(format!("unexpected export `{}`", e.name));
                };
                let ok = func_type(e.index).is_some_and(|t| sig_matches(t, params, results));
                if !ok {
                    return fail(format!(
                        "export `{}` does not have its Proxy-Wasm signature",
                        e.name
                    ));
                }
            }
            _ => return fail(format!("unexpected export `{}`", e.name)),
        }
    }
    if !memory_exported {
        return fail("the memory is not exported as `memory`".into());
    }
    for (name, _, _) in PROXY_EXPORTS {
        if m.export_func(name).is_none() {
            return fail(format!("missing export `{name}`"));
        }
    }
    Ok(())
}
