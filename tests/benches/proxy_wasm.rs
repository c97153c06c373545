//! The ab-router filter as Proxy-Wasm modules, one request at a time, in wasmtime with an
//! emulated Proxy-Wasm host: (b) the native SDK filter (bench/native-filter, proxy-wasm-rust-sdk)
//! and (c) the adapted component (`weft adapt` of guests/ab-router), both built with the `guest`
//! profile.
//!
//! `cargo xtask bench envoy` measures them in a real Envoy, where the run-to-run noise of this
//! 2-core machine is larger than their difference. This benchmark counts what does not vary
//! between runs: the **wasm instructions** a request executes (wasmtime fuel: one unit per
//! instruction, so a deterministic count of the module's own work) and the **host calls** it
//! makes (each a V8 → Envoy transition there), and it reports wall time per request in wasmtime
//! beside them. One request is what Envoy does for `GET /bench` with a user id:
//! `proxy_on_context_create`, `_request_headers`, `_response_headers`, `_response_body`,
//! `_done`, `_log`, `_delete`. Every request must leave `x-backend-version` in the request
//! headers and count one `ab_requests.version.*`, or the run fails (a filter that does nothing
//! would look cheap).
//!
//! Run: `cargo xtask bench proxy-wasm` (`cargo bench -p weft-tests --bench proxy_wasm`;
//! `WEFT_BENCH_REQUESTS` sets the count, 20 000 by default).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context as _, bail};
use wasmtime::{Caller, Config, Engine, Func, Instance, Linker, Memory, Module, Store, Val};

/// The plugin configuration of both variants (the Envoy bench's).
const CONFIG: &str = r#"{"header":"x-user-id","target":"x-backend-version","salt":"exp-42","split":[{"version":"v1","percent":90},{"version":"v2","percent":10}]}"#;

/// What the emulated host holds: header maps, metrics, the configuration, counts.
#[derive(Default)]
struct Host {
    /// Header maps by Proxy-Wasm map type (0 request, 2 response headers).
    maps: HashMap<i32, Vec<(String, String)>>,
    config: Vec<u8>,
    metric_names: Vec<String>,
    metric_values: Vec<i64>,
    calls: u64,
    memory: Option<Memory>,
    allocate: Option<Func>,
    /// With `trace`, the remaining fuel at every host call: `(name, fuel)`.
    trace: Option<Vec<(String, u64)>>,
}

/// Reads `len` bytes of guest memory at `ptr`.
fn read(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> Vec<u8> {
    let mem = caller.data().memory.expect("memory");
    let mut buf = vec![0; len as usize];
    mem.read(&caller, ptr as u32 as usize, &mut buf)
        .expect("guest pointer in bounds");
    buf
}

fn write(caller: &mut Caller<'_, Host>, ptr: i32, bytes: &[u8]) {
    let mem = caller.data().memory.expect("memory");
    mem.write(caller, ptr as u32 as usize, bytes)
        .expect("guest pointer in bounds");
}

/// Hands `bytes` to the guest as Proxy-Wasm does: `proxy_on_memory_allocate`, copy, then the
/// pointer and length written to the guest's out-parameters.
fn give(caller: &mut Caller<'_, Host>, bytes: &[u8], ret_ptr: i32, ret_len: i32) {
    let alloc = caller.data().allocate.expect("proxy_on_memory_allocate");
    let mut out = [Val::I32(0)];
    alloc
        .call(&mut *caller, &[Val::I32(bytes.len() as i32)], &mut out)
        .expect("proxy_on_memory_allocate");
    let p = out[0].unwrap_i32();
    write(caller, p, bytes);
    write(caller, ret_ptr, &p.to_le_bytes());
    write(caller, ret_len, &(bytes.len() as i32).to_le_bytes());
}

fn text(caller: &mut Caller<'_, Host>, ptr: i32, len: i32) -> String {
    String::from_utf8(read(caller, ptr, len)).expect("UTF-8")
}

/// Proxy-Wasm's serialized header map: count, (key len, value len)*, then NUL-terminated
/// keys and values.
fn serialize(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;

/// The host function `name`, with the arguments `args`; `None` for a function this host does
/// not provide (the instantiation then fails naming it).
fn call(caller: &mut Caller<'_, Host>, name: &str, a: &[Val]) -> Option<i32> {
    caller.data_mut().calls += 1;
    if caller.data().trace.is_some() {
        let fuel = caller.get_fuel().unwrap_or(0);
        if let Some(t) = caller.data_mut().trace.as_mut() {
            t.push((name.to_string(), fuel));
        }
    }
    let i = |k: usize| a[k].unwrap_i32();
    Some(match name {
        "proxy_log" => OK,
        "proxy_get_log_level" => {
            write(caller, i(0), &2i32.to_le_bytes());
            OK
        }
        "proxy_get_current_time_nanoseconds" => {
            write(caller, i(0), &1_700_000_000_000_000_000u64.to_le_bytes());
            OK
        }
        "proxy_set_tick_period_milliseconds" | "proxy_set_effective_context" | "proxy_done" => OK,
        "proxy_get_buffer_bytes" => {
            // Only the plugin configuration (7) is asked for here.
            let cfg = caller.data().config.clone();
            let start = (i(1) as usize).min(cfg.len());
            let end = start.saturating_add(i(2) as u32 as usize).min(cfg.len());
            give(caller, &cfg[start..end], i(3), i(4));
            OK
        }
        "proxy_get_header_map_value" => {
            let key = text(caller, i(1), i(2));
            let value = caller
                .data()
                .maps
                .get(&i(0))
                .and_then(|m| m.iter().find(|(k, _)| *k == key))
                .map(|(_, v)| v.clone());
            match value {
                Some(v) => {
                    give(caller, v.as_bytes(), i(3), i(4));
                    OK
                }
                None => NOT_FOUND,
            }
        }
        "proxy_get_header_map_pairs" => {
            let pairs = caller.data().maps.get(&i(0)).cloned().unwrap_or_default();
            give(caller, &serialize(&pairs), i(1), i(2));
            OK
        }
        "proxy_replace_header_map_value" | "proxy_add_header_map_value" => {
            let key = text(caller, i(1), i(2));
            let value = text(caller, i(3), i(4));
            let map = caller.data_mut().maps.entry(i(0)).or_default();
            if name == "proxy_replace_header_map_value" {
                map.retain(|(k, _)| *k != key);
            }
            map.push((key, value));
            OK
        }
        "proxy_remove_header_map_value" => {
            let key = text(caller, i(1), i(2));
            if let Some(map) = caller.data_mut().maps.get_mut(&i(0)) {
                map.retain(|(k, _)| *k != key);
            }
            OK
        }
        "proxy_define_metric" => {
            let name = text(caller, i(1), i(2));
            let host = caller.data_mut();
            let id = match host.metric_names.iter().position(|n| *n == name) {
                Some(id) => id,
                None => {
                    host.metric_names.push(name);
                    host.metric_values.push(0);
                    host.metric_names.len() - 1
                }
            };
            write(caller, i(3), &(id as u32).to_le_bytes());
            OK
        }
        "proxy_increment_metric" => {
            let id = i(0) as usize;
            let by = a[1].unwrap_i64();
            match caller.data_mut().metric_values.get_mut(id) {
                Some(v) => {
                    *v += by;
                    OK
                }
                None => NOT_FOUND,
            }
        }
        _ => return None,
    })
}

/// One variant, instantiated and configured.
struct Filter {
    store: Store<Host>,
    instance: Instance,
    /// Wasm instructions spent in each `proxy_on_*` callback so far, by name.
    per_callback: HashMap<&'static str, u64>,
}

impl Filter {
    fn new(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Filter> {
        let module = Module::new(engine, wasm)?;
        let mut linker = Linker::new(engine);
        for import in module.imports() {
            let Some(ty) = import.ty().func().cloned() else {
                bail!("imports a non-function {}", import.name());
            };
            let name = import.name().to_string();
            linker.func_new(
                import.module(),
                import.name(),
                ty,
                move |mut caller, args, results| match call(&mut caller, &name, args) {
                    Some(rc) => {
                        if let Some(r) = results.first_mut() {
                            *r = Val::I32(rc);
                        }
                        Ok(())
                    }
                    None => Err(wasmtime::Error::msg(format!(
                        "the emulated host has no {name}"
                    ))),
                },
            )?;
        }
        let mut store = Store::new(
            engine,
            Host {
                config: CONFIG.as_bytes().to_vec(),
                ..Host::default()
            },
        );
        store.set_fuel(u64::MAX)?;
        let instance = linker.instantiate(&mut store, &module)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .context("no memory export")?;
        // Envoy takes `malloc` or `proxy_on_memory_allocate`, whichever is exported.
        let allocate = instance
            .get_func(&mut store, "proxy_on_memory_allocate")
            .or_else(|| instance.get_func(&mut store, "malloc"))
            .context("exports neither proxy_on_memory_allocate nor malloc")?;
        store.data_mut().memory = Some(memory);
        store.data_mut().allocate = Some(allocate);
        let mut f = Filter {
            store,
            instance,
            per_callback: HashMap::new(),
        };
        if f.instance.get_func(&mut f.store, "_initialize").is_some() {
            f.call("_initialize", &[])?;
        }
        f.call("proxy_on_context_create", &[1, 0])?;
        f.call("proxy_on_vm_start", &[1, 0])?;
        if f.call("proxy_on_configure", &[1, CONFIG.len() as i32])? != Some(1) {
            bail!("proxy_on_configure refused the configuration");
        }
        Ok(f)
    }

    fn call(&mut self, name: &'static str, args: &[i32]) -> anyhow::Result<Option<i32>> {
        let fuel = self.store.get_fuel()?;
        let func = self
            .instance
            .get_func(&mut self.store, name)
            .with_context(|| format!("no export {name}"))?;
        let args: Vec<Val> = args.iter().map(|&a| Val::I32(a)).collect();
        let mut out = vec![Val::I32(0); func.ty(&self.store).results().len()];
        func.call(&mut self.store, &args, &mut out)
            .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
        *self.per_callback.entry(name).or_default() += fuel - self.store.get_fuel()?;
        Ok(out.first().map(|v| v.unwrap_i32()))
    }

    /// One `GET /bench` for user `user` as context `ctx`.
    fn request(&mut self, ctx: i32, user: &str) -> anyhow::Result<()> {
        let req = vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/bench".into()),
            (":authority".into(), "127.0.0.1".into()),
            (":scheme".into(), "http".into()),
            ("user-agent".into(), "wrk".into()),
            ("x-user-id".into(), user.to_string()),
        ];
        let n = req.len() as i32;
        self.store.data_mut().maps.insert(0, req);
        self.call("proxy_on_context_create", &[ctx, 1])?;
        self.call("proxy_on_request_headers", &[ctx, n, 1])?;
        let set = self.store.data().maps[&0]
            .iter()
            .any(|(k, v)| k == "x-backend-version" && v.starts_with('v'));
        if !set {
            bail!("request {ctx}: x-backend-version was not set");
        }
        let resp = vec![
            (":status".into(), "200".into()),
            ("content-length".into(), "2".into()),
        ];
        self.store.data_mut().maps.insert(2, resp);
        self.call("proxy_on_response_headers", &[ctx, 2, 0])?;
        self.call("proxy_on_response_body", &[ctx, 2, 1])?;
        self.call("proxy_on_done", &[ctx])?;
        self.call("proxy_on_log", &[ctx])?;
        self.call("proxy_on_delete", &[ctx])?;
        Ok(())
    }
}

/// Per-request numbers of one variant.
struct Measured {
    instructions: f64,
    host_calls: f64,
    ns: f64,
}

fn measure(f: &mut Filter, requests: u32, first_ctx: i32) -> anyhow::Result<Measured> {
    let fuel0 = f.store.get_fuel()?;
    let calls0 = f.store.data().calls;
    let metrics0: i64 = f.store.data().metric_values.iter().sum();
    let t = Instant::now();
    for k in 0..requests as i32 {
        let ctx = first_ctx + k;
        f.request(ctx, &format!("user-{ctx}"))?;
    }
    let ns = t.elapsed().as_nanos() as f64 / requests as f64;
    let counted: i64 = f.store.data().metric_values.iter().sum::<i64>() - metrics0;
    if counted != requests as i64 {
        bail!("{counted} of {requests} requests were counted in ab_requests");
    }
    Ok(Measured {
        instructions: (fuel0 - f.store.get_fuel()?) as f64 / requests as f64,
        host_calls: (f.store.data().calls - calls0) as f64 / requests as f64,
        ns,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // `cargo bench -p weft-tests -- <filter>` runs every bench target with the filter: run only
    // when it names this one.
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-'))
        && !"proxy_wasm proxy-wasm".contains(filter.as_str())
    {
        return Ok(());
    }
    let ws = weft_tests::workspace();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let native = weft_guest_build::build_core_guest(
        &ws,
        &cargo,
        "bench-native-filter",
        "wasm32-unknown-unknown",
    )
    .map_err(anyhow::Error::msg)?;
    let component =
        weft_guest_build::build_core_guest(&ws, &cargo, "guest-ab-router", "wasm32-wasip2")
            .map_err(anyhow::Error::msg)?;
    let adapted = weft_adapt::adapt(&std::fs::read(&component)?)?.module;
    let requests: u32 = std::env::var("WEFT_BENCH_REQUESTS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);

    let mut config = Config::new();
    config.consume_fuel(true);
    let engine = Engine::new(&config)?;
    let variants: [(&str, Vec<u8>); 2] = [
        ("(b) native SDK filter", std::fs::read(&native)?),
        ("(c) adapted component", adapted),
    ];
    let mut filters = Vec::new();
    for (name, wasm) in &variants {
        filters.push(Filter::new(&engine, wasm).with_context(|| name.to_string())?);
    }
    // Warm up, then alternate rounds; instructions and host calls are the same every round.
    const ROUNDS: usize = 5;
    let mut results: Vec<Vec<Measured>> = vec![Vec::new(), Vec::new()];
    let mut ctx = 2;
    for f in &mut filters {
        measure(f, 1000, ctx)?;
        ctx += 1000;
    }
    for round in 0..ROUNDS {
        for k in 0..filters.len() {
            let i = (k + round) % filters.len();
            results[i].push(measure(&mut filters[i], requests / ROUNDS as u32, ctx)?);
            ctx += requests as i32;
        }
    }
    let rows: Vec<(f64, f64, f64)> = results
        .into_iter()
        .map(|r| {
            (
                median(r.iter().map(|m| m.instructions).collect()),
                median(r.iter().map(|m| m.host_calls).collect()),
                median(r.iter().map(|m| m.ns).collect()),
            )
        })
        .collect();
    println!(
        "\nab-router, one GET per request, {requests} requests per variant in {ROUNDS} alternating \
         rounds (wasmtime 48, fuel = wasm instructions; ns: medians of the rounds)\n"
    );
    println!(
        "| variant | wasm instructions / request | host calls / request | ns / request (wasmtime) | module bytes |"
    );
    println!("|---|---:|---:|---:|---:|");
    for ((name, wasm), (ins, calls, ns)) in variants.iter().zip(&rows) {
        println!(
            "| {name} | {ins:.0} | {calls:.1} | {ns:.0} | {} |",
            wasm.len()
        );
    }
    let (b, c) = (rows[0], rows[1]);
    println!(
        "| (c) / (b) | {:.3} | {:.3} | {:.3} | {:.3} |",
        c.0 / b.0,
        c.1 / b.1,
        c.2 / b.2,
        variants[1].1.len() as f64 / variants[0].1.len() as f64
    );
    // Where the instructions go: every request's callbacks, per request.
    let total = |f: &Filter, cb: &str| f.per_callback.get(cb).copied().unwrap_or(0);
    let per_request = (requests + 1000) as f64;
    // One request traced: instructions between the host calls.
    for (f, (name, _)) in filters.iter_mut().zip(&variants) {
        f.store.data_mut().trace = Some(Vec::new());
        let start = f.store.get_fuel()?;
        f.request(ctx, "traced-user")?;
        let trace = f.store.data_mut().trace.take().unwrap_or_default();
        let mut last = start;
        let steps: Vec<String> = trace
            .iter()
            .map(|(call, fuel)| {
                let step = format!("{} → {call}", last - fuel);
                last = *fuel;
                step
            })
            .collect();
        println!(
            "\n{name}, one request traced (instructions, then the host call they led to): {}; {} after",
            steps.join(", "),
            last - f.store.get_fuel()?
        );
    }
    println!("\nWasm instructions per request by callback (one profile of a request):\n");
    println!("| callback | (b) SDK | (c) adapted | (c) − (b) |");
    println!("|---|---:|---:|---:|");
    for cb in CALLBACKS {
        let (bi, ci) = (
            total(&filters[0], cb) as f64 / per_request,
            total(&filters[1], cb) as f64 / per_request,
        );
        println!("| {cb} | {bi:.0} | {ci:.0} | {:+.0} |", ci - bi);
    }
    Ok(())
}

/// The callbacks of one request, in Envoy's order.
const CALLBACKS: [&str; 7] = [
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_done",
    "proxy_on_log",
    "proxy_on_delete",
];
