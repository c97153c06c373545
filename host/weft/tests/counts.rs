//! Counts that add up and logs that cannot flood, through the `weft` binary (issue #14):
//!
//! - the Rust OpenTelemetry SDK (`opentelemetry-otlp`, gRPC, gzip) sends N batches of spans and
//!   of log records; a fail-closed plugin (the `fault` fixture) traps on the first K of each and
//!   a sampler drops some more; `/metrics` must then say received = sent + failed + in flight +
//!   refused + dropped exactly, with the drops under the plugin's and the pipeline's labels;
//! - a plugin that traps on every batch writes a bounded number of log lines, and every trap is
//!   either logged (on one line) or counted in a summary line;
//! - trace and span ids of the wrong length are refused (HTTP 400, gRPC INVALID_ARGUMENT) by a
//!   pipeline with no processors, and nothing of them is exported.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Compression, WithExportConfig, WithTonicConfig};

mod common;

use common::{WeftRun, free_port};

/// A `weft run` process ([`common::WeftRun`]) and its receivers' ports.
struct Weft {
    run: WeftRun,
    grpc: u16,
    http: u16,
}

impl Weft {
    /// Starts `weft run` on a configuration whose `{grpc}`, `{http}`, `{metrics}` and `{out}`
    /// placeholders are filled in here; waits (bounded) until it listens.
    fn start(dir: &Path, template: &str) -> Weft {
        let (grpc, http, metrics) = (free_port(), free_port(), free_port());
        let config = template
            .replace("{grpc}", &grpc.to_string())
            .replace("{http}", &http.to_string())
            .replace("{metrics}", &metrics.to_string())
            .replace("{out}", &dir.join("out.jsonl").display().to_string())
            .replace("{fault}", &common::guest("fault").display().to_string());
        Weft {
            run: WeftRun::start(&config, &[grpc, http], metrics),
            grpc,
            http,
        }
    }

    /// What it wrote to stderr so far.
    fn log(&self) -> String {
        self.run.log()
    }

    /// `/metrics`.
    fn metrics(&self) -> Metrics {
        Metrics(self.run.metrics())
    }

    /// Waits (bounded) until every exporter has sent or failed all it was given.
    fn settled(&self) -> Metrics {
        let start = Instant::now();
        loop {
            let m = self.metrics();
            let busy =
                m.0.lines()
                    .filter(|l| l.starts_with("weft_exporter_in_flight_items{"))
                    .any(|l| !l.ends_with(" 0"));
            if !busy {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "exporters did not settle:\n{}",
                m.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One HTTP/1.1 request on loopback (connection closed after it): status and body.
fn http(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, raw[split + 4..].to_vec())
}

/// A `/metrics` scrape.
struct Metrics(String);

impl Metrics {
    /// The value of series `name{labels}` (labels in the order weft writes them).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let series = format!("{name}{{{}}} ", labels.join(","));
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series}in\n{}", self.0))
    }
}

/// Sends `batches` batches of `per_batch` spans (and as many of log records, with `logs`) with
/// the Rust SDK, one export call per batch (a flush after each), to the OTLP/gRPC receiver on
/// `port`.
async fn send_with_sdk(port: u16, batches: usize, per_batch: usize, logs: bool) {
    let endpoint = format!("http://127.0.0.1:{port}");
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .with_compression(Compression::Gzip)
        .build()
        .expect("span exporter");
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .build();
    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(&endpoint)
        .with_compression(Compression::Gzip)
        .build()
        .expect("log exporter");
    let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .build();
    // The SDK's batch processors run on their own threads and block; keep them off the runtime.
    tokio::task::spawn_blocking(move || {
        let tracer = tracer_provider.tracer("weft-counts");
        let logger = logger_provider.logger("weft-counts");
        for b in 0..batches {
            for i in 0..per_batch {
                let mut span = tracer.start(format!("batch {b} span {i}"));
                span.end();
                if !logs {
                    continue;
                }
                let mut record = logger.create_log_record();
                record.set_body(LogValue::from(format!("batch {b} record {i}")));
                logger.emit(record);
            }
            tracer_provider.force_flush().expect("flush spans");
            logger_provider.force_flush().expect("flush logs");
        }
        tracer_provider
            .shutdown()
            .expect("shutdown tracer provider");
        logger_provider
            .shutdown()
            .expect("shutdown logger provider");
    })
    .await
    .expect("sdk thread");
}

/// Spans and log records in the file exporter's output.
fn exported_items(path: &Path) -> (u64, u64) {
    let (mut spans, mut records) = (0, 0);
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                spans += ss["spans"].as_array().map_or(0, |a| a.len() as u64);
            }
        }
        for rl in v["resourceLogs"].as_array().into_iter().flatten() {
            for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
                records += sl["logRecords"].as_array().map_or(0, |a| a.len() as u64);
            }
        }
    }
    (spans, records)
}

const BATCHES: usize = 20;
const PER_BATCH: usize = 10;
/// Batches the fault plugin traps on (the first ones: `times`).
const TRAPPED: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_add_up_after_fail_closed_drops_and_sampling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::start(
        dir.path(),
        &format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{{grpc}}" }}
      http: {{ endpoint: "127.0.0.1:{{http}}" }}
processors:
  wasm/trap-spans:
    component: "{{fault}}"
    config: {{ fault: panic, times: {TRAPPED} }}
    fail_policy: closed
  wasm/trap-logs:
    component: "{{fault}}"
    config: {{ fault: panic, times: {TRAPPED} }}
    fail_policy: closed
  wasm/sampler:
    component: builtin:sampler
    config: {{ percentage: 50, keep_errors: false }}
exporters:
  file: {{ path: "{{out}}" }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/trap-spans, wasm/sampler], exporters: [file] }}
    logs: {{ receivers: [otlp], processors: [wasm/trap-logs], exporters: [file] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:{{metrics}}" }}
"#
        ),
    );
    send_with_sdk(weft.grpc, BATCHES, PER_BATCH, true).await;
    let m = weft.settled();
    let sent_items = (BATCHES * PER_BATCH) as u64;
    let trapped_items = (TRAPPED * PER_BATCH) as u64;
    let (spans_in_file, records_in_file) = exported_items(&dir.path().join("out.jsonl"));

    for (pipeline, noun, trap, in_file) in [
        ("traces", "spans", "wasm/trap-spans", spans_in_file),
        ("logs", "log_records", "wasm/trap-logs", records_in_file),
    ] {
        let p = [("pipeline", pipeline)];
        let pe = [("pipeline", pipeline), ("exporter", "file")];
        let received = m.get("weft_pipeline_received_items_total", &p);
        let refused = m.get("weft_pipeline_refused_items_total", &p);
        let sent = m.get(&format!("otelcol_exporter_sent_{noun}_total"), &pe);
        let failed = m.get(&format!("otelcol_exporter_send_failed_{noun}_total"), &pe);
        let in_flight = m.get("weft_exporter_in_flight_items", &pe);
        let dropped = |plugin: &str, reason: &str| {
            m.get(
                "weft_pipeline_dropped_items_total",
                &[
                    ("pipeline", pipeline),
                    ("plugin", plugin),
                    ("reason", reason),
                ],
            )
        };
        let fail_closed = dropped(trap, "fail_closed");
        let sampled_out = if pipeline == "traces" {
            dropped("wasm/sampler", "plugin")
        } else {
            0
        };
        assert_eq!(received, sent_items, "{pipeline}: every item reached weft");
        assert_eq!(refused, 0, "{pipeline}");
        assert_eq!(
            fail_closed, trapped_items,
            "{pipeline}: the trapped batches"
        );
        assert_eq!(
            dropped(trap, "plugin"),
            0,
            "{pipeline}: the fault plugin drops nothing"
        );
        // The identity, exactly.
        assert_eq!(
            received,
            sent + failed + in_flight + refused + fail_closed + sampled_out,
            "{pipeline}: received = sent + failed + in flight + refused + dropped\n{}",
            m.0
        );
        assert_eq!(failed, 0, "{pipeline}");
        assert_eq!(sent, in_file, "{pipeline}: what `sent` says is in the file");
        // The Collector's names tell the same story.
        assert_eq!(
            m.get(&format!("otelcol_receiver_accepted_{noun}_total"), &p),
            received - refused
        );
        assert_eq!(
            m.get(
                &format!("otelcol_processor_dropped_{noun}_total"),
                &[("pipeline", pipeline), ("processor", trap)]
            ),
            fail_closed
        );
        assert_eq!(m.get("weft_pipeline_exported_items_total", &p), sent);
        assert_eq!(
            m.get(
                "weft_plugin_fail_policy_items_total",
                &[("plugin", trap), ("policy", "closed")]
            ),
            trapped_items,
            "{pipeline}: the plugin's own count of what its failures dropped"
        );
        assert_eq!(
            m.get(
                "weft_plugin_traps_total",
                &[("plugin", trap), ("kind", "panic")]
            ),
            TRAPPED as u64
        );
    }
    // The sampler kept some and dropped some of the spans that survived the trap.
    let sampled_out = m.get(
        "weft_pipeline_dropped_items_total",
        &[
            ("pipeline", "traces"),
            ("plugin", "wasm/sampler"),
            ("reason", "plugin"),
        ],
    );
    assert!(
        (1..sent_items - trapped_items).contains(&sampled_out),
        "sampled out {sampled_out}"
    );
    assert_eq!(
        m.get(
            "otelcol_processor_incoming_items_total",
            &[
                ("pipeline", "traces"),
                ("processor", "wasm/sampler"),
                ("otel_signal", "traces")
            ]
        ),
        sent_items - trapped_items,
        "the sampler saw what the trapping plugin passed on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_traps_writes_a_bounded_number_of_log_lines_and_counts_the_rest() {
    const TRAPS: usize = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::start(
        dir.path(),
        r#"
receivers:
  otlp:
    protocols:
      grpc: { endpoint: "127.0.0.1:{grpc}" }
      http: { endpoint: "127.0.0.1:{http}" }
processors:
  wasm/panics:
    component: "{fault}"
    config: { fault: panic }
    fail_policy: closed
exporters:
  file: { path: "{out}" }
service:
  pipelines:
    traces: { receivers: [otlp], processors: [wasm/panics], exporters: [file] }
  telemetry:
    metrics: { address: "127.0.0.1:{metrics}" }
"#,
    );
    let started = Instant::now();
    // Spans only: there is no logs pipeline.
    send_with_sdk(weft.grpc, TRAPS, 1, false).await;
    let burst = started.elapsed();
    // The summary of the interval comes at its end (10 s after the first suppressed line).
    let deadline = Instant::now() + Duration::from_secs(25);
    let summaries = |log: &str| -> u64 {
        log.lines()
            .filter_map(|l| {
                let rest = l.split("suppressed ").nth(1)?;
                let (n, what) = rest.split_once(' ')?;
                what.starts_with("failure log lines")
                    .then(|| n.parse::<u64>().ok())
                    .flatten()
            })
            .sum()
    };
    let trap_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("trapped (panic)"))
            .count()
    };
    let log = loop {
        let log = weft.log();
        if trap_lines(&log) as u64 + summaries(&log) >= TRAPS as u64 {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "not every trap is logged or summed up:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let m = weft.metrics();
    let traps = m.get(
        "weft_plugin_traps_total",
        &[("plugin", "wasm/panics"), ("kind", "panic")],
    );
    assert_eq!(traps, TRAPS as u64);
    // Every trap is logged on one line or counted in a summary, never both, never lost.
    let logged = trap_lines(&log) as u64;
    assert_eq!(logged + summaries(&log), traps, "{log}");
    assert_eq!(
        m.get(
            "weft_plugin_log_lines_suppressed_total",
            &[("plugin", "wasm/panics"), ("source", "failure")]
        ),
        traps - logged
    );
    // 10 per 10 s interval, and the burst fits in few intervals.
    let intervals = burst.as_secs() / 10 + 2;
    assert!(logged <= 10 * intervals, "{logged} trap lines in {burst:?}");
    // The guest's stderr (its panic message, ~3 lines per trap) is capped the same way.
    let stderr_lines = log
        .lines()
        .filter(|l| l.contains("stream=\"stderr\""))
        .count() as u64;
    assert!(
        stderr_lines <= 100 * intervals,
        "{stderr_lines} stderr lines in {burst:?}"
    );
    assert!(
        m.get(
            "weft_plugin_log_lines_suppressed_total",
            &[("plugin", "wasm/panics"), ("source", "stdio")]
        ) > 0
    );
    // No multi-line backtraces at info level.
    assert!(!log.contains("wasm backtrace"), "{log}");
    // Bounded: one line per call is the plugin's own `log` call ("fault: injecting"), which
    // the host leaves alone; everything else is a small constant, where it was ~22 per trap.
    let own = log
        .lines()
        .filter(|l| l.contains("fault: injecting"))
        .count();
    let total = log.lines().count();
    assert!(
        total - own <= (10 + 100) as usize * intervals as usize + 20,
        "{total} lines ({own} the plugin's own) for {TRAPS} traps"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_of_the_wrong_length_are_refused_without_processors() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let weft = Weft::start(
        dir.path(),
        r#"
receivers:
  otlp:
    protocols:
      grpc: { endpoint: "127.0.0.1:{grpc}" }
      http: { endpoint: "127.0.0.1:{http}" }
exporters:
  file: { path: "{out}" }
service:
  pipelines:
    traces: { receivers: [otlp], processors: [], exporters: [file] }
  telemetry:
    metrics: { address: "127.0.0.1:{metrics}" }
"#,
    );
    let request = |trace_id: usize, span_id: usize| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; trace_id],
                    span_id: vec![2; span_id],
                    name: "s".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bad = [(15, 8), (17, 8), (16, 7), (16, 9), (16, 3)];
    for (t, s) in bad {
        let body = request(t, s).encode_to_vec();
        let (status, answer) = http(
            weft.http,
            "POST",
            "/v1/traces",
            "application/x-protobuf",
            &body,
        );
        assert_eq!(
            status,
            400,
            "trace id {t} bytes, span id {s}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", weft.grpc))
        .await
        .expect("connect");
    for (t, s) in bad {
        let err = client.export(request(t, s)).await.expect_err("refused");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "trace id {t} bytes, span id {s}: {err}"
        );
    }
    // A good one goes through, so the refusals were about the ids.
    let (status, _) = http(
        weft.http,
        "POST",
        "/v1/traces",
        "application/x-protobuf",
        &request(16, 8).encode_to_vec(),
    );
    assert_eq!(status, 200);
    client.export(request(16, 8)).await.expect("accepted");
    let m = weft.settled();
    let pe = [("pipeline", "traces"), ("exporter", "file")];
    assert_eq!(m.get("otelcol_exporter_sent_spans_total", &pe), 2);
    assert_eq!(exported_items(&dir.path().join("out.jsonl")).0, 2);
}
