//! `weft adapt` without Envoy: what the fuser accepts and refuses, and the verify step.
//! (tests/tests/envoy_filters.rs runs the adapted modules in a real Envoy.)

use weft_adapt::{AdaptError, PROXY_EXPORTS, adapt, verify};
use weft_tests::guests;

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Import and export names of a core module.
fn interface(module: &[u8]) -> (Vec<String>, Vec<String>) {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload.expect("parses") {
            wasmparser::Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    let i = i.expect("import");
                    imports.push(format!("{}.{}", i.module, i.name));
                }
            }
            wasmparser::Payload::ExportSection(r) => {
                for e in r {
                    exports.push(e.expect("export").name.to_string());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

#[test]
fn every_http_plugin_adapts_to_a_module_that_imports_only_proxy_wasm() {
    for (name, path) in [
        ("ab-router", guests::AB_ROUTER),
        ("audit-log", guests::AUDIT_LOG),
        ("rate-limit", guests::RATE_LIMIT),
        ("error-alert", guests::ERROR_ALERT),
        ("http-sampler", guests::HTTP_SAMPLER),
        ("http-pii-mask", guests::HTTP_PII_MASK),
        ("http-fault", guests::HTTP_FAULT),
        (
            "ab-router (wasm32-unknown-unknown)",
            guests::AB_ROUTER_UNKNOWN,
        ),
    ] {
        let adapted = adapt(&read(path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (imports, exports) = interface(&adapted.module);
        assert!(
            imports.iter().all(|i| i.starts_with("env.proxy_")),
            "{name}: {imports:?}"
        );
        for (export, _, _) in PROXY_EXPORTS {
            assert!(exports.iter().any(|e| e == export), "{name} lacks {export}");
        }
        assert_eq!(
            exports.iter().filter(|e| *e == "memory").count(),
            1,
            "{name}: {exports:?}"
        );
        // Every WIT import of the component was resolved to the glue.
        assert!(
            adapted
                .resolved
                .iter()
                .any(|(from, _)| from.contains("weft:plugin/config@0.2.0#get-json")),
            "{name}: {:?}",
            adapted.resolved
        );
        verify(&adapted.module).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn the_wasm32_unknown_unknown_build_needs_no_wasi_shims() {
    let wasip2 = adapt(&read(guests::AB_ROUTER)).expect("adapts");
    let unknown = adapt(&read(guests::AB_ROUTER_UNKNOWN)).expect("adapts");
    assert!(
        wasip2
            .resolved
            .iter()
            .any(|(from, _)| from.starts_with("wasi:"))
    );
    assert!(
        !unknown
            .resolved
            .iter()
            .any(|(from, _)| from.starts_with("wasi:")),
        "{:?}",
        unknown.resolved
    );
}

#[test]
fn components_of_other_worlds_are_refused_with_the_world_named() {
    // A span processor, an OTLP processor and a wasi:cli command.
    let cases = [
        (guests::SAMPLER, "weft:plugin/span-processor@0.2.0"),
        (guests::PII_MASK, "weft:plugin/otlp-processor@0.2.0"),
        (guests::NOT_A_PLUGIN, "wasi:cli/command"),
    ];
    for (path, world) in cases {
        let err = adapt(&read(path)).expect_err("not an http-filter");
        assert!(
            matches!(err, AdaptError::WrongWorld { .. }),
            "{path}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(world), "{path}: {msg}");
        assert!(msg.contains("weft:plugin/http-filter@0.2.0"), "{msg}");
    }
}

/// Rust's `std::fs` links `wasi:filesystem`. Envoy has no filesystem to give: the adapter answers
/// `get-directories` with no preopened directory, so no descriptor can ever exist, and satisfies
/// the descriptor methods with functions that trap. The filter adapts; its read fails.
#[test]
fn a_filter_that_imports_the_filesystem_adapts_with_no_preopened_directory() {
    let adapted = adapt(&read(guests::HTTP_USES_FS)).expect("adapts");
    let how = |import: &str| {
        adapted
            .resolved
            .iter()
            .find(|(i, _)| i.starts_with("wasi:filesystem/") && i.ends_with(import))
            .map(|(_, how)| how.as_str())
    };
    assert_eq!(
        how("#get-directories"),
        Some("wasi:filesystem/preopens@0.2#get-directories"),
        "{:?}",
        adapted.resolved
    );
    assert_eq!(
        how("#[method]descriptor.open-at"),
        Some("unreachable"),
        "{:?}",
        adapted.resolved
    );
    assert_eq!(how("#[resource-drop]descriptor"), Some("unreachable"));
    verify(&adapted.module).expect("verifies");
}

#[test]
fn core_modules_and_garbage_are_refused() {
    let core = wat::parse_str("(module (memory (export \"memory\") 1))").expect("wat");
    let err = adapt(&core).expect_err("a core module");
    assert!(matches!(err, AdaptError::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
    assert!(matches!(
        adapt(b"hello world, not wasm"),
        Err(AdaptError::NotWasm)
    ));
    let mut truncated = read(guests::AB_ROUTER);
    truncated.truncate(truncated.len() / 2);
    let err = adapt(&truncated).expect_err("truncated");
    assert!(matches!(err, AdaptError::Invalid(_)), "{err}");
}

/// The smallest module that passes verify: every Proxy-Wasm export, one memory, no imports.
fn minimal_proxy_module(extra: &str) -> String {
    let mut funcs = String::new();
    for (name, params, results) in PROXY_EXPORTS {
        let params: Vec<&str> = params
            .iter()
            .map(|p| {
                if *p == wasmparser::ValType::I64 {
                    "i64"
                } else {
                    "i32"
                }
            })
            .collect();
        let p = if params.is_empty() {
            String::new()
        } else {
            format!("(param {})", params.join(" "))
        };
        let (r, body) = if results.is_empty() {
            (String::new(), "")
        } else {
            ("(result i32)".to_string(), "i32.const 0")
        };
        funcs.push_str(&format!("(func (export \"{name}\") {p} {r} {body})\n"));
    }
    format!("(module {extra}\n(memory (export \"memory\") 1)\n{funcs})")
}

#[test]
fn verify_accepts_exactly_the_proxy_wasm_shape_and_names_what_is_wrong() {
    let ok = wat::parse_str(minimal_proxy_module("")).expect("wat");
    verify(&ok).expect("the minimal module is a valid Proxy-Wasm module");

    let bad = [
        (
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
            "unexpected import `wasi_snapshot_preview1.fd_write`",
        ),
        (
            r#"(import "env" "proxy_log" (func (param i32 i32) (result i32)))"#,
            "import `env.proxy_log` has signature",
        ),
        (
            r#"(func (export "cabi_realloc"))"#,
            "unexpected export `cabi_realloc`",
        ),
        // A second memory (imported): Envoy's modules have exactly one.
        (r#"(import "env" "memory" (memory 1))"#, "multiple memories"),
    ];
    for (extra, want) in bad {
        let module = wat::parse_str(minimal_proxy_module(extra)).expect("wat");
        let err = verify(&module).expect_err(extra);
        assert!(err.to_string().contains(want), "{extra}: {err}");
    }

    // A missing entry point.
    let text =
        minimal_proxy_module("").replace("(func (export \"proxy_on_tick\") (param i32)  )\n", "");
    let err = verify(&wat::parse_str(&text).expect("wat")).expect_err("no proxy_on_tick");
    assert!(
        err.to_string().contains("missing export `proxy_on_tick`"),
        "{err}"
    );
}

#[test]
fn the_oci_layout_holds_the_module_under_its_digest() {
    let adapted = adapt(&read(guests::AB_ROUTER)).expect("adapts");
    let dir = tempfile::tempdir().expect("tempdir");
    let image = weft_adapt::oci::write_layout(dir.path(), &adapted.module, "v1", "ab_router")
        .expect("writes");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("index.json"))
            .expect("json");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let manifest_hex = image.manifest_digest.trim_start_matches("sha256:");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("blobs/sha256").join(manifest_hex)).expect("manifest"),
    )
    .expect("json");
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        weft_adapt::oci::LAYER_MEDIA_TYPE
    );
    let layer_hex = image.layer_digest.trim_start_matches("sha256:");
    let layer = std::fs::read(dir.path().join("blobs/sha256").join(layer_hex)).expect("layer");
    assert_eq!(layer, adapted.module, "the layer is the module itself");
    assert!(
        std::fs::read_to_string(dir.path().join("oci-layout"))
            .expect("oci-layout")
            .contains("1.0.0")
    );
}
