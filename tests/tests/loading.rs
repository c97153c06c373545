//! Loading components: what is not a weft plugin gets a clear error, and the second load of a
//! component is served from the compiled-artifact cache.

use std::sync::atomic::Ordering;

use weft_runtime::{CallError, LoadError, PluginSettings};
use weft_tests::{component, fixture, guests, host_with_cache};

fn load_err(bytes: &[u8], what: &str) -> LoadError {
    let host = host_with_cache(None).expect("host");
    host.load(what, bytes, PluginSettings::new("x"))
        .err()
        .expect("load must fail")
}

#[test]
fn a_wasi_command_component_is_rejected_as_the_wrong_world() {
    let err = load_err(&component(guests::NOT_A_PLUGIN), "not-a-plugin.wasm");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("not-a-plugin.wasm is not a weft plugin of the expected world"),
        "{msg}"
    );
    assert!(
        msg.contains("weft:plugin/spans@0.2.0"),
        "says what is expected: {msg}"
    );
    assert!(
        msg.contains("wasi:cli/run@0.2"),
        "says what it exports instead: {msg}"
    );
}

#[test]
fn a_core_module_is_rejected_as_not_a_component() {
    // The smallest valid core module: magic and version 1, no sections.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let err = load_err(&core, "core.wasm");
    assert_eq!(
        err.to_string(),
        "core.wasm is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
    );
}

#[test]
fn random_bytes_are_rejected_as_not_webassembly() {
    // Deterministic "random" bytes: an LCG, so the test is reproducible.
    let mut x: u32 = 12345;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    let err = load_err(&bytes, "random.bin");
    assert_eq!(
        err.to_string(),
        "random.bin is not a WebAssembly binary (it does not start with `\\0asm`)"
    );
}

#[test]
fn a_truncated_component_is_rejected_by_the_compiler_with_its_reason() {
    let bytes = component(guests::FAULT);
    let err = load_err(&bytes[..bytes.len() / 2], "truncated.wasm");
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("truncated.wasm is not a valid component:"),
        "{err}"
    );
}

#[test]
fn logs_sent_to_a_spans_only_plugin_are_refused_by_signal() {
    let host = host_with_cache(None).expect("host");
    let plugin = host
        .load_file(guests::SAMPLER.as_ref(), PluginSettings::new("sampler"))
        .expect("sampler loads with its defaults");
    assert!(plugin.worlds().spans && !plugin.worlds().logs);
    assert_eq!(plugin.worlds().world_name(), "span-processor");
    let logs = fixture("tests/fixtures/logs-small.json")
        .expect("fixture")
        .logs();
    let err = plugin
        .process_strict(logs)
        .expect_err("sampler has no logs export");
    assert!(
        matches!(
            err,
            weft_runtime::ProcessError::Call(CallError::Unsupported { signal: "logs", .. })
        ),
        "{err}"
    );
    assert_eq!(err.to_string(), "plugin `sampler` does not process logs");
}

#[test]
fn the_second_load_is_served_from_the_artifact_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with_cache(Some(dir.path().to_path_buf())).expect("host");
    let stats = host.engine().cache_stats();
    let bytes = component(guests::PII_MASK);

    let first = host
        .load("pii-mask.wasm", &bytes, PluginSettings::new("a"))
        .expect("first load");
    assert!(!first.cache_hit());
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
    assert_eq!(stats.hits.load(Ordering::Relaxed), 0);
    let artifact = host.engine().cache_path(&bytes).expect("cache enabled");
    assert!(
        artifact.is_file(),
        "artifact written to {}",
        artifact.display()
    );

    let second = host
        .load("pii-mask.wasm", &bytes, PluginSettings::new("b"))
        .expect("second load");
    assert!(second.cache_hit());
    assert_eq!(stats.hits.load(Ordering::Relaxed), 1);
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);

    // A new engine (a new process) finds the artifact on disk too.
    let host2 = host_with_cache(Some(dir.path().to_path_buf())).expect("host");
    let third = host2
        .load("pii-mask.wasm", &bytes, PluginSettings::new("c"))
        .expect("third load");
    assert!(third.cache_hit());
    assert_eq!(host2.engine().cache_stats().hits.load(Ordering::Relaxed), 1);
}

#[test]
fn a_corrupt_cached_artifact_is_replaced_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with_cache(Some(dir.path().to_path_buf())).expect("host");
    let bytes = component(guests::FAULT);
    let artifact = host.engine().cache_path(&bytes).expect("cache enabled");
    std::fs::write(&artifact, b"not a compiled artifact").expect("write");

    let p = host
        .load("fault.wasm", &bytes, PluginSettings::new("f"))
        .expect("load recompiles");
    assert!(!p.cache_hit());
    let stats = host.engine().cache_stats();
    assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
    assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
    assert!(std::fs::metadata(&artifact).expect("rewritten").len() > 1000);
}

#[test]
fn inspect_names_the_world_version_and_interfaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host_with_cache(Some(dir.path().to_path_buf())).expect("host");
    let bytes = component(guests::PII_MASK);
    let first =
        weft_runtime::inspect::inspect(host.engine(), "pii-mask.wasm", &bytes).expect("inspect");
    assert_eq!(first.world, "otlp-processor");
    assert!(first.abi.starts_with("batch"), "{}", first.abi);
    assert_eq!(first.weft_versions, vec!["0.2.0".to_string()]);
    assert!(
        first
            .exports
            .contains(&"weft:plugin/otlp-traces@0.2.0".to_string())
    );
    assert!(
        first
            .exports
            .contains(&"weft:plugin/otlp-logs@0.2.0".to_string())
    );
    // The typed fixture is reported as typed.
    let typed = weft_runtime::inspect::inspect(
        host.engine(),
        "typed-fault.wasm",
        &component(guests::TYPED_FAULT),
    )
    .expect("inspect");
    assert_eq!(typed.world, "typed-otlp-processor");
    assert!(typed.abi.starts_with("typed"), "{}", typed.abi);
    assert!(
        first
            .imports
            .contains(&"weft:plugin/config@0.2.0".to_string())
    );
    assert_eq!(
        first.cached_artifact, None,
        "nothing cached before the first compile"
    );
    let second =
        weft_runtime::inspect::inspect(host.engine(), "pii-mask.wasm", &bytes).expect("inspect");
    assert!(
        second.cached_artifact.is_some(),
        "cached after the first inspect"
    );

    let cmd =
        weft_runtime::inspect::inspect(host.engine(), "cmd.wasm", &component(guests::NOT_A_PLUGIN))
            .expect("a command component can be inspected");
    assert_eq!(cmd.world, "none (not a weft plugin)");
}
