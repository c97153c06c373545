//! Envoy 1.40 as a test peer: the harness (tests/envoy.rs) proxies through a stock Envoy with and
//! without a Proxy-Wasm filter, and every example in examples/envoy/ passes
//! `envoy --mode validate`. Envoy must be installed (tests/peers/setup-python.sh, or
//! `WEFT_ENVOY`): these tests fail without it, they do not skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weft_tests::envoy::{Envoy, EnvoyConfig, Upstream, WasmFilter, native_filter, validate};
use weft_tests::{guests, workspace};

#[test]
fn plain_envoy_proxies_to_the_upstream_and_counts_requests() -> anyhow::Result<()> {
    let upstream = Upstream::start()?;
    let envoy = Envoy::start(&EnvoyConfig::new(upstream.addr()).to_yaml(), 1)?;
    assert!(envoy.listener_url().starts_with("http://127.0.0.1:"));

    let ok = envoy.request("GET", "/hello?x=1", &[("x-test", "yes")], b"")?;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let echo: serde_json::Value = serde_json::from_slice(&ok.body)?;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["headers"]["x-test"], "yes");
    // Envoy's own request headers prove the request went through it.
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert!(echo["headers"]["x-request-id"].is_string(), "{echo}");
    assert_eq!(ok.header("server"), Some("envoy"));

    let failed = envoy.request(
        "POST",
        "/orders",
        &[("x-upstream-status", "503"), ("content-type", "text/plain")],
        b"ping",
    )?;
    assert_eq!(failed.status, 503);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("POST", "/orders")
    );
    assert_eq!(seen[1].body, b"ping");

    assert_eq!(
        envoy.wait_stat("http.ingress.downstream_rq_2xx", 1),
        Some(1)
    );
    assert_eq!(
        envoy.wait_stat("http.ingress.downstream_rq_5xx", 1),
        Some(1)
    );
    assert_eq!(
        envoy.wait_stat("cluster.upstream.upstream_rq_total", 2),
        Some(2)
    );
    assert!(envoy.rss_kib()? > 1024, "an Envoy uses more than 1 MiB");
    assert!(envoy.log().contains("starting main dispatch loop"));
    Ok(())
}

const SPLIT: &str = r#"{"salt":"exp-42","default":"v0",
    "split":[{"version":"v1","percent":50},{"version":"v2","percent":50}]}"#;

#[test]
fn native_sdk_filter_sets_the_backend_version_in_envoy() -> anyhow::Result<()> {
    let upstream = Upstream::start()?;
    let config = EnvoyConfig::new(upstream.addr()).wasm(WasmFilter::new(
        "ab-router",
        native_filter()?,
        SPLIT,
    ));
    // Two workers: the filter runs in a VM per worker, and the metrics add up across them.
    let envoy = Envoy::start(&config.to_yaml(), 2)?;

    // The component's own logic says which version each user must get.
    let expected = guest_ab_router::AbRouter::from_settings(serde_json::from_str(SPLIT)?)?;
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    for user in &users {
        let r = envoy.request("GET", "/", &[("x-user-id", user)], b"")?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = envoy.request("GET", "/", &[], b"")?;
    assert_eq!(r.status, 200);

    let seen = upstream.seen();
    assert_eq!(seen.len(), users.len() + 1);
    let mut per_version = BTreeMap::new();
    for s in &seen {
        let user = s.header("x-user-id");
        let got = s.header("x-backend-version");
        assert_eq!(got, Some(expected.choose(user)), "user {user:?}");
        *per_version.entry(got.unwrap_or_default()).or_insert(0u64) += 1;
    }
    assert_eq!(per_version.get("v0"), Some(&1), "{per_version:?}");
    assert!(per_version.get("v1") > Some(&5) && per_version.get("v2") > Some(&5));

    for (version, n) in &per_version {
        let stat = format!("wasmcustom.ab_requests.version.{version}");
        assert_eq!(envoy.wait_stat(&stat, *n), Some(*n), "{stat}");
    }
    Ok(())
}

#[test]
fn a_plugin_that_refuses_its_configuration_stops_envoy_from_starting() -> anyhow::Result<()> {
    let upstream = Upstream::start()?;
    let config = EnvoyConfig::new(upstream.addr()).wasm(WasmFilter::new(
        "ab-router",
        native_filter()?,
        r#"{"splitt": []}"#,
    ));
    let Err(e) = Envoy::start(&config.to_yaml(), 1) else {
        panic!("Envoy started with a configuration the plugin refuses");
    };
    let e = format!("{e:#}");
    assert!(e.contains("unknown field `splitt`"), "{e}");
    assert!(e.contains("Unable to create Wasm plugin ab-router"), "{e}");
    Ok(())
}

/// The plugins with an example in examples/envoy/ (`<plugin>.yaml`, loading
/// `/etc/weft/<plugin>.proxy.wasm`) and their components.
const EXAMPLES: &[(&str, &str)] = &[
    ("ab-router", guests::AB_ROUTER),
    ("audit-log", guests::AUDIT_LOG),
    ("rate-limit", guests::RATE_LIMIT),
    ("error-alert", guests::ERROR_ALERT),
    ("http-sampler", guests::HTTP_SAMPLER),
    ("http-pii-mask", guests::HTTP_PII_MASK),
];

/// `envoy --mode validate` loads every Wasm module (V8 compiles it and runs `_initialize`,
/// `proxy_on_vm_start` and `proxy_on_configure`), so the module must exist and accept the
/// example's plugin configuration: each example is checked with its plugin's component adapted
/// by `weft adapt` (the library behind it), as it would be deployed.
#[test]
fn every_envoy_example_passes_envoy_validate() -> anyhow::Result<()> {
    let envoy = weft_tests::envoy::envoy_binary()?;
    let dir = tempfile::tempdir()?;
    let examples = workspace().join("examples/envoy");
    for (plugin, component) in EXAMPLES {
        let adapted = weft_adapt::adapt(&std::fs::read(component)?)
            .map_err(|e| anyhow::anyhow!("weft adapt {component}: {e}"))?;
        let module = dir.path().join(format!("{plugin}.proxy.wasm"));
        std::fs::write(&module, adapted.module)?;
        let config = with_module(&examples, plugin, &module, dir.path())?;
        let out = validate(&envoy, &config, dir.path())?;
        assert!(out.contains("OK"), "{plugin}: {out}");
    }
    Ok(())
}

/// What `envoy --mode validate` checks of a Wasm filter, shown with the native SDK filter (no
/// adapter involved): the module file must exist, and its `proxy_on_configure` runs.
#[test]
fn envoy_validate_needs_the_module_and_runs_its_configuration() -> anyhow::Result<()> {
    let envoy = weft_tests::envoy::envoy_binary()?;
    let dir = tempfile::tempdir()?;
    let examples = workspace().join("examples/envoy");

    let missing = with_module(
        &examples,
        "ab-router",
        &dir.path().join("absent.wasm"),
        dir.path(),
    )?;
    let e = format!(
        "{:#}",
        validate(&envoy, &missing, dir.path()).expect_err("no module")
    );
    assert!(e.contains("Invalid path"), "{e}");

    // The native filter refuses rate-limit's configuration: validate ran proxy_on_configure.
    let wrong = with_module(&examples, "rate-limit", &native_filter()?, dir.path())?;
    let e = format!(
        "{:#}",
        validate(&envoy, &wrong, dir.path()).expect_err("bad config")
    );
    assert!(e.contains("ab-router: invalid config"), "{e}");
    Ok(())
}

/// The ab-router example as it is (ports aside), with the native SDK filter as its module: each
/// user reaches the backend cluster of the version the filter chose, because Envoy picks the
/// route after the Wasm filter changed the request headers.
#[test]
fn ab_router_example_routes_each_version_to_its_cluster() -> anyhow::Result<()> {
    let (v1, v2) = (Upstream::start()?, Upstream::start()?);
    let dir = tempfile::tempdir()?;
    let config = with_module(
        &workspace().join("examples/envoy"),
        "ab-router",
        &native_filter()?,
        dir.path(),
    )?;
    let yaml = std::fs::read_to_string(&config)?
        .replace("port_value: 10000", "port_value: 0")
        .replace("port_value: 9901", "port_value: 0")
        .replace(
            "port_value: 8081",
            &format!("port_value: {}", v1.addr().port()),
        )
        .replace(
            "port_value: 8082",
            &format!("port_value: {}", v2.addr().port()),
        );
    let envoy = Envoy::start(&yaml, 1)?;
    for i in 0..200 {
        let user = format!("user-{i}");
        let r = envoy.request("GET", "/", &[("x-user-id", &user)], b"")?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let (s1, s2) = (v1.seen(), v2.seen());
    assert_eq!(s1.len() + s2.len(), 200);
    assert!(
        s1.iter()
            .all(|s| s.header("x-backend-version") == Some("v1"))
    );
    assert!(
        s2.iter()
            .all(|s| s.header("x-backend-version") == Some("v2"))
    );
    // 10 % of 200 users, give or take.
    assert!((5..=40).contains(&s2.len()), "v2 got {} of 200", s2.len());
    Ok(())
}

/// Copies examples/envoy/<plugin>.yaml into `dir` with its module path replaced by `module`.
fn with_module(
    examples: &Path,
    plugin: &str,
    module: &Path,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let yaml = std::fs::read_to_string(examples.join(format!("{plugin}.yaml")))?;
    let load = format!("filename: /etc/weft/{plugin}.proxy.wasm");
    anyhow::ensure!(
        yaml.matches(&load).count() == 1,
        "{plugin}.yaml should have `{load}` once"
    );
    let out = dir.join(format!("{plugin}.yaml"));
    let module = serde_json::Value::from(module.to_string_lossy()).to_string();
    std::fs::write(&out, yaml.replace(&load, &format!("filename: {module}")))?;
    Ok(out)
}
