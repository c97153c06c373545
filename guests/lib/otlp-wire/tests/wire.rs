//! The wire crate against prost's encoding of the OTLP messages: validation agrees with
//! decoding, views read what prost wrote, edits produce what the same change made with prost
//! would.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue as PbValue, ArrayValue, InstrumentationScope, KeyValue as PbKv, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as PbLog, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans as PbRs, ScopeSpans as PbSs, Span as PbSpan, Status, span,
};
use prost::Message as _;
use weft_otlp_wire::view::{Logs, SpanPart, Traces, ValueRef};
use weft_otlp_wire::{AnyValue, Edits, HasAttributes, Kind, validate};

fn kv(k: &str, v: &str) -> PbKv {
    PbKv {
        key: k.into(),
        value: Some(PbValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(i: u8, attrs: Vec<PbKv>) -> PbSpan {
    PbSpan {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        name: format!("span-{i}"),
        flags: 0x101,
        kind: 2,
        start_time_unix_nano: 10,
        end_time_unix_nano: 20,
        attributes: attrs,
        events: vec![span::Event {
            name: "ev".into(),
            attributes: vec![kv("e", "4111 1111 1111 1111")],
            ..Default::default()
        }],
        status: Some(Status {
            message: "m".into(),
            code: 2,
        }),
        ..Default::default()
    }
}

fn request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![
            PbRs {
                resource: Some(PbResource {
                    attributes: vec![kv("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![
                    PbSs {
                        scope: Some(InstrumentationScope {
                            name: "lib".into(),
                            ..Default::default()
                        }),
                        spans: vec![
                            span(1, vec![kv("a", "1"), kv("card", "x")]),
                            span(2, vec![]),
                        ],
                        schema_url: "s".into(),
                    },
                    PbSs {
                        spans: vec![span(3, vec![kv("a", "3")])],
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            },
            PbRs {
                resource: None,
                scope_spans: vec![PbSs {
                    spans: vec![span(4, vec![])],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
    }
}

fn edited(
    req: &ExportTraceServiceRequest,
    f: impl FnOnce(Traces<'_>, &mut Edits),
) -> ExportTraceServiceRequest {
    let bytes = req.encode_to_vec();
    let mut edits = Edits::new();
    f(Traces::new(&bytes), &mut edits);
    let out = edits.apply(&bytes, Kind::TracesData).unwrap_or(bytes);
    validate(Kind::TracesData, &out).expect("edited output is valid");
    ExportTraceServiceRequest::decode(&out[..]).expect("prost decodes it")
}

#[test]
fn validation_counts_items_and_views_read_what_prost_wrote() {
    let req = request();
    let bytes = req.encode_to_vec();
    assert_eq!(validate(Kind::TracesData, &bytes), Ok(4));
    let t = Traces::new(&bytes);
    let spans: Vec<_> = t.spans().collect();
    assert_eq!(spans.len(), 4);
    let (rs, s) = spans[0];
    assert_eq!(
        rs.resource()
            .attribute("service.name")
            .and_then(|v| v.as_str()),
        Some("checkout")
    );
    assert_eq!(s.trace_id(), [1; 16]);
    assert_eq!(s.span_id(), [1; 8]);
    assert_eq!(s.parent_span_id(), None);
    assert_eq!((s.name(), s.flags(), s.kind_value()), ("span-1", 0x101, 2));
    assert_eq!((s.start_time_unix_nano(), s.end_time_unix_nano()), (10, 20));
    assert_eq!((s.status_code(), s.status_message()), (2, "m"));
    assert_eq!(
        s.attributes().map(|kv| kv.key()).collect::<Vec<_>>(),
        ["a", "card"]
    );
    let ev = s.events().next().expect("an event");
    assert_eq!(ev.name(), "ev");
    assert_eq!(
        ev.attribute("e").map(|v| v.get()),
        Some(ValueRef::Str("4111 1111 1111 1111"))
    );
    let first = t.resource_spans().next().expect("a group");
    let ss = first.scope_spans().next().expect("a scope");
    assert_eq!((ss.scope().name(), ss.schema_url()), ("lib", "s"));
    assert!(!spans[3].0.resource().msg_present());
}

/// `Span::parts` reads, in one pass, what `attributes`, `events`, `links` and `status` read one
/// pass each, in encoding order; of two status fields the last is the span's, as prost decodes.
#[test]
fn span_parts_are_the_attributes_events_links_and_status_in_one_pass() {
    let mut pb = span(1, vec![kv("a", "1"), kv("card", "x")]);
    pb.links = vec![span::Link {
        trace_id: vec![7; 16],
        span_id: vec![7; 8],
        attributes: vec![kv("l", "y")],
        ..Default::default()
    }];
    // A second status after the first, inside the span: protobuf's last-one-wins.
    let mut span_bytes = pb.encode_to_vec();
    let later = Status {
        message: "later".into(),
        code: 1,
    };
    prost::encoding::message::encode(15, &later, &mut span_bytes);
    // Wrapped as field 2 of a ScopeSpans, itself field 2 of a ResourceSpans, field 1 of the
    // request.
    let wrap = |number: u32, content: Vec<u8>| {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(content.len() as u64, &mut out);
        out.extend_from_slice(&content);
        out
    };
    let bytes = wrap(1, wrap(2, wrap(2, span_bytes)));
    let decoded = ExportTraceServiceRequest::decode(&bytes[..]).expect("prost decodes it");
    let pb_span = &decoded.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(pb_span.status.as_ref().map(|s| s.code), Some(1));

    let (_, s) = Traces::new(&bytes).spans().next().expect("a span");
    let mut seen = Vec::new();
    for part in s.parts() {
        seen.push(match part {
            SpanPart::Attribute(kv) => format!("attribute {}", kv.key()),
            SpanPart::Event(e) => format!("event {}", e.name()),
            SpanPart::Link(l) => format!("link {:?}", l.span_id()),
            SpanPart::Status(st) => format!("status {} {}", st.code(), st.message()),
        });
    }
    assert_eq!(
        seen,
        [
            "attribute a",
            "attribute card",
            "event ev",
            "link [7, 7, 7, 7, 7, 7, 7, 7]",
            "status 2 m",
            "status 1 later",
        ]
    );
    assert_eq!((s.status_code(), s.status_message()), (1, "later"));
    assert_eq!(s.attributes().count(), 2);
    assert_eq!(s.events().count() + s.links().count(), 2);
}

trait Present {
    fn msg_present(&self) -> bool;
}
impl<'a, V: weft_otlp_wire::View<'a>> Present for V {
    fn msg_present(&self) -> bool {
        self.msg().is_present()
    }
}

#[test]
fn no_edits_leave_the_input_and_every_edit_matches_the_same_change_in_prost() {
    let req = request();
    let bytes = req.encode_to_vec();
    assert_eq!(Edits::new().apply(&bytes, Kind::TracesData), None);

    // Drop span 2; the second scope group loses its only span and goes too.
    let out = edited(&req, |t, e| {
        for (_, s) in t.spans() {
            if s.span_id() == [2; 8] || s.span_id() == [3; 8] {
                e.drop(&s);
            }
        }
    });
    let mut want = req.clone();
    want.resource_spans[0].scope_spans[0].spans.remove(1);
    want.resource_spans[0].scope_spans.remove(1);
    assert_eq!(out, want);

    // Set (replace and add) and remove attributes, mask an event attribute, rename, status.
    let out = edited(&req, |t, e| {
        let (_, s) = t.spans().next().expect("span");
        e.set_attribute(&s, "a", "one");
        e.set_attribute(&s, "new", 7i64);
        e.set_attribute(&s, "new", 8i64);
        e.remove_attribute(&s, "card");
        let ev = s.events().next().expect("event");
        let kv = ev.attributes().next().expect("attr");
        e.set_value(&kv, "4111 **** **** 1111");
        e.set_span_name(&s, "renamed");
        e.set_status(&s, 1, "");
    });
    let mut want = req.clone();
    let s = &mut want.resource_spans[0].scope_spans[0].spans[0];
    s.attributes = vec![
        kv("a", "one"),
        PbKv {
            key: "new".into(),
            value: Some(PbValue {
                value: Some(any_value::Value::IntValue(8)),
            }),
            ..Default::default()
        },
    ];
    s.events[0].attributes = vec![kv("e", "4111 **** **** 1111")];
    s.name = "renamed".into();
    s.status = Some(Status {
        message: String::new(),
        code: 1,
    });
    assert_eq!(out, want);

    // Resource attributes, on a resource that exists and on one that does not.
    let out = edited(&req, |t, e| {
        for rs in t.resource_spans() {
            e.set_resource_attribute(&rs, "cloud.provider", "aws");
        }
    });
    let mut want = req.clone();
    want.resource_spans[0]
        .resource
        .as_mut()
        .expect("r")
        .attributes
        .push(kv("cloud.provider", "aws"));
    want.resource_spans[1].resource = Some(PbResource {
        attributes: vec![kv("cloud.provider", "aws")],
        ..Default::default()
    });
    assert_eq!(out, want);
}

#[test]
fn nested_values_encode_as_prost_does() {
    let v = AnyValue::KvList(vec![
        (
            "arr".into(),
            AnyValue::Array(vec![
                AnyValue::Int(-1),
                AnyValue::Bool(false),
                AnyValue::Str(String::new()),
            ]),
        ),
        ("d".into(), AnyValue::Double(0.5)),
        ("b".into(), AnyValue::Bytes(vec![0, 1])),
        ("e".into(), AnyValue::Empty),
    ]);
    let mut e = weft_otlp_wire::Encoder::default();
    v.encode(&mut e);
    let pb = PbValue::decode(&e.buf[..]).expect("decodes");
    let Some(any_value::Value::KvlistValue(list)) = pb.value else {
        panic!("kvlist")
    };
    assert_eq!(
        list.values[0].value,
        Some(PbValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![
                    PbValue {
                        value: Some(any_value::Value::IntValue(-1))
                    },
                    PbValue {
                        value: Some(any_value::Value::BoolValue(false))
                    },
                    PbValue {
                        value: Some(any_value::Value::StringValue(String::new()))
                    },
                ]
            }))
        })
    );
    assert_eq!(list.values[3].value, Some(PbValue { value: None }));
    // And reads back through a view.
    let back = AnyValue::from(weft_otlp_wire::view::Value::from_bytes(&e.buf));
    assert_eq!(back, v);
}

#[test]
fn malformed_requests_are_refused_with_the_field_named() {
    let mut bad_id = request();
    bad_id.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1, 2, 3];
    let err = validate(Kind::TracesData, &bad_id.encode_to_vec()).expect_err("bad id");
    assert_eq!(err.message, "span.trace_id must be 16 bytes, got 3");

    let mut no_id = request();
    no_id.resource_spans[0].scope_spans[0].spans[0].span_id = vec![];
    let err = validate(Kind::TracesData, &no_id.encode_to_vec()).expect_err("no id");
    assert_eq!(err.message, "span.span_id must be 8 bytes, got 0");

    // A string field with invalid UTF-8: span name (field 5) of a span of its own.
    let mut e = weft_otlp_wire::Encoder::default();
    e.nested(1, |e| {
        e.nested(2, |e| {
            e.nested(2, |e| {
                e.bytes_field(1, &[1; 16]);
                e.bytes_field(2, &[1; 8]);
                e.bytes_field(5, &[0xff, 0xfe]);
                true
            })
        })
    });
    let err = validate(Kind::TracesData, &e.buf).expect_err("utf-8");
    assert_eq!(err.message, "span.name is not valid UTF-8");

    // Wrong wire type: resource_spans as a varint; and truncation anywhere inside a message.
    assert!(
        validate(Kind::TracesData, &[0x08, 0x01])
            .expect_err("wire type")
            .message
            .contains("wire type")
    );
    let bytes = request().encode_to_vec();
    let mut refused = 0;
    for cut in 1..bytes.len() {
        if validate(Kind::TracesData, &bytes[..cut]).is_err() {
            refused += 1;
        } else {
            // What still validates must be what prost decodes, too.
            assert!(
                ExportTraceServiceRequest::decode(&bytes[..cut]).is_ok(),
                "cut at {cut}"
            );
        }
    }
    assert!(
        refused > bytes.len() / 2,
        "{refused} of {} truncations refused",
        bytes.len()
    );

    // Logs: optional ids are 0 or 16 / 0 or 8 bytes.
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![PbLog {
                    trace_id: vec![1; 15],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let err = validate(Kind::LogsData, &logs.encode_to_vec()).expect_err("log id");
    assert_eq!(
        err.message,
        "log_record.trace_id must be 0 or 16 bytes, got 15"
    );
}

#[test]
fn log_records_read_and_edit() {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    PbLog {
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(PbValue {
                            value: Some(any_value::Value::StringValue("user=ann id=7".into())),
                        }),
                        trace_id: vec![5; 16],
                        ..Default::default()
                    },
                    PbLog {
                        severity_number: 5,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let bytes = req.encode_to_vec();
    assert_eq!(validate(Kind::LogsData, &bytes), Ok(2));
    let logs = Logs::new(&bytes);
    let mut e = Edits::new();
    for (_, r) in logs.records() {
        if r.severity_number() < 9 {
            e.drop(&r);
            continue;
        }
        assert_eq!(r.body().and_then(|b| b.as_str()), Some("user=ann id=7"));
        assert_eq!(r.trace_id(), Some([5; 16]));
        assert_eq!(r.span_id(), None);
        e.set_attribute(&r, "user", "ann");
        e.set_body(&r, "parsed");
        e.set_severity(&r, 13, "WARN");
    }
    let out = e.apply(&bytes, Kind::LogsData).expect("changed");
    let out = ExportLogsServiceRequest::decode(&out[..]).expect("decodes");
    let r = &out.resource_logs[0].scope_logs[0].log_records;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].attributes, vec![kv("user", "ann")]);
    assert_eq!(
        r[0].body,
        Some(PbValue {
            value: Some(any_value::Value::StringValue("parsed".into()))
        })
    );
    assert_eq!(
        (r[0].severity_number, r[0].severity_text.as_str()),
        (13, "WARN")
    );
}
