//! `weft new`: a plugin project in Rust, Python or JavaScript for one world, with a fixture, its
//! expected output, a `weft.yaml` that runs it and a README with the exact commands.
//!
//! Every template does the same small thing, so the guides read alike: an OTLP plugin sets the
//! attribute `tagged.by` to its configured `value` on every span or log record; an HTTP filter
//! answers `/deny…` with a local `403` and sends everything else upstream with
//! `x-tagged-by: <value>`, counting both in a metric.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use weft_runtime::otlp_io::read_otlp;

/// The worlds `weft new` makes projects for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    /// Spans, on the batch ABI (typed records for Python and JavaScript).
    SpanProcessor,
    /// Log records, on the batch ABI (typed records for Python and JavaScript).
    LogTransform,
    /// Spans and log records.
    OtlpProcessor,
    /// HTTP requests and responses, in weft's filter proxy and in Envoy.
    HttpFilter,
}

/// The languages `weft new` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the weft-guest SDK (cargo, wasm32-wasip2).
    Rust,
    /// Python with componentize-py, bindings from the WIT.
    Python,
    /// JavaScript with componentize-js, bindings from the WIT.
    Js,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        })
    }
}

impl World {
    fn slug(self) -> &'static str {
        match self {
            World::SpanProcessor => "span-processor",
            World::LogTransform => "log-transform",
            World::OtlpProcessor => "otlp-processor",
            World::HttpFilter => "http-filter",
        }
    }

    /// The WIT world a project in `lang` targets. Python and JavaScript have no SDK that reads
    /// OTLP protobuf in place, so their OTLP plugins use the typed-records worlds, whose
    /// bindings come from the WIT alone.
    pub fn wit_world(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (World::HttpFilter, _) => "http-filter",
            (w, Lang::Rust) => w.slug(),
            (World::SpanProcessor, _) => "typed-span-processor",
            (World::LogTransform, _) => "typed-log-transform",
            (World::OtlpProcessor, _) => "typed-otlp-processor",
        }
    }

    fn signals(self) -> &'static [&'static str] {
        match self {
            World::SpanProcessor => &["traces"],
            World::LogTransform => &["logs"],
            World::OtlpProcessor => &["traces", "logs"],
            World::HttpFilter => &[],
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewProject {
    /// Where the project goes (created; it must not exist or be empty).
    pub dir: PathBuf,
    /// The plugin's name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// The world.
    pub world: World,
    /// The language.
    pub lang: Lang,
    /// For Rust: the `weft-guest` dependency, a path to the SDK or a version requirement.
    pub sdk: Option<String>,
}

/// The SDK this weft was built from, if its sources are still there (a weft built from a
/// checkout): new Rust projects depend on it by path; otherwise on the registry version.
fn default_sdk() -> String {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/sdk");
    match sdk.join("Cargo.toml").is_file().then(|| sdk.canonicalize()) {
        Some(Ok(p)) => p.display().to_string(),
        _ => SDK_VERSION.to_string(),
    }
}

/// The version requirement on weft-guest that carries this weft's WIT package.
const SDK_VERSION: &str = "0.2";

fn sdk_dependency(sdk: &str) -> String {
    let is_version = sdk
        .chars()
        .all(|c| c.is_ascii_digit() || ".^~=<> ,*".contains(c));
    if is_version {
        format!("weft-guest = {sdk:?}")
    } else {
        format!("weft-guest = {{ path = {sdk:?} }}")
    }
}

/// Checks a plugin name: it becomes a crate, a package and a file name.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64;
    if !ok {
        bail!(
            "`{name}` is not a plugin name: use lowercase letters, digits and `-`, starting with a letter (e.g. `mask-cards`)"
        );
    }
    Ok(())
}

/// The files of a new project, relative to its directory.
pub fn files(p: &NewProject) -> anyhow::Result<Vec<(PathBuf, String)>> {
    check_name(&p.name)?;
    let crate_name = p.name.replace('-', "_");
    let wit_world = p.world.wit_world(p.lang);
    let fill = |t: &str| {
        t.replace("{{name}}", &p.name)
            .replace("{{crate}}", &crate_name)
            .replace("{{world}}", wit_world)
    };
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    match p.lang {
        Lang::Rust => {
            let sdk = p.sdk.clone().unwrap_or_else(default_sdk);
            let source = match p.world {
                World::SpanProcessor => RUST_SPAN,
                World::LogTransform => RUST_LOG,
                World::OtlpProcessor => RUST_OTLP,
                World::HttpFilter => RUST_HTTP,
            };
            out.push((
                "Cargo.toml".into(),
                fill(RUST_CARGO).replace("{{sdk}}", &sdk_dependency(&sdk)),
            ));
            let source = source
                .replace("{{settings}}", RUST_SETTINGS)
                .replace("{{span}}", RUST_SPAN_IMPL)
                .replace("{{log}}", RUST_LOG_IMPL);
            out.push(("src/lib.rs".into(), fill(&source)));
        }
        Lang::Python | Lang::Js => {
            let python = p.lang == Lang::Python;
            let (otlp, http, lifecycle) = if python {
                (PY_OTLP, PY_HTTP, PY_LIFECYCLE)
            } else {
                (JS_OTLP, JS_HTTP, JS_LIFECYCLE)
            };
            let filter = p.world == World::HttpFilter;
            let app = fill(&if filter { http } else { otlp }.replace("{{lifecycle}}", lifecycle));
            let app = if filter {
                app
            } else {
                keep_exports(&app, p.world, if python { "#" } else { "//" })
            };
            out.push((if python { "app.py" } else { "app.js" }.into(), app));
            if python {
                if filter {
                    out.push(("filter.py".into(), fill(PY_HTTP_STREAM)));
                }
                out.push(("pyproject.toml".into(), fill(PY_PROJECT)));
            } else {
                // An http filter leaves out every WASI feature, so `weft adapt` can make a
                // Proxy-Wasm module of it (Envoy has no WASI): console output is dropped,
                // `Date.now()` is the build's time and `Math.random()` repeats; use the weft
                // imports instead.
                let disable = if filter {
                    r#"["http", "fetch-event", "stdio", "random", "clocks"]"#
                } else {
                    r#"["http", "fetch-event"]"#
                };
                out.push((
                    "package.json".into(),
                    fill(JS_PACKAGE).replace("{{js_disable}}", disable),
                ));
            }
        }
    }
    if p.lang != Lang::Rust {
        // The WIT the bindings are made from, pinned with the project.
        for (file, text) in crate::wit::FILES {
            out.push((Path::new("wit").join(file), (*text).to_string()));
        }
    }
    let value = &p.name;
    for signal in p.world.signals() {
        let (input, expected) = otlp_fixture(signal, value)?;
        out.push((format!("fixtures/{signal}.json").into(), input));
        out.push((format!("fixtures/{signal}.expected.json").into(), expected));
    }
    if p.world == World::HttpFilter {
        out.push(("fixtures/requests.json".into(), HTTP_FIXTURE.into()));
        out.push((
            "fixtures/requests.expected.json".into(),
            fill(HTTP_EXPECTED),
        ));
    }
    out.push(("weft.yaml".into(), fill(weft_yaml(p.world))));
    out.push(("README.md".into(), readme(p, wit_world)));
    out.push((".gitignore".into(), GITIGNORE.into()));
    Ok(out)
}

/// Writes the project; refuses a directory that exists and is not empty.
pub fn create(p: &NewProject) -> anyhow::Result<Vec<PathBuf>> {
    if p.dir.exists()
        && std::fs::read_dir(&p.dir)
            .with_context(|| format!("reading {}", p.dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty; choose a new directory",
            p.dir.display()
        );
    }
    let files = files(p)?;
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = p.dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(rel);
    }
    Ok(written)
}

/// The fixture of `signal` and what the template plugin makes of it: every span or log record
/// with `tagged.by` = `value` added (the template's documented behaviour).
fn otlp_fixture(signal: &str, value: &str) -> anyhow::Result<(String, String)> {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    let input = if signal == "traces" {
        TRACES_FIXTURE
    } else {
        LOGS_FIXTURE
    };
    let data = read_otlp(input.as_bytes()).context("the template's fixture")?;
    let retag = |attributes: &mut Vec<KeyValue>| {
        attributes.retain(|kv| kv.key != "tagged.by");
        attributes.push(KeyValue {
            key: "tagged.by".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        });
    };
    let expected = if signal == "traces" {
        let mut req = data.traces();
        let spans = req
            .resource_spans
            .iter_mut()
            .flat_map(|rs| &mut rs.scope_spans);
        for span in spans.flat_map(|ss| &mut ss.spans) {
            retag(&mut span.attributes);
        }
        weft_runtime::OtlpData::from_traces(&req)?
    } else {
        let mut req = data.logs();
        let scopes = req
            .resource_logs
            .iter_mut()
            .flat_map(|rl| &mut rl.scope_logs);
        for record in scopes.flat_map(|sl| &mut sl.log_records) {
            retag(&mut record.attributes);
        }
        weft_runtime::OtlpData::from_logs(&req)?
    };
    Ok((input.to_string(), expected.to_json() + "\n"))
}

/// The OTLP template's exports for `world` (spans, logs or both): the parts between
/// `<spans>`/`</spans>` and `<logs>`/`</logs>` marker lines, comments starting with `comment`,
/// are kept or dropped, the markers always dropped.
fn keep_exports(app: &str, world: World, comment: &str) -> String {
    let keep = |marker: &str, on: bool, text: &str| -> String {
        let begin = format!("{comment} <{marker}>\n");
        let end = format!("{comment} </{marker}>\n");
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(&begin) {
            out.push_str(&rest[..i]);
            let after = &rest[i + begin.len()..];
            let j = after.find(&end).unwrap_or(after.len());
            if on {
                out.push_str(&after[..j]);
            }
            rest = after.get(j + end.len()..).unwrap_or("");
        }
        out.push_str(rest);
        out
    };
    let app = keep("spans", world != World::LogTransform, app);
    keep("logs", world != World::SpanProcessor, &app)
}

fn weft_yaml(world: World) -> &'static str {
    match world {
        World::HttpFilter => YAML_HTTP,
        World::SpanProcessor => YAML_TRACES,
        World::LogTransform => YAML_LOGS,
        World::OtlpProcessor => YAML_BOTH,
    }
}

fn readme(p: &NewProject, wit_world: &str) -> String {
    let name = &p.name;
    let (lang_intro, build_needs) = match p.lang {
        Lang::Rust => (
            "Rust, with the `weft-guest` SDK (it carries the WIT)".to_string(),
            "Rust with the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`)".to_string(),
        ),
        Lang::Python => (
            format!("Python, built with componentize-py from the WIT in `wit/` (world `{wit_world}`)"),
            "componentize-py 0.25.1 (`python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1`)".to_string(),
        ),
        Lang::Js => (
            format!("JavaScript, built with componentize-js from the WIT in `wit/` (world `{wit_world}`)"),
            "Node.js 20+ and `npm install` here (package.json pins componentize-js)".to_string(),
        ),
    };
    let mut tests = String::new();
    for signal in p.world.signals() {
        tests.push_str(&format!(
            "weft test {name}.wasm --input fixtures/{signal}.json --expect fixtures/{signal}.expected.json\n"
        ));
    }
    if p.world == World::HttpFilter {
        tests.push_str(&format!(
            "weft test {name}.wasm --input fixtures/requests.json --expect fixtures/requests.expected.json\n"
        ));
    }
    let first_fixture = p
        .world
        .signals()
        .first()
        .map(|s| format!("fixtures/{s}.json"))
        .unwrap_or_else(|| "fixtures/requests.json".into());
    let adapt = match (p.world, p.lang) {
        (World::HttpFilter, Lang::Python) => "\n## Envoy\n\n`weft adapt` does not take componentize-py components yet (they link libc and \
             libpython as shared libraries when instantiated); the filter runs in weft's filter proxy \
             (`weft run weft.yaml`), which follows Envoy's semantics.\n"
            .to_string(),
        (World::HttpFilter, _) => {
            let js = if p.lang == Lang::Js {
                "package.json leaves out every WASI feature of componentize-js, so the component \
                 imports only weft interfaces and adapts (`console.log` output is dropped: log with \
                 `weft:plugin/log`). "
            } else {
                ""
            };
            format!(
                "\n## Run it in Envoy\n\n```sh\nweft adapt {name}.wasm -o {name}.proxy.wasm --config '{{\"value\":\"{name}\"}}'\n```\n\n\
                 {js}`weft adapt` prints the envoy.yaml snippet that loads the Proxy-Wasm module (add \
                 `--oci <dir>` for an image Istio's `WasmPlugin` pulls).\n"
            )
        }
        _ => String::new(),
    };
    let behaviour = if p.world == World::HttpFilter {
        "A request whose path starts with `/deny` gets a local `403` (`{\"error\":\"denied\"}`), the upstream \
         is not called; every other request goes upstream with `x-tagged-by: <value>`. Both are counted in \
         the metric `<name>_requests{outcome}`."
            .replace("<name>", &name.replace('-', "_"))
    } else {
        "Sets the attribute `tagged.by` to the configured `value` on every span or log record."
            .into()
    };
    format!(
        "# {name}\n\n\
         A weft plugin for the world `weft:plugin/{wit_world}`, in {lang_intro}. {behaviour}\n\n\
         Configuration: `{{\"value\": \"<text>\"}}` (default `\"{name}\"`); any other key fails the load.\n\n\
         ## Build\n\nNeeds {build_needs}, and `weft`.\n\n```sh\nweft build            # writes {name}.wasm\n```\n\n\
         ## Test\n\n`--expect` compares the output with a file and prints a diff when they differ \
         (exit status 1):\n\n```sh\n{tests}\
         weft test {name}.wasm --input {first_fixture} --config '{{\"value\":\"other\"}}'   # prints the output\n```\n\n\
         `weft test … --output <file>` writes the output, e.g. to make a new expected file.\n\n\
         ## Run it\n\n```sh\nweft run weft.yaml\n```\n{adapt}\n\
         The weft guide for {lang} (docs/guides/{guide}.md in the weft repository) has the rest: \
         the API, building, testing, adapting, deploying.\n",
        lang = p.lang,
        guide = match p.lang {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "javascript",
        },
    )
}

const RUST_CARGO: &str = include_str!("../templates/rust/Cargo.toml");
const RUST_SETTINGS: &str = include_str!("../templates/rust/settings.rs");
const RUST_SPAN: &str = include_str!("../templates/rust/span-processor.rs");
const RUST_LOG: &str = include_str!("../templates/rust/log-transform.rs");
const RUST_OTLP: &str = include_str!("../templates/rust/otlp-processor.rs");
const RUST_HTTP: &str = include_str!("../templates/rust/http-filter.rs");
const RUST_SPAN_IMPL: &str = include_str!("../templates/rust/span-impl.rs");
const RUST_LOG_IMPL: &str = include_str!("../templates/rust/log-impl.rs");
const PY_LIFECYCLE: &str = include_str!("../templates/python/lifecycle.py");
const JS_LIFECYCLE: &str = include_str!("../templates/js/lifecycle.js");
const PY_OTLP: &str = include_str!("../templates/python/otlp.py");
const PY_HTTP: &str = include_str!("../templates/python/http-filter.py");
const PY_HTTP_STREAM: &str = include_str!("../templates/python/http-filter-stream.py");
const PY_PROJECT: &str = include_str!("../templates/python/pyproject.toml");
const JS_OTLP: &str = include_str!("../templates/js/otlp.js");
const JS_HTTP: &str = include_str!("../templates/js/http-filter.js");
const JS_PACKAGE: &str = include_str!("../templates/js/package.json");
const YAML_TRACES: &str = include_str!("../templates/weft-traces.yaml");
const YAML_LOGS: &str = include_str!("../templates/weft-logs.yaml");
const YAML_BOTH: &str = include_str!("../templates/weft-otlp.yaml");
const YAML_HTTP: &str = include_str!("../templates/weft-http.yaml");
const HTTP_FIXTURE: &str = include_str!("../templates/fixtures/requests.json");
const HTTP_EXPECTED: &str = include_str!("../templates/fixtures/requests.expected.json");
const TRACES_FIXTURE: &str = include_str!("../../../tests/fixtures/traces-two-scopes.json");
const LOGS_FIXTURE: &str = include_str!("../../../tests/fixtures/logs-small.json");
const GITIGNORE: &str = "target/\nnode_modules/\n__pycache__/\n*.wasm\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "mask-cards", "s3-tagger"] {
            check_name(good).expect(good);
        }
        for bad in ["", "Mask", "-a", "a-", "a_b", "a b", "9lives"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn python_and_js_keep_only_the_exports_of_their_world() {
        let p = |world, lang| NewProject {
            dir: "x".into(),
            name: "t".into(),
            world,
            lang,
            sdk: Some("0.2".into()),
        };
        let app = |world, lang| {
            let name = if lang == Lang::Python {
                "app.py"
            } else {
                "app.js"
            };
            files(&p(world, lang))
                .expect("files")
                .into_iter()
                .find(|(f, _)| f == Path::new(name))
                .expect("app")
                .1
        };
        for lang in [Lang::Python, Lang::Js] {
            let spans = app(World::SpanProcessor, lang);
            let logs = app(World::LogTransform, lang);
            let both = app(World::OtlpProcessor, lang);
            let (s, l) = if lang == Lang::Python {
                ("class Spans", "class Logs")
            } else {
                ("export const spans", "export const logs")
            };
            assert!(spans.contains(s) && !spans.contains(l), "{lang}: {spans}");
            assert!(logs.contains(l) && !logs.contains(s), "{lang}: {logs}");
            assert!(both.contains(l) && both.contains(s), "{lang}: {both}");
            assert!(!both.contains("<spans>") && !both.contains("</logs>"));
        }
    }

    #[test]
    fn the_expected_output_adds_the_tag_to_every_item() {
        let (input, expected) = otlp_fixture("traces", "tagger").expect("fixture");
        let items = read_otlp(input.as_bytes()).expect("input").items();
        assert_eq!(expected.matches("\"tagged.by\"").count() as u64, items);
        assert!(
            expected.contains("\"stringValue\": \"tagger\""),
            "{expected}"
        );
        let (input, expected) = otlp_fixture("logs", "tagger").expect("fixture");
        let items = read_otlp(input.as_bytes()).expect("input").items();
        assert_eq!(expected.matches("\"tagged.by\"").count() as u64, items);
    }

    #[test]
    fn rust_projects_depend_on_a_path_or_a_version_of_the_sdk() {
        assert_eq!(sdk_dependency("0.2"), "weft-guest = \"0.2\"");
        assert_eq!(
            sdk_dependency("/opt/weft/guests/sdk"),
            "weft-guest = { path = \"/opt/weft/guests/sdk\" }"
        );
    }
}
