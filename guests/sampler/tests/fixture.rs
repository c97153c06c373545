//! Runs the sampler over `fixtures/traces-mixed.json`, the fixture the README shows, so the
//! README's before/after stays true.

use guest_sampler::{Sampler, SamplerConfig};
use serde_json::Value as Json;
use weft_guest::{Config, KeyValue, Span, SpanKind, Status, StatusCode, TraceId, Value};

/// Parses a hex string of up to 16 digits.
fn hex_u64(text: &str) -> u64 {
    u64::from_str_radix(text, 16).expect("hex id")
}

fn str_field<'a>(json: &'a Json, key: &str) -> &'a str {
    json.get(key).and_then(Json::as_str).unwrap_or_default()
}

/// The spans of an OTLP/JSON document, with the attributes this test needs (strings and ints).
fn spans_of(doc: &Json) -> Vec<Span> {
    let mut spans = Vec::new();
    let empty = Vec::new();
    let list = |json: &Json, key: &str| json.get(key).and_then(Json::as_array).cloned();
    for rs in list(doc, "resourceSpans").unwrap_or_default() {
        for ss in list(&rs, "scopeSpans").unwrap_or_default() {
            for s in list(&ss, "spans").unwrap_or_default() {
                let trace = str_field(&s, "traceId");
                let attributes = s
                    .get("attributes")
                    .and_then(Json::as_array)
                    .unwrap_or(&empty)
                    .iter()
                    .map(|kv| {
                        let v = &kv["value"];
                        let value = match (v.get("stringValue"), v.get("intValue")) {
                            (Some(Json::String(s)), _) => Value::Str(s.clone()),
                            (_, Some(Json::String(i))) => Value::Int(i.parse().expect("int")),
                            _ => Value::Empty,
                        };
                        KeyValue {
                            key: str_field(kv, "key").to_string(),
                            value,
                        }
                    })
                    .collect();
                let code = match s["status"].get("code").and_then(Json::as_u64) {
                    Some(1) => StatusCode::Ok,
                    Some(2) => StatusCode::Error,
                    _ => StatusCode::Unset,
                };
                spans.push(Span {
                    trace_id: TraceId {
                        hi: hex_u64(&trace[..16]),
                        lo: hex_u64(&trace[16..]),
                    },
                    span_id: hex_u64(str_field(&s, "spanId")),
                    trace_state: str_field(&s, "traceState").to_string(),
                    parent_span_id: s.get("parentSpanId").and_then(Json::as_str).map(hex_u64),
                    flags: 0,
                    name: str_field(&s, "name").to_string(),
                    kind: SpanKind::Internal,
                    start_time_unix_nano: 0,
                    end_time_unix_nano: 0,
                    attributes,
                    dropped_attributes_count: 0,
                    events: Vec::new(),
                    dropped_events_count: 0,
                    links: Vec::new(),
                    dropped_links_count: 0,
                    status: Status {
                        code,
                        message: String::new(),
                    },
                });
            }
        }
    }
    spans
}

fn run(config: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/traces-mixed.json"
    ))
    .expect("fixture");
    let doc: Json = serde_json::from_str(&text).expect("fixture is JSON");
    let spans = spans_of(&doc);
    assert_eq!(spans.len(), 21);
    let config: SamplerConfig = Config::from_json(config)
        .and_then(|c| c.parse())
        .expect("config");
    let sampler = Sampler::from_config(&config).expect("config");
    let (kept, tally) = sampler.sample_spans(spans);
    assert_eq!(tally.kept + tally.dropped, 21);
    kept.into_iter().map(|s| (s.name, s.trace_state)).collect()
}

#[test]
fn the_readme_example_keeps_what_it_says() {
    let kept = run(r#"{"percentage": 10, "routes": [{"prefix": "/pay", "percentage": 100}]}"#);
    let th = "ot=th:e6666666666666";
    let expected = [
        ("GET /search", "ot=th:e6666666666666,congo=t61rcWkgMzE"),
        ("search index", "ot=th:e6666666666666,congo=t61rcWkgMzE"),
        ("rank", "ot=th:e6666666666666,congo=t61rcWkgMzE"),
        (
            "GET /search/suggest",
            "ot=th:e6666666666666,congo=t61rcWkgMzE",
        ),
        ("GET /orders", th),
        ("SELECT orders", th),
        ("serialize", th),
        ("GET /pay", ""),
        ("POST /pay/charge", ""),
        ("POST /pay/refund", ""),
        ("GET /pay/status", ""),
        ("ledger read", ""),
    ];
    let kept: Vec<(&str, &str)> = kept.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    assert_eq!(kept, expected);
}

#[test]
fn at_25_percent_one_more_trace_is_kept_whole() {
    let kept = run(r#"{"percentage": 25, "keep_errors": false}"#);
    let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "GET /users/{id}",
            "SELECT users",
            "cache get",
            "render",
            "GET /search",
            "search index",
            "rank",
            "GET /search/suggest",
            "GET /orders",
            "SELECT orders",
            "serialize",
        ]
    );
    // D arrived with th:8 (50 %) and leaves with 25 %'s th:c.
    assert!(
        kept.iter()
            .any(|(n, t)| n == "GET /orders" && t == "ot=th:c")
    );
}
