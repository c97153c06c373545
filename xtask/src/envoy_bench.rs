//! `cargo xtask bench envoy`: the ab-router plugin in a stock Envoy 1.40 (V8), three ways:
//!
//! - (a) no Wasm filter (Envoy's own cost: the floor),
//! - (b) the native SDK filter (bench/native-filter: the same logic on proxy-wasm-rust-sdk),
//! - (c) the adapted component (`weft adapt` of guests/ab-router),
//! - (d) the same logic in JavaScript (guests/js/ab-router, `weft build` with componentize-js
//!   from tests/peers/node, then `weft adapt`),
//! - (e) the same logic in Python (guests/python/ab-router, `weft build` with componentize-py
//!   from .venv, then `weft adapt`, which links its 14 core modules into one).
//!
//! Envoy runs with `--concurrency 1` (one worker thread): the machine this was written for has
//! two cores, so Envoy (every thread, once it is ready) is pinned to CPU 1 and this process (the
//! upstream, the open-loop generator) and wrk to CPU 0 with `taskset` (util-linux), so the two
//! sides do not steal each other's core. Without taskset or a second CPU it runs unpinned and
//! says so.
//! Variants alternate (the order rotates every repetition), [`REPS`] repetitions, medians.
//! Per run:
//!
//! - **req/s**: `wrk -t1 -c32 -d8s` (closed loop, saturation) after a 1 s warm-up;
//! - **CPU µs/req**: Envoy's user + system time (/proc/<pid>/stat, every thread) during that wrk
//!   run divided by the requests wrk completed;
//! - **p50 / p99**: an open-loop generator (below) at a fixed [`RATE`] req/s for 8 s after a 1 s
//!   warm-up, at most 128 requests in flight; latency runs from a request's turn (a wait for a
//!   free slot included) to its whole response (Debian has no wrk2);
//! - **RSS**: Envoy's VmRSS after both runs;
//! - **ready**: from spawning Envoy to its admin `/ready` saying LIVE, which includes compiling
//!   the module in V8 and running `_initialize` + `proxy_on_configure` on the main thread and
//!   the worker; "load" is that minus (a)'s (no module at all);
//! - the module size in bytes. (b) and (c) are both built with the `guest` profile (opt-level 3,
//!   LTO, one codegen unit, stripped), so the sizes compare like with like.
//!
//! If `weft adapt` fails, (a) and (b) are still measured and printed, and the command then fails
//! saying why (c) was not. `WEFT_BENCH_REPS` and `WEFT_BENCH_RATE` override [`REPS`] and
//! [`RATE`].
//!
//! The upstream answers 200 `ok` and counts the requests that reach it with and without
//! `x-backend-version`: every request of (b), (c) and (d) must carry it, none of (a)'s, or the run
//! fails (a filter that does nothing would look fast). Loopback only; every process started is
//! stopped. The whole run takes about 3 minutes after the builds (3 min 9 s with them cached).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use weft_envoy_harness::{Envoy, EnvoyConfig, WasmFilter, config, process};

/// Repetitions of every variant (`WEFT_BENCH_REPS` overrides).
const REPS: usize = 3;
/// Seconds of each measured wrk run.
const WRK_SECONDS: u64 = 8;
/// wrk connections.
const WRK_CONNECTIONS: u32 = 32;
/// Requests per second of the open-loop latency run (`WEFT_BENCH_RATE` overrides).
const RATE: u64 = 1000;
/// Seconds of each measured open-loop run.
const OPEN_SECONDS: u64 = 8;
/// Most requests the open-loop generator has in flight (each on its own connection).
const MAX_IN_FLIGHT: usize = 128;
/// Envoy worker threads.
const CONCURRENCY: u32 = 1;
/// The CPU Envoy is pinned to, and the one the load side (this process, wrk) is pinned to.
const ENVOY_CPU: &str = "1";
const LOAD_CPU: &str = "0";

/// The plugin configuration of (b) and (c).
const PLUGIN_CONFIG: &str =
    r#"{"salt":"exp-42","split":[{"version":"v1","percent":90},{"version":"v2","percent":10}]}"#;

/// One variant of the benchmark.
struct Variant {
    name: &'static str,
    module: Option<PathBuf>,
}

/// One run's measurements.
#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    cpu_us_per_req: f64,
    envoy_cpu_share: f64,
    p50_us: f64,
    p99_us: f64,
    rss_kib: f64,
    ready_ms: f64,
    /// Open-loop requests that failed or got a non-2xx status.
    errors: f64,
}

/// Runs the Envoy benchmark; `ws` is the workspace root, `cargo` the cargo binary.
pub fn run(ws: &Path, cargo: &str) -> anyhow::Result<()> {
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is needed for `cargo xtask bench envoy`: `apt-get install wrk`");
    }
    crate::ensure_targets()?;
    crate::run(
        Command::new("bash")
            .current_dir(ws)
            .arg("tests/peers/setup-python.sh"),
    )?;
    let envoy = config::find_envoy(ws)?;
    let dir = ws.join("target").join("bench-envoy");
    std::fs::create_dir_all(&dir)?;

    // The guest profile for both, so (b) and (c) get the same optimisation, LTO and stripping.
    let native =
        crate::guests::build_core_guest(ws, cargo, "bench-native-filter", "wasm32-unknown-unknown")
            .map_err(anyhow::Error::msg)?;
    let component = crate::guests::build_core_guest(ws, cargo, "guest-ab-router", "wasm32-wasip2")
        .map_err(anyhow::Error::msg)?;
    let adapted = adapt(ws, cargo, &component, &dir.join("ab_router.proxy.wasm"));
    if let Err(e) = &adapted {
        eprintln!("envoy-bench: (c) adapted component: not measured: {e:#}");
    }
    let js = build_other(ws, "js", &dir.join("ab_router_js.wasm"))
        .and_then(|c| adapt(ws, cargo, &c, &dir.join("ab_router_js.proxy.wasm")));
    if let Err(e) = &js {
        eprintln!("envoy-bench: (d) JavaScript component: not measured: {e:#}");
    }
    let py = build_other(ws, "python", &dir.join("ab_router_py.wasm"))
        .and_then(|c| adapt(ws, cargo, &c, &dir.join("ab_router_py.proxy.wasm")));
    if let Err(e) = &py {
        eprintln!("envoy-bench: (e) Python component: not measured: {e:#}");
    }

    let mut variants = vec![
        Variant {
            name: "(a) no filter",
            module: None,
        },
        Variant {
            name: "(b) native SDK filter",
            module: Some(native.clone()),
        },
    ];
    if let Ok(m) = &adapted {
        variants.push(Variant {
            name: "(c) adapted component",
            module: Some(m.clone()),
        });
    }
    if let Ok(m) = &js {
        variants.push(Variant {
            name: "(d) adapted JavaScript",
            module: Some(m.clone()),
        });
    }
    if let Ok(m) = &py {
        variants.push(Variant {
            name: "(e) adapted Python",
            module: Some(m.clone()),
        });
    }

    // After the builds (they would inherit the mask).
    let pinned = std::thread::available_parallelism().map_or(1, usize::from) >= 2
        && pin(std::process::id(), LOAD_CPU).is_ok();
    if !pinned {
        eprintln!(
            "envoy-bench: WARNING: not pinned (no taskset or fewer than 2 CPUs): Envoy and the \
             load side share the CPUs"
        );
    }
    let upstream = Upstream::start()?;
    let rate = std::env::var("WEFT_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(RATE);
    let reps = std::env::var("WEFT_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(REPS)
        .max(1);
    let hz = process::clock_ticks_per_second() as f64;
    let load_before = loadavg();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    for rep in 0..reps {
        for k in 0..variants.len() {
            let i = (k + rep) % variants.len();
            let v = &variants[i];
            let s = measure(&envoy, v, &upstream, rate, hz, pinned)
                .with_context(|| format!("rep {} {}", rep + 1, v.name))?;
            eprintln!(
                "envoy-bench: rep {} {:<22} {:>8.0} req/s  {:>6.1} CPU µs/req ({:.0} % of a core)  \
                 p50 {:>5.0} µs  p99 {:>6.0} µs ({} errors)  RSS {:>6.0} KiB  ready {:>5.0} ms",
                rep + 1,
                v.name,
                s.rps,
                s.cpu_us_per_req,
                s.envoy_cpu_share * 100.0,
                s.p50_us,
                s.p99_us,
                s.errors,
                s.rss_kib,
                s.ready_ms
            );
            samples[i].push(s);
        }
    }

    let med: Vec<Sample> = samples.iter().map(|s| median_sample(s)).collect();
    let size = |v: &Variant| {
        v.module
            .as_ref()
            .and_then(|m| std::fs::metadata(m).ok())
            .map(|m| m.len())
    };
    println!(
        "\nEnvoy 1.40 (V8), --concurrency {CONCURRENCY}, loopback; {reps} runs per variant, \
         alternating; medians.\n"
    );
    println!(
        "| variant | req/s (wrk -c{WRK_CONNECTIONS}) | CPU µs/req | p50 µs @ {rate}/s | p99 µs @ {rate}/s \
         | errors @ {rate}/s | RSS MiB | ready ms | load ms | module bytes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (v, m) in variants.iter().zip(&med) {
        println!(
            "| {} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {} | {} |",
            v.name,
            m.rps,
            m.cpu_us_per_req,
            m.p50_us,
            m.p99_us,
            m.errors,
            m.rss_kib / 1024.0,
            m.ready_ms,
            if v.module.is_some() {
                format!("{:.0}", m.ready_ms - med[0].ready_ms)
            } else {
                "–".into()
            },
            size(v).map_or("–".into(), |s| s.to_string()),
        );
    }
    println!(
        "\n(req/s: saturation with wrk -t1 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s; CPU µs/req: \
         Envoy's user+system time in that run per request; p50/p99: open loop at {rate} req/s \
         for {OPEN_SECONDS} s; RSS: VmRSS after the runs; ready: Envoy start to /ready LIVE; \
         load: ready minus (a)'s. Load average before / after: {load_before} / {}: anything \
         else running on the machine shows in every column. {})",
        loadavg(),
        if pinned {
            "Envoy pinned to CPU 1, the load side to CPU 0."
        } else {
            "Not pinned."
        }
    );

    println!("\nAdapted component (c) against the native SDK filter (b):\n");
    println!("| measure | (b) SDK | (c) adapted | (c) / (b) | goal | met |");
    println!("|---|---:|---:|---:|---|---|");
    match &adapted {
        Ok(_) => {
            let (b, c) = (&med[1], &med[2]);
            let (sb, sc) = (
                size(&variants[1]).unwrap_or(0) as f64,
                size(&variants[2]).unwrap_or(0) as f64,
            );
            let rows = [
                ("req/s", b.rps, c.rps, "≥ 1.0×", c.rps >= b.rps),
                (
                    "p99 µs",
                    b.p99_us,
                    c.p99_us,
                    "≤ 1.05×",
                    c.p99_us <= 1.05 * b.p99_us,
                ),
                ("module bytes", sb, sc, "≤ 1.2×", sc <= 1.2 * sb),
                (
                    "RSS KiB",
                    b.rss_kib,
                    c.rss_kib,
                    "≤ SDK + 2 MiB",
                    c.rss_kib <= b.rss_kib + 2048.0,
                ),
                (
                    "CPU µs/req",
                    b.cpu_us_per_req,
                    c.cpu_us_per_req,
                    "(reported)",
                    true,
                ),
                (
                    "load ms (ready − (a)'s)",
                    b.ready_ms - med[0].ready_ms,
                    c.ready_ms - med[0].ready_ms,
                    "(reported)",
                    true,
                ),
            ];
            for (name, b, c, goal, met) in rows {
                println!(
                    "| {name} | {b:.1} | {c:.1} | {:.3} | {goal} | {} |",
                    c / b,
                    if goal.starts_with('(') {
                        ""
                    } else if met {
                        "yes"
                    } else {
                        "**no**"
                    }
                );
            }
            // The machine's speed drifts between runs more than (b) and (c) differ: the ratio of
            // the two runs of one repetition (seconds apart, usually one after the other) is
            // steadier than the ratio of medians taken minutes apart.
            let paired = |f: fn(&Sample) -> f64| {
                let mut r: Vec<f64> = samples[1]
                    .iter()
                    .zip(&samples[2])
                    .map(|(b, c)| f(c) / f(b))
                    .collect();
                r.sort_by(f64::total_cmp);
                let spread = format!(
                    "{:.3}–{:.3}",
                    r.first().copied().unwrap_or(0.0),
                    r.last().copied().unwrap_or(0.0)
                );
                (r.get(r.len() / 2).copied().unwrap_or(0.0), spread)
            };
            println!(
                "\n(c) / (b) within each repetition, median and range over the repetitions:\n"
            );
            println!("| measure | median (c) / (b) | range | goal | met |");
            println!("|---|---:|---|---|---|");
            let (rps, rps_range) = paired(|s| s.rps);
            let (p99, p99_range) = paired(|s| s.p99_us);
            let (cpu, cpu_range) = paired(|s| s.cpu_us_per_req);
            let yes = |m: bool| if m { "yes" } else { "**no**" };
            println!(
                "| req/s | {rps:.3} | {rps_range} | ≥ 1.0× | {} |",
                yes(rps >= 1.0)
            );
            println!(
                "| p99 µs | {p99:.3} | {p99_range} | ≤ 1.05× | {} |",
                yes(p99 <= 1.05)
            );
            println!("| CPU µs/req | {cpu:.3} | {cpu_range} | (reported) | |");
            println!("\nOther languages against the native SDK filter (b), reported:\n");
            println!("| variant | req/s | × (b) | CPU µs/req | × (b) | RSS MiB | module bytes |");
            println!("|---|---:|---:|---:|---:|---:|---:|");
            for (i, v) in variants.iter().enumerate().skip(3) {
                let m = &med[i];
                println!(
                    "| {} | {:.0} | {:.3} | {:.1} | {:.2} | {:.1} | {} |",
                    v.name,
                    m.rps,
                    m.rps / b.rps,
                    m.cpu_us_per_req,
                    m.cpu_us_per_req / b.cpu_us_per_req,
                    m.rss_kib / 1024.0,
                    size(v).map_or("–".into(), |s| s.to_string()),
                );
            }
            if let Err(e) = &js {
                println!("| (d) adapted JavaScript | not measured: {e:#} | | | | | |");
            }
            if let Err(e) = &py {
                println!("| (e) adapted Python | not measured: {e:#} | | | | | |");
            }
            Ok(())
        }
        Err(e) => {
            println!("| (c) not measured | | | | | |");
            bail!("(c) adapted component was not measured: {e:#}")
        }
    }
}

/// guests/<lang>/ab-router built with `target/debug/weft build` and the pinned componentize-js
/// (tests/peers/setup-node.sh installs it) or componentize-py (.venv, from setup-python.sh).
fn build_other(ws: &Path, lang: &str, out: &Path) -> anyhow::Result<PathBuf> {
    if lang == "js" {
        crate::run(
            Command::new("bash")
                .current_dir(ws)
                .arg("tests/peers/setup-node.sh"),
        )?;
    }
    let weft = ws.join("target/debug/weft");
    let project = ws.join("guests").join(lang).join("ab-router");
    crate::run(
        Command::new(&weft)
            .arg("build")
            .arg(&project)
            .arg("-o")
            .arg(out)
            .env(
                "WEFT_COMPONENTIZE_JS",
                ws.join("tests/peers/node/node_modules/.bin/componentize-js"),
            )
            .env("WEFT_COMPONENTIZE_PY", ws.join(".venv/bin/componentize-py")),
    )
    .with_context(|| format!("weft build {}", project.display()))?;
    Ok(out.to_path_buf())
}

/// `target/debug/weft adapt <component> -o <out>`; an error says why (c) cannot run.
fn adapt(ws: &Path, cargo: &str, component: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    crate::run(
        Command::new(cargo)
            .current_dir(ws)
            .args(["build", "--quiet", "-p", "weft", "--bin", "weft"]),
    )
    .context("building weft")?;
    let weft = ws.join("target/debug/weft");
    let _ = std::fs::remove_file(out);
    let o = Command::new(&weft)
        .arg("adapt")
        .arg(component)
        .arg("-o")
        .arg(out)
        .output()
        .with_context(|| format!("run {}", weft.display()))?;
    if !o.status.success() || !out.is_file() {
        bail!(
            "`{} adapt {} -o {}` failed ({}): {}",
            weft.display(),
            component.display(),
            out.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    eprintln!(
        "envoy-bench: adapted {} → {} ({} bytes)",
        component.display(),
        out.display(),
        std::fs::metadata(out)?.len()
    );
    Ok(out.to_path_buf())
}

/// Pins every thread of process `pid` to `cpu` (`taskset -a -p -c`); threads and children it
/// starts later inherit the mask.
fn pin(pid: u32, cpu: &str) -> anyhow::Result<()> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .output()
        .context("taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpu} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One run of one variant: start Envoy, wrk at saturation, the open-loop run, stop Envoy.
fn measure(
    envoy: &Path,
    v: &Variant,
    upstream: &Upstream,
    rate: u64,
    hz: f64,
    pinned: bool,
) -> anyhow::Result<Sample> {
    let mut cfg = EnvoyConfig::new(upstream.addr);
    if let Some(m) = &v.module {
        cfg = cfg.wasm(WasmFilter::new("ab-router", m, PLUGIN_CONFIG));
    }
    let proc = Envoy::start_with(envoy, &cfg.to_yaml(), CONCURRENCY)?;
    if pinned {
        pin(proc.pid(), ENVOY_CPU)?;
    }
    let url = format!("{}/bench", proc.listener_url());
    upstream.reset();

    // On failure, say what Envoy saw: its non-zero error and connection counters.
    let diagnose = |e: anyhow::Error| {
        let stats = proc.stats().unwrap_or_default();
        let interesting: Vec<&str> = stats
            .lines()
            .filter(|l| {
                [
                    "rq_5xx",
                    "overflow",
                    "reset",
                    "cx_connect_fail",
                    "timeout",
                    "wasm",
                ]
                .iter()
                .any(|k| l.contains(k))
                    && !l.ends_with(": 0")
            })
            .collect();
        e.context(format!("Envoy's counters: {}", interesting.join(", ")))
    };
    wrk(&url, 1).map_err(diagnose)?;
    let cpu0 = proc.cpu_ticks()?;
    let t0 = Instant::now();
    let (requests, rps) = wrk(&url, WRK_SECONDS).map_err(diagnose)?;
    let cpu_s = (proc.cpu_ticks()? - cpu0) as f64 / hz;
    let wall = t0.elapsed().as_secs_f64();

    let (lat, failed) = open_loop(proc.listener(), rate, OPEN_SECONDS).map_err(diagnose)?;
    if failed > 0 {
        // Overload (e.g. a busy machine) rather than a broken filter: report, do not abort.
        eprintln!(
            "envoy-bench: {}: {failed} of {} open-loop requests failed; {}",
            v.name,
            rate * (1 + OPEN_SECONDS),
            diagnose(anyhow::anyhow!("at {rate} req/s"))
        );
    }
    let rss_kib = proc.rss_kib()? as f64;
    let ready_ms = proc.ready_after().as_secs_f64() * 1e3;
    drop(proc);

    let (with, without) = upstream.counts();
    match v.module {
        Some(_) if without > 0 || with == 0 => bail!(
            "{}: {without} of {} requests reached the upstream without x-backend-version",
            v.name,
            with + without
        ),
        None if with > 0 => bail!("{}: x-backend-version set without a filter", v.name),
        _ => {}
    }
    Ok(Sample {
        rps,
        cpu_us_per_req: cpu_s * 1e6 / requests.max(1) as f64,
        envoy_cpu_share: cpu_s / wall,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        rss_kib,
        ready_ms,
        errors: failed as f64,
    })
}

/// `wrk -t1 -c32 -d<seconds>s` with a user id; returns (requests, requests/s). Any non-2xx
/// response or socket error fails the run.
fn wrk(url: &str, seconds: u64) -> anyhow::Result<(u64, f64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{WRK_CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "-H",
            "x-user-id: user-42",
            url,
        ])
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!(
            "wrk: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no request count in wrk's output:\n{text}"))?;
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    Ok((requests, rps))
}

/// Sends `rate` requests per second for 1 + `seconds` s regardless of how fast answers come
/// back (open loop: a slow response does not delay the next request), over pooled keep-alive
/// connections, at most [`MAX_IN_FLIGHT`] at a time. A request's latency runs from its turn
/// (including any wait for a free slot, so an overloaded target is not flattered) to its whole
/// response. Returns the latencies (µs) of the last `seconds` s, sorted, and how many requests
/// failed or got a non-2xx status.
fn open_loop(addr: SocketAddr, rate: u64, seconds: u64) -> anyhow::Result<(Vec<u64>, u64)> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build(connector);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let uri: hyper::Uri = format!("http://{addr}/bench").parse()?;
        let warmup = rate;
        let total = rate * (1 + seconds);
        let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..total {
            tick.tick().await;
            let req = hyper::Request::get(uri.clone())
                .header("x-user-id", format!("user-{}", i % 1000))
                .body(Empty::new())?;
            let (client, slots) = (client.clone(), Arc::clone(&slots));
            tasks.spawn(async move {
                let turn = Instant::now();
                let _slot = slots.acquire_owned().await;
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                (i, turn.elapsed().as_micros() as u64, ok)
            });
        }
        let mut lat = Vec::with_capacity((rate * seconds) as usize);
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            let (i, us, ok) = r?;
            if !ok {
                failed += 1;
            } else if i >= warmup {
                lat.push(us);
            }
        }
        lat.sort_unstable();
        Ok((lat, failed))
    })
}

/// The 1-minute load average (/proc/loadavg).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of every field on its own.
fn median_sample(s: &[Sample]) -> Sample {
    let m = |f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
    Sample {
        rps: m(|s| s.rps),
        cpu_us_per_req: m(|s| s.cpu_us_per_req),
        envoy_cpu_share: m(|s| s.envoy_cpu_share),
        p50_us: m(|s| s.p50_us),
        p99_us: m(|s| s.p99_us),
        rss_kib: m(|s| s.rss_kib),
        ready_ms: m(|s| s.ready_ms),
        errors: m(|s| s.errors),
    }
}

/// The loopback upstream: hyper on its own thread, answers 200 `ok`, counts requests with and
/// without `x-backend-version`.
struct Upstream {
    addr: SocketAddr,
    with: Arc<AtomicU64>,
    without: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> anyhow::Result<Upstream> {
        use hyper::body::Bytes;
        let with = Arc::new(AtomicU64::new(0));
        let without = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // A backlog of 1024 (std's bind gives 128): Envoy may open many connections at once.
        let listener = rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            socket.listen(1024)
        })?;
        let addr = listener.local_addr()?;
        let (w, wo) = (Arc::clone(&with), Arc::clone(&without));
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                    };
                    let _ = stream.set_nodelay(true);
                    let (w, wo) = (Arc::clone(&w), Arc::clone(&wo));
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                            let counter = if req.headers().contains_key("x-backend-version") {
                                &w
                            } else {
                                &wo
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            async {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(Bytes::from_static(b"ok")),
                                ))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        });
        Ok(Upstream {
            addr,
            with,
            without,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn reset(&self) {
        self.with.store(0, Ordering::Relaxed);
        self.without.store(0, Ordering::Relaxed);
    }

    /// Requests seen since the last reset: (with x-backend-version, without).
    fn counts(&self) -> (u64, u64) {
        (
            self.with.load(Ordering::Relaxed),
            self.without.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
