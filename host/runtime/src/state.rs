//! What a plugin's [`Store`](wasmtime::Store) holds, and the host side of the WIT imports
//! (log, config, metrics, key-value, clock) plus WASI with no ambient authority.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{clock, config, keyvalue, log, metrics, types};
use crate::kv::{KvError, KvStore};
use crate::metrics::PluginMetrics;

/// What every instance of one plugin shares: its name, configuration, metrics and key-value store.
#[derive(Debug)]
pub struct PluginShared {
    /// The plugin's name, used in logs and metrics.
    pub name: String,
    /// The configuration as JSON text.
    pub config_json: String,
    /// The configuration, parsed (for `config.get`).
    pub config: serde_json::Value,
    /// The plugin's metrics.
    pub metrics: Arc<PluginMetrics>,
    /// The plugin's key-value store (kept across reloads).
    pub kv: Arc<KvStore>,
}

/// The data of one plugin instance's store: what every world's host interfaces need, plus `ext`,
/// the state of the interfaces only one world links (the filter proxy's `http`, for instance).
/// OTLP plugins have none (`X = ()`).
pub struct HostState<X = ()> {
    /// What all instances of the plugin share.
    pub shared: Arc<PluginShared>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory limiter of this store.
    pub limiter: MemoryLimiter,
    /// Unique in the process (an HTTP call's answer goes back to the instance that made it).
    pub instance_id: u64,
    /// World-specific state.
    pub ext: X,
}

/// The source of [`HostState::instance_id`]s.
static NEXT_INSTANCE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<X> HostState<X> {
    /// State for a new instance. `wasi` carries only what the plugin was granted.
    pub fn new(shared: Arc<PluginShared>, wasi: WasiCtx, memory_cap: usize, ext: X) -> Self {
        HostState {
            shared,
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_cap),
            instance_id: NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed),
            ext,
        }
    }
}

impl<X: Send> WasiView for HostState<X> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps a store's linear memories and tables, and remembers when it refused to grow, so a trap
/// that follows can be reported as "memory limit" rather than a bare panic.
pub struct MemoryLimiter {
    memory_cap: usize,
    /// Current total of this store's memories, in bytes.
    pub memory_bytes: usize,
    /// Set when a memory was refused growth: a trap that follows is a memory-limit trap.
    pub hit_limit: AtomicBool,
}

impl MemoryLimiter {
    fn new(memory_cap: usize) -> Self {
        MemoryLimiter {
            memory_cap,
            memory_bytes: 0,
            hit_limit: AtomicBool::new(false),
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.memory_bytes - current.min(self.memory_bytes) + desired > self.memory_cap {
            self.hit_limit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.memory_bytes = self.memory_bytes - current.min(self.memory_bytes) + desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Maps a guest log level onto `tracing`: `critical` becomes error.
fn tracing_level(level: log::Level) -> tracing::Level {
    match level {
        log::Level::Trace => tracing::Level::TRACE,
        log::Level::Debug => tracing::Level::DEBUG,
        log::Level::Info => tracing::Level::INFO,
        log::Level::Warn => tracing::Level::WARN,
        log::Level::Error | log::Level::Critical => tracing::Level::ERROR,
    }
}

impl<X: Send> log::Host for HostState<X> {
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = self.shared.name.as_str();
        match tracing_level(level) {
            tracing::Level::TRACE => tracing::trace!(target: "weft::guest", plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "weft::guest", plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(target: "weft::guest", plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: "weft::guest", plugin, "{message}"),
            _ => tracing::error!(target: "weft::guest", plugin, "{message}"),
        }
    }

    fn enabled(&mut self, level: log::Level) -> bool {
        match tracing_level(level) {
            tracing::Level::TRACE => {
                tracing::enabled!(target: "weft::guest", tracing::Level::TRACE)
            }
            tracing::Level::DEBUG => {
                tracing::enabled!(target: "weft::guest", tracing::Level::DEBUG)
            }
            tracing::Level::INFO => tracing::enabled!(target: "weft::guest", tracing::Level::INFO),
            tracing::Level::WARN => tracing::enabled!(target: "weft::guest", tracing::Level::WARN),
            _ => tracing::enabled!(target: "weft::guest", tracing::Level::ERROR),
        }
    }
}

impl<X: Send> config::Host for HostState<X> {
    fn get_json(&mut self) -> String {
        self.shared.config_json.clone()
    }

    fn get(&mut self, key: String) -> Option<String> {
        match self.shared.config.get(&key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// Sorted labels, so `[(a,1),(b,2)]` and `[(b,2),(a,1)]` are the same series.
fn label_key(mut labels: Vec<(String, String)>) -> Vec<(String, String)> {
    labels.sort();
    labels
}

impl<X: Send> metrics::Host for HostState<X> {
    fn counter_add(&mut self, name: String, labels: Vec<(String, String)>, delta: u64) {
        let mut g = self
            .shared
            .metrics
            .guest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *g.counters.entry((name, label_key(labels))).or_default() += delta;
    }

    fn gauge_set(&mut self, name: String, labels: Vec<(String, String)>, value: i64) {
        let mut g = self
            .shared
            .metrics
            .guest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        g.gauges.insert((name, label_key(labels)), value);
    }

    fn histogram_record(&mut self, name: String, labels: Vec<(String, String)>, value: u64) {
        let mut g = self
            .shared
            .metrics
            .guest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let h = g.histograms.entry((name, label_key(labels))).or_default();
        h.0 += 1;
        h.1 = h.1.saturating_add(value);
    }
}

impl<X: Send> keyvalue::Host for HostState<X> {
    fn get(&mut self, key: String) -> Result<Option<keyvalue::Entry>, keyvalue::Error> {
        Ok(self
            .shared
            .kv
            .get(&key)
            .map(|(value, cas)| keyvalue::Entry { value, cas }))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        cas: Option<u32>,
    ) -> Result<(), keyvalue::Error> {
        self.shared.kv.set(&key, value, cas).map_err(|e| match e {
            KvError::CasMismatch => keyvalue::Error::CasMismatch,
            KvError::TooLarge => keyvalue::Error::TooLarge,
        })
    }
}

impl<X: Send> clock::Host for HostState<X> {
    fn now(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

impl<X: Send> types::Host for HostState<X> {}

/// Guest stdout/stderr: complete lines go to the host log, tagged with the plugin's name.
pub(crate) mod stdio {
    use bytes::Bytes;
    use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
    use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

    /// Which stream, for the log line.
    #[derive(Clone, Copy)]
    pub enum Which {
        Stdout,
        Stderr,
    }

    /// A stdout/stderr that writes lines to `tracing`, at most the plugin's
    /// [`LogLimiter`](crate::log_limit::LogLimiter) budget per interval (a guest that panics on
    /// every batch writes its panic message every time).
    #[derive(Clone)]
    pub struct LogStream {
        pub plugin: std::sync::Arc<str>,
        pub which: Which,
        pub limit: std::sync::Arc<crate::log_limit::LogLimiter>,
    }

    /// Longest line kept; longer output is flushed in pieces of this size.
    const MAX_LINE: usize = 4096;

    struct LineWriter {
        stream: LogStream,
        buf: Vec<u8>,
    }

    impl LineWriter {
        fn emit(&self, line: &[u8]) {
            let plugin = &*self.stream.plugin;
            if !self.stream.limit.admit(plugin) {
                return;
            }
            let text = String::from_utf8_lossy(line);
            match self.stream.which {
                Which::Stdout => {
                    tracing::info!(target: "weft::guest", plugin, stream = "stdout", "{text}")
                }
                Which::Stderr => {
                    tracing::warn!(target: "weft::guest", plugin, stream = "stderr", "{text}")
                }
            }
        }
    }

    impl Drop for LineWriter {
        fn drop(&mut self) {
            if !self.buf.is_empty() {
                self.emit(&self.buf);
            }
        }
    }

    #[wasmtime_wasi::async_trait]
    impl Pollable for LineWriter {
        async fn ready(&mut self) {}
    }

    impl OutputStream for LineWriter {
        fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
            self.buf.extend_from_slice(&bytes);
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                self.emit(&line[..line.len() - 1]);
            }
            if self.buf.len() > MAX_LINE {
                let line = std::mem::take(&mut self.buf);
                self.emit(&line);
            }
            Ok(())
        }

        fn flush(&mut self) -> StreamResult<()> {
            Ok(())
        }

        fn check_write(&mut self) -> StreamResult<usize> {
            Ok(64 * 1024)
        }
    }

    impl IsTerminal for LogStream {
        fn is_terminal(&self) -> bool {
            false
        }
    }

    impl StdoutStream for LogStream {
        fn p2_stream(&self) -> Box<dyn OutputStream> {
            Box::new(LineWriter {
                stream: self.clone(),
                buf: Vec::new(),
            })
        }

        fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
            // Only the WASIp2 stream is used by p2 guests; p3 is not linked.
            Box::new(tokio::io::sink())
        }
    }
}
