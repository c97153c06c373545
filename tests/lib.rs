//! Shared helpers for weft's integration tests and benchmarks: the guest components (built from
//! source by build.rs), a host per test, and fixture loading.

use std::path::PathBuf;

use weft_host::otlp_io::{OtlpData, read_otlp};
use weft_host::{EngineSettings, MetricsRegistry, PluginHost, WeftEngine};

/// Paths of the guest components, one constant per guest crate (`PII_MASK`, `FAULT`, ...).
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A host whose artifact cache is `cache_dir` (use a fresh temp dir per test for isolation).
pub fn host_with_cache(cache_dir: Option<PathBuf>) -> anyhow::Result<PluginHost> {
    let engine = WeftEngine::new(EngineSettings {
        cache_dir,
        ..EngineSettings::default()
    })?;
    PluginHost::new(engine, MetricsRegistry::default())
}

/// Reads an OTLP fixture (path relative to the workspace).
pub fn fixture(rel: &str) -> anyhow::Result<OtlpData> {
    let bytes = std::fs::read(workspace().join(rel))?;
    Ok(read_otlp(&bytes)?)
}

/// Reads a guest component's bytes.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("guest component {path}: {e}"))
}
