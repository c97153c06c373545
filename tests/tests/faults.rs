//! Guests that trap, loop, exhaust memory, overflow the stack, return errors or reject their
//! configuration (guests/fixtures/fault). Each case asserts the typed error, that the host goes
//! on, that a trapped instance is replaced by a fresh one, and what fail-open and fail-closed
//! did.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use weft_runtime::OtlpData;
use weft_runtime::{
    CallError, FailPolicy, LoadError, Plugin, PluginHost, PluginSettings, TrapKind,
};
use weft_tests::{fixture, guests, host_with_cache};

fn traces() -> ExportTraceServiceRequest {
    fixture("tests/fixtures/traces-two-scopes.json")
        .expect("fixture")
        .traces()
}

fn load(host: &PluginHost, config: serde_json::Value, policy: FailPolicy) -> Plugin {
    load_from(host, guests::FAULT, config, policy)
}

/// The fault fixture at `path` (`guests::FAULT`, batch ABI; `guests::TYPED_FAULT`, typed).
fn load_from(
    host: &PluginHost,
    path: &str,
    config: serde_json::Value,
    policy: FailPolicy,
) -> Plugin {
    let mut settings = PluginSettings::new("fault");
    settings.config = config;
    settings.fail_policy = policy;
    settings.deadline = Duration::from_millis(50);
    settings.memory_cap = 16 << 20;
    host.load_file(path.as_ref(), settings)
        .expect("load fault plugin")
}

fn host() -> PluginHost {
    host_with_cache(None).expect("host")
}

/// Runs one faulty request through `call_request` and checks the trap kind, then shows that the next
/// call runs on a fresh instance and succeeds (the fault fires once: `times: 1`).
fn trap_then_recover(fault: &str, expected: TrapKind) {
    let host = host();
    let plugin = load(
        &host,
        serde_json::json!({"fault": fault, "times": 1}),
        FailPolicy::Open,
    );
    let m = plugin.metrics().clone();
    assert_eq!(
        m.instantiations.load(Ordering::Relaxed),
        1,
        "load creates one instance"
    );

    let batch = OtlpData::empty(weft_runtime::Signal::Traces);
    let start = Instant::now();
    let err = plugin
        .call_request(&batch)
        .expect_err("the fault fires on the first call");
    let took = start.elapsed();
    match &err {
        CallError::Trapped { kind, .. } => assert_eq!(*kind, expected, "{err}"),
        other => panic!("expected a trap, got {other}"),
    }
    // The deadline is 50 ms; anything near a second means the deadline did not work.
    assert!(took < Duration::from_secs(2), "{fault}: took {took:?}");
    assert_eq!(m.trap_counter(expected).load(Ordering::Relaxed), 1);
    assert_eq!(
        plugin.idle_instances(),
        0,
        "the trapped instance is not back in the pool"
    );

    plugin.call_request(&batch).expect("the next call succeeds");
    assert_eq!(
        m.instantiations.load(Ordering::Relaxed),
        2,
        "a fresh instance served it"
    );
    assert_eq!(plugin.idle_instances(), 1);
    assert_eq!(m.total_traps(), 1);
    assert_eq!(m.calls.load(Ordering::Relaxed), 2);
}

#[test]
fn a_panicking_guest_traps_as_panic_and_is_replaced() {
    trap_then_recover("panic", TrapKind::Panic);
}

#[test]
fn an_infinite_loop_hits_the_cpu_deadline() {
    trap_then_recover("loop", TrapKind::Deadline);
}

#[test]
fn allocating_past_the_memory_cap_traps_as_memory_limit() {
    trap_then_recover("oom", TrapKind::MemoryLimit);
}

#[test]
fn unbounded_recursion_traps_as_stack_overflow() {
    trap_then_recover("stack", TrapKind::StackOverflow);
}

#[test]
fn a_fuel_budget_stops_a_loop_before_the_deadline() {
    let engine = weft_runtime::WeftEngine::new(weft_runtime::EngineSettings {
        cache_dir: None,
        fuel: true,
        ..Default::default()
    })
    .expect("engine");
    let host = PluginHost::new(engine, weft_runtime::MetricsRegistry::default()).expect("host");
    let mut settings = PluginSettings::new("fault");
    settings.config = serde_json::json!({"fault": "loop", "times": 1});
    settings.deadline = Duration::from_secs(30);
    settings.fuel = Some(5_000_000);
    let plugin = host
        .load_file(guests::FAULT.as_ref(), settings)
        .expect("load");
    let (out, report) = plugin.process(traces()).expect("valid OTLP");
    assert_eq!(report.failed_batches, 1, "the loop ran out of fuel once");
    assert_eq!(out, traces(), "fail-open passed everything on");
    assert_eq!(
        plugin
            .metrics()
            .trap_counter(TrapKind::Fuel)
            .load(Ordering::Relaxed),
        1
    );

    // Without fuel metering on the engine, a fuel budget is refused at load.
    let mut settings = PluginSettings::new("fault");
    settings.fuel = Some(1);
    let err = host_with_cache(None)
        .expect("host")
        .load_file(guests::FAULT.as_ref(), settings)
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("needs an engine with fuel metering on"),
        "{err}"
    );
}

#[test]
fn a_guest_error_is_not_a_trap_and_keeps_the_instance() {
    let host = host();
    let plugin = load(
        &host,
        serde_json::json!({"fault": "error"}),
        FailPolicy::Open,
    );
    let batch = OtlpData::empty(weft_runtime::Signal::Traces);
    for _ in 0..3 {
        match plugin.call_request(&batch) {
            Err(CallError::Guest { kind, message, .. }) => {
                assert_eq!(kind, "other");
                assert_eq!(message, "fault: returning an error on purpose");
            }
            other => panic!("expected a guest error, got {other:?}"),
        }
    }
    let m = plugin.metrics();
    assert_eq!(m.guest_errors.load(Ordering::Relaxed), 3);
    assert_eq!(m.total_traps(), 0);
    assert_eq!(
        m.instantiations.load(Ordering::Relaxed),
        1,
        "errors do not recycle the instance"
    );
}

#[test]
fn a_rejected_configuration_fails_the_load_with_the_plugins_message() {
    let host = host();
    let mut settings = PluginSettings::new("fault");
    settings.config = serde_json::json!({"fault": "bad-config"});
    let err = host
        .load_file(guests::FAULT.as_ref(), settings)
        .err()
        .expect("load fails");
    assert!(matches!(err, LoadError::InvalidConfig { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "plugin `fault` rejected its configuration: fault: this plugin rejects its configuration on purpose"
    );
    // The same host still loads a good plugin afterwards.
    load(
        &host,
        serde_json::json!({"fault": "none"}),
        FailPolicy::Open,
    );
}

#[test]
fn fail_open_passes_failed_batches_on_unchanged() {
    let host = host();
    let plugin = load(
        &host,
        serde_json::json!({"fault": "panic"}),
        FailPolicy::Open,
    );
    let input = traces();
    let (out, report) = plugin.process(input.clone()).expect("valid OTLP");
    assert_eq!(out, input, "fail-open returns the input as it was");
    assert_eq!(report.items_in, 3);
    assert_eq!(report.items_out, 3);
    assert_eq!(
        report.failed_batches, 1,
        "the batch ABI: one request, one call, trapped"
    );
    let m = plugin.metrics();
    assert_eq!(m.failed_open.load(Ordering::Relaxed), 1);
    assert_eq!(m.failed_closed.load(Ordering::Relaxed), 0);
    assert_eq!(m.trap_counter(TrapKind::Panic).load(Ordering::Relaxed), 1);
}

#[test]
fn fail_closed_drops_failed_batches_and_counts_them() {
    let host = host();
    // The batch ABI: the call is the whole request, so fail-closed drops all of it.
    let plugin = load(
        &host,
        serde_json::json!({"fault": "error", "times": 1}),
        FailPolicy::Closed,
    );
    let (out, report) = plugin.process(traces()).expect("valid OTLP");
    assert_eq!(report.failed_batches, 1);
    assert_eq!(report.failed_items_dropped, 3);
    assert_eq!(report.items_out, 0);
    assert!(out.resource_spans.is_empty(), "{out:?}");
    let m = plugin.metrics();
    assert_eq!(m.failed_closed.load(Ordering::Relaxed), 1);
    assert_eq!(m.failed_closed_items.load(Ordering::Relaxed), 3);
    assert_eq!(m.failed_open.load(Ordering::Relaxed), 0);
    // The next request goes through (the fault fired once).
    let (_, report) = plugin.process(traces()).expect("valid OTLP");
    assert_eq!((report.failed_batches, report.items_out), (0, 3));

    // Typed records: the call is one (resource, scope) batch. (A new host: the fault's shot
    // counter lives in the plugin's key-value store, shared by name within one host.)
    let typed = load_from(
        &host_with_cache(None).expect("host"),
        guests::TYPED_FAULT,
        serde_json::json!({"fault": "error", "times": 1}),
        FailPolicy::Closed,
    );
    let (out, report) = typed.process(traces()).expect("valid OTLP");
    // The first scope (2 spans) failed and was dropped; the second (1 span) went through.
    assert_eq!(report.failed_batches, 1);
    assert_eq!(report.failed_items_dropped, 2);
    assert_eq!(report.items_out, 1);
    let spans: Vec<_> = out
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "pay");
    let m = typed.metrics();
    assert_eq!(m.failed_closed.load(Ordering::Relaxed), 1);
    assert_eq!(m.failed_closed_items.load(Ordering::Relaxed), 2);
}

#[test]
fn malformed_guest_output_is_rejected_and_handled_by_the_fail_policy() {
    let host = host();
    // The batch ABI: the guest answers with bytes that are not an OTLP request.
    let plugin = load(
        &host,
        serde_json::json!({"fault": "bad-tree"}),
        FailPolicy::Closed,
    );
    let (out, report) = plugin.process(traces()).expect("valid OTLP");
    assert!(out.resource_spans.is_empty(), "the request was dropped");
    assert_eq!(report.failed_batches, 1);
    assert_eq!(
        plugin.metrics().malformed_outputs.load(Ordering::Relaxed),
        1
    );
    let strict = plugin.process_strict(traces()).expect_err("strict stops");
    assert!(
        strict.to_string().contains("returned malformed output")
            && strict.to_string().contains("runs past the end"),
        "{strict}"
    );
    // Fail-open passes the original on.
    let open = load(
        &host,
        serde_json::json!({"fault": "bad-tree"}),
        FailPolicy::Open,
    );
    let (out, _) = open.process(traces()).expect("valid OTLP");
    assert_eq!(out, traces());

    // Typed records: a nested value whose child index points backwards.
    let typed = load_from(
        &host,
        guests::TYPED_FAULT,
        serde_json::json!({"fault": "bad-tree"}),
        FailPolicy::Closed,
    );
    let (out, report) = typed.process(traces()).expect("valid OTLP");
    assert!(out.resource_spans.is_empty(), "both batches dropped");
    assert_eq!(report.failed_batches, 2);
    let strict = typed.process_strict(traces()).expect_err("strict stops");
    assert!(strict.to_string().contains("not after it"), "{strict}");
}

#[test]
fn dropping_items_is_counted_as_dropped_not_failed() {
    let host = host();
    let plugin = load(
        &host,
        serde_json::json!({"fault": "drop-all"}),
        FailPolicy::Open,
    );
    let (out, report) = plugin.process(traces()).expect("valid OTLP");
    assert_eq!(report.items_out, 0);
    assert_eq!(report.failed_batches, 0);
    assert!(
        out.resource_spans
            .iter()
            .all(|r| r.scope_spans.iter().all(|s| s.spans.is_empty()))
    );
    assert_eq!(plugin.metrics().items_dropped.load(Ordering::Relaxed), 3);
}

#[test]
fn the_host_serves_other_plugins_while_one_loops() {
    let host = host();
    let looping = load(
        &host,
        serde_json::json!({"fault": "loop"}),
        FailPolicy::Open,
    );
    let healthy = {
        let mut s = PluginSettings::new("healthy");
        s.config = serde_json::json!({"fault": "none"});
        host.load_file(guests::FAULT.as_ref(), s).expect("load")
    };
    let t = std::thread::spawn(move || looping.process(traces()).map(|(_, r)| r));
    for _ in 0..20 {
        let (out, report) = healthy.process(traces()).expect("valid OTLP");
        assert_eq!(report.items_out, 3);
        assert_eq!(out, traces());
    }
    let report = t.join().expect("thread").expect("valid OTLP");
    assert_eq!(
        report.failed_batches, 1,
        "the request hit the deadline and was passed on"
    );
}

/// The attribute `key` of the first span, as a debug string.
fn first_span_attr(out: &ExportTraceServiceRequest, key: &str) -> String {
    out.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| format!("{:?}", kv.value))
        .unwrap_or_else(|| panic!("{key} not set"))
}

#[test]
fn wasi_grants_no_environment_and_no_filesystem_by_default() {
    // SAFETY (of the test): HOME is set for the test process; the guest must not see it.
    assert!(std::env::var("HOME").is_ok(), "the host has HOME");
    let host = host();
    let plugin = load(
        &host,
        serde_json::json!({"fault": "probe"}),
        FailPolicy::Closed,
    );
    let (out, _) = plugin.process(traces()).expect("valid OTLP");
    assert!(first_span_attr(&out, "probe.env").contains("<unset>"));
    assert!(first_span_attr(&out, "probe.env_count").contains("IntValue(0)"));
    let fs = first_span_attr(&out, "probe.fs");
    assert!(!fs.contains("\"ok\""), "no directory is preopened: {fs}");

    // Granting one variable passes exactly that one, with the host's value.
    let mut settings = PluginSettings::new("probe-env");
    settings.config = serde_json::json!({"fault": "probe"});
    settings.capabilities.env = vec!["HOME".into()];
    let granted = host
        .load_file(guests::FAULT.as_ref(), settings)
        .expect("load");
    let (out, _) = granted.process(traces()).expect("valid OTLP");
    let home = std::env::var("HOME").expect("HOME");
    assert!(first_span_attr(&out, "probe.env").contains(&home));
    assert!(first_span_attr(&out, "probe.env_count").contains("IntValue(1)"));
}

/// Guests returning trees deeper, lists wider and strings longer than their output limits
/// (guests/fixtures/fault `deep-tree`, `wide`, `big-string`; typed-fault `deep-tree`). Before
/// the limits, a 4 000-deep typed tree overflowed a host thread's stack and aborted weft.
#[test]
fn guest_output_past_its_limits_is_malformed_output_and_within_them_passes() {
    let host = host();
    let data = OtlpData::from_traces(&traces()).expect("valid");
    let call = |config: serde_json::Value, limits: Option<weft_runtime::wire::Limits>| {
        let mut settings = PluginSettings::new("fault");
        settings.config = config;
        settings.memory_cap = 64 << 20;
        // Megabytes are built and copied in the guest: room for a loaded machine.
        settings.deadline = Duration::from_secs(5);
        if let Some(l) = limits {
            settings.output_limits = l;
        }
        let plugin = host
            .load_file(guests::FAULT.as_ref(), settings)
            .expect("load");
        plugin.call_request(&data)
    };
    // Past the default limits by one: each is malformed output naming what is wrong.
    for (fault, needle) in [
        ("deep-tree", "values nest more than 100000 deep"),
        ("wide", "span.attributes has more than 65536 entries"),
        (
            "big-string",
            "span.name is 5242880 bytes, more than the limit of 4194304",
        ),
    ] {
        let err = call(serde_json::json!({ "fault": fault }), None).expect_err(fault);
        assert!(
            matches!(err, CallError::MalformedOutput { .. }) && err.to_string().contains(needle),
            "{fault}: {err}"
        );
    }
    // At the default limits: passed on, one span.
    let out = call(
        serde_json::json!({"fault": "deep-tree", "depth": 100_000}),
        None,
    )
    .expect("100 000 deep is what a receiver takes");
    assert_eq!(out.items(), 1);
    let out = call(
        serde_json::json!({"fault": "wide", "entries": 65_536}),
        None,
    )
    .expect("wide");
    assert_eq!(out.items(), 1);
    // Limits are per plugin: 10 levels is too deep for this one.
    let tight = weft_runtime::wire::Limits {
        max_value_depth: 10,
        ..weft_runtime::OUTPUT_LIMITS
    };
    let err = call(
        serde_json::json!({"fault": "deep-tree", "depth": 11}),
        Some(tight),
    )
    .expect_err("past a configured limit");
    assert!(err.to_string().contains("nest more than 10 deep"), "{err}");

    // Typed records: 4 000 levels (the crash) and 20 000 are malformed output; the host and
    // the plugin go on.
    for depth in [4_000, 20_000] {
        let typed = load_from(
            &host,
            guests::TYPED_FAULT,
            serde_json::json!({"fault": "deep-tree", "depth": depth}),
            FailPolicy::Closed,
        );
        let (out, report) = typed.process(traces()).expect("valid OTLP");
        assert!(
            out.resource_spans.is_empty(),
            "{depth}: both batches dropped"
        );
        assert_eq!(report.failed_batches, 2, "{depth}");
        let strict = typed.process_strict(traces()).expect_err("strict stops");
        assert!(
            strict.to_string().contains("nest more than 64 deep"),
            "{strict}"
        );
    }
    // Typed records are held to the entry and string limits too: one past a plugin's limit of
    // 10 entries / 100 bytes is malformed output, exactly at it passes. (The fixture's spans
    // have up to 2 attributes of their own: `wide` adds 8 to reach 10.)
    let small = weft_runtime::wire::Limits {
        max_entries: 10,
        max_string_bytes: 100,
        ..weft_runtime::OUTPUT_LIMITS
    };
    for (fault, key, at, needle) in [
        (
            "wide",
            "entries",
            8,
            "span.attributes has more than 10 entries",
        ),
        (
            "big-string",
            "bytes",
            100,
            "span.name is 101 bytes, more than the limit of 100",
        ),
    ] {
        let typed = |n: usize| {
            let mut settings = PluginSettings::new("typed-fault");
            settings.config = serde_json::json!({ "fault": fault, key: n });
            settings.fail_policy = FailPolicy::Closed;
            settings.output_limits = small;
            host.load_file(guests::TYPED_FAULT.as_ref(), settings)
                .expect("load")
        };
        let strict = typed(at + 1).process_strict(traces()).expect_err(fault);
        assert!(strict.to_string().contains(needle), "{fault}: {strict}");
        let (out, report) = typed(at).process(traces()).expect("valid OTLP");
        assert_eq!(report.failed_batches, 0, "{fault} at the limit: {report:?}");
        assert_eq!(
            out.resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum::<usize>(),
            3,
            "{fault} at the limit passes"
        );
    }
}

proptest::proptest! {
    // Each case loads a plugin; a few cases keep the test quick.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..Default::default()
    })]

    /// Guest output of random depth, width and string size around tight per-plugin limits:
    /// accepted exactly when within every limit, otherwise malformed output; never a crash.
    #[test]
    fn guest_output_of_any_shape_is_held_to_its_limits(
        fault in proptest::sample::select(vec!["deep-tree", "wide", "big-string"]),
        n in 1usize..3000,
    ) {
        let limits = weft_runtime::wire::Limits {
            max_value_depth: 1000,
            max_entries: 1000,
            max_string_bytes: 1000,
        };
        let mut settings = PluginSettings::new("fault");
        settings.config = serde_json::json!({
            "fault": fault, "depth": n, "entries": n, "bytes": n,
        });
        settings.deadline = Duration::from_secs(5);
        settings.output_limits = limits;
        let plugin = host().load_file(guests::FAULT.as_ref(), settings).expect("load");
        let data = OtlpData::from_traces(&traces()).expect("valid");
        match plugin.call_request(&data) {
            Ok(out) => {
                proptest::prop_assert!(n <= 1000, "{} of {} accepted", fault, n);
                proptest::prop_assert_eq!(out.items(), 1);
            }
            Err(e) => {
                proptest::prop_assert!(n > 1000, "{} of {}: {}", fault, n, e);
                proptest::prop_assert!(matches!(e, CallError::MalformedOutput { .. }), "{}", e);
            }
        }
    }
}
