//! A plugin written in Python: `guests/python/tagger`, built with componentize-py against world
//! `typed-span-processor` (typed records, bindings from the WIT alone), runs as a processor of
//! `weft run`. The OpenTelemetry Python SDK (`tests/peers/send_otel.py`) sends spans over OTLP/gRPC
//! into a file exporter; every span must arrive exactly once carrying `tagged.by`, and the guest's
//! log line must reach weft's log. A configuration with an unknown key must fail the load with the
//! guest's own `invalid-config` message, in `weft test` and `weft validate`.
//!
//! Needs the venv made by `bash tests/peers/setup-python.sh`: the OpenTelemetry SDK from
//! tests/peers/requirements.txt and componentize-py from tests/peers/requirements-guests.txt
//! (`cargo xtask test` and `.ci/run` make it). Everything listens on 127.0.0.1 only, and every
//! wait is bounded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::{run_bounded, workspace};

/// componentize-py bundles CPython and compiles the app in one process; ~16 s on an idle 2-core
/// machine. Bounded generously for a loaded CI machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// `weft test` / `weft validate` of the ~18 MB component: a cold compile takes ~12-22 s.
const WEFT_TIMEOUT: Duration = Duration::from_secs(300);
/// From `weft run` starting to its receivers accepting connections (includes compiling on a
/// cache miss).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where this test binary keeps the built component and weft's compiled-artifact cache (shared
/// by its tests, so the component is built and compiled once).
fn scratch() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-guest");
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    dir
}

fn cache_dir() -> PathBuf {
    scratch().join("weft-cache")
}

fn venv_bin(name: &str) -> PathBuf {
    workspace().join(".venv/bin").join(name)
}

fn python() -> PathBuf {
    let p = venv_bin("python");
    assert!(
        p.is_file(),
        "{} is missing: run `bash tests/peers/setup-python.sh`",
        p.display()
    );
    p
}

/// The tagger component, built once per test binary with the venv's componentize-py.
fn tagger() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_tagger).clone()
}

fn build_tagger() -> PathBuf {
    let componentize_py = venv_bin("componentize-py");
    assert!(
        componentize_py.is_file(),
        "{} is missing: run `bash tests/peers/setup-python.sh` (it installs componentize-py, \
         pinned in tests/peers/requirements-guests.txt, into .venv)",
        componentize_py.display()
    );
    let dir = scratch();
    // Built under a per-process name, then renamed: two test runs never see a half-written file.
    let tmp = dir.join(format!("tagger-{}.wasm.tmp", std::process::id()));
    let out = dir.join("tagger.wasm");
    let mut cmd = Command::new(&componentize_py);
    cmd.current_dir(workspace().join("guests/python/tagger"))
        .arg("-d")
        .arg(workspace().join("wit"))
        .args(["-w", "typed-span-processor", "componentize", "app", "-o"])
        .arg(&tmp);
    let start = Instant::now();
    let (status, stdout, stderr) = run_bounded(cmd, &dir, "componentize-py", BUILD_TIMEOUT);
    assert!(
        status.success() && tmp.is_file(),
        "componentize-py failed ({status}):\n{stdout}\n{stderr}"
    );
    std::fs::rename(&tmp, &out).expect("rename the built component");
    eprintln!(
        "python_guest: built {} ({} bytes) in {:.1?}",
        out.display(),
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0),
        start.elapsed()
    );
    // `weft inspect` names the world and the ABI, and compiles the component into the shared
    // cache once, before the tests use it in parallel.
    let (status, stdout, stderr) = weft(
        &dir,
        "weft-inspect",
        &["inspect", out.to_str().expect("utf-8 path")],
    );
    assert!(status.success(), "weft inspect failed: {stderr}");
    assert!(
        stdout.contains("world:     typed-span-processor"),
        "{stdout}"
    );
    assert!(stdout.contains("abi:       typed"), "{stdout}");
    assert!(stdout.contains("weft:plugin/spans@0.2.0"), "{stdout}");
    out
}

/// Runs the `weft` binary with `args` (bounded); returns (status, stdout, stderr).
fn weft(dir: &Path, what: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(args)
        .current_dir(workspace())
        .env("WEFT_CACHE_DIR", cache_dir());
    run_bounded(cmd, dir, what, WEFT_TIMEOUT)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `weft run` process with stderr in a file; stopped with SIGTERM (and waited for) by
/// `stop`, killed when dropped.
struct Weft {
    child: Child,
    grpc: u16,
    stderr: PathBuf,
}

impl Weft {
    fn start(dir: &Path, component: &Path, plugin_config: &str, out: &Path) -> Weft {
        let (grpc, http, metrics) = (free_port(), free_port(), free_port());
        let config = format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{grpc}" }}
      http: {{ endpoint: "127.0.0.1:{http}" }}
processors:
  wasm/tagger:
    component: "{component}"
    config: {plugin_config}
    deadline: 2s
    fail_policy: closed
exporters:
  file: {{ path: "{out}" }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/tagger], exporters: [file] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:{metrics}" }}
"#,
            component = component.display(),
            out = out.display()
        );
        let path = dir.join("weft.yaml");
        std::fs::write(&path, config).expect("write config");
        let stderr = dir.join("weft-run.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["run", path.to_str().expect("utf-8")])
            .env("WEFT_CACHE_DIR", cache_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("spawn weft run");
        let mut weft = Weft {
            child,
            grpc,
            stderr,
        };
        // Ready when both receivers accept connections (bounded wait; fails fast if it exits).
        let start = Instant::now();
        while [grpc, http]
            .iter()
            .any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_err())
        {
            if let Some(status) = weft.child.try_wait().expect("try_wait") {
                panic!("weft run exited early ({status}):\n{}", weft.log());
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "weft run did not start listening within {READY_TIMEOUT:?}:\n{}",
                weft.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        weft
    }

    /// What weft run wrote to stderr so far (its log, with the guest's lines).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops it with SIGTERM (it drains its exporters) and returns its log.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "weft run exited with {status}");
                return self.log();
            }
            assert!(
                start.elapsed() < STOP_TIMEOUT,
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

/// Every span of an OTLP/JSON document: (test.id, tagged.by) as JSON values.
fn spans(req: &serde_json::Value) -> Vec<(serde_json::Value, serde_json::Value)> {
    let attr = |span: &serde_json::Value, key: &str| {
        span["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv["key"] == key)
            .map(|kv| kv["value"].clone())
            .unwrap_or(serde_json::Value::Null)
    };
    req["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
        .flat_map(|ss| ss["spans"].as_array().into_iter().flatten())
        .map(|span| (attr(span, "test.id"), attr(span, "tagged.by")))
        .collect()
}

#[test]
fn python_guest_tags_every_span_sent_by_the_python_sdk_through_weft_run() {
    let component = tagger();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let weft = Weft::start(dir.path(), &component, r#"{ value: "py" }"#, &out);

    let n = 20u32;
    let mut send = Command::new(python());
    send.arg(workspace().join("tests/peers/send_otel.py"))
        .args(["--protocol", "grpc", "--endpoint"])
        .arg(format!("127.0.0.1:{}", weft.grpc))
        .args(["--traces", &n.to_string(), "--logs", "0", "--seed", "5"]);
    let (status, stdout, stderr) = run_bounded(send, dir.path(), "send_otel", SEND_TIMEOUT);
    assert!(status.success(), "send_otel.py failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary JSON");
    assert_eq!(summary["spans"]["exported"], n, "{summary}");
    let summary_path = dir.path().join("summary.json");
    std::fs::write(&summary_path, &stdout).expect("write summary");
    let log = weft.stop();

    // Every span exactly once (by test.id), checked by the shared checker.
    let mut check = Command::new(python());
    check
        .arg(workspace().join("tests/peers/check_otlp_file.py"))
        .arg(&out)
        .arg("--summary")
        .arg(&summary_path);
    let (status, report, err) = run_bounded(check, dir.path(), "check_otlp_file", SEND_TIMEOUT);
    assert!(status.success(), "check failed: {report}\n{err}");

    // Every exported span carries the guest's attribute.
    let text = std::fs::read_to_string(&out).expect("the file exporter's output");
    let mut seen = 0;
    for line in text.lines() {
        let req: serde_json::Value = serde_json::from_str(line).expect("an OTLP/JSON line");
        for (id, tagged) in spans(&req) {
            assert_eq!(
                tagged,
                serde_json::json!({ "stringValue": "py" }),
                "span {id} is not tagged"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, n, "every span exported once:\n{text}");

    // The guest's `init` and `process-spans` log lines went through the log import.
    assert!(
        log.contains("tagger: tagging spans with tagged.by=py"),
        "init's log line:\n{log}"
    );
    assert!(
        log.contains("tagger: tagged "),
        "process-spans' log line:\n{log}"
    );
}

#[test]
fn python_guest_in_weft_test_and_its_invalid_config_error() {
    let component = tagger();
    let component = component.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = "tests/fixtures/traces-two-scopes.json";

    // weft test: the typed ABI, two (resource, scope) batches, every span tagged.
    let (status, stdout, stderr) = weft(
        dir.path(),
        "weft-test-ok",
        &[
            "test",
            component,
            "--input",
            fixture,
            "--config",
            r#"{"value":"py"}"#,
        ],
    );
    assert!(status.success(), "weft test failed: {stderr}");
    assert!(
        stderr.contains("weft test: tagger (typed-span-processor) traces: 3 in, 3 out"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is OTLP/JSON");
    let tagged = spans(&json);
    assert_eq!(tagged.len(), 3, "{json}");
    assert!(
        tagged
            .iter()
            .all(|(_, t)| *t == serde_json::json!({ "stringValue": "py" })),
        "{json}"
    );

    // An unknown key: `init` returns error.invalid-config, shown to the operator as-is.
    let message = "tagger: unknown key(s) 'nope'; expected only 'value'";
    let (status, stdout, stderr) = weft(
        dir.path(),
        "weft-test-bad",
        &[
            "test",
            component,
            "--input",
            fixture,
            "--config",
            r#"{"nope": 1}"#,
        ],
    );
    assert!(
        !status.success(),
        "weft test accepted a bad config: {stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "plugin `tagger` rejected its configuration: {message}"
        )),
        "{stderr}"
    );

    // The same through a collector configuration: `weft validate` fails naming the processor.
    let yaml = dir.path().join("bad.yaml");
    std::fs::write(
        &yaml,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:{}\" }}\n\
             processors:\n  wasm/tagger:\n    component: \"{component}\"\n    config: {{ nope: 1 }}\n\
             exporters:\n  file: {{ path: \"{}\" }}\n\
             service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [wasm/tagger], exporters: [file] }}\n",
            free_port(),
            dir.path().join("out.jsonl").display()
        ),
    )
    .expect("write bad.yaml");
    let (status, _, stderr) = weft(
        dir.path(),
        "weft-validate-bad",
        &["validate", yaml.to_str().expect("utf-8")],
    );
    assert!(!status.success(), "weft validate accepted a bad config");
    assert!(
        stderr.contains("processors.wasm/tagger:") && stderr.contains(message),
        "{stderr}"
    );
}
