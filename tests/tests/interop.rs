//! Interop with a real OpenTelemetry Collector built from its Go modules
//! (tests/peers/build-collector.sh → target/peers/otelcol-weft): fixtures go
//! Collector → weft (a pass-through plugin) → Collector, and every span and log record comes out
//! with every field as it went in (compared as OTLP messages, item by item, with its resource
//! and scope).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use weft::Config;
use weft_runtime::OtlpRequest;
use weft_runtime::otlp_io::read_otlp;
use weft_tests::{host_with_cache, workspace};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A Collector process, killed when dropped.
struct Otelcol(Child);

impl Drop for Otelcol {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn otelcol(config: &str, env: &[(&str, String)], wait_port: u16) -> Otelcol {
    let bin = workspace().join("target/peers/otelcol-weft");
    assert!(
        bin.is_file(),
        "{} is missing: run tests/peers/build-collector.sh",
        bin.display()
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(workspace().join("tests/peers").join(config));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Otelcol(cmd.spawn().expect("start otelcol-weft"));
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", wait_port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{config}: collector did not listen on {wait_port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Every span with its resource and scope: `(span id, (resource, scope, span))`, as messages.
fn spans(reqs: &[ExportTraceServiceRequest]) -> Vec<(Vec<u8>, String)> {
    let mut out = Vec::new();
    for req in reqs {
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    // The Collector's JSON always writes `"status": {}`; an unset status with no
                    // message and an absent status are the same thing in OTLP.
                    let mut s = s.clone();
                    if s.status
                        .as_ref()
                        .is_some_and(|st| st.code == 0 && st.message.is_empty())
                    {
                        s.status = None;
                    }
                    let key = format!(
                        "{:?} | {} | {:?} | {} | {:?}",
                        rs.resource, rs.schema_url, ss.scope, ss.schema_url, s
                    );
                    out.push((s.span_id.clone(), key));
                }
            }
        }
    }
    out.sort();
    out
}

fn logs(reqs: &[ExportLogsServiceRequest]) -> Vec<String> {
    let mut out = Vec::new();
    for req in reqs {
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    out.push(format!(
                        "{:?} | {} | {:?} | {} | {:?}",
                        rl.resource, rl.schema_url, sl.scope, sl.schema_url, r
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

fn post_json(port: u16, path: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).expect("write");
    s.write_all(body).expect("body");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Collector A → weft → Collector B, weft's exporter gzip-compressing (tonic's client) and
/// uncompressed (weft's own framing of the batch's bytes, without a copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_to_weft_to_collector_preserves_every_field() {
    trip("gzip").await;
    trip("none").await;
}

async fn trip(compression: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("sink.jsonl");
    let (a_grpc, a_http, a_metrics) = (free_port(), free_port(), free_port());
    let (b_grpc, b_metrics) = (free_port(), free_port());

    let _sink = otelcol(
        "collector-sink.yaml",
        &[
            ("IN_GRPC", format!("127.0.0.1:{b_grpc}")),
            ("OUT_FILE", out.display().to_string()),
            ("METRICS_PORT", b_metrics.to_string()),
        ],
        b_grpc,
    );
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
processors:
  wasm/pass: {{ component: "{fault}", config: {{ fault: none }} }}
exporters:
  otlp:
    endpoint: "127.0.0.1:{b_grpc}"
    compression: {compression}
    batch: {{ timeout: 50ms }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/pass], exporters: [otlp] }}
    logs: {{ receivers: [otlp], processors: [wasm/pass], exporters: [otlp] }}
  telemetry:
    metrics: {{ address: none }}
"#,
        fault = weft_tests::guests::FAULT
    );
    let config = Config::parse(&yaml, Path::new("/")).expect("config");
    let host = host_with_cache(None).expect("host");
    let weft = weft::start(&config, &host).await.expect("start weft");
    let weft_grpc = weft.address("otlp", "grpc").expect("grpc").to_string();
    let _first = otelcol(
        "collector-forward.yaml",
        &[
            ("IN_GRPC", format!("127.0.0.1:{a_grpc}")),
            ("IN_HTTP", format!("127.0.0.1:{a_http}")),
            ("FORWARD_ENDPOINT", weft_grpc),
            ("METRICS_PORT", a_metrics.to_string()),
        ],
        a_http,
    );

    let fixtures: Vec<PathBuf> = [
        "tests/fixtures/traces-two-scopes.json",
        "guests/pii-mask/fixtures/traces-with-pii.json",
        "guests/sampler/fixtures/traces-mixed.json",
        "tests/fixtures/logs-small.json",
        "guests/pii-mask/fixtures/logs-with-pii.json",
        "guests/protocol-parse/fixtures/logs-logfmt-and-legacy.json",
    ]
    .iter()
    .map(|f| workspace().join(f))
    .collect();
    let (mut sent_traces, mut sent_logs) = (Vec::new(), Vec::new());
    for f in &fixtures {
        let bytes = std::fs::read(f).expect("fixture");
        let data = read_otlp(&bytes).expect("fixture parses");
        let path = match data.decode().expect("fixture decodes") {
            OtlpRequest::Traces(t) => {
                sent_traces.push(t);
                "/v1/traces"
            }
            OtlpRequest::Logs(l) => {
                sent_logs.push(l);
                "/v1/logs"
            }
        };
        let body = data.to_json().into_bytes();
        let status = tokio::task::spawn_blocking(move || post_json(a_http, path, &body))
            .await
            .expect("post");
        assert_eq!(status, 200, "collector A accepted {}", f.display());
    }

    let want_spans = spans(&sent_traces);
    let want_logs = logs(&sent_logs);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (got_traces, got_logs) = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let (mut t, mut l) = (Vec::new(), Vec::new());
        for line in text.lines() {
            match read_otlp(line.as_bytes()).map(|d| d.decode()) {
                Ok(Ok(OtlpRequest::Traces(x))) => t.push(x),
                Ok(Ok(OtlpRequest::Logs(x))) => l.push(x),
                _ => {}
            }
        }
        if (spans(&t).len() >= want_spans.len() && logs(&l).len() >= want_logs.len())
            || Instant::now() > deadline
        {
            break (t, l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(weft.shutdown(Duration::from_secs(10)).await);
    let got_spans = spans(&got_traces);
    assert_eq!(
        got_spans.len(),
        want_spans.len(),
        "every span made the trip once ({compression})"
    );
    for (want, got) in want_spans.iter().zip(&got_spans) {
        assert_eq!(want, got, "span changed on the way ({compression})");
    }
    assert_eq!(
        logs(&got_logs),
        want_logs,
        "log records changed on the way ({compression})"
    );
}
