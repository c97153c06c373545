//! A plugin that misbehaves on purpose, for the host's fault tests. Its configuration picks the
//! fault and, optionally, how many times it fires: `{"fault": "<kind>", "times": 1}`. The count
//! is kept in the plugin's shared key-value store (compare-and-swap), so it holds across the
//! fresh instances the host creates after a trap: with `times: 1` the first call fails and the
//! next one, on a new instance, succeeds.
//!
//! | fault        | what the guest does                                       | host sees        |
//! |--------------|-----------------------------------------------------------|------------------|
//! | `none`       | passes the batch through                                  | success          |
//! | `panic`      | `panic!` (wasm32 panics abort: an `unreachable` trap)     | trap: panic      |
//! | `loop`       | spins forever                                             | trap: deadline   |
//! | `oom`        | allocates 1 MiB blocks until allocation fails             | trap: memory     |
//! | `stack`      | unbounded recursion                                       | trap: stack      |
//! | `error`      | returns `Error::Other`                                    | guest error      |
//! | `bad-config` | rejects its configuration in `init`                       | load fails       |
//! | `bad-tree`   | returns a nested value whose child index points backwards | malformed output |
//! | `drop-all`   | returns no items                                          | success, 0 out   |
//! | `print`      | writes a line to stdout and one to stderr, passes through | success          |
//! | `probe`      | adds attributes saying what WASI let it see (see below)   | success          |
//!
//! `probe` sets, on every span and log record: `probe.env` (the value of `$HOME`, or `<unset>`),
//! `probe.env_count` (how many environment variables it sees) and `probe.fs` (the result of
//! listing `/`: `ok` or the error), so tests can show what a plugin is, and is not, granted.
//!
//! Every call also counts itself in the guest metric `fault_calls` and logs one line.

use weft_guest::{
    Config, Error, LogBatch, LogTransform, Plugin, SpanBatch, SpanProcessor, Value, ValueNode,
    ValueTree, keyvalue, metrics,
};

/// The fault this instance injects.
pub struct Fault {
    kind: String,
    times: Option<u32>,
}

const FAULTS: &[&str] = &[
    "none", "panic", "loop", "oom", "stack", "error", "bad-tree", "drop-all", "print", "probe",
];

impl Plugin for Fault {
    fn new(config: &Config) -> Result<Self, Error> {
        let kind = config.get_str("fault").unwrap_or("none").to_string();
        if kind == "bad-config" {
            return Err(Error::InvalidConfig(
                "fault: this plugin rejects its configuration on purpose".into(),
            ));
        }
        if !FAULTS.contains(&kind.as_str()) {
            return Err(Error::InvalidConfig(format!(
                "fault: unknown fault `{kind}`, expected one of {FAULTS:?}"
            )));
        }
        let times = match config.json().get("times") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| Error::InvalidConfig("fault: `times` must be a u32".into()))?,
            ),
        };
        Ok(Fault { kind, times })
    }
}

/// Takes one "shot" from the shared counter: true if the fault should fire on this call.
fn take_shot(limit: u32) -> Result<bool, Error> {
    loop {
        let (fired, cas) = match keyvalue::get("fired") {
            Ok(Some(e)) => (
                e.value
                    .try_into()
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX),
                e.cas,
            ),
            Ok(None) => (0, 0),
            Err(e) => return Err(Error::Other(format!("keyvalue get: {e:?}"))),
        };
        if fired >= limit {
            return Ok(false);
        }
        match keyvalue::set("fired", &(fired + 1).to_le_bytes(), Some(cas)) {
            Ok(()) => return Ok(true),
            Err(keyvalue::Error::CasMismatch) => continue,
            Err(e) => return Err(Error::Other(format!("keyvalue set: {e:?}"))),
        }
    }
}

impl Fault {
    /// Injects the configured fault; returns `Ok(true)` when the batch should pass untouched.
    fn inject(&mut self) -> Result<bool, Error> {
        metrics::counter_add("fault_calls", &[("fault".into(), self.kind.clone())], 1);
        if let Some(limit) = self.times
            && !take_shot(limit)?
        {
            return Ok(true);
        }
        weft_guest::log::info(&format!("fault: injecting `{}`", self.kind));
        match self.kind.as_str() {
            "panic" => panic!("fault: panicking on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stack" => {
                std::hint::black_box(recurse(std::hint::black_box(1)));
                Ok(true)
            }
            "error" => Err(Error::Other("fault: returning an error on purpose".into())),
            "print" => {
                println!("fault: hello from stdout");
                eprintln!("fault: hello from stderr");
                Ok(true)
            }
            "bad-tree" | "drop-all" | "probe" => Ok(false),
            _ => Ok(true),
        }
    }
}

/// Unbounded recursion on wasm's own call stack: values stay in locals (no shadow-stack
/// frames), and the subtraction after the call keeps LLVM from turning it into a loop.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let next = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) | 1;
    recurse(next).wrapping_sub(n)
}

/// What WASI shows this guest: `(probe.env, probe.env_count, probe.fs)`.
fn probe() -> Vec<weft_guest::KeyValue> {
    let env = std::env::var("HOME").unwrap_or_else(|_| "<unset>".into());
    let count = std::env::vars().count() as i64;
    let fs = match std::fs::read_dir("/") {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    vec![
        weft_guest::KeyValue {
            key: "probe.env".into(),
            value: Value::Str(env),
        },
        weft_guest::KeyValue {
            key: "probe.env_count".into(),
            value: Value::Int(count),
        },
        weft_guest::KeyValue {
            key: "probe.fs".into(),
            value: Value::Str(fs),
        },
    ]
}

/// A nested value whose child index points back at its parent: the host must reject it.
fn bad_tree() -> Value {
    Value::Nested(ValueTree {
        nodes: vec![ValueNode::Array(vec![0])],
    })
}

impl SpanProcessor for Fault {
    fn process_spans(&mut self, mut batch: SpanBatch) -> Result<SpanBatch, Error> {
        if self.inject()? {
            return Ok(batch);
        }
        match self.kind.as_str() {
            "drop-all" => batch.spans.clear(),
            "probe" => {
                for span in &mut batch.spans {
                    span.attributes.extend(probe());
                }
            }
            _ => {
                for span in &mut batch.spans {
                    span.attributes.push(weft_guest::KeyValue {
                        key: "bad".into(),
                        value: bad_tree(),
                    });
                }
            }
        }
        Ok(batch)
    }
}

impl LogTransform for Fault {
    fn process_logs(&mut self, mut batch: LogBatch) -> Result<LogBatch, Error> {
        if self.inject()? {
            return Ok(batch);
        }
        match self.kind.as_str() {
            "drop-all" => batch.records.clear(),
            "probe" => {
                for record in &mut batch.records {
                    record.attributes.extend(probe());
                }
            }
            _ => {
                for record in &mut batch.records {
                    record.body = Some(bad_tree());
                }
            }
        }
        Ok(batch)
    }
}

weft_guest::export_otlp_processor!(Fault);
