//! `weft run` with real OTLP clients: the OpenTelemetry Python SDK (BatchSpanProcessor /
//! BatchLogRecordProcessor with the OTLP gRPC and HTTP exporters, gzip) sends spans and logs
//! carrying PII through the `weft` binary into a file exporter. Every item must arrive exactly
//! once with no PII left; with the sampler, the kept fraction must be within 3σ and traces whole.
//!
//! Needs the venv made by `tests/peers/setup-python.sh` (`cargo xtask test` and `.ci/run` make it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::workspace;

fn python() -> PathBuf {
    let p = workspace().join(".venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run tests/peers/setup-python.sh",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `weft run` process; stopped with SIGTERM (and waited for) when dropped.
struct Weft {
    child: Child,
    grpc: u16,
    http: u16,
}

impl Weft {
    fn start(dir: &Path, processors: &str, pipeline_processors: &str, out: &Path) -> Weft {
        let (grpc, http, metrics) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{grpc}" }}
      http: {{ endpoint: "127.0.0.1:{http}" }}
processors:
{processors}
exporters:
  file: {{ path: "{out}" }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [{pipeline_processors}], exporters: [file] }}
    logs: {{ receivers: [otlp], processors: [wasm/pii], exporters: [file] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:{metrics}" }}
"#,
            out = out.display()
        );
        let path = dir.join("weft.yaml");
        std::fs::write(&path, config).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["run", path.to_str().expect("utf-8")])
            .env("WEFT_CACHE_DIR", dir.join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft run");
        // Ready when both receivers accept connections (bounded wait).
        let start = Instant::now();
        while [grpc, http]
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "weft run did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Weft { child, grpc, http }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "weft run exited with {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "weft run did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs send_otel.py; returns its JSON summary file.
fn send(dir: &Path, protocol: &str, port: u16, spans: u32, logs: u32, seed: u32) -> PathBuf {
    let out = Command::new(python())
        .arg(workspace().join("tests/peers/send_otel.py"))
        .args([
            "--protocol",
            protocol,
            "--endpoint",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--traces",
            &spans.to_string(),
            "--logs",
            &logs.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .output()
        .expect("run send_otel.py");
    assert!(
        out.status.success(),
        "send_otel.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(summary["spans"]["exported"], spans, "{summary}");
    assert_eq!(summary["logs"]["exported"], logs, "{summary}");
    let path = dir.join(format!("{protocol}-{seed}.json"));
    std::fs::write(&path, &out.stdout).expect("write summary");
    path
}

const PII: &str = "  wasm/pii:\n    component: builtin:pii-mask\n    fail_policy: closed\n";

#[test]
fn python_sdk_over_grpc_and_http_every_item_once_and_no_pii() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let weft = Weft::start(dir.path(), PII, "wasm/pii", &out);
    let grpc = send(dir.path(), "grpc", weft.grpc, 300, 200, 1);
    let http = send(dir.path(), "http", weft.http, 300, 200, 2);
    weft.stop();

    let check = Command::new(python())
        .arg(workspace().join("tests/peers/check_otlp_file.py"))
        .arg(&out)
        .args([
            "--summary",
            grpc.to_str().expect("utf-8"),
            "--summary",
            http.to_str().expect("utf-8"),
        ])
        .args(["--pii", "absent"])
        .output()
        .expect("run check_otlp_file.py");
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).expect("report JSON");
    assert!(check.status.success(), "check failed: {report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    let text = std::fs::read_to_string(&out).expect("output");
    assert!(text.contains("4111 **** **** 1111"), "cards arrive masked");
    assert!(!text.contains("4111 1111 1111 1111"));
}

#[test]
fn python_sdk_with_the_sampler_keeps_about_half_and_whole_traces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let processors = format!(
        "{PII}  wasm/sampler:\n    component: builtin:sampler\n    config: {{ percentage: 50, keep_errors: false }}\n"
    );
    let weft = Weft::start(dir.path(), &processors, "wasm/pii, wasm/sampler", &out);
    // 900 spans in traces of 3 spans: 300 traces, each kept with probability 1/2.
    send(dir.path(), "grpc", weft.grpc, 900, 0, 7);
    weft.stop();

    let mut spans_per_trace: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&out).expect("output").lines() {
        let req: serde_json::Value = serde_json::from_str(line).expect("json");
        for rs in req["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    *spans_per_trace
                        .entry(span["traceId"].as_str().unwrap_or("").to_string())
                        .or_default() += 1;
                }
            }
        }
    }
    let traces = 300.0f64;
    let kept = spans_per_trace.len() as f64;
    let sigma = (traces * 0.5 * 0.5).sqrt();
    assert!(
        (kept - traces * 0.5).abs() <= 3.0 * sigma,
        "kept {kept} of {traces} traces; 3σ = {:.1}",
        3.0 * sigma
    );
    assert!(
        spans_per_trace.values().all(|n| *n == 3),
        "every kept trace is whole: {spans_per_trace:?}"
    );
}
