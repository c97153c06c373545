//! Fixed-window rate limiting per user and tier, with counters every proxy worker shares.
//!
//! Each request is counted against its *subject* and *tier* in the current window:
//!
//! * subject: the user id from a request header (`x-user-id` by default); without one, the
//!   client address (the `source.address` attribute without its port, as `ip:<address>`). A
//!   request with neither is not limited (counted in `ratelimit_unidentified`);
//! * tier: from a request header (`x-user-tier` by default), `vip`, `pro` or `free` (ASCII case
//!   ignored); absent or unknown is `free`. The header must come from something you trust (an
//!   authentication filter in front of this one), or clients can pick their own tier;
//! * window: `floor(unix seconds / window_seconds)`, so windows start at the same instant in
//!   every worker and every proxy that shares the clock.
//!
//! The counter lives in the plugin's key-value store, shared by every instance (in Envoy, every
//! worker thread): key `rl:<tier>:<subject>:<window>`, value the count as 8 bytes little-endian.
//! It is increased with compare-and-swap (`set` with the version just read; version 0 means "only
//! if absent"), retried up to 8 times when another worker wrote in between. After 8 lost races
//! the request is allowed and counted in `ratelimit_cas_exhausted`: a rate limiter that fails
//! closed under contention would turn load into an outage. A request over the limit does not
//! write at all.
//!
//! Over the limit the filter answers itself with `429`, `retry-after: <seconds to the window's
//! end>`, `x-ratelimit-limit`, `x-ratelimit-remaining: 0` and the body
//! `{"error":"rate_limited","tier":"free","limit":10,"retry_after_seconds":17}`. Allowed requests
//! get `x-ratelimit-limit` and `x-ratelimit-remaining` on their response.
//!
//! Keys of past windows stay in the store (the key-value interface cannot delete, as Envoy's
//! shared data cannot): the store grows by one small entry per active subject and window.
//!
//! ```json
//! {"window_seconds": 60, "limits": {"vip": 1000, "pro": 100, "free": 10},
//!  "user_header": "x-user-id", "tier_header": "x-user-tier"}
//! ```

use serde::Deserialize;
use weft_guest::metrics;
use weft_guest::{Action, Config, Error, HttpFilter, LocalResponse, Plugin, clock, http};

/// How many times a compare-and-swap increment is tried before the request is let through.
pub const MAX_ATTEMPTS: u32 = 8;

/// Requests allowed per window, by tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Limit of the `vip` tier (default 1000).
    pub vip: u64,
    /// Limit of the `pro` tier (default 100).
    pub pro: u64,
    /// Limit of the `free` tier, and of requests without a known tier (default 10).
    pub free: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            vip: 1000,
            pro: 100,
            free: 10,
        }
    }
}

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Length of a window in seconds (default 60).
    pub window_seconds: u64,
    /// Requests allowed per window, by tier (`0` blocks a tier).
    pub limits: Limits,
    /// The request header with the user id (default `x-user-id`).
    pub user_header: String,
    /// The request header with the tier (default `x-user-tier`).
    pub tier_header: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            window_seconds: 60,
            limits: Limits::default(),
            user_header: "x-user-id".into(),
            tier_header: "x-user-tier".into(),
        }
    }
}

/// A user tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// `vip`.
    Vip,
    /// `pro`.
    Pro,
    /// `free`, and every unknown or absent tier.
    Free,
}

impl Tier {
    /// The tier a header value names (`free` when absent or unknown).
    pub fn parse(value: Option<&str>) -> Tier {
        match value.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("vip") => Tier::Vip,
            Some(v) if v.eq_ignore_ascii_case("pro") => Tier::Pro,
            _ => Tier::Free,
        }
    }

    /// The tier's name, as in keys, bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Vip => "vip",
            Tier::Pro => "pro",
            Tier::Free => "free",
        }
    }
}

pub use weft_guest::store::{CasStore as CounterStore, HostStore, StoreError};

/// What counting one request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Counted; `count` requests (this one included) in the window so far.
    Allowed {
        /// The count after this request.
        count: u64,
    },
    /// The window's `count` already reached the limit: not counted, to be refused.
    Limited {
        /// The count, at or over the limit.
        count: u64,
    },
    /// Every compare-and-swap lost to another writer: allowed without being counted.
    CasExhausted,
    /// The store failed: allowed without being counted.
    StoreFailed(String),
}

/// Decodes a stored count: 8 bytes little-endian (anything else counts as 0 and is overwritten).
pub fn decode_count(value: &[u8]) -> u64 {
    value.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

/// Counts one request at `key` against `limit`, with up to [`MAX_ATTEMPTS`] compare-and-swaps.
pub fn take(store: &mut impl CounterStore, key: &str, limit: u64) -> Outcome {
    for _ in 0..MAX_ATTEMPTS {
        let (count, cas) = match store.get(key) {
            Ok(Some((value, cas))) => (decode_count(&value), cas),
            Ok(None) => (0, 0),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other(m)) => return Outcome::StoreFailed(m),
        };
        if count >= limit {
            return Outcome::Limited { count };
        }
        match store.set(key, &(count + 1).to_le_bytes(), cas) {
            Ok(()) => return Outcome::Allowed { count: count + 1 },
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other(m)) => return Outcome::StoreFailed(m),
        }
    }
    Outcome::CasExhausted
}

/// The counter key of a subject in a window.
pub fn counter_key(tier: Tier, subject: &str, window: u64) -> String {
    format!("rl:{}:{subject}:{window}", tier.as_str())
}

/// The subject of a request: its user id, else `ip:<client address without port>`.
pub fn subject(user: Option<&str>, source_address: Option<&str>) -> Option<String> {
    match user.map(str::trim).filter(|u| !u.is_empty()) {
        Some(user) => Some(user.to_string()),
        None => source_address
            .map(strip_port)
            .filter(|a| !a.is_empty())
            .map(|a| format!("ip:{a}")),
    }
}

/// An address without its port: `10.0.0.1:5000` → `10.0.0.1`, `[::1]:5000` → `::1`.
pub fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(address, |(host, _)| host);
    }
    match address.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => address,
    }
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The request's tier.
    pub tier: Tier,
    /// The tier's limit.
    pub limit: u64,
    /// Seconds until the current window ends (at least 1).
    pub retry_after: u64,
    /// What counting gave.
    pub outcome: Outcome,
}

impl Verdict {
    /// Requests left in the window after this one, when it was counted.
    pub fn remaining(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Allowed { count } => Some(self.limit.saturating_sub(count)),
            Outcome::Limited { .. } => Some(0),
            _ => None,
        }
    }

    /// The `429` to answer with, when the request is over the limit.
    pub fn response(&self) -> Option<LocalResponse> {
        if !matches!(self.outcome, Outcome::Limited { .. }) {
            return None;
        }
        let body = serde_json::json!({
            "error": "rate_limited",
            "tier": self.tier.as_str(),
            "limit": self.limit,
            "retry_after_seconds": self.retry_after,
        });
        Some(
            LocalResponse::json(429, body.to_string(), "rate_limited")
                .with_header("retry-after", &self.retry_after.to_string())
                .with_header("x-ratelimit-limit", &self.limit.to_string())
                .with_header("x-ratelimit-remaining", "0"),
        )
    }
}

/// The limiter: settings and the per-tier limits.
#[derive(Debug)]
pub struct RateLimit {
    settings: Settings,
}

impl RateLimit {
    /// Validates the settings.
    pub fn from_settings(settings: Settings) -> Result<Self, Error> {
        if settings.window_seconds == 0 {
            return Err(Error::InvalidConfig(
                "rate-limit: `window_seconds` must be at least 1".into(),
            ));
        }
        if settings.user_header.is_empty() || settings.tier_header.is_empty() {
            return Err(Error::InvalidConfig(
                "rate-limit: `user_header` and `tier_header` must not be empty".into(),
            ));
        }
        Ok(RateLimit { settings })
    }

    /// The limit of a tier.
    pub fn limit(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Vip => self.settings.limits.vip,
            Tier::Pro => self.settings.limits.pro,
            Tier::Free => self.settings.limits.free,
        }
    }

    /// The window a time (ns since the epoch) falls in, and the whole seconds (rounded up, at
    /// least 1) until it ends.
    pub fn window(&self, now_ns: u64) -> (u64, u64) {
        let window_ns = u128::from(self.settings.window_seconds) * 1_000_000_000;
        let now = u128::from(now_ns);
        let index = now / window_ns;
        let left_ns = (index + 1) * window_ns - now;
        let retry_after = left_ns.div_ceil(1_000_000_000).max(1);
        (index as u64, retry_after as u64)
    }

    /// Counts a request of `subject` in `tier` at `now_ns` and decides on it.
    pub fn check(
        &self,
        store: &mut impl CounterStore,
        tier: Tier,
        subject: &str,
        now_ns: u64,
    ) -> Verdict {
        let (window, retry_after) = self.window(now_ns);
        let limit = self.limit(tier);
        Verdict {
            tier,
            limit,
            retry_after,
            outcome: take(store, &counter_key(tier, subject, window), limit),
        }
    }
}

impl Plugin for RateLimit {
    fn new(config: &Config) -> Result<Self, Error> {
        RateLimit::from_settings(config.parse()?)
    }
}

fn count(name: &str, tier: Tier) {
    metrics::counter_add(name, &[("tier".into(), tier.as_str().into())], 1);
}

impl HttpFilter for RateLimit {
    /// `(limit, remaining)` of an allowed, counted request, for its response headers.
    type Stream = Option<(u64, u64)>;

    fn new_stream(&mut self) -> Option<(u64, u64)> {
        None
    }

    fn on_request_headers(&mut self, s: &mut Option<(u64, u64)>, _: u32, _: bool) -> Action {
        let tier = Tier::parse(http::request_header(&self.settings.tier_header).as_deref());
        let user = http::request_header(&self.settings.user_header);
        let address = http::property_str("source.address");
        let Some(subject) = subject(user.as_deref(), address.as_deref()) else {
            count("ratelimit_unidentified", tier);
            return Action::Continue;
        };
        let verdict = self.check(&mut HostStore, tier, &subject, clock::now());
        if let Some(response) = verdict.response() {
            count("ratelimit_limited", tier);
            return Action::Respond(response);
        }
        match &verdict.outcome {
            Outcome::CasExhausted => metrics::counter_add("ratelimit_cas_exhausted", &[], 1),
            Outcome::StoreFailed(m) => {
                metrics::counter_add("ratelimit_store_errors", &[], 1);
                weft_guest::log::warn(&format!("rate-limit: key-value store failed: {m}"));
            }
            _ => {}
        }
        count("ratelimit_allowed", tier);
        *s = verdict.remaining().map(|r| (verdict.limit, r));
        Action::Continue
    }

    fn on_response_headers(&mut self, s: &mut Option<(u64, u64)>, _: u32, _: bool) -> Action {
        if let Some((limit, remaining)) = *s {
            http::set_response_header("x-ratelimit-limit", &limit.to_string());
            http::set_response_header("x-ratelimit-remaining", &remaining.to_string());
        }
        Action::Continue
    }
}

weft_guest::export_http_filter!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory store with the host's compare-and-swap rules: versions start at 1 and
    /// change on every write; `cas` 0 writes only if the key is absent.
    #[derive(Default)]
    struct MemStore {
        entries: BTreeMap<String, (Vec<u8>, u32)>,
        writes: u32,
    }

    impl CounterStore for MemStore {
        fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Ok(self.entries.get(key).cloned())
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            let current = self.entries.get(key).map_or(0, |(_, v)| *v);
            if current != cas {
                return Err(StoreError::CasMismatch);
            }
            self.writes += 1;
            self.entries
                .insert(key.into(), (value.to_vec(), self.writes));
            Ok(())
        }
    }

    /// Another worker: before each of our first `races` writes, it counts one request itself
    /// on the same key, so our compare-and-swap loses.
    struct Contended {
        store: MemStore,
        races: u32,
    }

    impl CounterStore for Contended {
        fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.store.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
            if self.races > 0 {
                self.races -= 1;
                assert!(matches!(
                    take(&mut self.store, key, u64::MAX),
                    Outcome::Allowed { .. }
                ));
            }
            self.store.set(key, value, cas)
        }
    }

    fn limiter(json: &str) -> RateLimit {
        RateLimit::new(&Config::from_json(json).expect("json")).expect("valid")
    }

    const T0: u64 = 1_700_000_040 * 1_000_000_000; // a window start for 60 s windows

    #[test]
    fn the_limit_holds_within_a_window_and_resets_in_the_next() {
        let rl = limiter(r#"{"limits": {"free": 3}}"#);
        let mut store = MemStore::default();
        let outcomes: Vec<Outcome> = (0..5)
            .map(|i| {
                rl.check(&mut store, Tier::Free, "alice", T0 + i * 1_000_000_000)
                    .outcome
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Allowed { count: 1 },
                Outcome::Allowed { count: 2 },
                Outcome::Allowed { count: 3 },
                Outcome::Limited { count: 3 },
                Outcome::Limited { count: 3 },
            ]
        );
        // Refused requests are not written.
        assert_eq!(store.writes, 3);
        // Another user, and the next window, start from zero.
        let v = rl.check(&mut store, Tier::Free, "bob", T0);
        assert_eq!(v.outcome, Outcome::Allowed { count: 1 });
        let v = rl.check(&mut store, Tier::Free, "alice", T0 + 60 * 1_000_000_000);
        assert_eq!(v.outcome, Outcome::Allowed { count: 1 });
        let key = counter_key(Tier::Free, "alice", 1_700_000_040 / 60);
        assert_eq!(key, "rl:free:alice:28333334");
        assert_eq!(store.entries[&key].0, 3u64.to_le_bytes());
    }

    #[test]
    fn tiers_have_their_own_limits_and_counters() {
        let rl = limiter(r#"{"limits": {"vip": 5, "pro": 2, "free": 1}}"#);
        let mut store = MemStore::default();
        let allowed = |store: &mut MemStore, tier| {
            (0..10)
                .filter(|_| {
                    matches!(
                        rl.check(store, tier, "u", T0).outcome,
                        Outcome::Allowed { .. }
                    )
                })
                .count()
        };
        assert_eq!(allowed(&mut store, Tier::Vip), 5);
        assert_eq!(allowed(&mut store, Tier::Pro), 2);
        assert_eq!(allowed(&mut store, Tier::Free), 1);
        assert_eq!(Tier::parse(Some("VIP")), Tier::Vip);
        assert_eq!(Tier::parse(Some(" pro ")), Tier::Pro);
        assert_eq!(Tier::parse(Some("platinum")), Tier::Free);
        assert_eq!(Tier::parse(None), Tier::Free);
    }

    #[test]
    fn a_lost_race_is_retried_and_the_other_writers_count_is_kept() {
        let rl = limiter(r#"{"limits": {"free": 100}}"#);
        let mut store = Contended {
            store: MemStore::default(),
            races: 3,
        };
        let v = rl.check(&mut store, Tier::Free, "alice", T0);
        // Three competing increments landed first; ours is the fourth.
        assert_eq!(v.outcome, Outcome::Allowed { count: 4 });
        assert_eq!(v.remaining(), Some(96));
    }

    #[test]
    fn eight_lost_races_let_the_request_through_uncounted() {
        let mut store = Contended {
            store: MemStore::default(),
            races: MAX_ATTEMPTS,
        };
        assert_eq!(take(&mut store, "k", 100), Outcome::CasExhausted);
        assert_eq!(
            decode_count(&store.store.entries["k"].0),
            u64::from(MAX_ATTEMPTS)
        );
        let mut store = Contended {
            store: MemStore::default(),
            races: MAX_ATTEMPTS - 1,
        };
        assert_eq!(take(&mut store, "k", 100), Outcome::Allowed { count: 8 });
    }

    #[test]
    fn competing_workers_never_allow_more_than_the_limit_together() {
        // The competitor's requests and ours share one limit of 10: whatever the interleaving,
        // exactly 10 are allowed in total.
        let mut store = Contended {
            store: MemStore::default(),
            races: 6,
        };
        let mut ours = 0;
        for _ in 0..20 {
            if matches!(take(&mut store, "k", 10), Outcome::Allowed { .. }) {
                ours += 1;
            }
        }
        assert_eq!(ours + 6, 10);
        assert_eq!(decode_count(&store.store.entries["k"].0), 10);
    }

    #[test]
    fn the_429_names_tier_limit_and_seconds_to_the_window_end() {
        let rl = limiter(r#"{"window_seconds": 60, "limits": {"free": 0}}"#);
        let mut store = MemStore::default();
        let v = rl.check(&mut store, Tier::Free, "ip:10.0.0.1", T0 + 42_500_000_000);
        assert_eq!(v.retry_after, 18, "17.5 s left, rounded up");
        let r = v.response().expect("limited");
        assert_eq!(r.status, 429);
        assert_eq!(r.details, "rate_limited");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        assert_eq!(
            body,
            serde_json::json!({"error": "rate_limited", "tier": "free", "limit": 0,
                               "retry_after_seconds": 18})
        );
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("retry-after"), Some("18"));
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("x-ratelimit-remaining"), Some("0"));
        // An allowed request has no response of its own.
        let ok = limiter("{}").check(&mut store, Tier::Free, "x", T0);
        assert_eq!(ok.response(), None);
        assert_eq!(ok.remaining(), Some(9));
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let rl = limiter(r#"{"window_seconds": 60}"#);
        assert_eq!(rl.window(T0), (28_333_334, 60));
        assert_eq!(rl.window(T0 + 59_999_999_999), (28_333_334, 1));
        assert_eq!(rl.window(T0 + 60_000_000_000), (28_333_335, 60));
    }

    #[test]
    fn subjects_are_users_or_client_addresses() {
        assert_eq!(
            subject(Some("alice"), Some("10.0.0.1:5")),
            Some("alice".into())
        );
        assert_eq!(
            subject(Some(""), Some("10.0.0.1:5")),
            Some("ip:10.0.0.1".into())
        );
        assert_eq!(
            subject(None, Some("[2001:db8::1]:443")),
            Some("ip:2001:db8::1".into())
        );
        assert_eq!(subject(None, None), None);
    }

    #[test]
    fn configuration_defaults_and_validation() {
        let rl = limiter("{}");
        assert_eq!(
            (
                rl.limit(Tier::Vip),
                rl.limit(Tier::Pro),
                rl.limit(Tier::Free)
            ),
            (1000, 100, 10)
        );
        assert_eq!(rl.settings.window_seconds, 60);
        let load = |json: &str| RateLimit::new(&Config::from_json(json).expect("json"));
        assert_eq!(
            load(r#"{"limits": {"pro": 7}}"#)
                .expect("ok")
                .limit(Tier::Free),
            10
        );
        for bad in [
            r#"{"window_seconds": 0}"#,
            r#"{"limits": {"gold": 5}}"#,
            r#"{"limit": {}}"#,
            r#"{"user_header": ""}"#,
        ] {
            assert!(matches!(load(bad), Err(Error::InvalidConfig(_))), "{bad}");
        }
    }
}
