//! Native unit tests of the masking (no host: nothing here reaches a host import).

use super::*;
use weft_guest::{
    AnyValue, Event, Link, LogRecord, Resource, Scope, Span, SpanKind, Status, StatusCode, TraceId,
};

/// `text` masked with the default configuration.
fn masked(text: &str) -> String {
    masked_with("", text)
}

/// `text` masked with the configuration JSON `config`.
fn masked_with(config: &str, text: &str) -> String {
    let masker = Masker::from_json(config).expect("valid test configuration");
    let mut s = text.to_string();
    let changed = masker.mask_str(&mut s);
    assert_eq!(changed, s != text, "mask_str's result for {text:?}");
    s
}

/// The message of the configuration error `config` causes.
fn config_error(config: &str) -> String {
    match Masker::from_json(config) {
        Err(Error::InvalidConfig(msg)) => msg,
        other => panic!("expected InvalidConfig for {config}, got {other:?}"),
    }
}

fn kv(key: &str, value: impl Into<Value>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: value.into(),
    }
}

fn scope(attributes: Vec<KeyValue>) -> Scope {
    Scope {
        name: "test".into(),
        version: String::new(),
        attributes,
        dropped_attributes_count: 0,
        schema_url: String::new(),
    }
}

fn resource(attributes: Vec<KeyValue>) -> Resource {
    Resource {
        attributes,
        dropped_attributes_count: 0,
        schema_url: String::new(),
    }
}

fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: TraceId { hi: 1, lo: 2 },
        span_id: 3,
        trace_state: String::new(),
        parent_span_id: None,
        flags: 1,
        name: name.to_string(),
        kind: SpanKind::Server,
        start_time_unix_nano: 1_544_712_660_000_000_000,
        end_time_unix_nano: 1_544_712_661_000_000_000,
        attributes,
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Status {
            code: StatusCode::Unset,
            message: String::new(),
        },
    }
}

fn log_record(body: Option<Value>, attributes: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: 1_544_712_660_000_000_000,
        observed_time_unix_nano: 1_544_712_660_000_000_000,
        severity_number: 9,
        severity_text: "INFO".into(),
        body,
        attributes,
        dropped_attributes_count: 0,
        flags: 0,
        trace_id: None,
        span_id: None,
        event_name: String::new(),
    }
}

#[test]
fn visa_is_masked_with_spaces_dashes_or_no_separators() {
    assert_eq!(masked("4111 1111 1111 1111"), "4111 **** **** 1111");
    assert_eq!(masked("4111-1111-1111-1111"), "4111-****-****-1111");
    assert_eq!(masked("4111111111111111"), "4111********1111");
    assert_eq!(
        masked("paid with 4111 1111 1111 1111, thanks"),
        "paid with 4111 **** **** 1111, thanks"
    );
    // 13-digit Visa.
    assert_eq!(masked("4222222222222"), "4222*****2222");
}

#[test]
fn mastercard_and_amex_are_masked() {
    assert_eq!(masked("5555555555554444"), "5555********4444");
    assert_eq!(masked("5105-1051-0510-5100"), "5105-****-****-5100");
    assert_eq!(masked("2223003122003222"), "2223********3222");
    assert_eq!(masked("378282246310005"), "3782*******0005");
    assert_eq!(masked("3782 822463 10005"), "3782 ****** *0005");
    assert_eq!(masked("amex:371449635398431;"), "amex:3714*******8431;");
}

#[test]
fn card_followed_by_a_separate_number_is_still_masked() {
    // The run `4111111111111111 12` is too long as a whole; its first group is a card.
    assert_eq!(
        masked("card=4111111111111111 12/25"),
        "card=4111********1111 12/25"
    );
    // A grouped run that starts inside a word starts at its next group.
    assert_eq!(
        masked("ab12 4111 1111 1111 1111"),
        "ab12 4111 **** **** 1111"
    );
}

#[test]
fn luhn_invalid_numbers_are_untouched() {
    for text in [
        "order 4111111111111112",
        "4111 1111 1111 1112",
        "ref 5555555555554445 shipped",
    ] {
        assert_eq!(masked(text), text);
    }
}

#[test]
fn card_digits_inside_longer_tokens_are_untouched() {
    for text in [
        // A Luhn-valid 16-digit card inside a 22-digit and a 20-digit id.
        "id 4111111111111111000000",
        "txn 12344111111111111111",
        // Glued to letters or to a decimal point.
        "ref4111111111111111",
        "4111111111111111abc",
        "x=0.4111111111111111",
        "4111111111111111.5",
        // The 20-digit grouped run as a whole is not a card, and no group alone is one.
        "4111 1111 1111 1111 1234",
    ] {
        assert_eq!(masked(text), text);
    }
}

#[test]
fn timestamps_and_other_numbers_starting_with_1_are_not_cards() {
    // Luhn-valid, 19 and 13 digits, but card numbers do not start with 1.
    for text in [
        "1544712660000000006",
        "1700000000004",
        "start=1544712660000000006 ns",
    ] {
        assert_eq!(masked(text), text);
    }
}

#[test]
fn mainland_mobile_numbers_are_masked() {
    assert_eq!(masked("13812345678"), "138****5678");
    assert_eq!(masked("call 19912345678 now"), "call 199****5678 now");
    assert_eq!(masked("138 1234 5678"), "138 **** 5678");
    assert_eq!(masked("138-1234-5678"), "138-****-5678");
    assert_eq!(masked("手机号13812345678。"), "手机号138****5678。");
    assert_eq!(masked("phone:15012345678,"), "phone:150****5678,");
}

#[test]
fn country_code_86_is_kept_before_the_masked_number() {
    assert_eq!(masked("+8613812345678"), "+86138****5678");
    assert_eq!(masked("+86 13812345678"), "+86 138****5678");
    assert_eq!(masked("+86-138-1234-5678"), "+86-138-****-5678");
    assert_eq!(masked("8613812345678"), "86138****5678");
    assert_eq!(masked("0086 13812345678"), "0086 138****5678");
}

#[test]
fn phone_lookalikes_are_untouched() {
    for text in [
        // 12-digit and 14-digit runs.
        "138123456789",
        "13812345678901",
        // Second digit 2 (or 0, 1): not a mobile number.
        "12812345678",
        "11012345678",
        "10012345678",
        // Glued to letters.
        "user13812345678",
        "13812345678x",
        // Grouped, but not as 3-4-4.
        "1381 234 5678",
    ] {
        assert_eq!(masked(text), text);
    }
}

#[test]
fn emails_keep_the_first_character_and_the_domain() {
    assert_eq!(masked("user@example.com"), "u***@example.com");
    assert_eq!(masked("a@example.com"), "a***@example.com");
    assert_eq!(
        masked("Contact john.doe+billing@mail.example.co.uk."),
        "Contact j***@mail.example.co.uk."
    );
    assert_eq!(
        masked("to: <alice@example.org>, bob_1@example.net"),
        "to: <a***@example.org>, b***@example.net"
    );
    assert_eq!(
        masked("mailto:Jane.Roe@Example.COM"),
        "mailto:J***@Example.COM"
    );
    // The digits of an address belong to it: masked as an address, not as a phone.
    assert_eq!(masked("13812345678@139.com"), "1***@139.com");
    assert_eq!(masked("邮箱user@example.com。"), "邮箱u***@example.com。");
}

#[test]
fn email_lookalikes_are_untouched() {
    for text in [
        "user@localhost",
        "@example.com",
        "admin@10.0.0.1",
        "a@b",
        "user@example.",
        "u***@example.com",
        "no at sign here",
    ] {
        assert_eq!(masked(text), text);
    }
}

#[test]
fn all_detectors_in_one_string() {
    assert_eq!(
        masked("card 4111111111111111 phone 13812345678 mail user@example.com order 12345"),
        "card 4111********1111 phone 138****5678 mail u***@example.com order 12345"
    );
}

#[test]
fn masking_twice_changes_nothing_more() {
    let masker = Masker::default();
    let mut s = "4111 1111 1111 1111 / +86 138 1234 5678 / user@example.com".to_string();
    assert!(masker.mask_str(&mut s));
    assert_eq!(
        s,
        "4111 **** **** 1111 / +86 138 **** 5678 / u***@example.com"
    );
    assert!(!masker.mask_str(&mut s));
}

#[test]
fn strings_without_pii_are_not_copied() {
    let masker = Masker::default();
    for text in [
        "GET /api/v1/users/12345",
        "",
        "plain text",
        "2024-06-01T12:00:00Z",
    ] {
        let mut s = text.to_string();
        let before = s.as_ptr();
        assert!(!masker.mask_str(&mut s));
        assert_eq!(s.as_ptr(), before);
        assert_eq!(s, text);
    }
}

#[test]
fn mask_strings_and_card_digits_kept_are_configurable() {
    let config = r##"{"mask_char": "#", "email_mask": "[hidden]", "card_keep_first": 6, "card_keep_last": 2}"##;
    assert_eq!(masked_with(config, "4111111111111111"), "411111########11");
    assert_eq!(masked_with(config, "13812345678"), "138####5678");
    assert_eq!(
        masked_with(config, "user@example.com"),
        "u[hidden]@example.com"
    );
    // Already masked with the same custom mask: no change.
    assert_eq!(
        masked_with(r#"{"email_mask": "xxx"}"#, "uxxx@example.com"),
        "uxxx@example.com"
    );
}

#[test]
fn detectors_can_be_turned_off() {
    let text = "4111111111111111 13812345678 user@example.com";
    assert_eq!(
        masked_with(r#"{"cards": false}"#, text),
        "4111111111111111 138****5678 u***@example.com"
    );
    assert_eq!(
        masked_with(r#"{"phones": false}"#, text),
        "4111********1111 13812345678 u***@example.com"
    );
    assert_eq!(
        masked_with(r#"{"emails": false}"#, text),
        "4111********1111 138****5678 user@example.com"
    );
    // Without the e-mail detector, a phone number used as a local part is a phone number.
    assert_eq!(
        masked_with(r#"{"emails": false}"#, "13812345678@139.com"),
        "138****5678@139.com"
    );
}

#[test]
fn extra_patterns_replace_their_matches() {
    let config = r#"{"extra_patterns": [
        {"name": "ssn", "regex": "\\b\\d{3}-\\d{2}-\\d{4}\\b", "replacement": "***-**-****"},
        {"name": "token", "regex": "(token=)[A-Za-z0-9]+", "replacement": "${1}[redacted]"}
    ]}"#;
    assert_eq!(
        masked_with(config, "ssn 123-45-6789, again 987-65-4321"),
        "ssn ***-**-****, again ***-**-****"
    );
    assert_eq!(
        masked_with(config, "/cb?token=abc123&user=bob@example.com"),
        "/cb?token=[redacted]&user=b***@example.com"
    );
    assert_eq!(masked_with(config, "nothing to see"), "nothing to see");
}

#[test]
fn invalid_regex_is_a_config_error_naming_the_pattern() {
    let msg = config_error(
        r#"{"extra_patterns": [{"name": "broken", "regex": "(unclosed", "replacement": "x"}]}"#,
    );
    assert!(
        msg.starts_with("extra_patterns[0] `broken`: invalid regex:"),
        "{msg}"
    );
}

#[test]
fn unknown_config_keys_are_errors() {
    let msg = config_error(r#"{"card": false}"#);
    assert!(msg.contains("unknown field `card`"), "{msg}");
    let msg = config_error(
        r#"{"extra_patterns": [{"name": "x", "regex": "x", "replacement": "y", "flags": "i"}]}"#,
    );
    assert!(msg.contains("unknown field `flags`"), "{msg}");
}

#[test]
fn bad_config_values_are_errors() {
    assert_eq!(
        config_error(r#"{"card_keep_first": 8, "card_keep_last": 5}"#),
        "card_keep_first + card_keep_last must be at most 12 (got 8 + 5)"
    );
    assert_eq!(
        config_error(r#"{"mask_char": "0"}"#),
        "mask_char must not be a digit (got `0`)"
    );
    assert!(config_error(r#"{"mask_char": "ab"}"#).contains("expected a character"));
    assert_eq!(
        config_error(r#"{"extra_patterns": [{"name": "e", "regex": "x*", "replacement": "y"}]}"#),
        "extra_patterns[0] `e`: the regex matches the empty string"
    );
    assert_eq!(
        config_error(
            r#"{"extra_patterns": [{"name": "a", "regex": "x", "replacement": "y"},
                                   {"name": "a", "regex": "z", "replacement": "y"}]}"#
        ),
        "extra_patterns[1]: the name `a` is used twice"
    );
    assert!(config_error("[1, 2]").starts_with("invalid configuration:"));
}

#[test]
fn span_batch_attributes_events_links_and_status_are_masked_but_not_keys_or_names() {
    let masker = Masker::default();
    let mut s = span(
        "charge 4111111111111111",
        vec![
            kv("payment.card", "4111 1111 1111 1111"),
            kv("user.phone", "+86 13812345678"),
            kv("order.id", "4111111111111112"),
            kv("user@example.com", "key is not masked"),
            kv("http.status_code", 200i64),
        ],
    );
    s.events.push(Event {
        time_unix_nano: 1,
        name: "notify user@example.com".into(),
        attributes: vec![kv("recipient", "user@example.com")],
        dropped_attributes_count: 0,
    });
    s.links.push(Link {
        trace_id: TraceId { hi: 4, lo: 5 },
        span_id: 6,
        trace_state: String::new(),
        attributes: vec![kv("origin.phone", "13912345678")],
        dropped_attributes_count: 0,
        flags: 0,
    });
    s.status = Status {
        code: StatusCode::Error,
        message: "no account for bob@example.org".into(),
    };
    let mut batch = SpanBatch {
        resource: resource(vec![
            kv("service.name", "checkout"),
            kv("owner", "ops-team@example.com"),
        ]),
        scope: scope(vec![kv("contact", "13712345678")]),
        spans: vec![s],
    };

    // The batch ABI's path (views and edits over the encoded request) masks the same.
    let request = weft_guest::records::encode_span_batches(std::slice::from_ref(&batch));
    let mut edits = Edits::new();
    assert_eq!(masker.mask_traces(Traces::new(&request), &mut edits), 7);
    let out = edits
        .apply(&request, weft_guest::wire_kind::TracesData)
        .expect("changed");

    assert_eq!(masker.mask_span_batch(&mut batch), 7);
    assert_eq!(
        weft_guest::records::span_batches(Traces::new(&out)),
        vec![batch.clone()]
    );

    assert_eq!(batch.resource.attributes[0], kv("service.name", "checkout"));
    assert_eq!(
        batch.resource.attributes[1],
        kv("owner", "o***@example.com")
    );
    assert_eq!(batch.scope.attributes[0], kv("contact", "137****5678"));
    let s = &batch.spans[0];
    assert_eq!(s.name, "charge 4111111111111111");
    assert_eq!(
        s.attributes,
        vec![
            kv("payment.card", "4111 **** **** 1111"),
            kv("user.phone", "+86 138****5678"),
            kv("order.id", "4111111111111112"),
            kv("user@example.com", "key is not masked"),
            kv("http.status_code", 200i64),
        ]
    );
    assert_eq!(s.events[0].name, "notify user@example.com");
    assert_eq!(
        s.events[0].attributes,
        vec![kv("recipient", "u***@example.com")]
    );
    assert_eq!(
        s.links[0].attributes,
        vec![kv("origin.phone", "139****5678")]
    );
    assert_eq!(s.status.message, "no account for b***@example.org");

    // A second pass finds nothing left.
    assert_eq!(masker.mask_span_batch(&mut batch), 0);
}

#[test]
fn nested_log_bodies_and_attributes_are_masked_but_not_map_keys() {
    let masker = Masker::default();
    let body = AnyValue::KvList(vec![
        (
            "contacts".into(),
            AnyValue::Array(vec![
                AnyValue::Str("alice@example.com".into()),
                AnyValue::Int(42),
                AnyValue::KvList(vec![(
                    "card".into(),
                    AnyValue::Str("5555 5555 5555 4444".into()),
                )]),
            ]),
        ),
        (
            "owner@example.com".into(),
            AnyValue::Str("no pii 12345".into()),
        ),
        (
            "bytes".into(),
            AnyValue::Bytes(b"4111111111111111".to_vec()),
        ),
    ]);
    let mut batch = LogBatch {
        resource: resource(vec![kv("service.name", "crm")]),
        scope: scope(Vec::new()),
        records: vec![
            log_record(
                Some(Value::from(body)),
                vec![kv("enduser.phone", "13812345678")],
            ),
            log_record(Some(Value::from("login by carol@example.net")), Vec::new()),
            log_record(None, vec![kv("note", "nothing here")]),
        ],
    };

    let request = weft_guest::records::encode_log_batches(std::slice::from_ref(&batch));
    let mut edits = Edits::new();
    assert_eq!(masker.mask_logs(Logs::new(&request), &mut edits), 4);
    let out = edits
        .apply(&request, weft_guest::wire_kind::LogsData)
        .expect("changed");

    assert_eq!(masker.mask_log_batch(&mut batch), 4);
    assert_eq!(
        weft_guest::records::log_batches(Logs::new(&out)),
        vec![batch.clone()]
    );

    let body = batch.records[0].body.clone().map(AnyValue::from);
    assert_eq!(
        body,
        Some(AnyValue::KvList(vec![
            (
                "contacts".into(),
                AnyValue::Array(vec![
                    AnyValue::Str("a***@example.com".into()),
                    AnyValue::Int(42),
                    AnyValue::KvList(vec![(
                        "card".into(),
                        AnyValue::Str("5555 **** **** 4444".into()),
                    )]),
                ]),
            ),
            (
                "owner@example.com".into(),
                AnyValue::Str("no pii 12345".into())
            ),
            // Bytes are not text: left alone.
            (
                "bytes".into(),
                AnyValue::Bytes(b"4111111111111111".to_vec())
            ),
        ]))
    );
    assert_eq!(
        batch.records[0].attributes,
        vec![kv("enduser.phone", "138****5678")]
    );
    assert_eq!(
        batch.records[1].body,
        Some(Value::from("login by c***@example.net"))
    );
    assert_eq!(
        batch.records[2].attributes,
        vec![kv("note", "nothing here")]
    );
}

#[test]
fn value_and_attribute_helpers_count_changed_strings() {
    let masker = Masker::default();
    let mut value = Value::from(AnyValue::Array(vec![
        AnyValue::Str("13812345678".into()),
        AnyValue::Str("x".into()),
        AnyValue::Str("y@example.com".into()),
    ]));
    assert_eq!(masker.mask_value(&mut value), 2);
    let mut attrs = vec![kv("a", "4111111111111111"), kv("b", "ok")];
    assert_eq!(masker.mask_attributes(&mut attrs), 1);
}

/// Random strings over an alphabet dense in digits, separators, `@`, dots and multi-byte
/// characters: the scanners must not panic, must keep the string valid, and `mask_str` must
/// report exactly when the string changed.
#[test]
fn random_strings_never_panic() {
    const PIECES: &[&str] = &[
        "0",
        "1",
        "3",
        "4",
        "5",
        "6",
        "8",
        "9",
        "13812345678",
        "4111111111111111",
        " ",
        "-",
        "@",
        ".",
        "a",
        "Z",
        "é",
        "号",
        "+",
        "*",
        "_",
        "com",
        "example.",
        "\u{1F600}",
        "86",
        "1111",
    ];
    let maskers = [
        Masker::default(),
        Masker::from_json(r##"{"mask_char": "é", "email_mask": "", "card_keep_first": 0,
            "card_keep_last": 0, "extra_patterns": [{"name": "d", "regex": "\\d{3}", "replacement": "$0#"}]}"##)
        .expect("valid configuration"),
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64: deterministic, no dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        for masker in &maskers {
            let mut s = text.clone();
            let changed = masker.mask_str(&mut s);
            assert_eq!(changed, s != text, "{text:?} -> {s:?}");
        }
    }
}

/// Every `stringValue` in an OTLP/JSON document, in document order (keys are not values).
fn string_values<'a>(json: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match json {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("stringValue", serde_json::Value::String(s)) => out.push(s),
                    _ => string_values(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| string_values(v, out)),
        _ => {}
    }
}

/// The values of a fixture that masking changes, as `(before, after)`, sorted (serde_json's maps
/// may not keep the document's order).
fn fixture_changes(text: &str) -> Vec<(String, String)> {
    let json: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
    let mut values = Vec::new();
    string_values(&json, &mut values);
    let masker = Masker::default();
    let mut changes: Vec<_> = values
        .into_iter()
        .filter_map(|v| {
            let mut s = v.to_string();
            masker.mask_str(&mut s).then(|| (v.to_string(), s))
        })
        .collect();
    changes.sort();
    changes
}

/// `expected` as owned pairs, sorted like [`fixture_changes`].
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn trace_fixture_masks_exactly_the_pii() {
    assert_eq!(
        fixture_changes(include_str!("../fixtures/traces-with-pii.json")),
        pairs(&[
            ("payments-oncall@example.com", "p***@example.com"),
            ("4111 1111 1111 1111", "4111 **** **** 1111"),
            ("3782-822463-10005", "3782-******-*0005"),
            ("alice@example.com", "a***@example.com"),
            ("+86 138 1234 5678", "+86 138 **** 5678"),
            ("13912345678", "139****5678"),
            ("billing@shop.example.com", "b***@shop.example.com"),
            ("referred by 15012345678", "referred by 150****5678"),
            (
                "UPDATE cards SET pan='5555555555554444' WHERE email='bob@example.org'",
                "UPDATE cards SET pan='5555********4444' WHERE email='b***@example.org'",
            ),
        ])
    );
}

#[test]
fn log_fixture_masks_exactly_the_pii() {
    assert_eq!(
        fixture_changes(include_str!("../fixtures/logs-with-pii.json")),
        pairs(&[
            ("crm-team@example.com", "c***@example.com"),
            (
                "user alice@example.com logged in from +8613812345678",
                "user a***@example.com logged in from +86138****5678",
            ),
            ("bob@example.org", "b***@example.org"),
            ("13912345678", "139****5678"),
            ("+86 150 1234 5678", "+86 150 **** 5678"),
            ("5555-5555-5555-4444", "5555-****-****-4444"),
            (
                "refund issued to card 4111 1111 1111 1111",
                "refund issued to card 4111 **** **** 1111",
            ),
            ("carol.smith+refunds@example.net", "c***@example.net",),
            ("bob@example.org", "b***@example.org"),
        ])
    );
}
