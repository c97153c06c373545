//! A/B routing: every user lands in a stable bucket, and the bucket picks the backend version.
//!
//! The user id comes from a request header (`x-user-id` by default). Its bucket is
//! `fnv1a64(salt ‖ user id) mod 10000`; the split lists versions with their share in percent,
//! and the bucket's position in the cumulative split picks one. The choice is written to
//! `x-backend-version` (configurable) for the router to match on. A request without a user id
//! gets the `default` version. The same user always gets the same version, in every proxy and
//! every worker, as long as the salt and the split stay the same.
//!
//! ```json
//! {"header": "x-user-id", "target": "x-backend-version", "salt": "exp-42",
//!  "split": [{"version": "v1", "percent": 90}, {"version": "v2", "percent": 10}],
//!  "default": "v1"}
//! ```

use serde::Deserialize;
use weft_guest::{Action, Config, Error, HttpFilter, Plugin, http, metrics};

/// One arm of the split.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// The value written to the target header.
    pub version: String,
    /// Share of users, in percent (the shares must add up to 100).
    pub percent: f64,
}

/// The configuration.
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

/// FNV-1a, 64 bits: small, stable across platforms and releases (unlike std's SipHash keys).
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

/// The router: the split resolved to cumulative bucket bounds.
#[derive(Debug)]
pub struct AbRouter {
    settings: Settings,
    /// `(upper bound, version)`: a bucket `b` goes to the first arm with `b < bound`.
    bounds: Vec<(u64, String)>,
    default: String,
    /// The `ab_requests{version}` labels of every version, built once: a request allocates
    /// nothing for its metric (the native SDK filter likewise defines its metric ids once).
    labels: Vec<(String, [(String, String); 1])>,
}

impl AbRouter {
    /// Validates the settings.
    pub fn from_settings(settings: Settings) -> Result<Self, Error> {
        if settings.split.is_empty() {
            return Err(Error::InvalidConfig(
                "split: at least one version is needed".into(),
            ));
        }
        let mut total = 0.0;
        let mut bounds = Vec::new();
        for arm in &settings.split {
            if !(0.0..=100.0).contains(&arm.percent) {
                return Err(Error::InvalidConfig(format!(
                    "split: {}: percent must be within 0..=100, got {}",
                    arm.version, arm.percent
                )));
            }
            total += arm.percent;
            bounds.push(((total * 100.0).round() as u64, arm.version.clone()));
        }
        if (total - 100.0).abs() > 1e-6 {
            return Err(Error::InvalidConfig(format!(
                "split: the percentages add up to {total}, not 100"
            )));
        }
        let default = settings
            .default
            .clone()
            .unwrap_or_else(|| settings.split[0].version.clone());
        let mut labels: Vec<(String, [(String, String); 1])> = Vec::new();
        for version in bounds.iter().map(|(_, v)| v).chain([&default]) {
            if !labels.iter().any(|(v, _)| v == version) {
                labels.push((version.clone(), [("version".into(), version.clone())]));
            }
        }
        Ok(AbRouter {
            settings,
            bounds,
            default,
            labels,
        })
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
}

impl Plugin for AbRouter {
    fn new(config: &Config) -> Result<Self, Error> {
        AbRouter::from_settings(config.parse()?)
    }
}

impl HttpFilter for AbRouter {
    type Stream = ();

    fn new_stream(&mut self) {}

    fn on_request_headers(&mut self, _: &mut (), _: u32, _: bool) -> Action {
        let user = http::request_header(&self.settings.header);
        let version = self.choose(user.as_deref());
        http::set_request_header(&self.settings.target, version);
        if let Some((_, labels)) = self.labels.iter().find(|(v, _)| v == version) {
            metrics::counter_add("ab_requests", labels, 1);
        }
        Action::Continue
    }
}

weft_guest::export_http_filter!(AbRouter);

#[cfg(test)]
mod tests {
    use super::*;

    fn router(json: &str) -> Result<AbRouter, Error> {
        AbRouter::new(&Config::from_json(json)?)
    }

    #[test]
    fn same_user_same_version_and_split_is_close_to_config() {
        let r = router(r#"{"split":[{"version":"a","percent":90},{"version":"b","percent":10}]}"#)
            .expect("valid");
        let mut b = 0;
        for i in 0..20_000 {
            let user = format!("user-{i}");
            let v = r.choose(Some(&user));
            assert_eq!(v, r.choose(Some(&user)), "stable for {user}");
            if v == "b" {
                b += 1;
            }
        }
        // 10 % of 20 000 = 2000, σ ≈ 42: within 4σ.
        assert!((1830..=2170).contains(&b), "b got {b} of 20000");
    }

    #[test]
    fn no_user_gets_the_default() {
        let r = router(r#"{"default":"v9","split":[{"version":"v1","percent":100}]}"#).expect("ok");
        assert_eq!(r.choose(None), "v9");
        assert_eq!(r.choose(Some("")), "v9");
    }

    #[test]
    fn bad_split_is_refused_with_its_key() {
        let e = router(r#"{"split":[{"version":"a","percent":60},{"version":"b","percent":30}]}"#)
            .expect_err("90 % is not 100 %");
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("add up to 90")),
            "{e:?}"
        );
        let e = router(r#"{"splitt":[]}"#).expect_err("typo");
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("splitt")),
            "{e:?}"
        );
    }

    #[test]
    fn the_salt_changes_the_buckets_and_the_hash_is_pinned() {
        assert_ne!(bucket("a", "alice"), bucket("b", "alice"));
        // Pinned: the proxy-wasm SDK bench filter and other languages must agree.
        assert_eq!(fnv1a64(&[b"alice"]), 0x508b_2abb_65a0_3907);
    }
}
