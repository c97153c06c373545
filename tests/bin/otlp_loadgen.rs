//! `otlp-loadgen`: sends the benchmark batch (512 spans × 10 attributes, 5 with PII) over
//! OTLP/gRPC to `--endpoint` from `--concurrency` connections for `--seconds`, and prints what it
//! sent as JSON. Used by `cargo xtask bench pipeline`. Loopback only.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = arg(&args, "--endpoint", "127.0.0.1:4317");
    anyhow::ensure!(
        endpoint.starts_with("127.") || endpoint.starts_with("localhost"),
        "loopback only"
    );
    let seconds: f64 = arg(&args, "--seconds", "10").parse()?;
    let concurrency: usize = arg(&args, "--concurrency", "2").parse()?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let endpoint = format!("http://{endpoint}");
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await?;
            // A few distinct batches, built once: the generator's own cost is not what is
            // measured (the target's CPU is), and distinct ids keep sampling honest.
            let batches: Vec<_> = (0..8)
                .map(|i| weft_tests::bench_request((worker * 8 + i) as u64))
                .collect();
            let (mut ok, mut failed) = (0u64, 0u64);
            for req in batches.iter().cycle() {
                if Instant::now() >= deadline {
                    break;
                }
                match client.export(req.clone()).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            anyhow::Ok((ok, failed))
        }));
    }
    let start = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await??;
        ok += o;
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64().max(seconds);
    println!(
        "{}",
        serde_json::json!({
            "requests_ok": ok,
            "requests_failed": failed,
            "spans_ok": ok * weft_tests::BENCH_SPANS as u64,
            "seconds": elapsed,
        })
    );
    Ok(())
}
