//! `weft run` in-process on loopback: OTLP over real gRPC (tonic client, gzip on and off) and
//! real HTTP (protobuf, JSON, gzip) through pii-mask into an in-memory exporter; malformed
//! inputs are refused with the OTLP status codes and the server keeps serving; self-metrics
//! count it all. Tests about the pipeline replace their `debug/memory` exporter with a
//! `weft::service::InMemoryExporter` (`weft_tests::start_in_memory`); the configuration-reload
//! test keeps a real `file` exporter and reads its output.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use weft::Config;
use weft::service::InMemoryExporter;
use weft_tests::{MEMORY_EXPORTER, host_with_cache, json_lines, start_in_memory};

/// A request of `n` spans; span `i` carries `test.id = "{tag}-{i}"` and a card number.
fn request(tag: &str, n: usize) -> ExportTraceServiceRequest {
    let s = |v: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        })
    };
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![(i + 1) as u8; 16],
            span_id: vec![(i + 1) as u8; 8],
            name: "op".into(),
            attributes: vec![
                KeyValue {
                    key: "test.id".into(),
                    value: s(&format!("{tag}-{i}")),
                    key_strindex: 0,
                },
                KeyValue {
                    key: "card".into(),
                    value: s("4111 1111 1111 1111"),
                    key_strindex: 0,
                },
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A minimal HTTP/1.1 client: one request per connection; returns (status, body).
fn http(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) and stop reading before the whole body is written.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    (status, resp[body_at..].to_vec())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn config() -> Config {
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
      http: {{ endpoint: "127.0.0.1:0", max_request_body_size_mib: 1 }}
processors:
  wasm/pii:
    component: builtin:pii-mask
    fail_policy: closed
exporters:
  {MEMORY_EXPORTER}: {{}}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/pii], exporters: [{MEMORY_EXPORTER}] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:0" }}
"#
    );
    Config::parse(&yaml, std::path::Path::new(".")).expect("config")
}

/// The `test.id`s of `spans`, in order.
fn test_ids(spans: &[Span]) -> Vec<String> {
    let mut ids = Vec::new();
    for span in spans {
        for kv in &span.attributes {
            if kv.key == "test.id"
                && let Some(AnyValue {
                    value: Some(any_value::Value::StringValue(v)),
                }) = &kv.value
            {
                ids.push(v.clone());
            }
        }
    }
    ids
}

/// All `test.id`s the in-memory exporter got, and every request it got as OTLP/JSON (one line
/// each, as the file exporter would write them).
fn exported(memory: &InMemoryExporter) -> (Vec<String>, String) {
    let text = json_lines(memory);
    (test_ids(&memory.spans()), text)
}

/// All `test.id`s in the file exporter's output, and the whole text.
fn read_output(path: &std::path::Path) -> (Vec<String>, String) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ids = Vec::new();
    for line in text.lines() {
        let req: ExportTraceServiceRequest =
            serde_json::from_str(line).expect("each line is OTLP/JSON");
        let spans: Vec<Span> = req
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect();
        ids.extend(test_ids(&spans));
    }
    (ids, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_arrives_once_over_grpc_and_http_with_pii_masked() {
    let host = host_with_cache(None).expect("host");
    let (running, memory) = start_in_memory(&config(), &host).await.expect("start");
    let grpc = running.address("otlp", "grpc").expect("grpc listener");
    let http_addr = running.address("otlp", "http").expect("http listener");

    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    client
        .export(request("grpc-plain", 5))
        .await
        .expect("plain gRPC");
    let mut gz = client
        .clone()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    gz.export(request("grpc-gzip", 5)).await.expect("gzip gRPC");

    let sent = tokio::task::spawn_blocking(move || {
        let pb = request("http-pb", 5).encode_to_vec();
        assert_eq!(
            http(
                http_addr,
                "/v1/traces",
                &[("Content-Type", "application/x-protobuf")],
                &pb
            )
            .0,
            200
        );
        let gz = gzip(&request("http-gz", 5).encode_to_vec());
        let h = [
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ];
        assert_eq!(http(http_addr, "/v1/traces", &h, &gz).0, 200);
        let json = serde_json::to_vec(&request("http-json", 5)).expect("json");
        let (status, body) = http(
            http_addr,
            "/v1/traces",
            &[("Content-Type", "application/json")],
            &json,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        25
    })
    .await
    .expect("http client");

    let metrics_addr = running.metrics_address.expect("metrics on");
    assert!(running.shutdown(Duration::from_secs(10)).await, "drained");
    let (mut ids, text) = exported(&memory);
    assert_eq!(ids.len(), sent, "every span arrived");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent, "no span arrived twice");
    assert!(!text.contains("4111 1111 1111 1111"), "the card was masked");
    assert!(text.contains("4111 **** **** 1111"));
    // The server is gone after shutdown.
    assert!(TcpStream::connect(metrics_addr).is_err() || get(metrics_addr, "/healthz").0 != 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inputs_are_refused_and_the_server_keeps_serving() {
    let host = host_with_cache(None).expect("host");
    let (running, memory) = start_in_memory(&config(), &host).await.expect("start");
    let grpc = running.address("otlp", "grpc").expect("grpc");
    let addr = running.address("otlp", "http").expect("http");
    let metrics = running.metrics_address.expect("metrics");

    // gRPC: a span id of the wrong length is INVALID_ARGUMENT, not a crash.
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    let mut bad = request("bad", 1);
    bad.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2, 3];
    let err = client.export(bad).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains("span.span_id must be 8 bytes, got 3"),
        "{err}"
    );

    let checks = tokio::task::spawn_blocking(move || {
        let pb = [("Content-Type", "application/x-protobuf")];
        let good = request("ok", 2).encode_to_vec();
        let mut seen = Vec::new();
        // (what was tried, status) — each followed by a good request that must still pass.
        let truncated = &good[..good.len() - 3];
        seen.push((
            "truncated protobuf",
            http(addr, "/v1/traces", &pb, truncated).0,
        ));
        seen.push((
            "wrong content type",
            http(
                addr,
                "/v1/traces",
                &[("Content-Type", "text/plain")],
                b"hello",
            )
            .0,
        ));
        seen.push((
            "bad JSON",
            http(
                addr,
                "/v1/traces",
                &[("Content-Type", "application/json")],
                b"{\"resourceSpans\": [",
            )
            .0,
        ));
        seen.push((
            "oversized body",
            http(addr, "/v1/traces", &pb, &vec![0u8; 2 << 20]).0,
        ));
        let bomb = gzip(&vec![0u8; 64 << 20]);
        let gz = [
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ];
        seen.push((
            "gzip bomb (64 MiB of zeros)",
            http(addr, "/v1/traces", &gz, &bomb).0,
        ));
        seen.push(("not gzip", http(addr, "/v1/traces", &gz, b"plain bytes").0));
        seen.push(("unknown path", http(addr, "/v1/metrics", &pb, &good).0));
        for (what, _) in &seen {
            assert_eq!(
                http(addr, "/v1/traces", &pb, &good).0,
                200,
                "a good request after: {what}"
            );
        }
        seen
    })
    .await
    .expect("client");
    let expected = [
        ("truncated protobuf", 400),
        ("wrong content type", 415),
        ("bad JSON", 400),
        ("oversized body", 413),
        ("gzip bomb (64 MiB of zeros)", 413),
        ("not gzip", 400),
        ("unknown path", 404),
    ];
    assert_eq!(checks, expected);

    let (status, text) = tokio::task::spawn_blocking(move || get(metrics, "/metrics"))
        .await
        .expect("get");
    assert_eq!(status, 200);
    // 7 good requests of 2 spans. Malformed requests (the gRPC one too) are refused by the
    // receiver's validation before the pipeline: their items cannot be counted, so none are.
    assert!(
        text.contains("weft_pipeline_received_items_total{pipeline=\"traces\"} 14"),
        "{text}"
    );
    assert!(
        text.contains("weft_pipeline_refused_items_total{pipeline=\"traces\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("weft_plugin_calls_total{plugin=\"wasm/pii\"}"),
        "{text}"
    );
    let (h, _) = tokio::task::spawn_blocking(move || get(metrics, "/healthz"))
        .await
        .expect("get");
    assert_eq!(h, 200);
    assert!(running.shutdown(Duration::from_secs(10)).await);
    let (ids, _) = exported(&memory);
    assert_eq!(ids.len(), 14, "the 7 good requests, 2 spans each");
}

/// A real OTLP/gRPC sink on loopback that records every `test.id` it receives.
#[derive(Clone, Default)]
struct Sink {
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut ids = self.ids.lock().expect("lock");
        for span in request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            for kv in &span.attributes {
                if kv.key == "test.id"
                    && let Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v)),
                    }) = &kv.value
                {
                    ids.push(v.clone());
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// The sink's port while the sink is "down": bound but not listening, so connections to it
/// are refused and no other test's listener can be given it (a port closed again after
/// `bind` can be, and then that listener answers the exporter). The sink comes up on the same
/// socket.
struct DownPort(socket2::Socket);

impl DownPort {
    fn new() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        DownPort(socket)
    }

    fn port(&self) -> u16 {
        self.0
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("an IP address")
            .port()
    }

    /// Starts listening: the sink is up.
    fn listen(self) -> tokio::net::TcpListener {
        self.0.listen(128).expect("listen");
        self.0.set_nonblocking(true).expect("nonblocking");
        tokio::net::TcpListener::from_std(self.0.into()).expect("tokio listener")
    }
}

/// Starts a [`Sink`] on `port` (the sink "comes back"); abort the handle to stop it.
async fn start_sink(
    port: DownPort,
) -> (
    Sink,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let sink = Sink::default();
    let listener = port.listen();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(sink.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (sink, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_outage_is_retried_until_the_sink_is_back_and_nothing_is_lost() {
    // Reserve a port for the sink, and leave it closed: the sink is "down".
    let down = DownPort::new();
    let sink_port = down.port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink_port}"
    timeout: 1s
    batch: {{ send_batch_size: 10, timeout: 50ms }}
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 400ms, max_elapsed_time: 30s }}
    sending_queue: {{ queue_size: 100 }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:0" }}
"#
    );
    let config = Config::parse(&yaml, std::path::Path::new(".")).expect("config");
    let host = host_with_cache(None).expect("host");
    let running = weft::start(&config, &host).await.expect("start");
    let grpc = running.address("otlp", "grpc").expect("grpc");
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    for i in 0..8 {
        client
            .export(request(&format!("outage{i}"), 5))
            .await
            .expect("accepted while the sink is down");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = running.pipelines[0].stats.clone();
    let retries_while_down = stats.retries.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        retries_while_down >= 2,
        "the exporter kept retrying: {retries_while_down}"
    );
    assert_eq!(stats.exported.load(std::sync::atomic::Ordering::Relaxed), 0);

    // The sink comes back.
    let (sink, server) = start_sink(down).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sink.ids.lock().expect("lock").len() < 40 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running.shutdown(Duration::from_secs(10)).await, "drained");
    server.abort();
    let mut ids = sink.ids.lock().expect("lock").clone();
    assert_eq!(ids.len(), 40, "all 8 × 5 spans delivered");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "none twice");
    assert_eq!(
        stats.exported.load(std::sync::atomic::Ordering::Relaxed),
        40
    );
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_pushes_back_on_clients_and_loses_nothing_it_accepted() {
    let down = DownPort::new();
    let sink_port = down.port();
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
      http: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink_port}"
    timeout: 500ms
    batch: {{ send_batch_size: 1, timeout: 10ms }}
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 60s }}
    sending_queue: {{ queue_size: 2 }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
  telemetry:
    metrics: {{ address: none }}
"#
    );
    let config = Config::parse(&yaml, std::path::Path::new(".")).expect("config");
    let host = host_with_cache(None).expect("host");
    let running = weft::start(&config, &host).await.expect("start");
    let grpc = running.address("otlp", "grpc").expect("grpc");
    let http_addr = running.address("otlp", "http").expect("http");
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");

    // The sink is down: the exporter holds one batch in retry and the queue takes two more.
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..10 {
        let tag = format!("bp{i}");
        match client.export(request(&tag, 1)).await {
            Ok(_) => accepted.push(tag),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let refused = refused.expect("the queue filled up");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(refused.message().contains("queue is full"), "{refused}");
    assert!((2..=4).contains(&accepted.len()), "accepted {accepted:?}");
    // OTLP/HTTP says the same with 503 and Retry-After.
    let (status, _) = tokio::task::spawn_blocking(move || {
        http(
            http_addr,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &request("bp-http", 1).encode_to_vec(),
        )
    })
    .await
    .expect("http");
    assert_eq!(status, 503);

    // The sink comes back: everything that was accepted arrives.
    let (sink, server) = start_sink(down).await;
    assert!(running.shutdown(Duration::from_secs(15)).await, "drained");
    server.abort();
    let mut got = sink.ids.lock().expect("lock").clone();
    got.sort();
    let mut want: Vec<String> = accepted.iter().map(|t| format!("{t}-0")).collect();
    want.sort();
    assert_eq!(got, want, "exactly the accepted requests were delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_swaps_atomically_and_keeps_serving_through_bad_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("plugin.wasm");
    // Replace the file the way deploy tools do: write beside it, then rename over it.
    let install = |src: &str| {
        let tmp = dir.path().join("plugin.wasm.tmp");
        std::fs::copy(src, &tmp).expect("copy");
        std::fs::rename(&tmp, &plugin).expect("rename");
    };
    install(weft_tests::guests::FAULT);
    // Valid for both versions: the fault plugin ignores `percentage`, the sampler keeps 100 %.
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
processors:
  wasm/hot:
    component: plugin.wasm
    config: {{ percentage: 100 }}
exporters:
  {MEMORY_EXPORTER}: {{}}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/hot], exporters: [{MEMORY_EXPORTER}] }}
  telemetry:
    metrics: {{ address: none }}
"#
    );
    let config = Config::parse(&yaml, dir.path()).expect("config");
    let host = host_with_cache(None).expect("host");
    let (running, memory) = start_in_memory(&config, &host).await.expect("start");
    let grpc = running.address("otlp", "grpc").expect("grpc");

    // Load: one client sending 5-span requests back to back until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
                .await
                .expect("connect");
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .export(request(&format!("hot{sent}"), 5))
                    .await
                    .expect("every request is accepted");
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent * 5
        })
    };
    let metrics = host.metrics().plugin("wasm/hot");
    let wait_for = |what: &'static str, f: Box<dyn Fn() -> bool + Send>| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    install(weft_tests::guests::SAMPLER);
    let m = metrics.clone();
    wait_for(
        "the sampler to be swapped in",
        Box::new(move || m.reloads.load(std::sync::atomic::Ordering::Relaxed) == 1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir.path().join("plugin.wasm.tmp"), b"\0asm garbage").expect("write");
    std::fs::rename(dir.path().join("plugin.wasm.tmp"), &plugin).expect("rename");
    let m = metrics.clone();
    wait_for(
        "the corrupt file to be refused",
        Box::new(move || m.reload_failures.load(std::sync::atomic::Ordering::Relaxed) == 1),
    )
    .await;
    install(weft_tests::guests::NOT_A_PLUGIN);
    let m = metrics.clone();
    wait_for(
        "the wrong world to be refused",
        Box::new(move || m.reload_failures.load(std::sync::atomic::Ordering::Relaxed) == 2),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.await.expect("sender");

    assert!(running.shutdown(Duration::from_secs(10)).await, "drained");
    let (mut ids, _) = exported(&memory);
    assert_eq!(
        ids.len(),
        sent,
        "every span sent during the reloads arrived"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), sent, "none twice");
    assert_eq!(
        metrics.reloads.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        metrics
            .reload_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // Both versions served: the fault plugin counts its calls, the sampler its kept spans.
    let text = host.metrics().render_prometheus();
    assert!(
        text.contains("weft_guest_fault_calls_total{plugin=\"wasm/hot\""),
        "{text}"
    );
    assert!(
        text.contains("weft_guest_sampler_spans_total{plugin=\"wasm/hot\",decision=\"kept\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_http_exporter_delivers_to_another_weft_after_an_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let a_yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
exporters:
  otlphttp:
    endpoint: "http://127.0.0.1:{b_port}"
    batch: {{ send_batch_size: 20, timeout: 20ms }}
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 200ms }}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlphttp] }}
  telemetry:
    metrics: {{ address: none }}
"#
    );
    let b_yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      http: {{ endpoint: "127.0.0.1:{b_port}" }}
exporters:
  {MEMORY_EXPORTER}: {{}}
service:
  pipelines:
    traces: {{ receivers: [otlp], exporters: [{MEMORY_EXPORTER}] }}
  telemetry:
    metrics: {{ address: none }}
"#
    );
    let host = host_with_cache(None).expect("host");
    let a = weft::start(&Config::parse(&a_yaml, dir.path()).expect("a"), &host)
        .await
        .expect("start a");
    let mut client = TraceServiceClient::connect(format!(
        "http://{}",
        a.address("otlp", "grpc").expect("grpc")
    ))
    .await
    .expect("connect");
    for i in 0..6 {
        client
            .export(request(&format!("viahttp{i}"), 5))
            .await
            .expect("accepted");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b, memory) = start_in_memory(&Config::parse(&b_yaml, dir.path()).expect("b"), &host)
        .await
        .expect("start b");
    let stats = a.pipelines[0].stats.clone();
    assert!(a.shutdown(Duration::from_secs(15)).await, "a drained");
    assert!(b.shutdown(Duration::from_secs(5)).await, "b drained");
    let (mut ids, _) = exported(&memory);
    assert_eq!(ids.len(), 30, "all 6 × 5 spans arrived over OTLP/HTTP");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30, "none twice");
    assert!(
        stats.retries.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "the outage was retried"
    );
    assert_eq!(
        stats.exported.load(std::sync::atomic::Ordering::Relaxed),
        30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_configuration_reloads_processors_and_refuses_the_rest() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    let path = dir.path().join("weft.yaml");
    let write = |fault: &str, file: &str| {
        let yaml = format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
processors:
  wasm/edit:
    component: "{}"
    config: {{ fault: {fault} }}
exporters:
  file: {{ path: "{}" }}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/edit], exporters: [file] }}
  telemetry:
    metrics: {{ address: none }}
"#,
            weft_tests::guests::FAULT,
            dir.path().join(file).display()
        );
        std::fs::write(&path, yaml).expect("write config");
    };
    write("none", "out.jsonl");
    let config = Config::load(&path).expect("config");
    let host = host_with_cache(None).expect("host");
    let running = weft::start(&config, &host).await.expect("start");
    let mut client = TraceServiceClient::connect(format!(
        "http://{}",
        running.address("otlp", "grpc").expect("grpc")
    ))
    .await
    .expect("connect");
    let reloads = running.config_reloads.clone();
    let wait = |what: &'static str, counter: &'static str, n: u64| {
        let reloads = reloads.clone();
        async move {
            let c = match counter {
                "ok" => &reloads.ok,
                "failed" => &reloads.failed,
                _ => &reloads.needs_restart,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while c.load(Relaxed) < n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    client.export(request("before", 5)).await.expect("accepted");
    // The plugin's configuration changes: applied live.
    write("drop-all", "out.jsonl");
    wait("the new plugin config", "ok", 1).await;
    client
        .export(request("dropped", 5))
        .await
        .expect("accepted");
    // Invalid YAML, and a configuration the plugin rejects: refused, the running one stays.
    std::fs::write(&path, "receivers: [").expect("write");
    wait("invalid YAML refused", "failed", 1).await;
    write("bad-config", "out.jsonl");
    wait("a rejected plugin config refused", "failed", 2).await;
    client
        .export(request("still-dropped", 5))
        .await
        .expect("accepted");
    // An exporter change needs new queues: not applied, a restart is asked for.
    write("none", "elsewhere.jsonl");
    wait("a structural change", "needs_restart", 1).await;
    client
        .export(request("after-restart-asked", 5))
        .await
        .expect("accepted");

    assert!(running.shutdown(Duration::from_secs(10)).await);
    let (mut ids, _) = read_output(&out);
    ids.sort();
    let want: Vec<String> = (0..5).map(|i| format!("before-{i}")).collect();
    assert_eq!(
        ids, want,
        "only the batch sent before drop-all was applied arrived"
    );
    assert!(
        !dir.path().join("elsewhere.jsonl").exists(),
        "the exporter change was not applied"
    );
    assert_eq!(
        (
            reloads.ok.load(Relaxed),
            reloads.failed.load(Relaxed),
            reloads.needs_restart.load(Relaxed)
        ),
        (1, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_a_fail_closed_plugin_drops_is_reported_as_partial_success() {
    let yaml = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:0" }}
      http: {{ endpoint: "127.0.0.1:0" }}
processors:
  wasm/strict:
    component: "{}"
    config: {{ fault: panic }}
    fail_policy: closed
exporters:
  {MEMORY_EXPORTER}: {{}}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [wasm/strict], exporters: [{MEMORY_EXPORTER}] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:0" }}
"#,
        weft_tests::guests::FAULT,
    );
    let host = host_with_cache(None).expect("host");
    let config = Config::parse(&yaml, std::path::Path::new(".")).expect("config");
    let (running, memory) = start_in_memory(&config, &host).await.expect("start");
    let mut client = TraceServiceClient::connect(format!(
        "http://{}",
        running.address("otlp", "grpc").expect("grpc")
    ))
    .await
    .expect("connect");
    let resp = client
        .export(request("ps", 7))
        .await
        .expect("accepted")
        .into_inner();
    let partial = resp.partial_success.expect("partial success reported");
    assert_eq!(partial.rejected_spans, 7);
    assert_eq!(
        partial.error_message,
        "processor wasm/strict failed and its fail policy (closed) dropped the data"
    );

    let http_addr = running.address("otlp", "http").expect("http");
    let metrics = running.metrics_address.expect("metrics");
    let (status, body, text) = tokio::task::spawn_blocking(move || {
        let json = serde_json::to_vec(&request("ps-http", 3)).expect("json");
        let (status, body) = http(
            http_addr,
            "/v1/traces",
            &[("Content-Type", "application/json")],
            &json,
        );
        (status, body, get(metrics, "/metrics").1)
    })
    .await
    .expect("http");
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON response");
    // int64 in OTLP/JSON: protobuf JSON readers take a number or a string.
    assert_eq!(
        body["partialSuccess"]["rejectedSpans"]
            .to_string()
            .trim_matches('"'),
        "3",
        "{body}"
    );
    assert!(
        text.contains(&format!(
            "weft_pipeline_queue_requests{{pipeline=\"traces\",exporter=\"{MEMORY_EXPORTER}\"}} 0"
        )),
        "{text}"
    );
    assert!(
        text.contains("weft_plugin_fail_policy_total{plugin=\"wasm/strict\",policy=\"closed\"} 2"),
        "{text}"
    );
    assert!(running.shutdown(Duration::from_secs(10)).await);
    assert_eq!(
        memory.items(),
        0,
        "nothing the plugin failed on was exported"
    );
}
