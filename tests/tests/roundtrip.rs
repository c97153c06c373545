//! OTLP round trips are the identity: every field, nested AnyValues, events and links included.
//! Checked on the typed-records conversion alone (many cases); on the batch ABI's wire crate
//! alone (validation agrees with prost, views + a rewrite of every span through the edit log
//! give back the request); and through real components, where the data crosses the component
//! boundary both ways: the batch-ABI fault fixture re-encoding every span or record through its
//! edit log (`rewrite`) and through owned records (`records`), and the typed fixture passing
//! batches through (`typed-fault`, `none`).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use prost::Message as _;
use weft_runtime::convert;
use weft_runtime::wire;
use weft_runtime::{Plugin, PluginSettings};
use weft_tests::{guests, host_with_cache};

fn scalar() -> impl Strategy<Value = AnyValue> {
    prop_oneof![
        Just(AnyValue { value: None }),
        ".{0,12}".prop_map(|s| AnyValue {
            value: Some(any_value::Value::StringValue(s))
        }),
        any::<bool>().prop_map(|b| AnyValue {
            value: Some(any_value::Value::BoolValue(b))
        }),
        any::<i64>().prop_map(|i| AnyValue {
            value: Some(any_value::Value::IntValue(i))
        }),
        // NaN != NaN would make equality fail for reasons that are not about the conversion.
        proptest::num::f64::NORMAL.prop_map(|d| AnyValue {
            value: Some(any_value::Value::DoubleValue(d))
        }),
        vec(any::<u8>(), 0..8).prop_map(|b| AnyValue {
            value: Some(any_value::Value::BytesValue(b))
        }),
    ]
}

/// AnyValues nested up to 4 levels: arrays and key-value lists of anything.
fn any_value() -> impl Strategy<Value = AnyValue> {
    scalar().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            vec(("[a-z.]{1,8}", inner), 0..5).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(v),
                            key_strindex: 0
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

fn attrs() -> impl Strategy<Value = Vec<KeyValue>> {
    vec(("[a-z.]{1,10}", any_value()), 0..4).prop_map(|kvs| {
        kvs.into_iter()
            .map(|(key, v)| KeyValue {
                key,
                value: Some(v),
                key_strindex: 0,
            })
            .collect()
    })
}

fn bytes(n: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), n..=n)
}

fn event() -> impl Strategy<Value = span::Event> {
    (any::<u64>(), ".{0,8}", attrs(), any::<u32>()).prop_map(|(t, name, attributes, d)| {
        span::Event {
            time_unix_nano: t,
            name,
            attributes,
            dropped_attributes_count: d,
        }
    })
}

fn link() -> impl Strategy<Value = span::Link> {
    (
        bytes(16),
        bytes(8),
        ".{0,8}",
        attrs(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, d, flags)| span::Link {
                trace_id,
                span_id,
                trace_state,
                attributes,
                dropped_attributes_count: d,
                flags,
            },
        )
}

fn status() -> impl Strategy<Value = Option<Status>> {
    // An unset status with no message is sent as "absent" (what the SDKs do); the others as is.
    prop_oneof![
        Just(None),
        (1..=2i32, ".{0,8}").prop_map(|(code, message)| Some(Status { code, message })),
        ".{1,8}".prop_map(|message| Some(Status { code: 0, message })),
    ]
}

prop_compose! {
    fn pb_span()(
        ids in (bytes(16), bytes(8), prop_oneof![Just(vec![]), bytes(8)]),
        trace_state in ".{0,10}",
        flags in any::<u32>(),
        name in ".{0,10}",
        kind in 0..=5i32,
        times in (any::<u64>(), any::<u64>()),
        attributes in attrs(),
        events in vec(event(), 0..3),
        links in vec(link(), 0..3),
        dropped in (any::<u32>(), any::<u32>(), any::<u32>()),
        status in status(),
    ) -> Span {
        Span {
            trace_id: ids.0, span_id: ids.1, parent_span_id: ids.2, trace_state, flags, name, kind,
            start_time_unix_nano: times.0, end_time_unix_nano: times.1,
            attributes, dropped_attributes_count: dropped.0,
            events, dropped_events_count: dropped.1,
            links, dropped_links_count: dropped.2,
            status,
        }
    }
}

prop_compose! {
    fn pb_log()(
        times in (any::<u64>(), any::<u64>()),
        severity_number in 0..=24i32,
        severity_text in ".{0,6}",
        body in option::of(any_value()),
        attributes in attrs(),
        dropped in any::<u32>(),
        flags in any::<u32>(),
        trace_id in prop_oneof![Just(vec![]), bytes(16)],
        span_id in prop_oneof![Just(vec![]), bytes(8)],
        event_name in ".{0,6}",
    ) -> LogRecord {
        LogRecord {
            time_unix_nano: times.0, observed_time_unix_nano: times.1, severity_number, severity_text,
            body, attributes, dropped_attributes_count: dropped, flags, trace_id, span_id, event_name,
        }
    }
}

fn resource(index: usize) -> impl Strategy<Value = Option<Resource>> {
    let entity = ("[a-z]{1,6}", vec("[a-z]{1,4}", 0..2)).prop_map(|(t, keys)| EntityRef {
        schema_url: String::new(),
        r#type: t,
        id_keys: keys,
        description_keys: vec![],
    });
    // Resources of different ResourceSpans differ (an index attribute): the host merges
    // neighbouring ResourceSpans with equal resources, which would not be the identity.
    (attrs(), any::<u32>(), vec(entity, 0..2)).prop_map(move |(mut attributes, d, entity_refs)| {
        attributes.push(KeyValue {
            key: "rs.index".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(index as i64)),
            }),
            key_strindex: 0,
        });
        Some(Resource {
            attributes,
            dropped_attributes_count: d,
            entity_refs,
        })
    })
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    option::of((".{0,8}", ".{0,4}", attrs(), any::<u32>()).prop_map(
        |(name, version, attributes, d)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: d,
        },
    ))
}

fn traces_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    (1..3usize)
        .prop_flat_map(|n| {
            (0..n)
                .map(|i| {
                    (
                        resource(i),
                        "[a-z:/.]{0,12}",
                        vec((scope(), "[a-z:/.]{0,8}", vec(pb_span(), 0..4)), 1..3),
                    )
                        .prop_map(|(resource, schema_url, scopes)| {
                            ResourceSpans {
                                resource,
                                schema_url,
                                scope_spans: scopes
                                    .into_iter()
                                    .map(|(scope, schema_url, spans)| ScopeSpans {
                                        scope,
                                        spans,
                                        schema_url,
                                    })
                                    .collect(),
                            }
                        })
                })
                .collect::<Vec<_>>()
        })
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    (
        resource(0),
        "[a-z:/.]{0,12}",
        vec((scope(), "[a-z:/.]{0,8}", vec(pb_log(), 0..4)), 1..3),
    )
        .prop_map(|(resource, schema_url, scopes)| ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource,
                schema_url,
                scope_logs: scopes
                    .into_iter()
                    .map(|(scope, schema_url, log_records)| ScopeLogs {
                        scope,
                        log_records,
                        schema_url,
                    })
                    .collect(),
            }],
        })
}

fn pass_through() -> Plugin {
    fixture_plugin(guests::TYPED_FAULT, "none")
}

/// The batch-ABI fault fixture in mode `fault`.
fn batch_plugin(fault: &str) -> Plugin {
    fixture_plugin(guests::FAULT, fault)
}

fn fixture_plugin(path: &str, fault: &str) -> Plugin {
    let host = host_with_cache(None).expect("host");
    let mut settings = PluginSettings::new("pass");
    settings.config = serde_json::json!({ "fault": fault });
    host.load_file(path.as_ref(), settings).expect("load")
}

/// `req` without what owned records do not carry (a resource's entity references).
fn without_entity_refs(mut req: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut req.resource_spans {
        if let Some(r) = &mut rs.resource {
            r.entity_refs.clear();
        }
    }
    req
}

/// Re-encodes every span of `bytes` through the edit log (a rename to its own name).
fn rewrite_every_span(bytes: &[u8]) -> Vec<u8> {
    let traces = wire::view::Traces::new(bytes);
    let mut edits = wire::Edits::new();
    for (_, s) in traces.spans() {
        edits.set_span_name(&s, s.name());
    }
    edits
        .apply(bytes, wire::Kind::TracesData)
        .unwrap_or_else(|| bytes.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_value_round_trips(v in any_value()) {
        let back = convert::value_to_pb(convert::value_from_pb(&v)).expect("well-formed tree");
        prop_assert_eq!(back, v);
    }

    #[test]
    fn spans_round_trip(s in pb_span()) {
        let back = convert::span_to_pb(convert::span_from_pb(&s).expect("valid ids")).expect("convert back");
        prop_assert_eq!(back, s);
    }

    #[test]
    fn log_records_round_trip(r in pb_log()) {
        let back = convert::log_to_pb(convert::log_from_pb(&r).expect("valid ids")).expect("convert back");
        prop_assert_eq!(back, r);
    }
}

proptest! {
    // Each case crosses into a component and back; fewer cases keep the test quick.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn traces_round_trip_through_a_component(req in traces_request()) {
        thread_local!(static PLUGIN: Plugin = pass_through());
        let (out, report) = PLUGIN.with(|p| p.process_strict(req.clone())).expect("pass-through");
        prop_assert_eq!(report.items_in, report.items_out);
        prop_assert_eq!(out, req);
    }

    #[test]
    fn logs_round_trip_through_a_component(req in logs_request()) {
        thread_local!(static PLUGIN: Plugin = pass_through());
        let (out, _) = PLUGIN.with(|p| p.process_strict(req.clone())).expect("pass-through");
        prop_assert_eq!(out, req);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_wire_crate_validates_what_prost_encodes_and_rewrites_it_unchanged(req in traces_request()) {
        let bytes = req.encode_to_vec();
        let items: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        prop_assert_eq!(wire::validate(wire::Kind::TracesData, &bytes), Ok(items as u64));
        let out = rewrite_every_span(&bytes);
        prop_assert_eq!(ExportTraceServiceRequest::decode(&out[..]).expect("decodes"), req);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn traces_round_trip_through_the_batch_abi_edit_log(req in traces_request()) {
        thread_local!(static PLUGIN: Plugin = batch_plugin("rewrite"));
        let (out, report) = PLUGIN.with(|p| p.process_strict(req.clone())).expect("rewrite");
        prop_assert_eq!(report.items_in, report.items_out);
        prop_assert_eq!(out, req);
    }

    #[test]
    fn logs_round_trip_through_the_batch_abi_edit_log(req in logs_request()) {
        thread_local!(static PLUGIN: Plugin = batch_plugin("rewrite"));
        let (out, _) = PLUGIN.with(|p| p.process_strict(req.clone())).expect("rewrite");
        prop_assert_eq!(out, req);
    }

    #[test]
    fn traces_round_trip_through_owned_records_in_the_guest(req in traces_request()) {
        thread_local!(static PLUGIN: Plugin = batch_plugin("records"));
        let (out, _) = PLUGIN.with(|p| p.process_strict(req.clone())).expect("records");
        prop_assert_eq!(out, without_entity_refs(req));
    }
}
