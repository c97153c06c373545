//! What every configuration section shares: the error type (errors name the offending key),
//! durations spelled as the Collector spells them, component ids (`type/name`), and the
//! settings of a Wasm unit (a collector processor or a proxy filter).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::{Capabilities, FailPolicy, PluginSettings};

/// A configuration error: `key` is the dotted path of the offending key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// e.g. `processors.wasm/pii.deadline`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

pub fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Where a plugin component comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ComponentSource {
    /// A plugin built into the `weft` binary (`builtin:pii-mask`, `builtin:sampler`).
    Builtin(String),
    /// A component file; watched for changes.
    File(PathBuf),
}

/// A Wasm unit (a `wasm` processor, or a proxy filter): the component, its plugin configuration,
/// limits and fail policy.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmConfig {
    /// The component.
    pub component: ComponentSource,
    /// The plugin's own configuration (YAML, handed to the plugin as JSON).
    pub config: serde_json::Value,
    /// CPU deadline per call.
    pub deadline: Duration,
    /// Memory cap per instance, bytes.
    pub memory_limit: usize,
    /// Fuel per call, if any.
    pub fuel: Option<u64>,
    /// What happens to a batch the plugin fails on.
    pub fail_policy: FailPolicy,
    /// Granted capabilities.
    pub capabilities: Capabilities,
    /// What the plugin's output may hold.
    pub output_limits: weft_otlp_wire::Limits,
}

impl Default for WasmConfig {
    /// The defaults of [`PluginSettings::new`] (100 ms deadline, 64 MiB, fail open, nothing
    /// granted, no fuel), an empty plugin configuration, and no component: YAML must name one.
    fn default() -> Self {
        let s = PluginSettings::new("");
        WasmConfig {
            component: ComponentSource::File(PathBuf::new()),
            config: serde_json::json!({}),
            deadline: s.deadline,
            memory_limit: s.memory_cap,
            fuel: s.fuel,
            fail_policy: s.fail_policy,
            capabilities: s.capabilities,
            output_limits: s.output_limits,
        }
    }
}

impl WasmConfig {
    /// Checks the settings of the unit at `key`: the plugin configuration is a mapping, the
    /// memory cap between 1 and 1024 MiB.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.config.is_object() {
            return Err(err(format!("{key}.config"), "must be a mapping"));
        }
        let limits = &self.output_limits;
        let max_depth = weft_otlp_wire::Limits::RECEIVER.max_value_depth;
        if !(1..=max_depth).contains(&limits.max_value_depth) {
            return Err(err(
                format!("{key}.output_limits.max_value_depth"),
                format!("must be between 1 and {max_depth} (what a receiver takes)"),
            ));
        }
        if limits.max_entries == 0 || limits.max_string_bytes == 0 {
            let which = if limits.max_entries == 0 {
                "max_entries"
            } else {
                "max_string_bytes"
            };
            return Err(err(
                format!("{key}.output_limits.{which}"),
                "must be at least 1",
            ));
        }
        if !(1 << 20..=1 << 30).contains(&self.memory_limit) {
            return Err(err(
                format!("{key}.memory_limit_mib"),
                "must be between 1 and 1024",
            ));
        }
        Ok(())
    }

    /// The plugin settings of this unit, named `name` in logs and metrics.
    pub fn settings(&self, name: &str) -> PluginSettings {
        let mut settings = PluginSettings::new(name);
        settings.config = self.config.clone();
        settings.deadline = self.deadline;
        settings.memory_cap = self.memory_limit;
        settings.fuel = self.fuel;
        settings.fail_policy = self.fail_policy;
        settings.capabilities = self.capabilities.clone();
        settings.output_limits = self.output_limits;
        settings
    }
}

/// A Wasm unit as written in YAML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWasm {
    component: String,
    #[serde(default)]
    config: Option<serde_norway::Value>,
    #[serde(default)]
    deadline: Option<String>,
    #[serde(default)]
    memory_limit_mib: Option<usize>,
    #[serde(default)]
    fuel: Option<u64>,
    #[serde(default)]
    fail_policy: FailPolicy,
    #[serde(default)]
    capabilities: Capabilities,
    #[serde(default)]
    output_limits: RawOutputLimits,
}

/// `output_limits:` of a Wasm unit; absent keys keep [`crate::plugin::OUTPUT_LIMITS`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutputLimits {
    max_value_depth: Option<usize>,
    max_entries: Option<usize>,
    max_string_bytes: Option<usize>,
}

/// A duration option: absent → `default`; present → parsed or an error naming `key`.
pub fn duration_at(
    key: String,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(&s)
            .ok_or_else(|| err(key, format!("`{s}` is not a duration like 200ms"))),
    }
}

/// A duration option that must be more than zero: absent → `default`; present → parsed, or an
/// error naming `key` with `example` of what a duration looks like.
pub fn positive_duration_at(
    key: String,
    v: Option<String>,
    default: Duration,
    example: &str,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(&s)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| err(key, format!("`{s}` is not a duration like {example}"))),
    }
}

/// Parses a duration as the Collector writes them: `200ms`, `5s`, `1m`, `1500us`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The type part of a component id (`wasm` in `wasm/pii`).
pub fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

pub fn from_value<T: serde::de::DeserializeOwned>(
    key: &str,
    v: serde_norway::Value,
) -> Result<T, ConfigError> {
    // An empty YAML mapping value (`debug:`) parses as null; treat it as `{}`.
    let v = if v.is_null() {
        serde_norway::Value::Mapping(Default::default())
    } else {
        v
    };
    serde_norway::from_value(v).map_err(|e| err(key, e.to_string()))
}

/// Checks a Wasm unit's settings (a `wasm` processor, or a proxy filter) at `key`.
pub fn wasm_config(
    key: &str,
    r: RawWasm,
    base: &std::path::Path,
) -> Result<WasmConfig, ConfigError> {
    // Built-in names are checked by whoever embeds the built-ins (the `weft` binary).
    let component = match r.component.strip_prefix("builtin:") {
        Some(name) => ComponentSource::Builtin(name.to_string()),
        None => ComponentSource::File(base.join(&r.component)),
    };
    let config = match r.config {
        None => serde_json::json!({}),
        Some(v) => {
            serde_json::to_value(v).map_err(|e| err(format!("{key}.config"), e.to_string()))?
        }
    };
    let defaults = WasmConfig::default();
    let w = WasmConfig {
        component,
        config,
        deadline: positive_duration_at(
            format!("{key}.deadline"),
            r.deadline,
            defaults.deadline,
            "100ms",
        )?,
        memory_limit: r
            .memory_limit_mib
            .map_or(defaults.memory_limit, |mib| mib.saturating_mul(1 << 20)),
        fuel: r.fuel,
        fail_policy: r.fail_policy,
        capabilities: r.capabilities,
        output_limits: {
            let d = defaults.output_limits;
            let o = r.output_limits;
            weft_otlp_wire::Limits {
                max_value_depth: o.max_value_depth.unwrap_or(d.max_value_depth),
                max_entries: o.max_entries.unwrap_or(d.max_entries),
                max_string_bytes: o.max_string_bytes.unwrap_or(d.max_string_bytes),
            }
        },
    };
    w.validate(key)?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_collectors() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("ms"), None);
    }
}
