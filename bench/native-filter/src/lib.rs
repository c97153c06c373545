//! Benchmark only: the `ab-router` plugin (guests/ab-router) written directly on
//! proxy-wasm-rust-sdk, as the "native SDK filter" baseline that the adapted component is
//! measured against (`cargo xtask bench envoy`).
//!
//! Same configuration, same hash and the same decision as the component: the user id from a
//! request header (`x-user-id`) is bucketed with `fnv1a64(salt ‖ 0 ‖ user id) mod 10000`, the
//! bucket's place in the cumulative split picks the version, and the version goes to
//! `x-backend-version`. Every request counts one `ab_requests` with its version; Proxy-Wasm
//! metrics have no labels, so the label is folded into the name (`ab_requests.version.<v>`,
//! `wasmcustom.ab_requests.version.<v>` in Envoy's stats), and every metric is defined once when
//! the plugin is configured.
//!
//! Host calls go through `proxy_wasm::hostcalls`, which return errors, rather than the
//! `Context` trait helpers, which panic (and so kill the filter) on any host error. That is a
//! few lines more than the SDK's examples and costs nothing per request.
//!
//! Build: `cargo build -p bench-native-filter --target wasm32-unknown-unknown --release
//! --target-dir target/wasm` → `target/wasm/wasm32-unknown-unknown/release/bench_native_filter.wasm`.

use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use serde::Deserialize;

/// One arm of the split.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// The value written to the target header.
    pub version: String,
    /// Share of users, in percent (the shares must add up to 100).
    pub percent: f64,
}

/// The configuration: the same keys and defaults as guests/ab-router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The header with the user id.
    pub header: String,
    /// The header that receives the chosen version.
    pub target: String,
    /// Mixed into the hash, so that experiments bucket users independently.
    pub salt: String,
    /// The versions and their shares.
    pub split: Vec<Arm>,
    /// The version for requests without a user id (the first arm's if unset).
    pub default: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header: "x-user-id".into(),
            target: "x-backend-version".into(),
            salt: String::new(),
            split: vec![
                Arm {
                    version: "v1".into(),
                    percent: 50.0,
                },
                Arm {
                    version: "v2".into(),
                    percent: 50.0,
                },
            ],
            default: None,
        }
    }
}

/// Number of buckets: shares are resolved to 0.01 %.
pub const BUCKETS: u64 = 10_000;

/// FNV-1a, 64 bits (the component's hash, byte for byte).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The stable bucket (`0..BUCKETS`) of a user.
pub fn bucket(salt: &str, user: &str) -> u64 {
    fnv1a64(&[salt.as_bytes(), b"\0", user.as_bytes()]) % BUCKETS
}

/// The split resolved to cumulative bucket bounds; no host calls, so it is unit-tested natively.
#[derive(Debug)]
pub struct Router {
    /// The settings it was built from.
    pub settings: Settings,
    /// `(upper bound, version)`: a bucket `b` goes to the first arm with `b < bound`.
    bounds: Vec<(u64, String)>,
    default: String,
}

impl Router {
    /// Validates the settings (the component's rules and messages).
    pub fn new(settings: Settings) -> Result<Self, String> {
        let Some(first) = settings.split.first() else {
            return Err("split: at least one version is needed".into());
        };
        let default = settings
            .default
            .clone()
            .unwrap_or_else(|| first.version.clone());
        let mut total = 0.0;
        let mut bounds = Vec::new();
        for arm in &settings.split {
            if !(0.0..=100.0).contains(&arm.percent) {
                return Err(format!(
                    "split: {}: percent must be within 0..=100, got {}",
                    arm.version, arm.percent
                ));
            }
            total += arm.percent;
            bounds.push(((total * 100.0).round() as u64, arm.version.clone()));
        }
        if (total - 100.0).abs() > 1e-6 {
            return Err(format!("split: the percentages add up to {total}, not 100"));
        }
        Ok(Router {
            settings,
            bounds,
            default,
        })
    }

    /// Parses the plugin configuration (empty = the defaults).
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let settings = if json.iter().all(u8::is_ascii_whitespace) {
            Settings::default()
        } else {
            serde_json::from_slice(json).map_err(|e| e.to_string())?
        };
        Router::new(settings)
    }

    /// The version for a user (or the default without one).
    pub fn choose(&self, user: Option<&str>) -> &str {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return &self.default;
        };
        let b = bucket(&self.settings.salt, user);
        self.bounds
            .iter()
            .find(|(bound, _)| b < *bound)
            .map(|(_, v)| v.as_str())
            .unwrap_or(&self.default)
    }

    /// Every version a request can get: the arms and the default.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.bounds
            .iter()
            .map(|(_, v)| v.as_str())
            .chain(std::iter::once(self.default.as_str()))
    }
}

/// The configured router and its metric ids, shared by every HTTP context of a worker.
struct Shared {
    router: Router,
    /// `ab_requests.version.<v>` per version.
    counters: HashMap<String, u32>,
}

/// The root context: reads and checks the configuration, defines the metrics.
#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(e) => {
                log(
                    LogLevel::Error,
                    &format!("ab-router: no configuration: {e:?}"),
                );
                return false;
            }
        };
        let router = match Router::from_json(&config) {
            Ok(r) => r,
            Err(e) => {
                // Returning false makes Envoy refuse the plugin (or fail open, per its config).
                log(LogLevel::Error, &format!("ab-router: invalid config: {e}"));
                return false;
            }
        };
        let mut counters = HashMap::new();
        for v in router.versions() {
            if counters.contains_key(v) {
                continue;
            }
            match hostcalls::define_metric(MetricType::Counter, &format!("ab_requests.version.{v}"))
            {
                Ok(id) => {
                    counters.insert(v.to_string(), id);
                }
                Err(e) => log(LogLevel::Warn, &format!("ab-router: metric for {v}: {e:?}")),
            }
        }
        self.shared = Some(Rc::new(Shared { router, counters }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Stream { shared }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream.
struct Stream {
    shared: Rc<Shared>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let s = &*self.shared;
        let user = hostcalls::get_map_value(MapType::HttpRequestHeaders, &s.router.settings.header)
            .ok()
            .flatten();
        let version = s.router.choose(user.as_deref());
        if let Err(e) = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &s.router.settings.target,
            Some(version),
        ) {
            log(LogLevel::Warn, &format!("ab-router: set header: {e:?}"));
        }
        if let Some(&id) = s.counters.get(version) {
            let _ = hostcalls::increment_metric(id, 1);
        }
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<Root>::default() });
}}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_and_buckets_match_the_component() {
        // Pinned in guests/ab-router too.
        assert_eq!(fnv1a64(&[b"alice"]), 0x508b_2abb_65a0_3907);
        assert_ne!(bucket("a", "alice"), bucket("b", "alice"));
    }

    #[test]
    fn split_is_stable_and_close_to_config() {
        let r = Router::from_json(
            br#"{"split":[{"version":"a","percent":90},{"version":"b","percent":10}]}"#,
        )
        .expect("valid");
        let mut b = 0;
        for i in 0..20_000 {
            let user = format!("user-{i}");
            let v = r.choose(Some(&user));
            assert_eq!(v, r.choose(Some(&user)));
            if v == "b" {
                b += 1;
            }
        }
        assert!((1830..=2170).contains(&b), "b got {b} of 20000");
        assert_eq!(r.choose(None), "a");
        assert_eq!(r.versions().collect::<Vec<_>>(), ["a", "b", "a"]);
    }

    #[test]
    fn bad_configs_are_refused() {
        let e = Router::from_json(
            br#"{"split":[{"version":"a","percent":60},{"version":"b","percent":30}]}"#,
        )
        .expect_err("90 %");
        assert!(e.contains("add up to 90"), "{e}");
        let e = Router::from_json(br#"{"splitt":[]}"#).expect_err("typo");
        assert!(e.contains("splitt"), "{e}");
        assert!(Router::from_json(b"").is_ok(), "empty = defaults");
    }

    #[test]
    fn every_choice_matches_the_component() {
        let json = r#"{"salt":"exp-42","default":"v0","split":[
            {"version":"v1","percent":33.33},{"version":"v2","percent":0},
            {"version":"v3","percent":66.67}]}"#;
        let native = Router::from_json(json.as_bytes()).expect("valid");
        let component = guest_ab_router::AbRouter::from_settings(
            serde_json::from_str(json).expect("the component's settings"),
        )
        .expect("valid for the component too");
        assert_eq!(native.choose(None), component.choose(None));
        for i in 0..5_000 {
            let user = format!("user-{i}");
            assert_eq!(
                native.choose(Some(&user)),
                component.choose(Some(&user)),
                "{user}"
            );
        }
    }
}
