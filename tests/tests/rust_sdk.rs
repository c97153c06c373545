//! `weft run` with the Rust OpenTelemetry SDK as the client: `opentelemetry-otlp` over gRPC
//! with gzip, batch span and log processors, spans and log records carrying PII. Every item
//! arrives once in an in-memory exporter, masked.

use std::time::Duration;

use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Compression, WithExportConfig, WithTonicConfig};
use weft::Config;
use weft_tests::{MEMORY_EXPORTER, host_with_cache, json_lines, start_in_memory};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_spans_and_logs_arrive_once_and_masked() {
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
processors:
  wasm/pii: {{ component: "builtin:pii-mask", fail_policy: closed }}
exporters:
  {MEMORY_EXPORTER}: {{}}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/pii], exporters: [{MEMORY_EXPORTER}] }}
    logs: {{ receivers: [otlp], processors: [wasm/pii], exporters: [{MEMORY_EXPORTER}] }}
  telemetry:
    metrics: {{ address: none }}
"#
    );
    let config = Config::parse(&yaml, std::path::Path::new(".")).expect("config");
    let host = host_with_cache(None).expect("host");
    let (running, memory) = start_in_memory(&config, &host).await.expect("start");
    let endpoint = format!("http://{}", running.address("otlp", "grpc").expect("grpc"));

    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("rust-sdk-test")
        .build();
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .with_compression(Compression::Gzip)
        .build()
        .expect("span exporter");
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource.clone())
        .build();
    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .with_compression(Compression::Gzip)
        .build()
        .expect("log exporter");
    let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .with_resource(resource)
        .build();

    const N: usize = 200;
    // The SDK's batch processors run on their own threads and block; keep them off the runtime.
    tokio::task::spawn_blocking(move || {
        let tracer = tracer_provider.tracer("weft-test");
        let logger = logger_provider.logger("weft-test");
        for i in 0..N {
            let mut span = tracer.start(format!("checkout {i}"));
            span.set_attribute(opentelemetry::KeyValue::new(
                "test.id",
                format!("rust-span-{i}"),
            ));
            span.set_attribute(opentelemetry::KeyValue::new(
                "payment.card",
                "4111 1111 1111 1111",
            ));
            span.end();
            let mut record = logger.create_log_record();
            record.set_body(LogValue::from(format!(
                "order {i} paid by user@example.com"
            )));
            record.add_attribute("test.id", format!("rust-log-{i}"));
            logger.emit(record);
        }
        tracer_provider.force_flush().expect("flush spans");
        logger_provider.force_flush().expect("flush logs");
        tracer_provider
            .shutdown()
            .expect("shutdown tracer provider");
        logger_provider
            .shutdown()
            .expect("shutdown logger provider");
    })
    .await
    .expect("sdk thread");

    assert!(running.shutdown(Duration::from_secs(10)).await, "drained");
    // Every exported request as OTLP/JSON, one per line, as the file exporter writes them.
    let text = json_lines(&memory);
    let mut span_ids = Vec::new();
    let mut log_ids = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        let collect = |items: &serde_json::Value, into: &mut Vec<String>| {
            for item in items.as_array().into_iter().flatten() {
                for kv in item["attributes"].as_array().into_iter().flatten() {
                    if kv["key"] == "test.id" {
                        into.push(
                            kv["value"]["stringValue"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        );
                    }
                }
            }
        };
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                collect(&ss["spans"], &mut span_ids);
            }
        }
        for rl in v["resourceLogs"].as_array().into_iter().flatten() {
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                collect(&sl["logRecords"], &mut log_ids);
            }
        }
    }
    for ids in [&mut span_ids, &mut log_ids] {
        assert_eq!(ids.len(), N, "every item arrived");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), N, "none twice");
    }
    assert!(!text.contains("4111 1111 1111 1111"), "cards masked");
    assert!(!text.contains("user@example.com"), "e-mails masked");
    assert!(text.contains("u***@example.com"));
}
