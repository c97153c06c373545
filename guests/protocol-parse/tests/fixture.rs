//! Runs the parser over `fixtures/logs-logfmt-and-legacy.json`, the fixture the README shows,
//! so the README's before/after stays true.

use guest_protocol_parse::{ParseConfig, Parser, Tally};
use serde_json::Value as Json;
use weft_guest::{AttributesExt, Config, LogRecord, Value};

fn records() -> Vec<LogRecord> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/logs-logfmt-and-legacy.json"
    ))
    .expect("fixture");
    let doc: Json = serde_json::from_str(&text).expect("fixture is JSON");
    let u64_of = |r: &Json, key: &str| {
        r.get(key)
            .and_then(Json::as_str)
            .map_or(0, |s| s.parse().expect("int64 as a string"))
    };
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| LogRecord {
            time_unix_nano: u64_of(r, "timeUnixNano"),
            observed_time_unix_nano: u64_of(r, "observedTimeUnixNano"),
            severity_number: r
                .get("severityNumber")
                .and_then(Json::as_u64)
                .map_or(0, |n| n as u32),
            severity_text: r
                .get("severityText")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
            body: r["body"]["stringValue"]
                .as_str()
                .map(|s| Value::Str(s.into())),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            flags: 0,
            trace_id: None,
            span_id: None,
            event_name: String::new(),
        })
        .collect()
}

#[test]
fn the_readme_example_parses_what_it_says() {
    let config: ParseConfig = Config::from_json(r#"{"keep_original": true}"#)
        .and_then(|c| c.parse())
        .expect("config");
    let parser = Parser::from_config(&config).expect("config");
    let mut records = records();
    let before = records.clone();
    let tally = parser.parse_records(&mut records);
    assert_eq!(
        tally,
        Tally {
            parsed: 5,
            unparsed: 1
        }
    );

    let body = |r: &LogRecord| r.body.as_ref().and_then(Value::as_str).map(str::to_string);
    let [order, retry, cache, declined, ledger, exception] = &records[..] else {
        panic!("six records");
    };

    assert_eq!(body(order).as_deref(), Some("order placed"));
    assert_eq!(
        (order.severity_number, order.severity_text.as_str()),
        (9, "info")
    );
    assert_eq!(
        order.attributes.get_value("order_id"),
        Some(&Value::Int(8123))
    );
    assert_eq!(
        order.attributes.get_value("amount"),
        Some(&Value::Double(42.5))
    );
    assert_eq!(order.attributes.get_str("customer"), Some("00042"));
    assert_eq!(
        order.attributes.get_value("express"),
        Some(&Value::Boolean(true))
    );
    assert_eq!(order.time_unix_nano, 1_544_712_660_000_000_000);

    assert_eq!(
        body(retry).as_deref(),
        Some(r#"payment retry with "backup" gateway"#)
    );
    assert_eq!(retry.severity_number, 13);
    assert_eq!(retry.attributes.get_value("attempt"), Some(&Value::Int(2)));

    // The sender's severity stays; the level is kept as an attribute.
    assert_eq!(
        (cache.severity_number, cache.severity_text.as_str()),
        (17, "ERROR")
    );
    assert_eq!(cache.attributes.get_str("level"), Some("debug"));
    assert_eq!(cache.attributes.get_str("key"), Some("user:17"));

    assert_eq!(
        body(declined).as_deref(),
        Some("card declined: insufficient funds")
    );
    assert_eq!(declined.time_unix_nano, 1_544_712_665_000_000_000);
    assert_eq!(
        (declined.severity_number, declined.severity_text.as_str()),
        (17, "ERROR")
    );
    assert_eq!(
        declined.attributes.get_str("legacy.service"),
        Some("payments")
    );
    assert_eq!(
        declined.attributes.get_str("legacy.txn_id"),
        Some("9f86d081884c7d65")
    );
    assert_eq!(ledger.attributes.get_str("legacy.service"), Some("ledger"));
    assert_eq!(ledger.time_unix_nano, 1_544_712_666_000_000_000);

    for (after, before) in records.iter().zip(&before).take(5) {
        assert_eq!(
            after.attributes.get_str("log.original"),
            before.body.as_ref().and_then(Value::as_str)
        );
    }
    assert_eq!(exception, &before[5], "unparseable line unchanged");
}
