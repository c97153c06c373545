//! One component, two proxies: a corpus of requests goes through (a) weft's filter proxy running
//! the component and (b) Envoy 1.40 running the module `weft adapt` made of it. Both must answer
//! with the same statuses and bodies, and their upstreams must see the same requests.
//!
//! What is compared: the status; for local responses the body and the filter's headers; for
//! upstream responses the echo's method, path and body; what the upstream saw (method, path,
//! body, and every header except the ones each proxy adds by itself — see [`PROXY_OWN`]).
//! Intended differences, documented in docs/PROXY.md: Envoy adds `x-forwarded-proto`,
//! `x-request-id` and `x-envoy-expected-rq-timeout-ms`; hop-by-hop headers differ.

use std::path::Path;

use weft_tests::envoy::{
    Envoy, EnvoyConfig, HttpResponse, PROXY_OWN, Seen, Upstream, WasmFilter, http_request,
};
use weft_tests::guests;

/// One request of the corpus.
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static [u8],
}

fn get(path: &'static str, headers: &[(&'static str, &'static str)]) -> Req {
    Req {
        method: "GET",
        path,
        headers: headers.to_vec(),
        body: b"",
    }
}

fn post(path: &'static str, headers: &[(&'static str, &'static str)], body: &'static [u8]) -> Req {
    Req {
        method: "POST",
        path,
        headers: headers.to_vec(),
        body,
    }
}

/// What one proxy did with one request.
#[derive(Debug, PartialEq)]
struct Outcome {
    status: u16,
    /// For local responses: the body; for upstream answers: the echo without its headers.
    body: String,
    /// The filter-visible response headers (`retry-after`, `x-ratelimit-*`, `x-stream-marker`…).
    response_headers: Vec<(String, String)>,
    /// What the upstream saw, if the request reached it.
    upstream: Option<UpstreamSaw>,
}

/// What the upstream saw: method, path, the comparable headers, body.
type UpstreamSaw = (String, String, Vec<(String, String)>, String);

fn comparable_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| !PROXY_OWN.contains(&n.as_str()))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    h.sort();
    h
}

fn outcome(resp: HttpResponse, before: usize, seen: &[Seen]) -> Outcome {
    let upstream = seen.get(before).map(|s| {
        (
            s.method.clone(),
            s.path.clone(),
            comparable_headers(&s.headers),
            String::from_utf8_lossy(&s.body).into_owned(),
        )
    });
    let body = match (
        &upstream,
        serde_json::from_slice::<serde_json::Value>(&resp.body),
    ) {
        // The echo carries the headers each proxy added; compare the rest.
        (Some(_), Ok(mut echo)) if echo.get("headers").is_some() => {
            if let Some(o) = echo.as_object_mut() {
                o.remove("headers");
            }
            echo.to_string()
        }
        _ => resp.text(),
    };
    let response_headers = resp
        .headers
        .iter()
        .filter(|(n, _)| {
            n == "retry-after"
                || n.starts_with("x-ratelimit")
                || n.starts_with("x-stream")
                || n == "content-type" && upstream.is_none()
        })
        .cloned()
        .collect();
    Outcome {
        status: resp.status,
        body,
        response_headers,
        upstream,
    }
}

/// Runs `corpus` through weft's proxy and through Envoy with `component` and `config`.
fn differential(component: &str, config: &str, corpus: &[Req]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("filter.proxy.wasm");
    let adapted = weft_adapt::adapt(&std::fs::read(component).expect("component")).expect("adapts");
    std::fs::write(&module, adapted.module).expect("write");

    let envoy_up = Upstream::start().expect("upstream");
    let envoy = Envoy::start(
        &EnvoyConfig::new(envoy_up.addr())
            .wasm(WasmFilter::new("filter", &module, config))
            .to_yaml(),
        1,
    )
    .expect("envoy");

    let weft_up = Upstream::start().expect("upstream");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let running = rt.block_on(start_weft(component, config, weft_up.addr(), dir.path()));
    let weft_addr = running.proxies[0].address;

    for (i, req) in corpus.iter().enumerate() {
        let headers: Vec<(&str, &str)> = req.headers.clone();
        let before = weft_up.seen().len();
        let w = http_request(weft_addr, req.method, req.path, &headers, req.body)
            .expect("weft answers");
        let w = outcome(w, before, &weft_up.seen());
        let before = envoy_up.seen().len();
        let e = http_request(envoy.listener(), req.method, req.path, &headers, req.body)
            .expect("envoy answers");
        let e = outcome(e, before, &envoy_up.seen());
        assert_eq!(
            w, e,
            "request {i} ({} {}) differs: left weft, right Envoy",
            req.method, req.path
        );
    }
    rt.block_on(async move { drop(running) });
}

async fn start_weft(
    component: &str,
    config: &str,
    upstream: std::net::SocketAddr,
    dir: &Path,
) -> weft::Running {
    let yaml = format!(
        "proxies:\n  edge:\n    listen: 127.0.0.1:0\n    upstream: http://{upstream}\n    timeout: 5s\n    filters:\n      \
         - name: filter\n        component: {component:?}\n        config: {config}\n\
         service:\n  telemetry:\n    metrics: {{ address: none }}\n"
    );
    let config = weft::Config::parse(&yaml, dir).expect("config");
    let engine =
        weft_runtime::WeftEngine::new(weft_runtime::EngineSettings::default()).expect("engine");
    let host = weft_runtime::PluginHost::new(engine, weft_runtime::MetricsRegistry::default())
        .expect("host");
    weft::start(&config, &host).await.expect("start")
}

#[test]
fn ab_router_behaves_the_same_in_weft_and_envoy() {
    let users = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let mut corpus: Vec<Req> = users
        .iter()
        .map(|u| get("/", &[("x-user-id", u)]))
        .collect();
    corpus.push(get("/no-user", &[]));
    corpus.push(get(
        "/override",
        &[("x-user-id", "alice"), ("x-backend-version", "v9")],
    ));
    differential(
        guests::AB_ROUTER,
        r#"{"salt":"s1","split":[{"version":"v1","percent":50},{"version":"v2","percent":50}]}"#,
        &corpus,
    );
}

#[test]
fn rate_limit_behaves_the_same_in_weft_and_envoy() {
    let mut corpus = Vec::new();
    for _ in 0..4 {
        corpus.push(get("/", &[("x-user-id", "fred")]));
    }
    for _ in 0..5 {
        corpus.push(get("/", &[("x-user-id", "paula"), ("x-user-tier", "pro")]));
    }
    differential(
        guests::RATE_LIMIT,
        r#"{"window_seconds":3600,"limits":{"vip":10,"pro":4,"free":2}}"#,
        &corpus,
    );
}

#[test]
fn pii_mask_behaves_the_same_in_weft_and_envoy() {
    let json = [("content-type", "application/json")];
    let text = [("content-type", "text/plain")];
    let corpus = vec![
        post(
            "/a",
            &json,
            br#"{"card":"4111 1111 1111 1111","phone":"13812345678"}"#,
        ),
        post(
            "/b",
            &text,
            b"mail me at someone@example.com or call 13912345678",
        ),
        post(
            "/c",
            &json,
            br#"{"nested":{"list":["5500-0000-0000-0004","ok"]},"n":1}"#,
        ),
        post("/d", &json, b"not json but 4111111111111111"),
        get("/e", &[]),
        post("/f", &text, b""),
    ];
    differential(
        guests::HTTP_PII_MASK,
        r#"{"request":true,"response":true}"#,
        &corpus,
    );
}

#[test]
fn sampler_behaves_the_same_in_weft_and_envoy() {
    let corpus = vec![
        get(
            "/",
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
        ),
        get(
            "/",
            &[(
                "traceparent",
                "00-0af7651916cd43dd00000000000000ff-b7ad6b7169203331-01",
            )],
        ),
        get(
            "/",
            &[(
                "traceparent",
                "00-0af7651916cd43ddffffffffffffffff-b7ad6b7169203331-00",
            )],
        ),
        get("/", &[("traceparent", "garbage")]),
        get("/", &[]),
        get(
            "/",
            &[
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("x-b3-sampled", "1"),
            ],
        ),
    ];
    differential(guests::HTTP_SAMPLER, r#"{"percentage":50}"#, &corpus);
}

#[test]
fn local_responses_and_stream_state_behave_the_same_in_weft_and_envoy() {
    let corpus = vec![
        get("/", &[("x-request-marker", "m1")]),
        get("/", &[("x-fault", "1"), ("x-request-marker", "m2")]),
        get("/", &[("x-request-marker", "m3")]),
    ];
    differential(
        guests::HTTP_FAULT,
        r#"{"fault":"respond","when_header":"x-fault"}"#,
        &corpus,
    );
}
