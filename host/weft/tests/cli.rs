//! The `weft` binary, run as a user would: `weft test` over fixtures with each example plugin,
//! and its errors for bad input, the wrong world, an invalid configuration and a trapping guest.

use std::process::{Command, Output};

mod common;
use common::{guest, workspace};

fn weft(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().expect("tempdir");
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .current_dir(workspace())
        .env("WEFT_CACHE_DIR", cache.path())
        .output()
        .expect("run weft")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `weft test` and returns the OTLP/JSON it printed, parsed; fails the test on an error.
fn weft_test(plugin: &str, input: &str, config: Option<&str>) -> (serde_json::Value, String) {
    let g = guest(plugin);
    let mut args = vec!["test", g.to_str().expect("utf-8 path"), "--input", input];
    if let Some(c) = config {
        args.extend(["--config", c]);
    }
    let out = weft(&args);
    assert!(
        out.status.success(),
        "weft test {plugin} failed: {}",
        stderr(&out)
    );
    let json = serde_json::from_str(&stdout(&out)).expect("stdout is OTLP/JSON");
    (json, stderr(&out))
}

fn count(json: &serde_json::Value, outer: &str, inner: &str, items: &str) -> usize {
    json[outer]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r[inner].as_array().into_iter().flatten())
        .map(|s| s[items].as_array().map_or(0, Vec::len))
        .sum()
}

/// The value of attribute `key` of the first span that has it, as JSON.
fn span_attr(json: &serde_json::Value, key: &str) -> serde_json::Value {
    json["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["scopeSpans"].as_array().into_iter().flatten())
        .flat_map(|s| s["spans"].as_array().into_iter().flatten())
        .flat_map(|s| s["attributes"].as_array().into_iter().flatten())
        .find(|kv| kv["key"] == key)
        .map(|kv| kv["value"].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn pii_mask_masks_the_trace_fixture() {
    let fixture = "guests/pii-mask/fixtures/traces-with-pii.json";
    let (json, err) = weft_test("pii-mask", fixture, None);
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join(fixture)).expect("fixture"))
            .expect("json");
    let s = |v: &str| serde_json::json!({ "stringValue": v });
    // Positives: the fixture's value, then what weft test printed.
    for (key, before, after) in [
        ("payment.card", "4111 1111 1111 1111", "4111 **** **** 1111"),
        ("enduser.email", "alice@example.com", "a***@example.com"),
        ("enduser.phone", "+86 138 1234 5678", "+86 138 **** 5678"),
    ] {
        assert_eq!(span_attr(&input, key), s(before), "fixture {key}");
        assert_eq!(span_attr(&json, key), s(after), "masked {key}");
    }
    // Negatives: a Luhn-invalid order number and card digits inside a longer id stay as they are.
    for key in ["order.id", "app.request_id", "app.phone_like"] {
        assert_eq!(
            span_attr(&json, key),
            span_attr(&input, key),
            "{key} must not change"
        );
        assert_ne!(
            span_attr(&json, key),
            serde_json::Value::Null,
            "{key} is in the fixture"
        );
    }
    assert!(
        err.contains("weft test: guest_pii_mask (otlp-processor) traces:"),
        "{err}"
    );
    assert_eq!(
        count(&json, "resourceSpans", "scopeSpans", "spans"),
        count(&input, "resourceSpans", "scopeSpans", "spans")
    );
}

#[test]
fn pii_mask_masks_nested_log_bodies() {
    let (json, _) = weft_test(
        "pii-mask",
        "guests/pii-mask/fixtures/logs-with-pii.json",
        None,
    );
    let text = json.to_string();
    assert!(text.contains("***@"), "an e-mail was masked: {text}");
    assert!(!text.contains("13812345678"), "{text}");
}

#[test]
fn sampler_keeps_some_and_drops_some() {
    let input = "guests/sampler/fixtures/traces-mixed.json";
    let (all, _) = weft_test("sampler", input, Some(r#"{"percentage": 100}"#));
    let (half, err) = weft_test(
        "sampler",
        input,
        Some(r#"{"percentage": 50, "keep_errors": false, "routes": []}"#),
    );
    let (none, _) = weft_test(
        "sampler",
        input,
        Some(r#"{"percentage": 0, "keep_errors": false, "routes": []}"#),
    );
    let n_all = count(&all, "resourceSpans", "scopeSpans", "spans");
    let n_half = count(&half, "resourceSpans", "scopeSpans", "spans");
    assert!(n_all >= 10, "fixture has many spans");
    assert_eq!(count(&none, "resourceSpans", "scopeSpans", "spans"), 0);
    assert!(
        n_half > 0 && n_half < n_all,
        "50 % keeps some, not all: {n_half}/{n_all}; {err}"
    );
}

#[test]
fn cloud_enrich_adds_resource_attributes() {
    let (json, _) = weft_test(
        "cloud-enrich",
        "guests/cloud-enrich/fixtures/traces.json",
        Some(r#"{"provider": "aws", "region": "eu-west-1", "availability_zone": "eu-west-1a"}"#),
    );
    let attrs = json["resourceSpans"][0]["resource"]["attributes"].to_string();
    for want in [
        "cloud.provider",
        "aws",
        "cloud.region",
        "eu-west-1",
        "cloud.availability_zone",
    ] {
        assert!(attrs.contains(want), "{want} missing from {attrs}");
    }
}

#[test]
fn protocol_parse_turns_lines_into_attributes() {
    let input = "guests/protocol-parse/fixtures/logs-logfmt-and-legacy.json";
    let (json, _) = weft_test("protocol-parse", input, None);
    let text = json.to_string();
    assert!(
        text.contains("legacy.service"),
        "legacy line parsed: {text}"
    );
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join(input)).expect("fixture"))
            .expect("json");
    assert_eq!(
        count(&json, "resourceLogs", "scopeLogs", "logRecords"),
        count(&input, "resourceLogs", "scopeLogs", "logRecords"),
        "unparseable lines pass, nothing is dropped"
    );
}

#[test]
fn output_file_in_protobuf_reads_back_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pb = dir.path().join("out.pb");
    let g = guest("fault");
    let out = weft(&[
        "test",
        g.to_str().expect("utf-8"),
        "--input",
        "tests/fixtures/traces-two-scopes.json",
        "--output",
        pb.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "result went to the file");
    // Feed the protobuf back in: signal detection works on protobuf too.
    let again = weft(&[
        "test",
        g.to_str().expect("utf-8"),
        "--input",
        pb.to_str().expect("utf-8"),
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    let a: serde_json::Value = serde_json::from_str(&stdout(&again)).expect("json");
    let orig: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/traces-two-scopes.json"))
            .expect("fixture"),
    )
    .expect("json");
    assert_eq!(
        a, orig,
        "fixture → protobuf → JSON is unchanged by a pass-through plugin"
    );
}

fn assert_fails(args: &[&str], needle: &str) {
    let out = weft(args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    let err = stderr(&out);
    assert!(
        err.contains(needle),
        "stderr of {args:?} lacks {needle:?}: {err}"
    );
}

#[test]
fn errors_are_clear_and_exit_nonzero() {
    let fault = guest("fault");
    let fault = fault.to_str().expect("utf-8");
    let traces = "tests/fixtures/traces-two-scopes.json";
    assert_fails(
        &[
            "test",
            fault,
            "--input",
            traces,
            "--config",
            r#"{"fault":"bad-config"}"#,
        ],
        "plugin `guest_fault` rejected its configuration: fault: this plugin rejects its configuration on purpose",
    );
    assert_fails(
        &[
            "test",
            fault,
            "--input",
            traces,
            "--config",
            r#"{"fault":"panic"}"#,
        ],
        "plugin `guest_fault` trapped (panic)",
    );
    assert_fails(
        &[
            "test",
            fault,
            "--input",
            traces,
            "--config",
            r#"{"fault":"loop"}"#,
            "--deadline-ms",
            "20",
        ],
        "plugin `guest_fault` trapped (deadline)",
    );
    assert_fails(
        &[
            "test",
            fault,
            "--input",
            traces,
            "--config",
            r#"{"fault":"error"}"#,
        ],
        "plugin `guest_fault` returned an error: fault: returning an error on purpose",
    );
    assert_fails(
        &["test", fault, "--input", traces, "--config", "{not json"],
        "--config is not valid JSON",
    );

    let not_plugin = guest("not-a-plugin").with_file_name("guest-not-a-plugin.wasm");
    assert_fails(
        &[
            "test",
            not_plugin.to_str().expect("utf-8"),
            "--input",
            traces,
        ],
        "is not a weft plugin of the expected world",
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "{\"resourceSpans\": [ {\"scopeSpans\": 7} ]}").expect("write");
    assert_fails(
        &["test", fault, "--input", bad_json.to_str().expect("utf-8")],
        "invalid OTLP/JSON",
    );
    let bad_id = dir.path().join("bad-id.json");
    std::fs::write(&bad_id, r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abcd","spanId":"eee19b7ec3c1b174"}]}]}]}"#).expect("write");
    assert_fails(
        &["test", fault, "--input", bad_id.to_str().expect("utf-8")],
        "malformed OTLP: span.trace_id must be 16 bytes, got 2",
    );
    let junk = dir.path().join("junk.pb");
    std::fs::write(&junk, [0xff, 0xff, 0xff, 0x01, 0x02]).expect("write");
    assert_fails(
        &["test", fault, "--input", junk.to_str().expect("utf-8")],
        "not an OTLP protobuf traces or logs request",
    );
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    assert_fails(
        &["test", core.to_str().expect("utf-8"), "--input", traces],
        "is a core WebAssembly module, not a component",
    );
    assert_fails(
        &["test", "/nonexistent.wasm", "--input", traces],
        "cannot read /nonexistent.wasm",
    );
}

#[test]
fn inspect_prints_world_and_cache_state() {
    let g = guest("pii-mask");
    let out = weft(&["inspect", g.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("world:     otlp-processor"), "{text}");
    assert!(text.contains("package:   weft:plugin@0.2.0"), "{text}");
    assert!(text.contains("cached:    no"), "{text}");
    assert!(text.contains("weft:plugin/config@0.2.0"), "{text}");
}

#[test]
fn guest_stdout_and_stderr_go_to_the_host_log_tagged_with_the_plugin() {
    let g = guest("fault");
    let out = weft(&[
        "test",
        g.to_str().expect("utf-8"),
        "--input",
        "tests/fixtures/traces-two-scopes.json",
        "--config",
        r#"{"fault":"print"}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fault: hello from"))
        .collect();
    // One request, one call (the batch ABI): one stdout and one stderr line.
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        assert!(
            line.contains("plugin=\"guest_fault\""),
            "tagged with the plugin: {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stream=\"stderr\"") && l.contains("WARN")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stream=\"stdout\"") && l.contains("INFO")),
        "{log}"
    );
    assert!(
        !stdout(&out).contains("hello from"),
        "guest output never reaches weft's stdout"
    );
}

#[test]
fn the_example_configuration_validates_and_errors_name_the_key() {
    let out = weft(&["validate", "examples/collector/weft.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        "examples/collector/weft.yaml: valid (1 receivers, 3 processors, 2 exporters, 2 pipelines)"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    let text =
        std::fs::read_to_string(workspace().join("examples/collector/weft.yaml")).expect("example");
    std::fs::write(&bad, text.replace("deadline: 50ms", "deadline: soon")).expect("write");
    assert_fails(
        &["validate", bad.to_str().expect("utf-8")],
        "processors.wasm/pii-mask.deadline: `soon` is not a duration like 100ms",
    );
    // A plugin that rejects its configuration fails validation with the plugin's message.
    std::fs::write(
        &bad,
        text.replace("card_keep_first: 4", "card_keep_first: 40"),
    )
    .expect("write");
    assert_fails(
        &["validate", bad.to_str().expect("utf-8")],
        "processors.wasm/pii-mask: plugin `wasm/pii-mask` rejected its configuration",
    );
}

#[test]
fn adapt_writes_a_verified_module_an_oci_layout_and_the_envoy_snippet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ab.proxy.wasm");
    let oci = dir.path().join("oci");
    let component = guest("ab-router");
    let o = weft(&[
        "adapt",
        component.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
        "--oci",
        oci.to_str().expect("utf-8"),
        "--tag",
        "v3",
        "--config",
        r#"{"split":[{"version":"v1","percent":100}]}"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let module = std::fs::read(&out).expect("the module was written");
    assert_eq!(&module[..8], b"\0asm\x01\0\0\0", "a core module");
    assert!(stderr(&o).contains("verified"), "{}", stderr(&o));
    let snippet = stdout(&o);
    assert!(snippet.contains("envoy.filters.http.wasm"), "{snippet}");
    assert!(
        snippet.contains("runtime: envoy.wasm.runtime.v8"),
        "{snippet}"
    );
    assert!(
        snippet.contains("allow_on_headers_stop_iteration: true"),
        "{snippet}"
    );
    assert!(
        snippet.contains(r#"{"split":[{"version":"v1","percent":100}]}"#),
        "{snippet}"
    );
    assert!(snippet.contains("ab.proxy.wasm"), "{snippet}");
    let index = std::fs::read_to_string(oci.join("index.json")).expect("index.json");
    assert!(index.contains("\"v3\""), "{index}");
}

#[test]
fn adapt_refuses_other_worlds_with_a_clear_message_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.wasm");
    let component = guest("sampler");
    let o = weft(&[
        "adapt",
        component.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("span-processor") && err.contains("http-filter"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written for a refused component");
}

#[test]
fn weft_wit_writes_the_package_it_was_built_against_and_keeps_an_authors_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("wit");
    let target = out_dir.to_str().expect("utf-8");
    let out = weft(&["wit", target]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(": weft:plugin@") && stdout(&out).contains("(12 files)"),
        "{}",
        stdout(&out)
    );
    let repo = workspace().join("wit");
    for entry in std::fs::read_dir(&repo).expect("wit/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        assert_eq!(
            std::fs::read_to_string(out_dir.join(name)).expect("written"),
            std::fs::read_to_string(&path).expect("repo"),
            "{name:?} as in the repository"
        );
    }
    // Again: the same files, nothing to refuse.
    assert!(weft(&["wit", target]).status.success());
    // An edited file is kept unless --force.
    std::fs::write(out_dir.join("log.wit"), "// edited\n").expect("edit");
    assert_fails(
        &["wit", target],
        "exists with other content (pass --force to overwrite)",
    );
    assert!(weft(&["wit", target, "--force"]).status.success());
    assert_eq!(
        std::fs::read_to_string(out_dir.join("log.wit")).expect("restored"),
        std::fs::read_to_string(repo.join("log.wit")).expect("repo")
    );
}
