//! The one wasmtime [`Engine`] of a weft process, its epoch ticker, and the on-disk cache of
//! compiled components.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::error::LoadError;

/// Bytes of a linear memory that stay resident when its pool slot is freed (reset by memset,
/// not madvise): see [`WeftEngine::new`].
const SLOT_KEEP_RESIDENT: usize = 1 << 20;

/// How often the epoch advances. CPU deadlines are rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings for [`WeftEngine::new`]. `Default` gives what `weft` uses.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Directory for compiled artifacts; `None` disables the cache. Default: `$WEFT_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/weft`, else `~/.cache/weft`.
    pub cache_dir: Option<PathBuf>,
    /// Size the cache is kept under (default 512 MiB, or `$WEFT_CACHE_MAX_MIB`): after each
    /// write, the least recently used artifacts are removed until it fits. A hit marks its
    /// artifact used (its modification time), so artifacts of components no longer loaded, and
    /// of older weft or wasmtime versions, are the ones that go.
    pub cache_max_bytes: u64,
    /// Use the pooling instance allocator (default true). Instantiation then reuses
    /// pre-reserved memory slots instead of calling mmap per instance.
    pub pooling: bool,
    /// Upper bound of any plugin's memory cap, in bytes (default 1 GiB): the size of a pool slot.
    pub max_memory: u64,
    /// Component instances the pool holds at most (default 512).
    pub max_instances: u32,
    /// Meter guest instructions with fuel (default false). Needed for per-plugin fuel budgets;
    /// it slows every plugin a little, so CPU time is bounded by the epoch deadline otherwise.
    pub fuel: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            cache_dir: default_cache_dir(),
            cache_max_bytes: std::env::var("WEFT_CACHE_MAX_MIB")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(512 << 20, |mib| mib << 20),
            pooling: true,
            max_memory: 1 << 30,
            max_instances: 512,
            fuel: false,
        }
    }
}

/// `$WEFT_CACHE_DIR`, else `$XDG_CACHE_HOME/weft`, else `$HOME/.cache/weft`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("weft"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("weft"))
}

/// Counters of the compiled-artifact cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Loads served by deserializing a cached artifact.
    pub hits: AtomicU64,
    /// Loads that compiled (and then stored the artifact).
    pub misses: AtomicU64,
    /// Cached artifacts that could not be used (corrupt, or from another engine) and were replaced.
    pub rejected: AtomicU64,
}

/// A component compiled (or loaded from cache) by [`WeftEngine::load_component`].
#[derive(Clone)]
pub struct LoadedComponent {
    /// The compiled component.
    pub component: Component,
    /// The component's content key (BLAKE3, hex; see [`content_key`]).
    pub digest: String,
    /// Whether it came from the cache.
    pub cache_hit: bool,
}

/// The engine shared by every plugin. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct WeftEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    cache_max_bytes: u64,
    stats: CacheStats,
    stop_ticker: Arc<AtomicBool>,
    fuel: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl WeftEngine {
    /// Creates the engine (Cranelift, epoch interruption, optionally pooling) and starts the
    /// epoch ticker thread, which stops when the last clone is dropped.
    pub fn new(settings: EngineSettings) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Guest stacks: enough for real plugins, small enough that runaway recursion traps fast.
        config.max_wasm_stack(1 << 20);
        config.consume_fuel(settings.fuel);
        // `WEFT_PROFILER=perfmap`: guest functions by name in `perf record` / `perf report`
        // (wasmtime writes /tmp/perf-<pid>.map), for plugin authors and for us.
        if std::env::var("WEFT_PROFILER").is_ok_and(|v| v == "perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if settings.pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(settings.max_instances);
            // A Rust guest component has a handful of core instances (main module + shims).
            pool.total_core_instances(settings.max_instances * 8);
            pool.total_memories(settings.max_instances * 2);
            pool.total_tables(settings.max_instances * 8);
            pool.max_memory_size(settings.max_memory as usize);
            pool.max_memories_per_component(4);
            pool.max_tables_per_component(16);
            // Resetting a slot for its next instance: with PAGEMAP_SCAN (Linux 6.7+) wasmtime
            // finds the pages an instance dirtied and zeroes those with memset, up to the
            // keep-resident budget, instead of madvise-ing the slot (a syscall, a TLB flush on
            // every core, and a page fault per page on next use). The budget bounds what an
            // idle slot keeps resident; decommits that are still needed are batched.
            pool.pagemap_scan(wasmtime::Enabled::Auto);
            pool.linear_memory_keep_resident(SLOT_KEEP_RESIDENT);
            pool.table_keep_resident(64 << 10);
            pool.decommit_batch_size(8);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;

        if let Some(dir) = &settings.cache_dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "compiled-artifact cache disabled");
        }
        Ok(WeftEngine {
            inner: Arc::new(Inner {
                engine,
                cache_dir: settings.cache_dir.filter(|d| d.is_dir()),
                cache_max_bytes: settings.cache_max_bytes,
                stats: CacheStats::default(),
                stop_ticker,
                fuel: settings.fuel,
            }),
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Whether fuel metering is on (see [`EngineSettings::fuel`]).
    pub fn fuel_enabled(&self) -> bool {
        self.inner.fuel
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// Where the cached artifact for `bytes` lives (whether or not it exists yet).
    pub fn cache_path(&self, bytes: &[u8]) -> Option<PathBuf> {
        self.cache_path_for_digest(&content_key(bytes))
    }

    fn cache_path_for_digest(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.inner.cache_dir.as_ref()?;
        Some(dir.join(format!("{}.cwasm", self.cache_key(digest))))
    }

    /// Cache key: content hash + a hash of everything that makes compiled code incompatible
    /// (wasmtime version, target, engine settings).
    fn cache_key(&self, digest: &str) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut h);
        format!("{digest}-{:016x}", h.finish())
    }

    /// Checks that `bytes` are a component, then compiles it or loads the cached artifact.
    /// `what` names the bytes in errors (usually the file path).
    pub fn load_component(&self, what: &str, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        check_is_component(what, bytes)?;
        // Hash once, with BLAKE3: for a 1 MiB component SHA-256 cost more than deserializing.
        let digest = content_key(bytes);
        let path = self.cache_path_for_digest(&digest);
        if let Some(path) = &path
            && path.is_file()
        {
            // SAFETY: the file is in weft's own cache directory and was written by
            // `Component::serialize` of an engine with the same compatibility hash (it is part of
            // the file name); wasmtime also checks the header and refuses a mismatched artifact.
            match unsafe { Component::deserialize_file(&self.inner.engine, path) } {
                Ok(component) => {
                    self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                    // Used now: eviction goes by modification time. A read-only cache stays
                    // as it is.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    return Ok(LoadedComponent {
                        component,
                        digest,
                        cache_hit: true,
                    });
                }
                Err(e) => {
                    self.inner.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), error = %e, "discarding cached artifact");
                }
            }
        }
        let component =
            Component::new(&self.inner.engine, bytes).map_err(|e| LoadError::Compile {
                what: what.to_string(),
                message: format!("{e:#}"),
            })?;
        self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &path {
            match store_artifact(&component, path) {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        evict(dir, self.inner.cache_max_bytes, path);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write cached artifact")
                }
            }
        }
        Ok(LoadedComponent {
            component,
            digest,
            cache_hit: false,
        })
    }
}

/// The artifact cache's content key: BLAKE3 of `bytes`, hex. (BLAKE3 rather than SHA-256: it
/// runs several times faster, and the key is weft's own, compared with nothing outside.)
pub fn content_key(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// SHA-256 of `bytes`, hex (what `weft inspect` prints and OCI digests use).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes the artifact to a temporary file, then renames it: readers never see half a file.
fn store_artifact(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Removes the least recently modified artifacts of `dir` until the rest fit in `max_bytes`
/// (never `keep`, the one just written), and temporary files older than an hour (left by a
/// process that died while writing). Returns how many bytes it removed.
pub fn evict(dir: &Path, max_bytes: u64, keep: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    let mut artifacts = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let modified = meta.modified().unwrap_or(now);
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(".tmp") {
            let old = now.duration_since(modified).unwrap_or_default() > Duration::from_secs(3600);
            if old && std::fs::remove_file(&path).is_ok() {
                removed += meta.len();
            }
        } else if name.ends_with(".cwasm") && meta.is_file() {
            artifacts.push((modified, meta.len(), path));
        }
    }
    let mut total: u64 = artifacts.iter().map(|a| a.1).sum();
    artifacts.sort();
    for (_, len, path) in artifacts {
        if total <= max_bytes {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            tracing::debug!(path = %path.display(), bytes = len, "evicted a cached artifact");
            total -= len;
            removed += len;
        }
    }
    removed
}

/// Rejects what is not a WebAssembly component, with a message that says what it is instead.
pub fn check_is_component(what: &str, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm {
            what: what.to_string(),
        });
    }
    // Bytes 4..8: version 1 / layer 0 is a core module; a component has layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            what: what.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_removes_the_least_recently_used_artifacts_until_the_rest_fit() {
        let dir = std::env::temp_dir().join(format!("weft-evict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let t0 = std::time::SystemTime::now() - Duration::from_secs(10_000);
        let put = |name: &str, age_s: u64| {
            let path = dir.join(name);
            std::fs::write(&path, vec![0u8; 1000]).expect("write");
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(t0 + Duration::from_secs(10_000 - age_s))
                .expect("mtime");
            path
        };
        let oldest = put("a.cwasm", 500);
        let old = put("b.cwasm", 400);
        let recent = put("c.cwasm", 10);
        let just_written = put("d.cwasm", 9_000); // older mtime, but the one just written
        let stale_tmp = put("e.cwasm.tmp123", 7_200);
        let fresh_tmp = put("f.cwasm.tmp456", 5);
        let other = put("notes.txt", 9_000);

        // 4 artifacts of 1000 bytes under a 2500-byte budget: the two least recently used go.
        let removed = evict(&dir, 2500, &just_written);
        assert_eq!(removed, 3000, "two artifacts and the stale temporary file");
        for (path, kept) in [
            (&oldest, false),
            (&old, false),
            (&recent, true),
            (&just_written, true),
            (&stale_tmp, false),
            (&fresh_tmp, true),
            (&other, true),
        ] {
            assert_eq!(path.exists(), kept, "{}", path.display());
        }
        // Within the budget nothing more goes.
        assert_eq!(evict(&dir, 2500, &just_written), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
