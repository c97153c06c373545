//! Memory: the bytes of accepted data weft holds, and the `memory_limiter` processor that
//! refuses new data before the process grows past a limit.
//!
//! **Held bytes.** Every accepted request is charged to the collector's [`MemoryUse`] for as
//! long as anything holds its bytes: exporter queues, a batch being built, an export attempt
//! and its retries. The charge is a [`Hold`] that travels with the payload (shared by reference
//! count between the exporters of a pipeline, so shared bytes count once) and gives its bytes
//! back when the last holder drops it. A batch merged from several requests is a new buffer and
//! is charged on its own; what it was merged from is given back as it is freed. So the gauge is
//! what weft's queues and exports hold, not an estimate.
//!
//! **The limiter.** The Collector's `memory_limiter` measures the Go heap every
//! `check_interval`. weft has no garbage collector and measures what the operator (and the
//! kernel's OOM killer) sees, the process's resident set size, every `check_interval`; between
//! two checks it adds the growth of the held bytes since the last one, so a burst is seen at
//! once, not a check later. A request is refused (UNAVAILABLE / 503 with `Retry-After`, which
//! the OTel SDKs retry) while `rss_at_last_check - held_at_last_check + held_now + request`
//! is above the soft limit, `limit - spike_limit`.
//!
//! **Giving memory back.** glibc's allocator keeps freed memory in its arenas; after an outage
//! the queues drain but the RSS would stay where it was. The [`keeper`] task, which also takes
//! the measurements, calls `malloc_trim` once the held bytes have fallen by half (and at least
//! 16 MiB) since their high point, when the RSS is above a limiter's hard limit (the Collector
//! forces a garbage collection there; weft trims at most once a second), and when it is above
//! a soft limit (at most every 10 s, as the Collector's default for its soft-limit GC).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::MemoryLimiterConfig;

/// What weft holds of the data it accepted, in bytes, and the process's last measured RSS.
#[derive(Debug, Default)]
pub struct MemoryUse {
    held: AtomicU64,
    rss: AtomicU64,
    trims: AtomicU64,
}

impl MemoryUse {
    /// Nothing held yet.
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryUse::default())
    }

    /// Charges `bytes` until the returned hold is dropped.
    pub fn hold(self: &Arc<Self>, bytes: u64) -> Hold {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Hold {
            memory: self.clone(),
            bytes,
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The resident set size at the last measurement (0 before the first, or where it cannot be
    /// measured).
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// How often memory was given back to the system.
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }
}

/// A charge of bytes on a [`MemoryUse`], given back on drop.
#[derive(Debug)]
pub struct Hold {
    memory: Arc<MemoryUse>,
    bytes: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.memory.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One `memory_limiter` processor (shared by every pipeline that names it).
#[derive(Debug)]
pub struct MemoryLimiter {
    /// Its id (`memory_limiter` or `memory_limiter/<name>`).
    pub id: String,
    /// The hard limit, in bytes.
    pub limit: u64,
    /// The soft limit, `limit - spike_limit`: above it data is refused.
    pub soft_limit: u64,
    /// How often it wants the RSS measured.
    pub check_interval: Duration,
    memory: Arc<MemoryUse>,
    /// What the last check found beyond the held bytes: `rss - held` then.
    other: AtomicU64,
    /// Items refused, per signal (traces, logs).
    refused: [AtomicU64; 2],
}

/// A request the limiter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// The memory use counted, with the request.
    pub usage: u64,
    /// The soft limit it is over.
    pub soft_limit: u64,
    /// When the client should try again.
    pub retry_after: Duration,
}

impl MemoryLimiter {
    /// A limiter as `config` says, with percentages taken of `total` bytes.
    pub fn new(
        id: &str,
        config: &MemoryLimiterConfig,
        total: u64,
        memory: Arc<MemoryUse>,
    ) -> Arc<Self> {
        let limit = config.limit.bytes(total);
        let spike = config
            .spike_limit
            .map_or(limit / 5, |s| s.bytes(total))
            .min(limit);
        Arc::new(MemoryLimiter {
            id: id.to_string(),
            limit,
            soft_limit: limit - spike,
            check_interval: config.check_interval,
            memory,
            other: AtomicU64::new(0),
            refused: Default::default(),
        })
    }

    /// The memory use it counts now: the RSS at the last check, plus what the held bytes grew
    /// since (or minus what they shrank).
    pub fn usage(&self) -> u64 {
        self.other.load(Ordering::Relaxed) + self.memory.held()
    }

    /// Admits a request of `bytes`, or refuses it if that would take the use over the soft
    /// limit. `signal_index` is 0 for traces, 1 for logs; `items` counts into the refusals.
    pub fn admit(&self, bytes: u64, items: u64, signal_index: usize) -> Result<(), OverLimit> {
        let usage = self.usage() + bytes;
        if usage <= self.soft_limit {
            return Ok(());
        }
        if let Some(r) = self.refused.get(signal_index) {
            r.fetch_add(items, Ordering::Relaxed);
        }
        Err(OverLimit {
            usage,
            soft_limit: self.soft_limit,
            retry_after: self.check_interval.max(Duration::from_secs(1)),
        })
    }

    /// Items refused for signal `signal_index` (0 traces, 1 logs).
    pub fn refused(&self, signal_index: usize) -> u64 {
        self.refused
            .get(signal_index)
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Takes a measurement: `rss` now, with `held` bytes held.
    fn check(&self, rss: u64, held: u64) {
        self.other
            .store(rss.saturating_sub(held), Ordering::Relaxed);
    }
}

/// The memory the process may use, for `limit_percentage`: the cgroup's limit when there is one
/// (a container's: `memory.max` of cgroup v2, `memory.limit_in_bytes` of v1), else the
/// machine's total; 0 when neither can be read.
pub fn total_memory() -> u64 {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m),
        (c, m) => c.or(m).unwrap_or(0),
    }
}

/// The process's resident set size, from `/proc/self/statm` (0 where there is none).
pub fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Gives the allocator's free memory back to the system (glibc; elsewhere nothing to do).
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases free memory of glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Measures the RSS every `interval` (the shortest `check_interval` of `limiters`, 1 s when
/// there are none) for the limiters and the `otelcol_process_memory_rss` gauge, and gives
/// memory back after the held bytes fell (see the module's comment). Runs until aborted.
pub async fn keeper(memory: Arc<MemoryUse>, limiters: Vec<Arc<MemoryLimiter>>) {
    const TRIM_AFTER: u64 = 16 << 20;
    let interval = limiters
        .iter()
        .map(|l| l.check_interval)
        .min()
        .unwrap_or(Duration::from_secs(1));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Trimming again at every check would not help: over a hard limit at most once a second,
    // over a soft limit at most every 10 s (the Collector's `min_gc_interval_when_hard_limited`
    // and `..._soft_limited` defaults are 0 and 10 s). Memory that was never held (transport
    // buffers, decoded requests) can keep the RSS over the soft limit with nothing held; without
    // a trim there, every request would be refused for good.
    const HARD_EVERY: Duration = Duration::from_secs(1);
    const SOFT_EVERY: Duration = Duration::from_secs(10);
    let mut high = 0u64;
    let mut last_trim: Option<tokio::time::Instant> = None;
    loop {
        ticks.tick().await;
        let held = memory.held();
        high = high.max(held);
        let mut rss = resident_bytes();
        let since = |every: Duration| last_trim.is_none_or(|t| t.elapsed() >= every);
        let over_hard = limiters.iter().any(|l| rss > l.limit) && since(HARD_EVERY);
        let over_soft = limiters.iter().any(|l| rss > l.soft_limit) && since(SOFT_EVERY);
        let fell = high - held >= TRIM_AFTER && held <= high / 2;
        if fell || over_hard || over_soft {
            last_trim = Some(tokio::time::Instant::now());
            // Off the async workers: trimming a large heap takes milliseconds.
            let _ = tokio::task::spawn_blocking(trim).await;
            memory.trims.fetch_add(1, Ordering::Relaxed);
            high = held;
            rss = resident_bytes();
        }
        memory.rss.store(rss, Ordering::Relaxed);
        let held = memory.held();
        for l in &limiters {
            l.check(rss, held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryAmount;

    #[test]
    fn holds_count_until_the_last_is_dropped_and_the_limiter_counts_their_growth() {
        let memory = MemoryUse::new();
        let a = Arc::new(memory.hold(300));
        let shared = a.clone();
        let b = memory.hold(200);
        assert_eq!(memory.held(), 500);
        drop(a);
        assert_eq!(memory.held(), 500, "still held by the other exporter");
        drop(shared);
        drop(b);
        assert_eq!(memory.held(), 0);

        let config = MemoryLimiterConfig {
            check_interval: Duration::from_millis(100),
            limit: MemoryAmount::Bytes(1000),
            spike_limit: Some(MemoryAmount::Bytes(200)),
        };
        let limiter = MemoryLimiter::new("memory_limiter", &config, 0, memory.clone());
        assert_eq!((limiter.limit, limiter.soft_limit), (1000, 800));
        // The last check saw an RSS of 500 with nothing held: 500 is the process's own.
        limiter.check(500, 0);
        assert!(
            limiter.admit(300, 3, 0).is_ok(),
            "500 + 300 = 800 is at the limit"
        );
        let held = memory.hold(250);
        let over = limiter
            .admit(100, 7, 1)
            .expect_err("500 + 250 + 100 is over 800");
        assert_eq!((over.usage, over.soft_limit), (850, 800));
        assert_eq!((limiter.refused(0), limiter.refused(1)), (0, 7));
        drop(held);
        assert!(
            limiter.admit(100, 1, 0).is_ok(),
            "given back, admitted again"
        );

        let percent = MemoryLimiterConfig {
            limit: MemoryAmount::Percent(50),
            spike_limit: Some(MemoryAmount::Percent(10)),
            ..config
        };
        let l = MemoryLimiter::new("memory_limiter/p", &percent, 10_000, memory.clone());
        assert_eq!((l.limit, l.soft_limit), (5000, 4000));
        // No spike given: 20 % of the limit, in bytes (not rounded to whole percents).
        let default = MemoryLimiterConfig {
            limit: MemoryAmount::Percent(4),
            spike_limit: None,
            ..config
        };
        let l = MemoryLimiter::new("memory_limiter/d", &default, 10_000, memory);
        assert_eq!((l.limit, l.soft_limit), (400, 320));
    }

    #[test]
    fn the_process_is_measured() {
        let rss = resident_bytes();
        assert!(
            rss > 1 << 20,
            "a test process has more than 1 MiB resident: {rss}"
        );
        assert!(total_memory() >= rss);
    }
}
