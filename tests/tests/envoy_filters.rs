//! Every http-filter plugin, adapted by `weft adapt`, in a real Envoy 1.40 (V8) on loopback:
//! statuses, the headers and bodies the upstream sees, Envoy's log lines and its admin stats;
//! what Envoy does when a plugin panics under each failure policy; and 1000 concurrent streams
//! over 100 k requests (no state leaks between streams, no memory growth).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weft_tests::envoy::{Envoy, EnvoyConfig, UPSTREAM_STATUS_HEADER, Upstream, WasmFilter};
use weft_tests::guests;

/// Adapts `component` into `dir` and returns the module's path.
fn adapted(component: &str, dir: &Path, name: &str) -> PathBuf {
    let bytes = std::fs::read(component).unwrap_or_else(|e| panic!("{component}: {e}"));
    let adapted = weft_adapt::adapt(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = dir.join(format!("{name}.proxy.wasm"));
    std::fs::write(&out, adapted.module).expect("write the module");
    out
}

/// An upstream and an Envoy running one adapted plugin.
struct Setup {
    envoy: Envoy,
    upstream: Upstream,
    _dir: tempfile::TempDir,
}

fn start(component: &str, name: &str, config: &str, concurrency: u32) -> Setup {
    start_with(component, name, config, concurrency, |_| {})
}

fn start_with(
    component: &str,
    name: &str,
    config: &str,
    concurrency: u32,
    tweak: impl FnOnce(&mut EnvoyConfig),
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = adapted(component, dir.path(), name);
    let upstream = Upstream::start().expect("upstream");
    let mut cfg = EnvoyConfig::new(upstream.addr()).wasm(WasmFilter::new(name, module, config));
    tweak(&mut cfg);
    let envoy = Envoy::start(&cfg.to_yaml(), concurrency).expect("envoy starts");
    Setup {
        envoy,
        upstream,
        _dir: dir,
    }
}

impl Setup {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> weft_tests::envoy::HttpResponse {
        self.envoy
            .request("GET", path, headers, b"")
            .expect("request")
    }
}

#[test]
fn ab_router_sends_every_user_to_a_stable_version_in_both_builds() {
    let config =
        r#"{"salt":"exp-7","split":[{"version":"v1","percent":70},{"version":"v2","percent":30}]}"#;
    let router =
        guest_ab_router::AbRouter::from_settings(serde_json::from_str(config).expect("settings"))
            .expect("valid");
    for component in [guests::AB_ROUTER, guests::AB_ROUTER_UNKNOWN] {
        let s = start(component, "ab_router", config, 1);
        let mut counts = [0u64; 2];
        for i in 0..60 {
            let user = format!("user-{i}");
            let r = s.get("/", &[("x-user-id", &user)]);
            assert_eq!(r.status, 200, "{component}: {}", r.text());
            let want = router.choose(Some(&user));
            let seen = s.upstream.seen();
            let last = seen.last().expect("the upstream saw it");
            assert_eq!(
                last.header("x-backend-version"),
                Some(want),
                "{component}: {user}"
            );
            counts[usize::from(want == "v2")] += 1;
        }
        // The same user again gets the same version.
        s.get("/", &[("x-user-id", "user-3")]);
        let again = s
            .upstream
            .seen()
            .last()
            .and_then(|r| r.header("x-backend-version").map(String::from));
        assert_eq!(again.as_deref(), Some(router.choose(Some("user-3"))));
        counts[usize::from(router.choose(Some("user-3")) == "v2")] += 1;
        // No user id: the default (the first arm).
        s.get("/", &[]);
        assert_eq!(
            s.upstream
                .seen()
                .last()
                .and_then(|r| r.header("x-backend-version")),
            Some("v1")
        );
        counts[0] += 1;
        // Envoy's stats carry the plugin's counter, one per version.
        assert_eq!(
            s.envoy
                .wait_stat("wasmcustom.ab_requests.version.v1", counts[0]),
            Some(counts[0])
        );
        assert_eq!(
            s.envoy
                .wait_stat("wasmcustom.ab_requests.version.v2", counts[1]),
            Some(counts[1])
        );
    }
}

#[test]
fn rate_limit_answers_429_per_user_and_tier_and_workers_agree() {
    let config = r#"{"window_seconds":3600,"limits":{"vip":6,"pro":3,"free":2}}"#;
    let s = start(guests::RATE_LIMIT, "rate_limit", config, 2);
    // A free user: 2 requests pass, the third is refused with a JSON body and Retry-After.
    for _ in 0..2 {
        assert_eq!(s.get("/", &[("x-user-id", "fred")]).status, 200);
    }
    let r = s.get("/", &[("x-user-id", "fred")]);
    assert_eq!(r.status, 429, "{}", r.text());
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["tier"], "free");
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "retry-after {retry}");
    // Another user is not affected; a pro user gets 3.
    assert_eq!(s.get("/", &[("x-user-id", "gina")]).status, 200);
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            s.get("/", &[("x-user-id", "paul"), ("x-user-tier", "pro")])
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);

    // Two Envoy workers, 12 concurrent requests of one vip user (limit 6): the shared
    // key-value store with compare-and-swap lets exactly 5 more through after the first.
    assert_eq!(
        s.get("/", &[("x-user-id", "vera"), ("x-user-tier", "vip")])
            .status,
        200
    );
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                scope.spawn(|| {
                    s.get("/", &[("x-user-id", "vera"), ("x-user-tier", "vip")])
                        .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&c| c == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&c| c == 429).count(),
        7,
        "{statuses:?}"
    );
    // Refused requests never reached the upstream.
    let vera = s
        .upstream
        .seen()
        .iter()
        .filter(|r| r.header("x-user-id") == Some("vera"))
        .count();
    assert_eq!(vera, 6);
}

#[test]
fn audit_log_writes_one_record_per_request_to_envoys_log_and_stats() {
    let s = start(guests::AUDIT_LOG, "audit_log", "{}", 1);
    assert_eq!(
        s.get("/orders/42?x=1", &[("x-user-id", "alice")]).status,
        200
    );
    assert_eq!(
        s.get(
            "/missing",
            &[("x-user-id", "bob"), (UPSTREAM_STATUS_HEADER, "404")]
        )
        .status,
        404
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let records: Vec<serde_json::Value> = loop {
        let log = s.envoy.log();
        let records: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| l.find("audit {").map(|i| &l[i + "audit ".len()..]))
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        if records.len() >= 2 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(records.len(), 2, "{}", s.envoy.log());
    assert_eq!(records[0]["method"], "GET");
    assert_eq!(records[0]["path"], "/orders/42");
    assert_eq!(records[0]["status"], 200);
    assert_eq!(records[0]["user"], "alice");
    assert_eq!(records[0]["client_ip"], "127.0.0.1");
    assert_eq!(records[1]["status"], 404);
    assert_eq!(records[1]["user"], "bob");
    assert_eq!(
        s.envoy
            .wait_stat("wasmcustom.audit_requests.status_class.2xx", 1),
        Some(1)
    );
    assert_eq!(
        s.envoy
            .wait_stat("wasmcustom.audit_requests.status_class.4xx", 1),
        Some(1)
    );
}

#[test]
fn pii_mask_masks_request_and_response_bodies_with_the_right_length() {
    let s = start(
        guests::HTTP_PII_MASK,
        "pii_mask",
        r#"{"request":true,"response":false}"#,
        1,
    );
    let body = br#"{"card":"4111 1111 1111 1111","note":"call 13812345678 or a@b.example","n":7}"#;
    let r = s
        .envoy
        .request(
            "POST",
            "/submit",
            &[("content-type", "application/json")],
            body,
        )
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = s.upstream.seen();
    let up = seen.last().expect("upstream saw it");
    let text = String::from_utf8_lossy(&up.body);
    assert!(
        !text.contains("4111 1111 1111 1111") && !text.contains("13812345678"),
        "{text}"
    );
    assert!(!text.contains("a@b.example"), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&up.body).expect("still JSON");
    assert_eq!(json["n"], 7);
    if let Some(len) = up.header("content-length") {
        assert_eq!(len.parse::<usize>().expect("number"), up.body.len());
    }
    drop(s);

    // Response masking: the upstream echoes the card back; the client gets it masked.
    let s = start(
        guests::HTTP_PII_MASK,
        "pii_mask",
        r#"{"request":false,"response":true}"#,
        1,
    );
    let r = s
        .envoy
        .request(
            "POST",
            "/echo",
            &[("content-type", "application/json")],
            body,
        )
        .expect("request");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&s.upstream.seen()[0].body).contains("4111 1111 1111 1111"));
    let text = r.text();
    assert!(!text.contains("4111 1111 1111 1111"), "{text}");
    assert!(
        serde_json::from_slice::<serde_json::Value>(&r.body).is_ok(),
        "{text}"
    );
    assert!(
        s.envoy
            .stat("wasmcustom.pii_masked.kind.card.direction.response")
            .unwrap_or(0)
            >= 1,
        "{}",
        s.envoy.stats().unwrap_or_default()
    );
}

#[test]
fn sampler_sets_the_traceparent_flag_by_the_consistent_rule() {
    let s = start(guests::HTTP_SAMPLER, "sampler", r#"{"percentage":50}"#, 1);
    let t = guest_sampler::threshold(50.0);
    let mut kept = 0;
    for i in 0u64..64 {
        let lo = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let trace = format!("{:016x}{lo:016x}", 0x0af7_6519_16cd_43dd_u64 ^ i);
        let tp = format!("00-{trace}-b7ad6b7169203331-01");
        assert_eq!(s.get("/", &[("traceparent", &tp)]).status, 200);
        let seen = s.upstream.seen();
        let got = seen
            .last()
            .and_then(|r| r.header("traceparent"))
            .expect("traceparent")
            .to_string();
        let keep = (lo & ((1 << 56) - 1)) >= t;
        let want = format!(
            "00-{trace}-b7ad6b7169203331-{}",
            if keep { "01" } else { "00" }
        );
        assert_eq!(got, want, "trace {trace}");
        kept += usize::from(keep);
    }
    assert!(kept > 10 && kept < 54, "kept {kept} of 64 at 50 %");
    // No traceparent: left alone.
    s.get("/", &[]);
    assert_eq!(
        s.upstream
            .seen()
            .last()
            .and_then(|r| r.header("traceparent")),
        None
    );
}

#[test]
fn error_alert_fires_through_the_log_a_metric_and_an_outbound_call() {
    let alerts = Upstream::start().expect("alert sink");
    let config = r#"{"window_seconds":30,"threshold":0.2,"min_requests":10,
        "webhook":{"upstream":"alerts","path":"/alert","authority":"alerts"}}"#;
    let alerts_addr = alerts.addr();
    let s = start_with(guests::ERROR_ALERT, "error_alert", config, 1, |c| {
        c.clusters.push(("alerts".into(), alerts_addr));
    });
    for _ in 0..8 {
        assert_eq!(s.get("/", &[]).status, 200);
    }
    assert_eq!(
        s.envoy.stat("wasmcustom.error_alert_fired").unwrap_or(0),
        0,
        "no errors yet"
    );
    for _ in 0..6 {
        assert_eq!(s.get("/", &[(UPSTREAM_STATUS_HEADER, "503")]).status, 503);
    }
    assert_eq!(
        s.envoy.wait_stat("wasmcustom.error_alert_fired", 1),
        Some(1),
        "{}",
        s.envoy.log()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alerts.seen().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = alerts.seen();
    assert_eq!(seen.len(), 1, "one webhook call");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/alert");
    let alert: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("JSON alert");
    assert!(alert.to_string().contains("error"), "{alert}");
    assert!(
        s.envoy.log().contains("ALERT error-rate"),
        "{}",
        s.envoy.log()
    );
}

/// The http-fault plugin panics on requests with `x-fault`.
const PANIC_ON_HEADER: &str = r#"{"fault":"panic","when_header":"x-fault"}"#;

fn with_policy(policy: &'static str) -> impl FnOnce(&mut EnvoyConfig) {
    move |c| {
        if let Some(w) = c.wasm.as_mut() {
            w.failure_policy = Some(policy.into());
        }
    }
}

#[test]
fn a_panicking_plugin_with_fail_reload_answers_503_then_envoy_reloads_it() {
    let s = start_with(
        guests::HTTP_FAULT,
        "fault",
        PANIC_ON_HEADER,
        1,
        with_policy("FAIL_RELOAD"),
    );
    assert_eq!(s.get("/", &[]).status, 200);
    let r = s.get("/", &[("x-fault", "1")]);
    assert_eq!(r.status, 503, "{}", r.text());
    // The guest's panic message reaches Envoy's log through stderr → proxy_log.
    assert!(
        s.envoy.log().contains("fault injected"),
        "{}",
        s.envoy.log()
    );
    // Later requests work again, through a fresh VM (Envoy reloads after a backoff).
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let r = s.get("/", &[]);
        if r.status == 200 || Instant::now() > deadline {
            break r.status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200);
    let last = s.upstream.seen().last().cloned().expect("seen");
    assert_eq!(
        last.header("x-http-fault"),
        Some("passed"),
        "the filter ran again"
    );
    assert!(
        s.envoy.stat("wasm.fault.vm_reload_success").unwrap_or(0) >= 1,
        "{}",
        s.envoy.stats().unwrap_or_default()
    );
}

#[test]
fn a_panicking_plugin_with_fail_open_lets_later_requests_through_unfiltered() {
    let s = start_with(
        guests::HTTP_FAULT,
        "fault",
        PANIC_ON_HEADER,
        1,
        with_policy("FAIL_OPEN"),
    );
    assert_eq!(s.get("/", &[]).status, 200);
    // The stream whose callback trapped is failed by Envoy even when failing open.
    let r = s.get("/", &[("x-fault", "1")]);
    assert_eq!(r.status, 503, "{}", r.text());
    let r = s.get("/", &[]);
    assert_eq!(r.status, 200);
    // The VM stays dead: requests pass, but without the filter.
    let last = s.upstream.seen().last().cloned().expect("seen");
    assert_eq!(last.header("x-http-fault"), None);
}

#[test]
fn a_panicking_plugin_with_fail_closed_answers_503_from_then_on() {
    let s = start_with(
        guests::HTTP_FAULT,
        "fault",
        PANIC_ON_HEADER,
        1,
        with_policy("FAIL_CLOSED"),
    );
    assert_eq!(s.get("/", &[]).status, 200);
    assert_eq!(s.get("/", &[("x-fault", "1")]).status, 503);
    assert_eq!(s.get("/", &[]).status, 503, "Envoy keeps the dead VM");
}

#[test]
fn a_plugin_that_rejects_its_configuration_keeps_envoy_from_starting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = adapted(guests::AB_ROUTER, dir.path(), "ab_router");
    let upstream = Upstream::start().expect("upstream");
    let cfg = EnvoyConfig::new(upstream.addr()).wasm(WasmFilter::new(
        "ab_router",
        module,
        r#"{"split":[{"version":"a","percent":10}]}"#,
    ));
    let err = Envoy::start(&cfg.to_yaml(), 1)
        .err()
        .expect("Envoy refuses the filter");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("add up to 10"),
        "the plugin's own message is in Envoy's log: {msg}"
    );
}
