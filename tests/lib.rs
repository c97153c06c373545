//! Shared helpers for weft's integration tests and benchmarks: the guest components (built from
//! source by build.rs), a host per test, fixture loading, and Envoy as a test peer ([`envoy`]).

use std::path::PathBuf;

use weft_runtime::OtlpRequest;
use weft_runtime::otlp_io::{OtlpData, read_otlp};
use weft_runtime::{EngineSettings, MetricsRegistry, PluginHost, WeftEngine};

pub mod envoy;

/// How guests and other wasm modules are built (shared with xtask and the build scripts).
use weft_guest_build as guest_build;

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

/// The exporter id that [`start_in_memory`] replaces: configurations of pipeline tests declare
/// `debug/memory: {}` and name it in their pipelines.
pub const MEMORY_EXPORTER: &str = "debug/memory";

/// Starts `config` (`weft::service::start_with`) with its [`MEMORY_EXPORTER`] replaced by an
/// in-memory exporter, returned to read what the pipelines exported.
pub async fn start_in_memory(
    config: &weft::Config,
    host: &PluginHost,
) -> Result<(weft::Running, weft::service::InMemoryExporter), weft::StartError> {
    let memory = weft::service::InMemoryExporter::new();
    let exporters = std::collections::BTreeMap::from([(
        MEMORY_EXPORTER.to_string(),
        std::sync::Arc::new(memory.clone()) as std::sync::Arc<dyn weft::service::Exporter>,
    )]);
    let running = weft::service::start_with(config, host, exporters).await?;
    Ok((running, memory))
}

/// Every request an in-memory exporter got, as the `file` exporter writes them: compact
/// OTLP/JSON, one request per line.
pub fn json_lines(memory: &weft::service::InMemoryExporter) -> String {
    memory
        .requests()
        .iter()
        .map(|r| match r.decode().expect("exported OTLP decodes") {
            OtlpRequest::Traces(t) => serde_json::to_string(&t),
            OtlpRequest::Logs(l) => serde_json::to_string(&l),
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("OTLP serializes to JSON")
        .join("\n")
}

/// Reads a guest component's bytes.
pub fn component(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("guest component {path}: {e}"))
}

/// Spans in the benchmark batch.
pub const BENCH_SPANS: usize = 512;

/// The 10 string attributes of benchmark span `i`: 5 with PII (card, phone, e-mail, card with
/// dashes, e-mail in a sentence) and 5 without (route, method, status, an order number, a user
/// agent).
pub fn bench_attributes(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("payment.card", "4111 1111 1111 1111".to_string()),
        ("user.phone", format!("1381234{:04}", i % 10_000)),
        ("user.email", format!("user{i}@example.com")),
        ("billing.card", "5500-0000-0000-0004".to_string()),
        (
            "note",
            format!("contact alice{i}@corp.example.org for refunds"),
        ),
        ("http.route", "/api/v1/orders/{id}".to_string()),
        ("http.request.method", "POST".to_string()),
        ("http.response.status_code", "200".to_string()),
        (
            "order.id",
            format!("{:016}", 1_234_567_890_123_456u64 + i as u64),
        ),
        (
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) weft-bench/1.0".to_string(),
        ),
    ]
}

/// The benchmark batch as an OTLP request: 512 spans × 10 attributes (5 carrying PII), one
/// resource, one scope. `salt` varies the ids between requests.
pub fn bench_request(
    salt: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let s = |v: String| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        })
    };
    let spans = (0..BENCH_SPANS)
        .map(|i| Span {
            trace_id: ((i as u128 + 1 + ((salt as u128) << 20)) * 0x9e37_79b9_7f4a_7c15)
                .to_be_bytes()
                .to_vec(),
            span_id: (i as u64 + 1 + (salt << 20)).to_be_bytes().to_vec(),
            name: "POST /api/v1/orders".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_001_000_000 + i as u64,
            attributes: bench_attributes(i)
                .into_iter()
                .map(|(k, v)| KeyValue {
                    key: k.into(),
                    value: s(v),
                    key_strindex: 0,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: s("checkout".into()),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}
