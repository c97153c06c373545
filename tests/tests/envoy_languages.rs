//! HTTP filters written in JavaScript and Python, built from the repository with `weft build`
//! (componentize-js from tests/peers/node, componentize-py from .venv), run by weft's filter
//! proxy and — after `weft adapt` — by a real Envoy 1.40 (V8), on 127.0.0.1.
//!
//! `guests/js/edge-filter` and `guests/python/edge-filter` do the same thing: a local 403 for
//! `/deny…` with a log line, a request header, a `text/plain` request body buffered and its
//! digits replaced (content-length rewritten), a response header, and a counter with a label.
//! One request corpus goes through every proxy; the statuses, what the upstream saw (method,
//! path, filter-visible headers, body) and the filter's response header must be the same, and
//! Envoy must show the plugin's counter in its stats and its line in its log.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use weft_tests::envoy::{Envoy, EnvoyConfig, PROXY_OWN, Upstream, WasmFilter, http_request};
use weft_tests::workspace;

/// Builds `guests/<lang>/edge-filter` once per test binary. `js-wasi` is the JavaScript filter
/// built with componentize-js's stdio, random and clocks features left on (only `http` and
/// `fetch-event` disabled): its SpiderMonkey module then imports WASI preview 1 through
/// wit-component's adapter module, so the component is 4 core modules to link.
fn component(lang: &str) -> PathBuf {
    static JS: OnceLock<PathBuf> = OnceLock::new();
    static JS_WASI: OnceLock<PathBuf> = OnceLock::new();
    static PY: OnceLock<PathBuf> = OnceLock::new();
    let cell = match lang {
        "js" => &JS,
        "js-wasi" => &JS_WASI,
        _ => &PY,
    };
    cell.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("languages");
        std::fs::create_dir_all(&out_dir).expect("scratch");
        let out = out_dir.join(format!("edge-{lang}.wasm"));
        let tools = weft::builder::Tools {
            componentize_py: Some(workspace().join(".venv/bin/componentize-py")),
            componentize_js: Some(
                workspace().join("tests/peers/node/node_modules/.bin/componentize-js"),
            ),
        };
        let mut project = workspace().join("guests").join(lang).join("edge-filter");
        if lang == "js-wasi" {
            project = out_dir.join("js-wasi-edge-filter");
            let _ = std::fs::remove_dir_all(&project);
            std::fs::create_dir_all(&project).expect("project dir");
            let js = workspace().join("guests/js/edge-filter");
            std::fs::copy(js.join("app.js"), project.join("app.js")).expect("app.js");
            let manifest = std::fs::read_to_string(js.join("package.json")).expect("package.json");
            let wit = workspace().join("wit").display().to_string();
            let manifest = manifest
                .replace("\"../../../wit\"", &format!("{wit:?}"))
                .replace(
                    r#"["http", "fetch-event", "stdio", "random", "clocks"]"#,
                    r#"["http", "fetch-event"]"#,
                );
            assert!(manifest.contains(r#""disable": ["http", "fetch-event"]"#), "{manifest}");
            std::fs::write(project.join("package.json"), manifest).expect("package.json");
        }
        weft::builder::build_with(&project, Some(&out), &tools).unwrap_or_else(|e| {
            panic!(
                "building {}: {e:#} (the tools come from `bash tests/peers/setup-python.sh` and `bash tests/peers/setup-node.sh`)",
                project.display()
            )
        });
        out
    })
    .clone()
}

/// One request of the corpus: method, path, headers, body.
type Req = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [u8],
);

const CORPUS: &[Req] = &[
    ("GET", "/hello", &[], b""),
    ("GET", "/deny/this?x=1", &[("x-user-id", "alice")], b""),
    (
        "POST",
        "/submit",
        &[("content-type", "text/plain")],
        b"card 4111 1111 1111 1111, pin 1234",
    ),
    (
        "POST",
        "/submit",
        &[("content-type", "application/json")],
        b"{\"n\": 42}",
    ),
    ("GET", "/deny", &[], b""),
];

/// What the upstream saw: method, path, filter-visible headers, body.
type UpstreamSaw = (String, String, Vec<(String, String)>, String);

/// What a proxy did with one request.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: u16,
    served_by: Option<String>,
    /// The body, for local responses.
    local_body: Option<String>,
    /// What the upstream saw.
    upstream: Option<UpstreamSaw>,
}

fn run_corpus(addr: std::net::SocketAddr, upstream: &Upstream) -> Vec<Outcome> {
    CORPUS
        .iter()
        .map(|(method, path, headers, body)| {
            let before = upstream.seen().len();
            let resp = http_request(addr, method, path, headers, body).expect("answered");
            let seen = upstream.seen().get(before).map(|s| {
                let mut h: Vec<(String, String)> = s
                    .headers
                    .iter()
                    .filter(|(n, _)| !PROXY_OWN.contains(&n.as_str()))
                    .cloned()
                    .collect();
                h.sort();
                (
                    s.method.clone(),
                    s.path.clone(),
                    h,
                    String::from_utf8_lossy(&s.body).into_owned(),
                )
            });
            Outcome {
                status: resp.status,
                served_by: resp.header("x-edge-served-by").map(String::from),
                local_body: seen.is_none().then(|| resp.text()),
                upstream: seen,
            }
        })
        .collect()
}

/// The corpus through weft's filter proxy running `component` with `config`.
fn through_weft(component: &Path, config: &str) -> Vec<Outcome> {
    let upstream = Upstream::start().expect("upstream");
    let yaml = format!(
        "proxies:\n  edge:\n    listen: 127.0.0.1:0\n    upstream: http://{}\n    timeout: 5s\n    filters:\n      \
         - name: edge\n        component: {component:?}\n        config: {config}\n\
         service:\n  telemetry:\n    metrics: {{ address: none }}\n",
        upstream.addr()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = weft::Config::parse(&yaml, dir.path()).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = weft_tests::host_with_cache(None).expect("host");
    let running = rt
        .block_on(weft::start(&config, &host))
        .expect("weft starts");
    let addr = running.proxies[0].address;
    let outcomes = run_corpus(addr, &upstream);
    rt.block_on(running.shutdown(std::time::Duration::from_secs(5)));
    outcomes
}

/// What the filter must do with the corpus, whatever the proxy (`lang`: what it reports).
fn check_expected(outcomes: &[Outcome], lang: &str) {
    let lang_header = ("x-edge-lang".to_string(), lang.to_string());
    assert_eq!(outcomes[0].status, 200);
    let up = outcomes[0]
        .upstream
        .as_ref()
        .expect("/hello reaches the upstream");
    assert!(up.2.contains(&lang_header), "{:?}", up.2);
    assert_eq!(outcomes[0].served_by.as_deref(), Some(lang));
    for denied in [&outcomes[1], &outcomes[4]] {
        assert_eq!(denied.status, 403, "{denied:?}");
        assert_eq!(denied.upstream, None);
        assert_eq!(denied.local_body.as_deref(), Some("{\"error\":\"denied\"}"));
    }
    let masked = outcomes[2]
        .upstream
        .as_ref()
        .expect("the text body reaches the upstream");
    assert_eq!(masked.3, "card #### #### #### ####, pin ####");
    assert!(
        masked.2.contains(&("content-length".into(), "34".into())),
        "content-length follows the body: {:?}",
        masked.2
    );
    let json = outcomes[3]
        .upstream
        .as_ref()
        .expect("the json body reaches the upstream");
    assert_eq!(json.3, "{\"n\": 42}");
}

/// Adapts `component`, runs the corpus through Envoy, checks its stats and log.
fn through_envoy(component: &Path, config: &str, lang: &str) -> Vec<Outcome> {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(component).expect("component");
    let adapted =
        weft_adapt::adapt(&bytes).unwrap_or_else(|e| panic!("weft adapt ({lang}): {e:#}"));
    let module = dir.path().join("edge.proxy.wasm");
    std::fs::write(&module, adapted.module).expect("write");
    let upstream = Upstream::start().expect("upstream");
    let envoy = Envoy::start(
        &EnvoyConfig::new(upstream.addr())
            .wasm(WasmFilter::new("edge", &module, config))
            .to_yaml(),
        1,
    )
    .expect("envoy starts with the adapted filter");
    let outcomes = run_corpus(envoy.listener(), &upstream);
    for (outcome, want) in [("passed", 3), ("denied", 2), ("masked", 1)] {
        let stat = format!("wasmcustom.edge_requests.outcome.{outcome}");
        assert_eq!(
            envoy.wait_stat(&stat, want),
            Some(want),
            "{stat} ({lang}); outcomes {outcomes:?}; Envoy's log:\n{}",
            envoy.log()
        );
    }
    let log = envoy.log();
    assert!(
        log.contains("edge-filter: denied /deny/this?x=1")
            && log.contains("edge-filter: denied /deny"),
        "the plugin's log lines are not in Envoy's log ({lang}):\n{log}"
    );
    outcomes
}

/// The corpus through weft's filter proxy, checked, then through Envoy: the same outcomes.
fn same_in_weft_and_envoy(component: &Path, lang: &str) {
    let weft = through_weft(component, "{}");
    check_expected(&weft, lang);
    let envoy = through_envoy(component, "{}", lang);
    assert_eq!(weft, envoy, "left weft, right Envoy");
}

#[test]
fn a_javascript_filter_behaves_the_same_in_weft_and_adapted_in_envoy() {
    same_in_weft_and_envoy(&component("js"), "js");
}

/// With WASI stdio, clocks and random on, the component links SpiderMonkey with wit-component's
/// preview1 adapter: `weft adapt` links the two and maps poll, streams, clocks and random onto
/// Proxy-Wasm. It must behave as the JavaScript filter built without them.
#[test]
fn a_javascript_filter_with_wasi_features_adapts_and_behaves_the_same_in_envoy() {
    let js = component("js-wasi");
    let adapted = weft_adapt::adapt(&std::fs::read(&js).expect("component")).expect("adapts");
    assert!(
        adapted.core_modules > 1,
        "{} core modules",
        adapted.core_modules
    );
    same_in_weft_and_envoy(&js, "js");
}

#[test]
fn the_python_and_javascript_filters_do_the_same_in_weft() {
    let py = through_weft(&component("python"), r#"{"lang": "edge"}"#);
    let js = through_weft(&component("js"), r#"{"lang": "edge"}"#);
    check_expected(&py, "edge");
    assert_eq!(py, js, "left Python, right JavaScript");
}

/// componentize-py's component is 14 core modules linked when it is instantiated (libc,
/// libpython, the runtime and the bindings as `dylink.0` shared libraries); `weft adapt` links
/// them into one module, then fuses the glue in. The result must behave in Envoy as the same
/// component does in weft.
#[test]
fn a_python_filter_behaves_the_same_in_weft_and_adapted_in_envoy() {
    same_in_weft_and_envoy(&component("python"), "python");
}
