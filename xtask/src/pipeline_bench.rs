//! `cargo xtask bench pipeline`: weft pass-through vs weft + pii-mask vs the OpenTelemetry
//! Collector (built from Go modules, tests/peers/) masking the same patterns with its transform
//! processor. Each target receives the benchmark batch (512 spans × 10 attributes, 5 with PII)
//! over OTLP/gRPC from `otlp-loadgen` for a fixed time and exports OTLP/gRPC to the same sink.
//! Targets alternate, 3 repetitions; the table gives medians of CPU µs per span (the target
//! process's user + system time from /proc), spans/s, spans per CPU-second and peak RSS.
//! Loopback only; every process started is stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const SECONDS: u64 = 10;
const REPS: usize = 3;

struct Proc(Child);

impl Drop for Proc {
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

fn wait_port(port: u16) -> anyhow::Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!("nothing listens on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let hz: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

/// Peak resident set of `pid`, MiB.
fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(kb / 1024.0)
}

fn weft_config(dir: &Path, name: &str, port: u16, sink: u16, pii: bool) -> anyhow::Result<PathBuf> {
    let processors = if pii {
        "processors:\n  wasm/pii: { component: \"builtin:pii-mask\", fail_policy: closed }\n"
    } else {
        ""
    };
    let list = if pii { "[wasm/pii]" } else { "[]" };
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:{port}\" }}\n{processors}\
         exporters:\n  otlp:\n    endpoint: \"127.0.0.1:{sink}\"\n    compression: none\n\
         service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: {list}, exporters: [otlp] }}\n\
         \x20 telemetry:\n    metrics: {{ address: none }}\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

struct Row {
    target: &'static str,
    cpu_us_per_span: f64,
    spans_per_s: f64,
    spans_per_cpu_s: f64,
    rss_mib: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the pipeline benchmark; `ws` is the workspace root, `cargo` the cargo binary.
pub fn run(ws: &Path, cargo: &str) -> anyhow::Result<()> {
    let status = Command::new(cargo)
        .current_dir(ws)
        .args([
            "build",
            "--release",
            "-p",
            "weft",
            "--bin",
            "weft",
            "-p",
            "weft-tests",
            "--bin",
            "otlp-loadgen",
        ])
        .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    let status = Command::new("bash")
        .current_dir(ws)
        .arg("tests/peers/build-collector.sh")
        .status()?;
    if !status.success() {
        bail!("collector build failed");
    }
    let weft = ws.join("target/release/weft");
    let loadgen = ws.join("target/release/otlp-loadgen");
    let otelcol = ws.join("target/peers/otelcol-weft");
    let dir = ws.join("target/bench-pipeline");
    std::fs::create_dir_all(&dir)?;

    // The sink every target exports to: weft with no processors, output discarded.
    let sink_port = free_port()?;
    let sink_cfg = dir.join("sink.yaml");
    std::fs::write(
        &sink_cfg,
        format!(
            "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:{sink_port}\" }}\n\
             exporters:\n  debug: {{}}\nservice:\n  pipelines:\n    traces: {{ receivers: [otlp], exporters: [debug] }}\n\
             \x20 telemetry:\n    metrics: {{ address: none }}\n"
        ),
    )?;
    let _sink = Proc(
        Command::new(&weft)
            .args(["run", sink_cfg.to_str().unwrap_or_default()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the sink")?,
    );
    wait_port(sink_port)?;

    let targets: [&'static str; 3] = [
        "weft pass-through",
        "weft + pii-mask",
        "Collector + transform/pii",
    ];
    let mut samples: Vec<Vec<Row>> = (0..targets.len()).map(|_| Vec::new()).collect();
    for rep in 0..REPS {
        for (t, name) in targets.iter().enumerate() {
            let port = free_port()?;
            let metrics_port = free_port()?;
            let child = match t {
                0 | 1 => {
                    let cfg = weft_config(&dir, &format!("target{t}"), port, sink_port, t == 1)?;
                    Command::new(&weft)
                        .args(["run", cfg.to_str().unwrap_or_default()])
                        .env("WEFT_LOG", "warn")
                        .spawn()
                }
                _ => Command::new(&otelcol)
                    .arg("--config")
                    .arg(ws.join("tests/peers/collector-redact.yaml"))
                    .env("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{port}"))
                    .env("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{}", free_port()?))
                    .env("OTLP_EXPORT_ENDPOINT", format!("127.0.0.1:{sink_port}"))
                    // weft's targets export uncompressed too: same work on both sides.
                    .env("OTLP_EXPORT_COMPRESSION", "none")
                    .env("OTELCOL_METRICS_PORT", metrics_port.to_string())
                    .stderr(Stdio::null())
                    .spawn(),
            }
            .with_context(|| format!("start {name}"))?;
            let proc = Proc(child);
            let pid = proc.0.id();
            wait_port(port)?;
            let cpu0 = cpu_seconds(pid)?;
            let out = Command::new(&loadgen)
                .args([
                    "--endpoint",
                    &format!("127.0.0.1:{port}"),
                    "--seconds",
                    &SECONDS.to_string(),
                    "--concurrency",
                    "2",
                ])
                .output()?;
            let cpu = cpu_seconds(pid)? - cpu0;
            let rss = peak_rss_mib(pid)?;
            drop(proc);
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("loadgen output")?;
            let spans = v["spans_ok"].as_f64().unwrap_or(0.0);
            let secs = v["seconds"].as_f64().unwrap_or(SECONDS as f64);
            if spans == 0.0 {
                bail!("{name}: no span accepted ({v})");
            }
            eprintln!(
                "rep {} {name}: {spans} spans in {secs:.1} s, {cpu:.2} CPU s, peak RSS {rss:.0} MiB",
                rep + 1
            );
            samples[t].push(Row {
                target: name,
                cpu_us_per_span: cpu * 1e6 / spans,
                spans_per_s: spans / secs,
                spans_per_cpu_s: spans / cpu.max(1e-9),
                rss_mib: rss,
            });
        }
    }
    println!(
        "\n| target | CPU µs/span | spans/s | spans per CPU-second | peak RSS MiB |\n|---|---:|---:|---:|---:|"
    );
    for rows in &samples {
        println!(
            "| {} | {:.2} | {:.0} | {:.0} | {:.0} |",
            rows[0].target,
            median(rows.iter().map(|r| r.cpu_us_per_span).collect()),
            median(rows.iter().map(|r| r.spans_per_s).collect()),
            median(rows.iter().map(|r| r.spans_per_cpu_s).collect()),
            median(rows.iter().map(|r| r.rss_mib).collect()),
        );
    }
    println!("\n({REPS} repetitions of {SECONDS} s each, targets alternating; medians.)");
    Ok(())
}
