//! `weft inspect`: what a component is, without running it.

use std::fmt::Write as _;

use crate::bindings::names;
use crate::engine::{WeftEngine, check_is_component, digest};
use crate::error::LoadError;

/// What `weft inspect` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// Size in bytes.
    pub size: usize,
    /// SHA-256, hex.
    pub sha256: String,
    /// The weft world it targets (`span-processor`, `log-transform`, `otlp-processor`, their
    /// `typed-` forms, `http-filter`), or `none`.
    pub world: String,
    /// How OTLP requests cross into it: `batch` (protobuf bytes), `typed` (WIT records), or
    /// `-` for other worlds.
    pub abi: String,
    /// Versions of the `weft:plugin` package it uses (from its import and export names).
    pub weft_versions: Vec<String>,
    /// Top-level imports (instance names).
    pub imports: Vec<String>,
    /// Top-level exports.
    pub exports: Vec<String>,
    /// The cached compiled artifact, if one exists (checked before compiling).
    pub cached_artifact: Option<String>,
}

/// The batch ABI's name in reports.
const BATCH: &str = "batch (OTLP protobuf bytes, one buffer each way)";
/// The typed ABI's name in reports.
const TYPED: &str = "typed (WIT records per resource and scope)";

/// Inspects `bytes` (compiling them, which fills the cache for the next load).
pub fn inspect(engine: &WeftEngine, what: &str, bytes: &[u8]) -> Result<Inspection, LoadError> {
    check_is_component(what, bytes)?;
    let cached_artifact = engine
        .cache_path(bytes)
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string());
    let loaded = engine.load_component(what, bytes)?;
    let ty = loaded.component.component_type();
    let imports: Vec<String> = ty
        .imports(engine.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine.engine())
        .map(|(n, _)| n.to_string())
        .collect();
    let has = |name: &str| exports.iter().any(|e| e == name);
    let lifecycle = has(names::LIFECYCLE);
    let batch = (has(names::OTLP_TRACES), has(names::OTLP_LOGS));
    let typed = (has(names::SPANS), has(names::LOGS));
    let (world, abi) = match (lifecycle, batch, typed) {
        (false, ..) => ("none (not a weft plugin)", "-"),
        (true, (true, true), _) => ("otlp-processor", BATCH),
        (true, (true, false), _) => ("span-processor", BATCH),
        (true, (false, true), _) => ("log-transform", BATCH),
        (true, _, (true, true)) => ("typed-otlp-processor", TYPED),
        (true, _, (true, false)) => ("typed-span-processor", TYPED),
        (true, _, (false, true)) => ("typed-log-transform", TYPED),
        _ if has(names::FILTER) => ("http-filter", "-"),
        _ => ("none (not a weft plugin)", "-"),
    };
    let mut weft_versions: Vec<String> = imports
        .iter()
        .chain(&exports)
        .filter_map(|n| n.strip_prefix("weft:plugin/"))
        .filter_map(|n| n.split_once('@').map(|(_, v)| v.to_string()))
        .collect();
    weft_versions.sort();
    weft_versions.dedup();
    Ok(Inspection {
        size: bytes.len(),
        sha256: digest(bytes),
        world: world.to_string(),
        abi: abi.to_string(),
        weft_versions,
        imports,
        exports,
        cached_artifact,
    })
}

impl Inspection {
    /// Human-readable report.
    pub fn render(&self, what: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "component: {what}");
        let _ = writeln!(s, "size:      {} bytes", self.size);
        let _ = writeln!(s, "sha256:    {}", self.sha256);
        let _ = writeln!(s, "world:     {}", self.world);
        let _ = writeln!(s, "abi:       {}", self.abi);
        let _ = writeln!(
            s,
            "package:   weft:plugin@{}",
            if self.weft_versions.is_empty() {
                "-".to_string()
            } else {
                self.weft_versions.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "cached:    {}",
            self.cached_artifact
                .as_deref()
                .unwrap_or("no (compiled now, cached for next time)")
        );
        let _ = writeln!(s, "exports:");
        for e in &self.exports {
            let _ = writeln!(s, "  {e}");
        }
        let _ = writeln!(s, "imports:");
        for i in &self.imports {
            let _ = writeln!(s, "  {i}");
        }
        s
    }
}
