//! `cargo xtask bench pipeline`: weft against two other OpenTelemetry collectors, pass-through
//! and masking the same PII, under the same OTLP/gRPC load. Seven targets:
//!
//! 1. weft pass-through (no processor);
//! 2. weft + `builtin:pii-mask`;
//! 3. weft + `builtin:pii-mask` + `builtin:sampler` at `percentage: 100` (keeps every span, so
//!    the sink gets the same traffic: the sampler's cost without its savings);
//! 4. rotel pass-through: the Rust collector `rotel` from PyPI (the wheel's `rotel-agent`
//!    binary), `--exporter otlp`, `--disable-batching`;
//! 5. rotel + tests/peers/rotel_redact.py, a Python trace processor (rotel-sdk API,
//!    `process_spans`) masking pii-mask's patterns in pii-mask's formats;
//! 6. the OpenTelemetry Collector (built from Go modules, tests/peers/) pass-through
//!    (tests/peers/collector-passthrough.yaml);
//! 7. the Collector + its transform processor masking the same patterns
//!    (tests/peers/collector-redact.yaml).
//!
//! Each target receives the benchmark batch (512 spans × 10 attributes, 5 with PII) over
//! OTLP/gRPC from `otlp-loadgen` for a fixed time and exports OTLP/gRPC, uncompressed, to the
//! same sink (a weft with no processors). None of them batches, so each does the same work per
//! request. Targets alternate, 3 repetitions; the first table gives medians of CPU µs per span
//! (the target process's user + system time from /proc), spans/s, spans per CPU-second and peak
//! RSS (`VmHWM`); a second table gives the ratios weft / rotel (CPU per span) and weft / Go
//! Collector (peak RSS). Each target is pinned to CPU 0 and the load generator and the sink to
//! CPU 1 with `taskset -c` (util-linux) when it exists and the machine has 2 CPUs; otherwise a
//! warning is printed and nothing is pinned.
//!
//! With `WEFT_BENCH_BASELINE=<weft binary>` (a release build of an earlier commit), three more
//! targets compare in the same run: that binary pass-through and with pii-mask, and this weft
//! with a `memory_limiter` that never refuses; the ratios table gives this weft against them.
//!
//! rotel comes from tests/peers/requirements-bench.txt (exact versions), installed into
//! `<repo>/.venv` (tests/peers/setup-python.sh creates it) when missing or at another version.
//! When rotel cannot be installed or started, the bench prints the error, leaves rotel's rows
//! out and runs the other targets. Loopback only; every process started is stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

const SECONDS: u64 = 10;
const REPS: usize = 3;
/// The CPU every target runs on, and the one the load generator and the sink share.
const TARGET_CPU: &str = "0";
const LOAD_CPU: &str = "1";

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

/// Waits until something listens on `port`; fails early, with the end of `log`, when `proc`
/// exits first.
fn wait_ready(proc: &mut Proc, port: u16, log: Option<&Path>) -> anyhow::Result<()> {
    let tail = || {
        log.and_then(|l| std::fs::read_to_string(l).ok())
            .map(|s| {
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            })
            .unwrap_or_default()
    };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = proc.0.try_wait() {
            bail!(
                "exited before listening on 127.0.0.1:{port} ({status})\n{}",
                tail()
            );
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("nothing listens on 127.0.0.1:{port} after 60 s\n{}", tail());
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

/// CPU pinning with `taskset -c`: `Some` when taskset runs and the machine has CPUs 0 and 1.
struct Pinning(bool);

impl Pinning {
    fn detect() -> Self {
        let taskset = Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        match taskset {
            Ok(s) if s.success() && cpus >= 2 => Self(true),
            Ok(s) if s.success() => {
                eprintln!(
                    "bench pipeline: WARNING: {cpus} CPU available, need 2 to pin targets to CPU \
                     {TARGET_CPU} and the load to CPU {LOAD_CPU}; running unpinned"
                );
                Self(false)
            }
            Ok(s) => {
                eprintln!(
                    "bench pipeline: WARNING: `taskset --version` failed ({s}); running unpinned"
                );
                Self(false)
            }
            Err(e) => {
                eprintln!(
                    "bench pipeline: WARNING: taskset (util-linux) not found ({e}); running \
                     unpinned, so CPU per span includes contention with the load generator"
                );
                Self(false)
            }
        }
    }

    /// `program` to run on `cpu` (`taskset` execs it, so the child's pid is the program's).
    fn command(&self, cpu: &str, program: &Path) -> Command {
        if self.0 {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

/// A weft configuration: OTLP/gRPC in on `port`, `processors` (YAML entries under
/// `processors:`, in pipeline order), OTLP/gRPC out to `sink`, uncompressed.
fn weft_config(
    dir: &Path,
    name: &str,
    port: u16,
    sink: u16,
    processors: &[(&str, &str)],
) -> anyhow::Result<PathBuf> {
    let defs: String = processors
        .iter()
        .map(|(id, def)| format!("  {id}: {def}\n"))
        .collect();
    let defs = if defs.is_empty() {
        String::new()
    } else {
        format!("processors:\n{defs}")
    };
    let list = processors
        .iter()
        .map(|(id, _)| *id)
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc: {{ endpoint: \"127.0.0.1:{port}\" }}\n{defs}\
         exporters:\n  otlp:\n    endpoint: \"127.0.0.1:{sink}\"\n    compression: none\n\
         service:\n  pipelines:\n    traces: {{ receivers: [otlp], processors: [{list}], exporters: [otlp] }}\n\
         \x20 telemetry:\n    metrics: {{ address: none }}\n"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

const PII: (&str, &str) = (
    "wasm/pii",
    "{ component: \"builtin:pii-mask\", fail_policy: closed }",
);
/// 100 % keeps every trace (and writes no trace state): the sink gets all spans.
const SAMPLER: (&str, &str) = (
    "wasm/sampler",
    "{ component: \"builtin:sampler\", config: { percentage: 100 } }",
);

/// A memory limiter far above what the benchmark uses: its checks run on every request, it never
/// refuses.
const LIMITER: (&str, &str) = (
    "memory_limiter",
    "{ check_interval: 1s, limit_mib: 4096, spike_limit_mib: 512 }",
);

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// This weft's binary with these processors.
    Weft(&'static [(&'static str, &'static str)]),
    /// The binary in `$WEFT_BENCH_BASELINE` (another build of weft) with these processors.
    Baseline(&'static [(&'static str, &'static str)]),
    Rotel {
        python: bool,
    },
    Collector(&'static str),
}

struct Target {
    name: &'static str,
    kind: Kind,
}

const TARGETS: [Target; 7] = [
    Target {
        name: "weft pass-through",
        kind: Kind::Weft(&[]),
    },
    Target {
        name: "weft + pii-mask",
        kind: Kind::Weft(&[PII]),
    },
    Target {
        name: "weft + pii-mask + sampler (100 %)",
        kind: Kind::Weft(&[PII, SAMPLER]),
    },
    Target {
        name: "rotel pass-through",
        kind: Kind::Rotel { python: false },
    },
    Target {
        name: "rotel + Python redaction",
        kind: Kind::Rotel { python: true },
    },
    Target {
        name: "Collector pass-through",
        kind: Kind::Collector("tests/peers/collector-passthrough.yaml"),
    },
    Target {
        name: "Collector + transform/pii",
        kind: Kind::Collector("tests/peers/collector-redact.yaml"),
    },
];

/// With `$WEFT_BENCH_BASELINE` set to another weft binary (an earlier commit's release build):
/// the same weft targets on it, and this weft with a memory limiter, to compare in one run.
const BASELINE_TARGETS: [Target; 3] = [
    Target {
        name: "baseline weft pass-through",
        kind: Kind::Baseline(&[]),
    },
    Target {
        name: "baseline weft + pii-mask",
        kind: Kind::Baseline(&[PII]),
    },
    Target {
        name: "weft + memory_limiter pass-through",
        kind: Kind::Weft(&[LIMITER]),
    },
];

/// The pinned `name==version` lines of a requirements file.
fn pins(req: &str) -> Vec<(String, String)> {
    req.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Makes sure `.venv` has tests/peers/requirements-bench.txt installed; returns the path of
/// the `rotel-agent` binary after checking that it runs (`rotel-agent version`).
fn setup_rotel(ws: &Path) -> anyhow::Result<PathBuf> {
    let venv_py = ws.join(".venv/bin/python");
    if !venv_py.exists() {
        eprintln!("bench pipeline: no .venv yet, running tests/peers/setup-python.sh");
        let status = Command::new("bash")
            .current_dir(ws)
            .arg("tests/peers/setup-python.sh")
            .status()
            .context("run tests/peers/setup-python.sh")?;
        if !status.success() {
            bail!("tests/peers/setup-python.sh failed ({status})");
        }
    }
    let req = ws.join("tests/peers/requirements-bench.txt");
    let wanted = pins(&std::fs::read_to_string(&req).with_context(|| req.display().to_string())?);
    let installed = |name: &str| -> Option<String> {
        let out = Command::new(&venv_py)
            .args([
                "-c",
                &format!("import importlib.metadata as m; print(m.version({name:?}))"),
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(n, v)| installed(n).as_deref() != Some(v.as_str()))
        .map(|(n, v)| format!("{n}=={v}"))
        .collect();
    if missing.is_empty() {
        eprintln!("bench pipeline: .venv has {}", {
            let w: Vec<String> = wanted.iter().map(|(n, v)| format!("{n}=={v}")).collect();
            w.join(", ")
        });
    } else {
        eprintln!(
            "bench pipeline: installing {} into .venv (tests/peers/requirements-bench.txt)",
            missing.join(", ")
        );
        let status = Command::new(&venv_py)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-r"])
            .arg(&req)
            .status()
            .context("run pip")?;
        if !status.success() {
            bail!("pip install -r tests/peers/requirements-bench.txt failed ({status})");
        }
        eprintln!("bench pipeline: installed {}", missing.join(", "));
    }
    let out = Command::new(&venv_py)
        .args([
            "-c",
            "import pathlib, rotel; print(pathlib.Path(rotel.__file__).parent / 'rotel-agent')",
        ])
        .output()
        .context("locate rotel-agent")?;
    if !out.status.success() {
        bail!(
            "cannot locate rotel-agent: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let agent = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let out = Command::new(&agent)
        .arg("version")
        .output()
        .with_context(|| format!("run {} version", agent.display()))?;
    if !out.status.success() {
        bail!(
            "{} version failed ({}): {}",
            agent.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!(
        "bench pipeline: rotel-agent {} ({})",
        String::from_utf8_lossy(&out.stdout).trim(),
        agent.display()
    );
    Ok(agent)
}

/// rotel on CPU [`TARGET_CPU`]: OTLP/gRPC in on `port` (HTTP on a free port), OTLP/gRPC out to
/// `sink`, uncompressed and unbatched like weft and the Collector here (one export per request),
/// with `processor` as its Python trace processor when given.
fn rotel_command(
    pin: &Pinning,
    agent: &Path,
    dir: &Path,
    port: u16,
    sink: u16,
    processor: Option<&Path>,
) -> anyhow::Result<Command> {
    let mut c = pin.command(TARGET_CPU, agent);
    c.arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
        .args([
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{}", free_port()?),
        ])
        .args(["--exporter", "otlp"])
        .args([
            "--otlp-exporter-endpoint",
            &format!("http://127.0.0.1:{sink}"),
        ])
        .args(["--otlp-exporter-compression", "none"])
        .arg("--disable-batching")
        // Used only with --daemon, but keep them out of /tmp's shared defaults anyway.
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .arg("--log-file")
        .arg(dir.join("rotel-agent.log"));
    if let Some(p) = processor {
        c.arg("--otlp-with-trace-processor").arg(p);
    }
    Ok(c)
}

struct Row {
    cpu_s: f64,
    spans: f64,
    cpu_us_per_span: f64,
    spans_per_s: f64,
    spans_per_cpu_s: f64,
    rss_mib: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Medians {
    cpu_us_per_span: f64,
    spans_per_s: f64,
    spans_per_cpu_s: f64,
    rss_mib: f64,
}

fn medians(rows: &[Row]) -> Option<Medians> {
    if rows.is_empty() {
        return None;
    }
    Some(Medians {
        cpu_us_per_span: median(rows.iter().map(|r| r.cpu_us_per_span).collect()),
        spans_per_s: median(rows.iter().map(|r| r.spans_per_s).collect()),
        spans_per_cpu_s: median(rows.iter().map(|r| r.spans_per_cpu_s).collect()),
        rss_mib: median(rows.iter().map(|r| r.rss_mib).collect()),
    })
}

/// Runs the pipeline benchmark; `ws` is the workspace root, `cargo` the cargo binary.
pub fn run(ws: &Path, cargo: &str) -> anyhow::Result<()> {
    // rotel first (quick): its failure only takes its own rows out.
    let rotel = setup_rotel(ws).map_err(|e| format!("{e:#}"));
    if let Err(e) = &rotel {
        eprintln!("bench pipeline: rotel is not available, its targets are skipped: {e}");
    }
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
    let baseline = std::env::var_os("WEFT_BENCH_BASELINE").map(PathBuf::from);
    if let Some(b) = &baseline
        && !b.exists()
    {
        bail!("WEFT_BENCH_BASELINE={}: no such file", b.display());
    }
    let targets: Vec<&Target> = TARGETS
        .iter()
        .chain(
            baseline
                .is_some()
                .then_some(&BASELINE_TARGETS)
                .into_iter()
                .flatten(),
        )
        .collect();
    let loadgen = ws.join("target/release/otlp-loadgen");
    let otelcol = ws.join("target/peers/otelcol-weft");
    let dir = ws.join("target/bench-pipeline");
    std::fs::create_dir_all(&dir)?;
    let pin = Pinning::detect();

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
    let mut sink = Proc(
        pin.command(LOAD_CPU, &weft)
            .args(["run", sink_cfg.to_str().unwrap_or_default()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the sink")?,
    );
    wait_ready(&mut sink, sink_port, None).context("the sink")?;

    let mut samples: Vec<Vec<Row>> = (0..targets.len()).map(|_| Vec::new()).collect();
    // Targets that could not run, with the reason (rotel only; any other failure stops the bench).
    let mut skipped: Vec<Option<String>> = targets
        .iter()
        .map(|t| match (t.kind, &rotel) {
            (Kind::Rotel { .. }, Err(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    for rep in 0..REPS {
        for (t, target) in targets.iter().enumerate() {
            if skipped[t].is_some() {
                continue;
            }
            let name = target.name;
            let port = free_port()?;
            let log = dir.join(format!("target{t}.log"));
            let log_file = std::fs::File::create(&log)?;
            let spawned = match target.kind {
                Kind::Weft(processors) | Kind::Baseline(processors) => {
                    let cfg =
                        weft_config(&dir, &format!("target{t}"), port, sink_port, processors)?;
                    let bin = match (target.kind, &baseline) {
                        (Kind::Baseline(_), Some(b)) => b,
                        _ => &weft,
                    };
                    pin.command(TARGET_CPU, bin)
                        .args(["run", cfg.to_str().unwrap_or_default()])
                        .env("WEFT_LOG", "warn")
                        .stdout(log_file.try_clone()?)
                        .stderr(log_file)
                        .spawn()
                }
                Kind::Rotel { python } => {
                    let agent = rotel.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let processor = ws.join("tests/peers/rotel_redact.py");
                    rotel_command(
                        &pin,
                        agent,
                        &dir,
                        port,
                        sink_port,
                        python.then_some(&*processor),
                    )?
                    .stdout(log_file.try_clone()?)
                    .stderr(log_file)
                    .spawn()
                }
                Kind::Collector(config) => pin
                    .command(TARGET_CPU, &otelcol)
                    .arg("--config")
                    .arg(ws.join(config))
                    .env("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{port}"))
                    .env("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{}", free_port()?))
                    .env("OTLP_EXPORT_ENDPOINT", format!("127.0.0.1:{sink_port}"))
                    // weft's targets export uncompressed too: same work on both sides.
                    .env("OTLP_EXPORT_COMPRESSION", "none")
                    .env("OTELCOL_METRICS_PORT", free_port()?.to_string())
                    .stdout(log_file.try_clone()?)
                    .stderr(log_file)
                    .spawn(),
            };
            let started = spawned
                .map_err(anyhow::Error::from)
                .and_then(|child| {
                    let mut proc = Proc(child);
                    wait_ready(&mut proc, port, Some(&log))?;
                    Ok(proc)
                })
                .with_context(|| format!("start {name} (log {})", log.display()));
            let proc = match (started, target.kind) {
                (Ok(p), _) => p,
                (Err(e), Kind::Rotel { .. }) => {
                    eprintln!("bench pipeline: {name} skipped: {e:#}");
                    skipped[t] = Some(format!("{e:#}"));
                    continue;
                }
                (Err(e), _) => return Err(e),
            };
            let pid = proc.0.id();
            let cpu0 = cpu_seconds(pid)?;
            let out = pin
                .command(LOAD_CPU, &loadgen)
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
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                serde_json::json!({
                    "error": format!(
                        "loadgen output is not JSON ({e}; {}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                })
            });
            let spans = v["spans_ok"].as_f64().unwrap_or(0.0);
            let secs = v["seconds"].as_f64().unwrap_or(SECONDS as f64);
            if spans == 0.0 {
                let e = format!("no span accepted ({v}); log {}", log.display());
                if matches!(target.kind, Kind::Rotel { .. }) {
                    eprintln!("bench pipeline: {name} skipped: {e}");
                    skipped[t] = Some(e);
                    samples[t].clear();
                    continue;
                }
                bail!("{name}: {e}");
            }
            eprintln!(
                "rep {} {name}: {spans} spans in {secs:.1} s, {cpu:.2} CPU s, peak RSS {rss:.0} MiB",
                rep + 1
            );
            samples[t].push(Row {
                cpu_s: cpu,
                spans,
                cpu_us_per_span: cpu * 1e6 / spans,
                spans_per_s: spans / secs,
                spans_per_cpu_s: spans / cpu.max(1e-9),
                rss_mib: rss,
            });
        }
    }
    drop(sink);

    let med: Vec<Option<Medians>> = samples.iter().map(|rows| medians(rows)).collect();
    println!(
        "\n| target | CPU µs/span | spans/s | spans per CPU-second | peak RSS MiB |\n|---|---:|---:|---:|---:|"
    );
    for (t, target) in targets.iter().enumerate() {
        match (&med[t], &skipped[t]) {
            (Some(m), None) => println!(
                "| {} | {:.2} | {:.0} | {:.0} | {:.0} |",
                target.name, m.cpu_us_per_span, m.spans_per_s, m.spans_per_cpu_s, m.rss_mib,
            ),
            _ => println!("| {} | did not run | | | |", target.name),
        }
    }
    let pinning = if pin.0 {
        format!(
            "Each target pinned to CPU {TARGET_CPU}, otlp-loadgen and the sink to CPU {LOAD_CPU} \
             (`taskset -c`)."
        )
    } else {
        "WARNING: not pinned (no taskset or fewer than 2 CPUs): targets, load generator and sink \
         shared the CPUs."
            .to_string()
    };
    println!(
        "\n({REPS} repetitions of {SECONDS} s each, targets alternating; medians. {pinning} \
         OTLP/gRPC in, OTLP/gRPC out uncompressed to the same sink, no batching anywhere \
         (rotel `--disable-batching`). Sampler at 100 %: every span kept.)"
    );
    for (t, target) in targets.iter().enumerate() {
        if let Some(e) = &skipped[t] {
            println!("\n{} did not run: {e}", target.name);
        }
    }

    // Ratios: below 1 means weft uses less.
    let by = |name: &str| {
        targets
            .iter()
            .position(|t| t.name == name)
            .and_then(|i| med[i].as_ref())
    };
    let ratio = |a: &str, b: &str, f: fn(&Medians) -> f64| match (by(a), by(b)) {
        (Some(x), Some(y)) if f(y) > 0.0 => format!("{:.2}", f(x) / f(y)),
        _ => "n/a (a target did not run)".to_string(),
    };
    let cpu = |m: &Medians| m.cpu_us_per_span;
    let rss = |m: &Medians| m.rss_mib;
    println!("\n| ratio | value |\n|---|---:|");
    println!(
        "| weft pass-through / rotel pass-through, CPU µs per span | {} |",
        ratio("weft pass-through", "rotel pass-through", cpu)
    );
    println!(
        "| weft + pii-mask / rotel + Python redaction, CPU µs per span | {} |",
        ratio("weft + pii-mask", "rotel + Python redaction", cpu)
    );
    println!(
        "| weft pass-through / Collector pass-through, peak RSS | {} |",
        ratio("weft pass-through", "Collector pass-through", rss)
    );
    println!(
        "| weft + pii-mask / Collector + transform/pii, peak RSS | {} |",
        ratio("weft + pii-mask", "Collector + transform/pii", rss)
    );
    if let Some(b) = &baseline {
        for (a, base) in [
            ("weft pass-through", "baseline weft pass-through"),
            ("weft + pii-mask", "baseline weft + pii-mask"),
            ("weft + memory_limiter pass-through", "weft pass-through"),
        ] {
            println!(
                "| {a} / {base}, CPU µs per span | {} |",
                ratio(a, base, cpu)
            );
        }
        println!("\n(baseline: {})", b.display());
    }
    println!("\n(Ratios of the medians above; below 1 means weft uses less.)");

    println!("\nRaw runs (CPU s over {SECONDS} s; spans):\n");
    let header: Vec<&str> = targets.iter().map(|t| t.name).collect();
    println!(
        "| rep | {} |\n|---|{}",
        header.join(" | "),
        "---|".repeat(targets.len())
    );
    for rep in 0..REPS {
        let cells: Vec<String> = samples
            .iter()
            .map(|rows| {
                rows.get(rep).map_or("-".to_string(), |r| {
                    format!("{:.2} s, {:.0}", r.cpu_s, r.spans)
                })
            })
            .collect();
        println!("| {} | {} |", rep + 1, cells.join(" | "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_reads_exact_versions() {
        let p = pins("# c\nrotel==0.0.1a15\n rotel-sdk == 0.0.1a9  # hints\nfoo>=1\n");
        assert_eq!(
            p,
            vec![
                ("rotel".to_string(), "0.0.1a15".to_string()),
                ("rotel-sdk".to_string(), "0.0.1a9".to_string())
            ]
        );
    }

    #[test]
    fn weft_config_lists_processors_in_order() {
        let dir = std::env::temp_dir().join(format!("weft-xtask-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = weft_config(&dir, "t", 1, 2, &[PII, SAMPLER]).unwrap();
        let yaml = std::fs::read_to_string(&path).unwrap();
        assert!(
            yaml.contains("processors: [wasm/pii, wasm/sampler]"),
            "{yaml}"
        );
        assert!(yaml.contains("percentage: 100"), "{yaml}");
        let path = weft_config(&dir, "u", 1, 2, &[]).unwrap();
        let yaml = std::fs::read_to_string(&path).unwrap();
        assert!(!yaml.contains("processors:\n"), "{yaml}");
        assert!(yaml.contains("processors: []"), "{yaml}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Installs rotel into .venv if needed and starts it as the bench does, with the Python
    /// processor; nothing is sent. `cargo test -p xtask -- --ignored rotel_starts`.
    #[test]
    #[ignore = "installs rotel into .venv and starts it"]
    fn rotel_starts() {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let agent = setup_rotel(ws).unwrap();
        let dir = std::env::temp_dir().join(format!("weft-xtask-rotel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("rotel.log");
        let f = std::fs::File::create(&log).unwrap();
        let port = free_port().unwrap();
        let processor = ws.join("tests/peers/rotel_redact.py");
        let child = rotel_command(
            &Pinning::detect(),
            &agent,
            &dir,
            port,
            free_port().unwrap(),
            Some(&processor),
        )
        .unwrap()
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
        let mut proc = Proc(child);
        wait_ready(&mut proc, port, Some(&log)).unwrap();
        drop(proc);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
