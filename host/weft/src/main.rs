//! The `weft` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use weft_runtime::otlp_io::read_otlp;
use weft_runtime::{EngineSettings, MetricsRegistry, PluginHost, PluginSettings, WeftEngine};

/// weft: observability plugins as WebAssembly components.
#[derive(Parser)]
#[command(name = "weft", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a plugin once over a fixture and print the result: an OTLP file for span processors
    /// and log transforms (the result is OTLP/JSON), a request fixture for http filters (the
    /// result says what the upstream saw and what the client got).
    Test {
        /// The plugin component (.wasm).
        component: PathBuf,
        /// OTLP traces or logs (JSON, as the Collector's file exporter writes, or protobuf); for
        /// an http filter, a request fixture (JSON: `requests` and the `upstream`'s response).
        #[arg(long)]
        input: PathBuf,
        /// Compare the result with this file: exit status 1 and a diff when they differ.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// The plugin's configuration: a JSON file, or inline JSON.
        #[arg(long)]
        config: Option<String>,
        /// Write the result here instead of stdout (`.pb` writes protobuf, anything else JSON).
        #[arg(long)]
        output: Option<PathBuf>,
        /// CPU deadline per call, in milliseconds.
        #[arg(long, default_value_t = 100)]
        deadline_ms: u64,
        /// Memory cap per instance, in MiB.
        #[arg(long, default_value_t = 64)]
        memory_mib: usize,
    },
    /// Run OTLP pipelines: receivers → Wasm processors → exporters. With no file, runs the
    /// built-in default (OTLP gRPC 127.0.0.1:4317 and HTTP 127.0.0.1:4318 → pii-mask → sampler →
    /// debug exporter), self-metrics on 127.0.0.1:8888/metrics.
    Run {
        /// A collector-style YAML configuration.
        config: Option<PathBuf>,
        /// How long to drain exporters on SIGINT/SIGTERM.
        #[arg(long, default_value_t = 10)]
        drain_seconds: u64,
    },
    /// Check a configuration (YAML and every plugin: it must compile and accept its config)
    /// without running it.
    Validate {
        /// The configuration file.
        config: PathBuf,
    },
    /// Fuse an http-filter component into a Proxy-Wasm 0.2.1 module for Envoy / Istio, verify it,
    /// and print the envoy.yaml snippet that loads it.
    Adapt {
        /// The http-filter component (.wasm).
        component: PathBuf,
        /// The Proxy-Wasm module to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Also write an OCI image layout (the form Istio's WasmPlugin pulls) to this directory.
        #[arg(long)]
        oci: Option<PathBuf>,
        /// The tag of the OCI image.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// The plugin configuration (JSON) to put in the printed snippet.
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Show a component's world, WIT package version, imports, exports, size and cache state.
    Inspect {
        /// The component (.wasm).
        component: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create a plugin project: source, build configuration, a fixture with its expected
    /// output, a weft.yaml and a README with the commands.
    New {
        /// The plugin's name (lowercase letters, digits, `-`); also the directory, unless
        /// `--dir` says otherwise.
        name: String,
        /// What the plugin processes.
        #[arg(long, value_enum, default_value = "span-processor")]
        world: weft::scaffold::World,
        /// The language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: weft::scaffold::Lang,
        /// Where to create the project (default: `./<name>`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the `weft-guest` dependency, a path to the SDK or a version (default: the SDK
        /// this weft was built from, if present, else the registry version).
        #[arg(long)]
        sdk: Option<String>,
    },
    /// Build the plugin project in a directory (Rust, Python or JavaScript) into
    /// `<name>.wasm`, and compile it once for this machine.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component (default: `<dir>/<name>.wasm`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write the WIT package `weft:plugin` this weft was built against into a directory, for
    /// wit-bindgen, componentize-py or componentize-js (give them the directory: `path:`,
    /// `componentize-py -d <dir>`, `componentize-js --wit <dir>`).
    Wit {
        /// Where to write the .wit files (created if missing).
        dir: PathBuf,
        /// Overwrite files that differ.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test {
            component,
            input,
            expect,
            config,
            output,
            deadline_ms,
            memory_mib,
        } => run_test(&TestArgs {
            component: &component,
            input: &input,
            expect: expect.as_deref(),
            config: config.as_deref(),
            output: output.as_deref(),
            deadline_ms,
            memory_mib,
        }),
        Command::New {
            name,
            world,
            lang,
            dir,
            sdk,
        } => run_new(name, world, lang, dir, sdk),
        Command::Build { dir, output } => run_build(&dir, output.as_deref()),
        Command::Inspect { component, json } => run_inspect(&component, json),
        Command::Wit { dir, force } => weft::wit::write(&dir, force)
            .map(|files| {
                println!(
                    "{}: {} ({} files)",
                    dir.display(),
                    weft::wit::package(),
                    files.len()
                );
            })
            .with_context(|| format!("writing the WIT package to {}", dir.display())),
        Command::Run {
            config,
            drain_seconds,
        } => run_collector(config.as_deref(), drain_seconds),
        Command::Validate { config } => validate(&config),
        Command::Adapt {
            component,
            output,
            oci,
            tag,
            config,
        } => run_adapt(&component, &output, oci.as_deref(), &tag, &config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Mismatch>() => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--config`: inline JSON if it looks like JSON, else a file holding JSON (or YAML-free JSON).
fn parse_config(config: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let Some(config) = config else {
        return Ok(serde_json::json!({}));
    };
    let text = if config.trim_start().starts_with('{') {
        config.to_string()
    } else {
        std::fs::read_to_string(config)
            .with_context(|| format!("cannot read config file {config}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("--config is not valid JSON: {config}"))
}

fn plugin_name(component: &Path) -> String {
    component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into())
}

/// `weft test`'s arguments.
struct TestArgs<'a> {
    component: &'a Path,
    input: &'a Path,
    expect: Option<&'a Path>,
    config: Option<&'a str>,
    output: Option<&'a Path>,
    deadline_ms: u64,
    memory_mib: usize,
}

/// `--expect` failed: the diff, printed as it is.
#[derive(Debug)]
struct Mismatch(String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

/// Prints, writes or checks a result against `--expect`.
fn report(
    args: &TestArgs<'_>,
    verdict: impl FnOnce(&Path) -> anyhow::Result<weft::expect::Verdict>,
    json: &str,
    protobuf: impl FnOnce() -> Vec<u8>,
) -> anyhow::Result<()> {
    match args.output {
        Some(path) if path.extension().is_some_and(|e| e == "pb") => {
            std::fs::write(path, protobuf())?
        }
        Some(path) => std::fs::write(path, format!("{json}\n"))?,
        None if args.expect.is_none() => println!("{json}"),
        None => {}
    }
    if let Some(expected) = args.expect {
        match verdict(expected)? {
            weft::expect::Verdict::Matches => {
                eprintln!("weft test: the output matches {}", expected.display())
            }
            weft::expect::Verdict::Differs(diff) => {
                return Err(Mismatch(format!(
                    "{diff}weft test: the output differs from {} (- expected, + output)",
                    expected.display()
                ))
                .into());
            }
        }
    }
    Ok(())
}

fn run_test(args: &TestArgs<'_>) -> anyhow::Result<()> {
    let component = args.component;
    let bytes =
        std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let engine = WeftEngine::new(EngineSettings::default())?;
    let what = component.display().to_string();
    let world = weft_runtime::inspect::inspect(&engine, &what, &bytes)?.world;
    if world == "http-filter" {
        return run_http_test(args);
    }
    let input = args.input;
    let input_bytes =
        std::fs::read(input).with_context(|| format!("cannot read input {}", input.display()))?;
    let data = read_otlp(&input_bytes).with_context(|| format!("input {}", input.display()))?;
    let mut settings = PluginSettings::new(&plugin_name(component));
    settings.config = parse_config(args.config)?;
    settings.deadline = Duration::from_millis(args.deadline_ms);
    settings.memory_cap = args.memory_mib << 20;

    let host = PluginHost::new(engine, MetricsRegistry::default())?;
    let load_start = Instant::now();
    let plugin = host.load_file(component, settings)?;
    let load_time = load_start.elapsed();

    let items_in = data.items();
    let signal = data.signal();
    let start = Instant::now();
    let (result, report_) = plugin.process_data_strict(data)?;
    let elapsed = start.elapsed();

    eprintln!(
        "weft test: {} ({}) {signal}: {items_in} in, {} out, {} call(s) in {:.3} ms (load {:.1} ms, {})",
        plugin.name(),
        plugin.worlds().world_name(),
        report_.items_out,
        plugin
            .metrics()
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        elapsed.as_secs_f64() * 1e3,
        load_time.as_secs_f64() * 1e3,
        if plugin.cache_hit() {
            "cached"
        } else {
            "compiled"
        },
    );
    let json = result.to_json();
    report(
        args,
        |expected| weft::expect::otlp(expected, &json),
        &json,
        || result.to_protobuf(),
    )
}

/// `weft test` of an http filter over a request fixture.
fn run_http_test(args: &TestArgs<'_>) -> anyhow::Result<()> {
    let fixture = weft::http_fixture::read(args.input)?;
    let config = parse_config(args.config)?;
    let started = Instant::now();
    let result = weft::http_fixture::run(
        &weft::http_fixture::FilterUnderTest {
            component: args.component,
            config: &config,
            deadline: Duration::from_millis(args.deadline_ms),
            memory_mib: args.memory_mib,
        },
        &fixture,
    )?;
    let value: serde_json::Value = serde_json::from_str(&result)?;
    let reached = value
        .as_array()
        .map(|r| r.iter().filter(|r| !r["upstream_saw"].is_null()).count())
        .unwrap_or(0);
    eprintln!(
        "weft test: {} (http-filter): {} request(s), {reached} reached the upstream, in {:.1} ms",
        plugin_name(args.component),
        fixture.requests.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    report(
        args,
        |expected| weft::expect::json(expected, &value),
        &result,
        || result.clone().into_bytes(),
    )
}

/// `weft new`.
fn run_new(
    name: String,
    world: weft::scaffold::World,
    lang: weft::scaffold::Lang,
    dir: Option<PathBuf>,
    sdk: Option<String>,
) -> anyhow::Result<()> {
    weft::scaffold::check_name(&name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let project = weft::scaffold::NewProject {
        dir: dir.clone(),
        name,
        world,
        lang,
        sdk,
    };
    let files = weft::scaffold::create(&project)?;
    let wit_world = world.wit_world(lang);
    println!(
        "created {} ({lang}, world weft:plugin/{wit_world}, {} files)",
        dir.display(),
        files.len()
    );
    for f in files.iter().filter(|f| !f.starts_with("wit")) {
        println!("  {}", f.display());
    }
    println!(
        "next: cd {} && weft build   (then see README.md)",
        dir.display()
    );
    Ok(())
}

/// `weft build`.
fn run_build(dir: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    let started = Instant::now();
    let (project, out) = weft::builder::build(dir, output)?;
    weft::builder::step("compiling it for this machine (cached for weft test / run)");
    let bytes = std::fs::read(&out)?;
    let engine = WeftEngine::new(EngineSettings::default())?;
    let what = out.display().to_string();
    let report = weft_runtime::inspect::inspect(&engine, &what, &bytes)
        .with_context(|| format!("{what} was built but weft cannot load it"))?;
    if let Some(want) = project.world()
        && want != report.world
    {
        anyhow::bail!(
            "{what} targets the world `{}`, but the project says `{want}`",
            report.world
        );
    }
    println!(
        "built {what} ({} KiB, world {}) in {:.1} s",
        bytes.len().div_ceil(1024),
        report.world,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads and validates the configuration (the default when `path` is `None`).
fn read_config(path: Option<&Path>) -> anyhow::Result<weft::Config> {
    match path {
        Some(p) => weft::Config::load(p)
            .with_context(|| format!("invalid configuration in {}", p.display())),
        None => weft::Config::parse(weft::DEFAULT_CONFIG, &std::env::current_dir()?)
            .context("invalid built-in default configuration"),
    }
}

fn validate(path: &Path) -> anyhow::Result<()> {
    let config = read_config(Some(path))?;
    let engine = WeftEngine::new(EngineSettings::default())?;
    let host = PluginHost::new(engine, MetricsRegistry::default())?;
    // Every plugin is loaded (and its `init` run), so a bad component or config fails here.
    weft::load_processors(&config, &host)?;
    let proxies = weft::load_filters(&config, &host)?;
    let proxies = match proxies.len() {
        0 => String::new(),
        n => format!(", {n} proxies"),
    };
    println!(
        "{}: valid ({} receivers, {} processors, {} exporters, {} pipelines{proxies})",
        path.display(),
        config.collector.receivers.len(),
        config.collector.processors.len(),
        config.collector.exporters.len(),
        config.collector.pipelines.len()
    );
    Ok(())
}

fn run_collector(path: Option<&Path>, drain_seconds: u64) -> anyhow::Result<()> {
    let config = read_config(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let engine = WeftEngine::new(EngineSettings::default())?;
        let host = PluginHost::new(engine, MetricsRegistry::default())?;
        let running = weft::start(&config, &host).await?;
        for (id, proto, addr) in &running.listeners {
            eprintln!("weft: receiver {id} ({proto}) on {addr}");
        }
        for p in &running.proxies {
            eprintln!("weft: proxy {} on {}", p.id, p.address);
        }
        if let Some(m) = running.metrics_address {
            eprintln!("weft: metrics on http://{m}/metrics");
        }
        wait_for_signal().await?;
        eprintln!("weft: shutting down, draining exporters (up to {drain_seconds} s)");
        if !running.shutdown(Duration::from_secs(drain_seconds)).await {
            anyhow::bail!("exporters did not drain within {drain_seconds} s");
        }
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn run_inspect(component: &Path, json: bool) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let engine = WeftEngine::new(EngineSettings::default())?;
    let what = component.display().to_string();
    let report = weft_runtime::inspect::inspect(&engine, &what, &bytes)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render(&what));
    }
    Ok(())
}

/// `weft adapt`.
fn run_adapt(
    component: &Path,
    output: &Path,
    oci: Option<&Path>,
    tag: &str,
    config: &str,
) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let started = Instant::now();
    let adapted =
        weft_adapt::adapt(&bytes).with_context(|| format!("adapting {}", component.display()))?;
    std::fs::write(output, &adapted.module)
        .with_context(|| format!("writing {}", output.display()))?;
    let name = component
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("weft_filter")
        .replace('-', "_");
    let main = if adapted.core_modules > 1 {
        format!(
            "{} core modules linked into one of {} bytes",
            adapted.core_modules, adapted.main_module_size
        )
    } else {
        format!("main module {} bytes", adapted.main_module_size)
    };
    eprintln!(
        "adapted {} ({} bytes, {main}) -> {} ({} bytes, Proxy-Wasm 0.2.1, verified) in {:.1} ms",
        component.display(),
        bytes.len(),
        output.display(),
        adapted.module.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    if let Some(dir) = oci {
        let image = weft_adapt::oci::write_layout(dir, &adapted.module, tag, &name)
            .with_context(|| format!("writing the OCI layout {}", dir.display()))?;
        eprintln!(
            "OCI image layout {} (tag {}, manifest {}); push with `oras cp --from-oci-layout {}:{} <registry>/<repo>:{}`",
            dir.display(),
            image.tag,
            image.manifest_digest,
            dir.display(),
            image.tag,
            image.tag
        );
    }
    let path = std::fs::canonicalize(output).unwrap_or_else(|_| output.to_path_buf());
    print!(
        "{}",
        weft_adapt::envoy_snippet(&name, &path.display().to_string(), config)
    );
    Ok(())
}
