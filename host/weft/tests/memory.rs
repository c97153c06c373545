//! Memory bounded in bytes during an outage, over real sockets on 127.0.0.1.
//!
//! The finding: with the exporter's backend down, `weft run` grew from 218 MB to 3.36 GB with
//! 2 000-span requests (its queue was bounded by requests, 1 000 of them) and stayed at 1.02 GB
//! after the drain. Here a `weft run` exports to a port where nothing listens while clients
//! send 2 000-span requests (about 2.4 MB each) as fast as it answers, over OTLP/HTTP and
//! OTLP/gRPC, for 60 s:
//! - with a `memory_limiter` (256 MiB, spike 64 MiB), the resident set size stays under the
//!   limit, clients are told 503 + `Retry-After` and UNAVAILABLE, and the counters add up;
//! - then the backend comes up on that port: everything accepted is delivered, the held bytes go
//!   to 0, the RSS falls back (memory given back to the system) and requests are accepted again;
//! - with a `sending_queue` sized in bytes instead, the queue never holds more than its size.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{WeftRun, free_port};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

const SPANS: usize = 2000;
const MIB: u64 = 1 << 20;

/// A request of 2 000 spans with 10 attributes of 100 bytes each (about 2.4 MB).
fn request() -> ExportTraceServiceRequest {
    let value = "v".repeat(100);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..SPANS)
                    .map(|i| Span {
                        trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "op".into(),
                        start_time_unix_nano: 1,
                        end_time_unix_nano: 2,
                        attributes: (0..10)
                            .map(|k| KeyValue {
                                key: format!("attr.{k}"),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue(value.clone())),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One OTLP/HTTP POST on a fresh connection: the status and whether a `Retry-After` came with
/// it (status 0: no answer).
fn post(addr: SocketAddr, body: &[u8]) -> (u16, bool) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, false);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
        return (0, false);
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.contains("\r\nretry-after: "))
}

/// What the clients were told.
#[derive(Debug, Default)]
struct Answers {
    http_ok: AtomicU64,
    http_refused: AtomicU64,
    http_refused_without_retry_after: AtomicU64,
    grpc_ok: AtomicU64,
    grpc_unavailable: AtomicU64,
    other: AtomicU64,
}

impl Answers {
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    fn accepted(&self) -> u64 {
        Self::get(&self.http_ok) + Self::get(&self.grpc_ok)
    }
    fn refused(&self) -> u64 {
        Self::get(&self.http_refused) + Self::get(&self.grpc_unavailable)
    }
}

/// Sends the request as fast as weft answers, from two HTTP threads and one gRPC task, until
/// `stop`; samples weft's RSS every 100 ms meanwhile. Returns the highest RSS seen.
async fn send_until(
    weft: &WeftRun,
    grpc: SocketAddr,
    http: SocketAddr,
    body: Arc<Vec<u8>>,
    answers: Arc<Answers>,
    run_for: Duration,
) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (stop, body, answers) = (stop.clone(), body.clone(), answers.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match post(http, &body) {
                    (200, _) => answers.http_ok.fetch_add(1, Ordering::Relaxed),
                    (503, true) => answers.http_refused.fetch_add(1, Ordering::Relaxed),
                    (503, false) => {
                        answers.http_refused.fetch_add(1, Ordering::Relaxed);
                        answers
                            .http_refused_without_retry_after
                            .fetch_add(1, Ordering::Relaxed)
                    }
                    _ => answers.other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let grpc_task = {
        let (stop, answers) = (stop.clone(), answers.clone());
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("our own request");
        tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
                .expect("uri")
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .expect("connect over gRPC");
            let mut client = TraceServiceClient::new(channel).max_encoding_message_size(64 << 20);
            while !stop.load(Ordering::Relaxed) {
                match client.export(req.clone()).await {
                    Ok(_) => answers.grpc_ok.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        answers.grpc_unavailable.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(s) => {
                        eprintln!("gRPC: {s}");
                        answers.other.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < run_for {
        peak = peak.max(weft.rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("an HTTP client");
    }
    grpc_task.await.expect("the gRPC client");
    peak.max(weft.rss())
}

/// Brings the backend up on `port` ([`common::otlp_http_sink`], counting the spans it gets) and
/// waits (at most `within`) until the exporter has nothing in flight: the metrics then, and the
/// spans the backend got.
fn backend_up_and_drained(weft: &WeftRun, port: u16, within: Duration) -> (String, u64) {
    let delivered = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the backend's port");
    let count = delivered.clone();
    common::otlp_http_sink(listener, move |body| {
        let spans: usize = ExportTraceServiceRequest::decode(&body[..])
            .map(|r| {
                r.resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum()
            })
            .unwrap_or(0);
        count.fetch_add(spans as u64, Ordering::Relaxed);
    });
    let start = Instant::now();
    loop {
        let m = weft.metrics();
        if WeftRun::sample(&m, IN_FLIGHT) == 0 {
            return (m, delivered.load(Ordering::Relaxed));
        }
        assert!(
            start.elapsed() < within,
            "the exporter did not drain within {within:?}:\n{m}\n{}",
            weft.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const IN_FLIGHT: &str = "weft_exporter_in_flight_items{pipeline=\"traces\",exporter=\"otlphttp\"}";

/// A configuration exporting over OTLP/HTTP to `backend`, with `processors` and `sending_queue`
/// (YAML flow mappings) and the pipeline's processors (a list's items).
fn config(
    (grpc, http, metrics, backend): (u16, u16, u16, u16),
    processors: &str,
    pipeline_processors: &str,
    sending_queue: &str,
) -> String {
    format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: "127.0.0.1:{grpc}", max_recv_msg_size_mib: 16 }}
      http: {{ endpoint: "127.0.0.1:{http}" }}
processors: {processors}
exporters:
  otlphttp:
    endpoint: "http://127.0.0.1:{backend}"
    compression: none
    timeout: 5s
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 10m }}
    sending_queue: {sending_queue}
service:
  pipelines:
    traces: {{ receivers: [otlp], processors: [{pipeline_processors}], exporters: [otlphttp] }}
  telemetry:
    metrics: {{ address: "127.0.0.1:{metrics}" }}
"#
    )
}

/// A `weft run` after an outage of its backend: what [`outage`] saw.
struct Outage {
    weft: WeftRun,
    /// The OTLP/HTTP receiver's port.
    http: u16,
    /// The backend's port, where nothing listened.
    backend: u16,
    /// RSS before the load, and the highest seen during it.
    baseline: u64,
    peak: u64,
    answers: Arc<Answers>,
    /// The request the clients sent.
    body: Arc<Vec<u8>>,
}

/// Starts `weft run` with `processors`, `pipeline_processors` and `sending_queue` ([`config`])
/// exporting to a port where nothing listens, and sends 2 000-span requests at it for `run_for`
/// ([`send_until`]).
async fn outage(
    processors: &str,
    pipeline_processors: &str,
    sending_queue: &str,
    run_for: Duration,
) -> Outage {
    let ports = (free_port(), free_port(), free_port(), free_port());
    let (grpc, http, metrics, backend) = ports;
    let weft = WeftRun::start(
        &config(ports, processors, pipeline_processors, sending_queue),
        &[grpc, http],
        metrics,
    );
    let baseline = weft.rss();
    let body = Arc::new(request().encode_to_vec());
    let answers = Arc::new(Answers::default());
    let peak = send_until(
        &weft,
        local(grpc),
        local(http),
        body.clone(),
        answers.clone(),
        run_for,
    )
    .await;
    eprintln!(
        "outage: baseline RSS {} MiB, peak {} MiB; {answers:?}",
        baseline / MIB,
        peak / MIB
    );
    Outage {
        weft,
        http,
        backend,
        baseline,
        peak,
        answers,
        body,
    }
}

/// `port` on 127.0.0.1.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limiter_bounds_rss_through_a_60s_outage_and_memory_is_given_back_after() {
    const LIMIT: u64 = 256 * MIB;
    let Outage {
        weft,
        http,
        backend,
        baseline,
        peak,
        answers,
        body,
    } = outage(
        "{ memory_limiter: { check_interval: 100ms, limit_mib: 256, spike_limit_mib: 64 } }",
        "memory_limiter",
        "{ queue_size: 1000 }",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        body.len() > 2_000_000,
        "a 2 000-span request is {} bytes",
        body.len()
    );

    // The bound: without the limiter the queue would take 1 000 requests (2.4 GB).
    assert!(
        peak <= LIMIT,
        "RSS reached {} MiB, over the 256 MiB limit",
        peak / MIB
    );
    assert!(
        answers.accepted() > 0,
        "some requests were accepted: {answers:?}"
    );
    assert!(
        Answers::get(&answers.http_refused) > 0 && Answers::get(&answers.grpc_unavailable) > 0,
        "clients were told to retry over both protocols: {answers:?}"
    );
    assert_eq!(
        Answers::get(&answers.http_refused_without_retry_after),
        0,
        "503s carry Retry-After"
    );
    assert_eq!(
        Answers::get(&answers.other),
        0,
        "every request was answered 200/OK or 503/UNAVAILABLE"
    );

    // The counters say what the clients were told, and what the exporter still holds.
    let m = weft.metrics();
    let get = |series: &str| WeftRun::sample(&m, series);
    let spans = SPANS as u64;
    let total = answers.accepted() + answers.refused();
    assert_eq!(
        get("weft_pipeline_received_items_total{pipeline=\"traces\"}"),
        total * spans
    );
    assert_eq!(
        get("weft_pipeline_refused_items_total{pipeline=\"traces\"}"),
        answers.refused() * spans
    );
    assert_eq!(
        get("otelcol_processor_refused_spans_total{processor=\"memory_limiter\"}"),
        answers.refused() * spans,
        "every refusal was the limiter's (the queue of 1 000 requests never filled)"
    );
    assert_eq!(
        get("weft_pipeline_exported_items_total{pipeline=\"traces\"}"),
        0,
        "the backend is down"
    );
    assert_eq!(get(IN_FLIGHT), answers.accepted() * spans);
    let held = get("weft_memory_held_bytes");
    assert!(
        held > 0 && held <= 192 * MIB,
        "held {held} bytes: some, and under the soft limit"
    );

    // The backend comes up: everything accepted is delivered, and memory is given back.
    let accepted = answers.accepted() * spans;
    let (drained, delivered) = backend_up_and_drained(&weft, backend, Duration::from_secs(120));
    let get = |series: &str| WeftRun::sample(&drained, series);
    assert_eq!(
        get("weft_pipeline_exported_items_total{pipeline=\"traces\"}"),
        accepted
    );
    assert_eq!(
        get("weft_pipeline_failed_items_total{pipeline=\"traces\"}"),
        0
    );
    assert_eq!(delivered, accepted, "the backend got every accepted span");
    assert_eq!(get("weft_memory_held_bytes"), 0);
    let start = Instant::now();
    let given_back = loop {
        let rss = weft.rss();
        if rss <= baseline + (peak - baseline) / 2 {
            break rss;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "RSS stayed at {} MiB after the drain (baseline {} MiB, peak {} MiB)",
            rss / MIB,
            baseline / MIB,
            peak / MIB
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("after the drain: RSS {} MiB", given_back / MIB);
    assert!(WeftRun::sample(&weft.metrics(), "weft_memory_trims_total") >= 1);
    assert_eq!(
        post(local(http), &body).0,
        200,
        "accepted again once memory is back"
    );
    weft.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_sized_in_bytes_never_holds_more_than_its_size() {
    const QUEUE: u64 = 48 * MIB;
    let Outage {
        weft,
        backend,
        baseline,
        peak,
        answers,
        ..
    } = outage(
        "{}",
        "",
        &format!("{{ sizer: bytes, queue_size: {QUEUE} }}"),
        Duration::from_secs(15),
    )
    .await;
    let m = weft.metrics();
    let get = |series: &str| WeftRun::sample(&m, series);
    let labels = "{pipeline=\"traces\",exporter=\"otlphttp\",data_type=\"traces\"}";
    assert_eq!(
        get(&format!("otelcol_exporter_queue_capacity{labels}")),
        QUEUE
    );
    let size = get(&format!("otelcol_exporter_queue_size{labels}"));
    assert!(
        size <= QUEUE && size > QUEUE / 2,
        "the queue holds {size} bytes"
    );
    assert!(
        answers.refused() > 0 && answers.accepted() > 0,
        "{answers:?}"
    );
    assert_eq!(
        get(
            "otelcol_exporter_enqueue_failed_spans_total{pipeline=\"traces\",exporter=\"otlphttp\"}"
        ),
        answers.refused() * SPANS as u64,
        "every refusal was the full queue's"
    );
    // The queue, one batch being retried (8 192 spans, about 10 MB) and the requests being read.
    assert!(
        peak <= baseline + QUEUE + 64 * MIB,
        "RSS reached {} MiB from {} MiB with a {} MiB queue",
        peak / MIB,
        baseline / MIB,
        QUEUE / MIB
    );
    // The backend comes up: what was accepted is delivered, the queue empties.
    let (drained, delivered) = backend_up_and_drained(&weft, backend, Duration::from_secs(60));
    assert_eq!(
        WeftRun::sample(&drained, &format!("otelcol_exporter_queue_size{labels}")),
        0
    );
    assert_eq!(delivered, answers.accepted() * SPANS as u64);
    weft.stop();
}
