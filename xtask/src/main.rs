//! `cargo xtask`: the project's commands.
//!
//! - `cargo xtask run [args]`: add the wasm targets if missing, then `weft run [args]` (no args:
//!   the built-in default pipeline).
//! - `cargo xtask build-guests`: add the wasm targets if missing, build every plugin to
//!   `target/guests/<name>.wasm`.
//! - `cargo xtask demo`: build the plugins and run each over its fixture with `weft test`.
//! - `cargo xtask test`: `cargo fmt --check`, clippy with `-D warnings`, the Python venv of the
//!   OpenTelemetry SDK (tests/peers/setup-python.sh), the OpenTelemetry Collector built from its
//!   Go modules (tests/peers/build-collector.sh), and all tests.
//! - `cargo xtask bench [filter]`: the criterion benchmarks (tables in docs/PERFORMANCE.md);
//!   `cargo xtask bench pipeline`: weft vs rotel and the OpenTelemetry Collector under OTLP load
//!   (rotel from tests/peers/requirements-bench.txt, installed into `.venv` if missing);
//!   `cargo xtask bench proxy-wasm`: ab-router's native SDK filter and adapted component in
//!   wasmtime with an emulated Proxy-Wasm host: wasm instructions and host calls per request
//!   (deterministic, unlike the Envoy numbers on a 2-core machine);
//!   `cargo xtask bench envoy`: the ab-router plugin in Envoy, native SDK filter vs the adapted
//!   component (needs `wrk`; Envoy comes from the tests/peers venv).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

mod envoy_bench;
mod pipeline_bench;

use weft_guest_build as guests;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds `target/debug/weft` and nothing else (its build script builds the two built-in
/// plugins), with cargo's progress, so a first `cargo xtask run` compiles no test and no other
/// guest.
fn weft_binary() -> anyhow::Result<PathBuf> {
    let ws = workspace();
    run(Command::new(cargo()).current_dir(&ws).args([
        "build",
        "--package",
        "weft",
        "--bin",
        "weft",
    ]))?;
    let weft = ws.join("target").join("debug").join("weft");
    anyhow::ensure!(weft.is_file(), "{} was not built", weft.display());
    Ok(weft)
}

/// Adds the wasm targets that `rustup` does not have yet.
fn ensure_targets() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm targets")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for target in ["wasm32-wasip2", "wasm32-unknown-unknown"] {
        if !installed.lines().any(|l| l.trim() == target) {
            run(Command::new("rustup").args(["target", "add", target]))?;
        }
    }
    Ok(())
}

fn build_guests() -> anyhow::Result<Vec<(String, PathBuf)>> {
    ensure_targets()?;
    let ws = workspace();
    let built = guests::build_guests(&ws, &cargo()).map_err(anyhow::Error::msg)?;
    let out = ws.join("target").join("guests");
    std::fs::create_dir_all(&out)?;
    let mut copied = Vec::new();
    for (name, path) in built {
        let dest = out.join(format!("{name}.wasm"));
        std::fs::copy(&path, &dest).with_context(|| format!("copy {}", path.display()))?;
        let size = std::fs::metadata(&dest)?.len();
        eprintln!("xtask: {:<16} {:>9} bytes  {}", name, size, dest.display());
        copied.push((name, dest));
    }
    Ok(copied)
}

/// Each example plugin with the fixture its README shows.
const DEMOS: &[(&str, &str, Option<&str>)] = &[
    (
        "pii-mask",
        "guests/pii-mask/fixtures/traces-with-pii.json",
        None,
    ),
    (
        "pii-mask",
        "guests/pii-mask/fixtures/logs-with-pii.json",
        None,
    ),
    (
        "sampler",
        "guests/sampler/fixtures/traces-mixed.json",
        Some(r#"{"percentage": 50}"#),
    ),
    (
        "cloud-enrich",
        "guests/cloud-enrich/fixtures/traces.json",
        Some(r#"{"provider": "aws", "region": "eu-west-1", "availability_zone": "eu-west-1a"}"#),
    ),
    (
        "protocol-parse",
        "guests/protocol-parse/fixtures/logs-logfmt-and-legacy.json",
        None,
    ),
];

fn demo() -> anyhow::Result<()> {
    build_guests()?;
    let ws = workspace();
    let weft = weft_binary()?;
    for (name, fixture, config) in DEMOS {
        eprintln!("\n=== weft test target/guests/{name}.wasm --input {fixture}");
        let mut cmd = Command::new(&weft);
        cmd.current_dir(&ws).arg("test");
        cmd.arg(format!("target/guests/{name}.wasm"))
            .args(["--input", fixture]);
        if let Some(c) = config {
            cmd.args(["--config", c]);
        }
        run(&mut cmd)?;
    }
    // The same http-filter component that `weft run` serves, made a Proxy-Wasm module for Envoy.
    eprintln!(
        "\n=== weft adapt target/guests/ab-router.wasm -o target/guests/ab-router.proxy.wasm"
    );
    run(Command::new(&weft).current_dir(&ws).args([
        "adapt",
        "target/guests/ab-router.wasm",
        "-o",
        "target/guests/ab-router.proxy.wasm",
        "--config",
        r#"{"split":[{"version":"v1","percent":90},{"version":"v2","percent":10}]}"#,
    ]))?;
    Ok(())
}

fn test() -> anyhow::Result<()> {
    let ws = workspace();
    ensure_targets()?;
    run(Command::new(cargo())
        .current_dir(&ws)
        .args(["fmt", "--all", "--check"]))?;
    build_guests()?;
    run(Command::new(cargo()).current_dir(&ws).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The real-client tests drive `weft run` with the OpenTelemetry Python SDK from this venv.
    run(Command::new("bash")
        .current_dir(&ws)
        .arg("tests/peers/setup-python.sh"))?;
    // The authors' tests build JavaScript plugins with componentize-js from tests/peers/node.
    run(Command::new("bash")
        .current_dir(&ws)
        .arg("tests/peers/setup-node.sh"))?;
    // The interop test runs a real OpenTelemetry Collector built from its Go modules.
    run(Command::new("bash")
        .current_dir(&ws)
        .arg("tests/peers/build-collector.sh"))?;
    // Fast tests first, the tests against a real Envoy (`envoy_*` test targets) last. Every
    // invocation selects the whole workspace, so features resolve the same way and wasmtime is
    // built once.
    let (fast, envoy) = test_targets(&ws)?;
    let cargo_test = |args: &[&str], targets: &[String]| -> anyhow::Result<()> {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&ws)
            .args(["test", "--workspace"])
            .args(args);
        for t in targets {
            cmd.args(["--test", t]);
        }
        run(&mut cmd)
    };
    cargo_test(&["--lib", "--bins"], &[])?;
    cargo_test(&[], &fast)?;
    cargo_test(&["--doc"], &[])?;
    cargo_test(&[], &envoy)?;
    Ok(())
}

/// The workspace's integration-test targets (from `cargo metadata`): the fast ones, and the ones
/// that run a real Envoy (named `envoy_*`).
fn test_targets(ws: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let out = Command::new(cargo())
        .current_dir(ws)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()?;
    anyhow::ensure!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut fast = Vec::new();
    let mut envoy = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_test = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if let (true, Some(name)) = (is_test, target["name"].as_str()) {
                let list = if name.starts_with("envoy_") {
                    &mut envoy
                } else {
                    &mut fast
                };
                if !list.iter().any(|n| n == name) {
                    list.push(name.to_string());
                }
            }
        }
    }
    fast.sort();
    envoy.sort();
    Ok((fast, envoy))
}

fn bench(filter: Option<&str>) -> anyhow::Result<()> {
    match filter {
        Some("pipeline") => return pipeline_bench::run(&workspace(), &cargo()),
        Some("envoy") => return envoy_bench::run(&workspace(), &cargo()),
        Some("proxy-wasm") => {
            return run(Command::new(cargo()).current_dir(workspace()).args([
                "bench",
                "-p",
                "weft-tests",
                "--bench",
                "proxy_wasm",
            ]));
        }
        _ => {}
    }
    build_guests()?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(workspace())
        .args(["bench", "-p", "weft-tests"]);
    if let Some(f) = filter {
        cmd.args(["--", f]);
    }
    run(&mut cmd)?;
    print_criterion_table(&workspace().join("target").join("criterion"))
}

/// Reads criterion's estimates and prints one markdown table per group: median with its
/// confidence interval, and the ratio to the group's first (baseline) row.
fn print_criterion_table(dir: &Path) -> anyhow::Result<()> {
    let mut groups: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    groups.sort();
    for group in groups {
        let Some(gname) = group
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if gname == "report" {
            continue;
        }
        let mut rows = Vec::new();
        let mut benches: Vec<_> = std::fs::read_dir(&group)?
            .flatten()
            .map(|e| e.path())
            .collect();
        benches.sort_by_key(|p| {
            std::fs::metadata(p.join("new/estimates.json"))
                .and_then(|m| m.modified())
                .ok()
        });
        for bench in benches {
            let est = bench.join("new").join("estimates.json");
            let Ok(text) = std::fs::read_to_string(&est) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let median = &v["median"];
            let point = median["point_estimate"].as_f64().unwrap_or(f64::NAN);
            let lo = median["confidence_interval"]["lower_bound"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let hi = median["confidence_interval"]["upper_bound"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let name = bench
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string();
            rows.push((name, point, lo, hi));
        }
        if rows.is_empty() {
            continue;
        }
        let base = rows[0].1;
        println!(
            "\n{gname}\n\n| benchmark | median | 95% CI | × {} |\n|---|---:|---:|---:|",
            rows[0].0
        );
        for (name, point, lo, hi) in &rows {
            println!(
                "| {name} | {} | {} – {} | {:.2} |",
                human(*point),
                human(*lo),
                human(*hi),
                point / base
            );
        }
    }
    Ok(())
}

/// Nanoseconds as ns / µs / ms / s.
fn human(ns: f64) -> String {
    match ns {
        n if n < 1e3 => format!("{n:.1} ns"),
        n if n < 1e6 => format!("{:.2} µs", n / 1e3),
        n if n < 1e9 => format!("{:.2} ms", n / 1e6),
        n => format!("{:.2} s", n / 1e9),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build-guests") => build_guests().map(|_| ()),
        Some("run") => {
            ensure_targets()?;
            let mut cmd = Command::new(weft_binary()?);
            cmd.current_dir(workspace()).arg("run").args(&args[1..]);
            run(&mut cmd)
        }
        Some("demo") => demo(),
        Some("test") => test(),
        Some("bench") => bench(args.get(1).map(String::as_str)),
        Some("bench-table") => print_criterion_table(&workspace().join("target").join("criterion")),
        _ => {
            eprintln!(
                "usage: cargo xtask <run [config] | build-guests | demo | test | bench [filter]>"
            );
            std::process::exit(2)
        }
    }
}
