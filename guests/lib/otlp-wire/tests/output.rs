//! `validate_output`, the check of a plugin's answer that skips what the plugin left as the
//! input had it, against `validate_with` on the whole answer: the same count and the same
//! error for every answer, whatever was edited, dropped, added or corrupted.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue as PbValue, KeyValue as PbKv, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans as PbRs, ScopeSpans as PbSs, Span};
use prost::Message as _;
use weft_otlp_wire::view::Traces;
use weft_otlp_wire::{
    Edits, HasAttributes, Kind, Limits, validate_general, validate_output, validate_with,
};

fn kv(k: &str, v: &str) -> PbKv {
    PbKv {
        key: k.into(),
        value: Some(PbValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// Two resource groups of `spans` spans each, every span with a few attributes.
fn request(spans: u8) -> Vec<u8> {
    let group = |r: u8| PbRs {
        resource: Some(PbResource {
            attributes: vec![kv("service.name", &format!("svc-{r}"))],
            ..Default::default()
        }),
        scope_spans: vec![PbSs {
            spans: (0..spans)
                .map(|i| Span {
                    trace_id: vec![r; 16],
                    span_id: vec![i + 1; 8],
                    name: format!("op-{i}"),
                    attributes: vec![
                        kv("user.email", &format!("user{i}@example.com")),
                        kv("http.method", "GET"),
                        kv("card", "4111 1111 1111 1111"),
                    ],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![group(1), group(2)],
    }
    .encode_to_vec()
}

/// What a plugin could answer: `edit` applied to `input` through the edit log.
fn answer(input: &[u8], edit: impl FnOnce(Traces<'_>, &mut Edits)) -> Vec<u8> {
    let mut edits = Edits::new();
    edit(Traces::new(input), &mut edits);
    edits
        .apply(input, Kind::TracesData)
        .unwrap_or_else(|| input.to_vec())
}

/// The three checks of `out` agree, under `limits`: the skipping one, the whole walk (which
/// checks attributes with scalar values in a flat loop) and the general walk without that
/// shortcut; returns what they said.
fn agree(input: &[u8], out: &[u8], limits: &Limits) -> Result<u64, String> {
    let general = validate_general(Kind::TracesData, out, limits);
    let whole = validate_with(Kind::TracesData, out, limits);
    let skipping = validate_output(Kind::TracesData, out, input, limits);
    assert_eq!(
        whole, general,
        "validate_with disagrees with validate_general"
    );
    assert_eq!(
        skipping, whole,
        "validate_output disagrees with validate_with"
    );
    whole.map_err(|e| e.to_string())
}

/// A request whose attributes hold every kind of value: scalars of each type, bytes, an array
/// and a map nested two deep (what the flat check of attributes hands to the general walk).
fn typed_request() -> Vec<u8> {
    let value = |v| PbValue { value: Some(v) };
    let attr = |k: &str, v| PbKv {
        key: k.into(),
        value: Some(value(v)),
        ..Default::default()
    };
    let attributes = vec![
        kv("user.email", "someone@example.com"),
        attr("retries", any_value::Value::IntValue(-3)),
        attr("ratio", any_value::Value::DoubleValue(0.25)),
        attr("cached", any_value::Value::BoolValue(true)),
        attr("blob", any_value::Value::BytesValue(vec![0xff, 0, 0x80])),
        attr(
            "list",
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: vec![
                    value(any_value::Value::StringValue("a@b.co".into())),
                    value(any_value::Value::IntValue(7)),
                ],
            }),
        ),
        attr(
            "map",
            any_value::Value::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: vec![kv("inner", "x"), kv("other", "y")],
            }),
        ),
        PbKv {
            key: "empty".into(),
            value: None,
            ..Default::default()
        },
    ];
    ExportTraceServiceRequest {
        resource_spans: vec![PbRs {
            resource: Some(PbResource {
                attributes: attributes.clone(),
                ..Default::default()
            }),
            scope_spans: vec![PbSs {
                spans: (0..3u8)
                    .map(|i| Span {
                        trace_id: vec![9; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("op-{i}"),
                        attributes: attributes.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Every edit a plugin makes: the same items counted as the whole walk counts.
#[test]
fn answers_are_counted_as_the_whole_walk_counts_them() {
    let input = request(20);
    let r = Limits::RECEIVER;
    assert_eq!(agree(&input, &input, &r), Ok(40), "unchanged");
    // A sampler: every other span dropped, then a run of dropped spans longer than the
    // validator's look-ahead (64).
    let many = request(100);
    let sampled = answer(&many, |t, e| {
        for (_, s) in t.spans() {
            if s.span_id()[0] % 2 == 0 || (20..90).contains(&s.span_id()[0]) {
                e.drop(&s);
            }
        }
    });
    assert_eq!(agree(&many, &sampled, &r), Ok(30));
    // A masker: one value of every span changed.
    let masked = answer(&input, |t, e| {
        for (_, s) in t.spans() {
            for kv in s.attributes() {
                if kv.key_is("card") {
                    e.set_str(&kv, "4111 **** **** 1111");
                }
            }
        }
    });
    assert_eq!(agree(&input, &masked, &r), Ok(40));
    // An enricher: the resources only.
    let enriched = answer(&input, |t, e| {
        for rs in t.resource_spans() {
            e.set_resource_attribute(&rs, "cloud.provider", "aws");
        }
    });
    assert_eq!(agree(&input, &enriched, &r), Ok(40));
    // Attributes added to the first span of each group, one removed from the last.
    let added = answer(&input, |t, e| {
        for (_, s) in t.spans() {
            match s.span_id()[0] {
                1 => e.set_attribute(&s, "new", "value"),
                20 => e.remove_attribute(&s, "http.method"),
                _ => {}
            }
        }
    });
    assert_eq!(agree(&input, &added, &r), Ok(40));
    // An answer that is not about this input at all.
    let other = request(3);
    assert_eq!(agree(&input, &other, &r), Ok(6));
}

/// What the plugin wrote is held to the plugin's limits; what it left as it was is the
/// input's, checked by the receiver.
#[test]
fn what_the_plugin_wrote_is_held_to_its_limits() {
    let input = request(4);
    let small = Limits {
        max_value_depth: 8,
        max_entries: 3,
        max_string_bytes: 20,
    };
    // A long value written by the plugin: refused, by both walks alike.
    let long = answer(&input, |t, e| {
        if let Some((_, s)) = t.spans().nth(2) {
            let kv = s.attributes().next().expect("an attribute");
            e.set_str(&kv, &"x".repeat(21));
        }
    });
    let err = agree(&input, &long, &small).expect_err("too long");
    assert!(err.contains("any_value.string_value is 21 bytes"), "{err}");
    // A fourth attribute added: more entries than the limit.
    let wide = answer(&input, |t, e| {
        let (_, s) = t.spans().next().expect("a span");
        e.set_attribute(&s, "fourth", 4i64);
    });
    let err = agree(&input, &wide, &small).expect_err("too many");
    assert!(
        err.contains("span.attributes has more than 3 entries"),
        "{err}"
    );
    // The input's own 19-byte card numbers pass through unchanged under an 18-byte limit:
    // the whole walk would refuse them, but the plugin did not write them.
    let tighter = Limits {
        max_string_bytes: 18,
        ..small
    };
    assert!(validate_with(Kind::TracesData, &input, &tighter).is_err());
    assert_eq!(
        validate_output(Kind::TracesData, &input, &input, &tighter),
        Ok(8)
    );
}

/// Corrupts `out` at `at` (modulo its length): `how` 0 changes the byte there to `byte`, 1
/// inserts `byte` there, 2 removes the byte there.
fn corrupt(out: &mut Vec<u8>, at: usize, byte: u8, how: u8) {
    let at = at % out.len();
    match how {
        0 => out[at] = byte,
        1 => out.insert(at, byte),
        _ => {
            out.remove(at);
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..Default::default()
    })]

    /// Corrupted answers (a byte changed, inserted or removed, in a masked answer or in the
    /// input itself): both walks give the same error, or the same count.
    #[test]
    fn corrupted_answers_get_the_same_verdict(
        masked in proptest::bool::ANY,
        at in 0usize..4096,
        byte in proptest::num::u8::ANY,
        how in 0u8..3,
    ) {
        let input = request(6);
        let mut out = if masked {
            answer(&input, |t, e| {
                for (_, s) in t.spans() {
                    for kv in s.attributes() {
                        if kv.key_is("user.email") {
                            e.set_str(&kv, "[email]");
                        }
                    }
                }
            })
        } else {
            input.clone()
        };
        corrupt(&mut out, at, byte, how);
        let limits = Limits { max_value_depth: 3, max_entries: 4, max_string_bytes: 64 };
        let _ = agree(&input, &out, &Limits::RECEIVER);
        let _ = agree(&input, &out, &limits);
    }

    /// Corrupted requests whose attributes hold values of every type: the flat check of
    /// attributes gives the general walk's verdict (the same count or the same error), with
    /// and without limits, and so does the check of an answer against the intact request
    /// (which is within the limits).
    #[test]
    fn corrupted_values_of_every_type_get_the_general_walks_verdict(
        at in 0usize..4096,
        byte in proptest::num::u8::ANY,
        how in 0u8..3,
    ) {
        let input = typed_request();
        let mut out = input.clone();
        corrupt(&mut out, at, byte, how);
        // Tight, but the intact request is within them (its unchanged parts are skipped).
        let limits = Limits { max_value_depth: 2, max_entries: 8, max_string_bytes: 24 };
        proptest::prop_assert_eq!(validate_with(Kind::TracesData, &input, &limits), Ok(3));
        let _ = agree(&input, &out, &Limits::RECEIVER);
        let _ = agree(&input, &out, &limits);
    }
}
