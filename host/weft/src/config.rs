//! The `weft run` configuration file: the collector's sections (`receivers`, `processors`,
//! `exporters`, `service.pipelines`, shaped like the OpenTelemetry Collector's), the filter
//! proxies (`proxies`) and the self-telemetry (`service.telemetry`). Each part parses its own
//! sections ([`CollectorConfig`], [`weft_proxy::config`]); this module composes them and checks
//! what only the whole knows (built-in plugin names, that there is something to run).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use weft_collector::config::{CollectorConfig, RawSections};
use weft_proxy::config::{ProxyConfig, filter_key, parse_proxies};
use weft_runtime::config::{ComponentSource, ConfigError, WasmConfig, err};

/// The pipeline weft runs with no configuration file: OTLP gRPC and HTTP on loopback →
/// pii-mask → sampler → debug exporter on stdout, with the two plugins built into the binary.
pub const DEFAULT_CONFIG: &str = r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
      http:
        endpoint: 127.0.0.1:4318

processors:
  wasm/pii-mask:
    component: builtin:pii-mask
    fail_policy: closed
  wasm/sampler:
    component: builtin:sampler
    config:
      percentage: 100

exporters:
  debug:
    verbosity: basic

service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [wasm/pii-mask, wasm/sampler]
      exporters: [debug]
    logs:
      receivers: [otlp]
      processors: [wasm/pii-mask]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:8888
"#;

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receivers, processors, exporters and pipelines.
    pub collector: CollectorConfig,
    /// HTTP filter proxies by id.
    pub proxies: BTreeMap<String, ProxyConfig>,
    /// Where self-metrics, /healthz and /readyz are served; `None` disables it.
    pub metrics_address: Option<SocketAddr>,
    /// The file it was read from ([`Config::load`]); `weft run` watches it for changes.
    pub source: Option<PathBuf>,
}

impl Config {
    /// Reads and parses a configuration file; component paths are relative to its folder.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("config", format!("cannot read {}: {e}", path.display())))?;
        let base = path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let mut config = Config::parse(&text, &base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates YAML text. Relative component paths are taken relative to `base`.
    pub fn parse(yaml: &str, base: &std::path::Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_norway::from_str(yaml).map_err(|e| err("config", e.to_string()))?;
        let collector = CollectorConfig::parse(
            RawSections {
                receivers: raw.receivers,
                processors: raw.processors,
                exporters: raw.exporters,
                pipelines: raw.service.pipelines,
            },
            base,
        )?;
        let proxies = parse_proxies(raw.proxies, base)?;
        if collector.pipelines.is_empty() && proxies.is_empty() {
            return Err(err(
                "service.pipelines",
                "define a traces or logs pipeline (or a proxy under `proxies`)",
            ));
        }
        let metrics_address = match raw.service.telemetry.and_then(|t| t.metrics) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8888))),
            Some(m) if m.address == "none" => None,
            Some(m) => Some(m.address.parse().map_err(|_| {
                err(
                    "service.telemetry.metrics.address",
                    format!("`{}` is not host:port (or none)", m.address),
                )
            })?),
        };
        let config = Config {
            collector,
            proxies,
            metrics_address,
            source: None,
        };
        config.check_builtins()?;
        Ok(config)
    }

    /// Every `builtin:` component must name a plugin built into this binary.
    fn check_builtins(&self) -> Result<(), ConfigError> {
        let check = |key: String, w: &WasmConfig| match &w.component {
            ComponentSource::Builtin(name) if crate::builtin::get(name).is_none() => Err(err(
                format!("{key}.component"),
                format!(
                    "no built-in plugin `{name}` (there are: {})",
                    crate::builtin::NAMES.join(", ")
                ),
            )),
            _ => Ok(()),
        };
        for (id, p) in &self.collector.processors {
            if let Some(w) = p.wasm() {
                check(format!("processors.{id}"), w)?;
            }
        }
        for (id, p) in &self.proxies {
            for (i, f) in p.filters.iter().enumerate() {
                check(format!("proxies.{id}.filters[{i}]"), &f.wasm)?;
            }
        }
        Ok(())
    }

    /// Whether `other` differs from `self` only in its processors' and filters' settings (what a
    /// running weft can apply without new listeners, queues or filter chains).
    pub fn same_structure(&self, other: &Config) -> bool {
        self.collector.same_structure(&other.collector)
            && self.metrics_address == other.metrics_address
            && self.proxies.len() == other.proxies.len()
            && self
                .proxies
                .iter()
                .zip(&other.proxies)
                .all(|((a_id, a), (b_id, b))| a_id == b_id && a.same_structure(b))
    }

    /// Every Wasm plugin of the configuration, keyed as hot reload and errors name them:
    /// processors by id, filters as `proxies.<id>.filters.<name>`.
    pub fn wasm_units(&self) -> BTreeMap<String, (WasmUnit, &WasmConfig)> {
        let mut units = BTreeMap::new();
        for (id, p) in &self.collector.processors {
            if let Some(w) = p.wasm() {
                units.insert(id.clone(), (WasmUnit::Processor, w));
            }
        }
        for (proxy, p) in &self.proxies {
            for (i, f) in p.filters.iter().enumerate() {
                let unit = WasmUnit::Filter {
                    proxy: proxy.clone(),
                    index: i,
                };
                units.insert(filter_key(proxy, &f.name), (unit, &f.wasm));
            }
        }
        units
    }
}

/// What kind of Wasm plugin a [`Config::wasm_units`] entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmUnit {
    /// A processor in the OTLP pipelines.
    Processor,
    /// Filter number `index` of proxy `proxy`.
    Filter {
        /// The proxy's id.
        proxy: String,
        /// The filter's position in the chain.
        index: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    receivers: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    processors: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    exporters: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    proxies: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    service: RawService,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    pipelines: BTreeMap<String, weft_collector::config::PipelineConfig>,
    #[serde(default)]
    telemetry: Option<RawTelemetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    metrics: Option<RawMetrics>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `host:port`, or `none` to disable.
    address: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weft_collector::config::ReceiverConfig;
    use weft_runtime::{FailPolicy, Signal};

    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, std::path::Path::new("/base"))
    }

    #[test]
    fn the_default_configuration_is_valid() {
        let c = parse(DEFAULT_CONFIG).expect("default config");
        assert_eq!(
            c.collector.pipelines[&Signal::Traces].processors,
            vec!["wasm/pii-mask", "wasm/sampler"]
        );
        assert_eq!(
            c.metrics_address,
            Some(SocketAddr::from(([127, 0, 0, 1], 8888)))
        );
        let ReceiverConfig { grpc, http } = &c.collector.receivers["otlp"];
        assert_eq!(
            grpc.as_ref().map(|g| g.endpoint),
            Some(SocketAddr::from(([127, 0, 0, 1], 4317)))
        );
        assert_eq!(
            http.as_ref().map(|h| h.endpoint),
            Some(SocketAddr::from(([127, 0, 0, 1], 4318)))
        );
    }

    #[test]
    fn errors_name_the_offending_key() {
        let base = DEFAULT_CONFIG;
        let cases = [
            (
                base.replace("percentage: 100", "percentage: 100\n    deadline: soon"),
                "processors.wasm/sampler.deadline",
            ),
            (
                base.replace("builtin:sampler", "builtin:nope"),
                "processors.wasm/sampler.component",
            ),
            (
                base.replace("verbosity: basic", "verbosity: loud"),
                "exporters.debug.verbosity",
            ),
            (
                base.replace("processors: [wasm/pii-mask]", "processors: [wasm/typo]"),
                "service.pipelines.logs.processors",
            ),
            (
                base.replace("endpoint: 127.0.0.1:4318", "endpoint: not-an-address"),
                "receivers.otlp.protocols.http.endpoint",
            ),
            (
                base.replace("fail_policy: closed", "fail_policy: sideways"),
                "processors.wasm/pii-mask",
            ),
            (
                base.replace("address: 127.0.0.1:8888", "address: eight"),
                "service.telemetry.metrics.address",
            ),
            (base.replace("  debug:\n", "  kafka:\n"), "exporters.kafka"),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {spike_limit_mib: 10}\n",
                ),
                "processors.memory_limiter.limit_mib",
            ),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {limit_mib: 100, spike_limit_mib: 100}\n",
                ),
                "processors.memory_limiter.spike_limit_mib",
            ),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {limit_mib: 100, limit_percentage: 50}\n",
                ),
                "processors.memory_limiter",
            ),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {limit_percentage: 101}\n",
                ),
                "processors.memory_limiter.limit_percentage",
            ),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {limit_mib: 100, check_interval: 0s}\n",
                ),
                "processors.memory_limiter.check_interval",
            ),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {limit_mib: 100, limit: 5}\n",
                ),
                "processors.memory_limiter",
            ),
            (
                base.replace(
                    "processors:\n",
                    "processors:\n  memory_limiter: {limit_mib: 100}\n",
                )
                .replace(
                    "[wasm/pii-mask, wasm/sampler]",
                    "[wasm/pii-mask, memory_limiter]",
                ),
                "service.pipelines.traces.processors",
            ),
        ];
        for (yaml, key) in cases {
            let e = parse(&yaml).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn a_memory_limiter_first_in_a_pipeline_is_taken_as_the_collector_spells_it() {
        use weft_collector::config::{MemoryAmount, ProcessorConfig};
        let yaml = DEFAULT_CONFIG
            .replace(
                "processors:\n",
                "processors:\n  memory_limiter:\n    check_interval: 2s\n    limit_mib: 400\n  memory_limiter/pct: {limit_percentage: 75}\n",
            )
            .replace("[wasm/pii-mask, wasm/sampler]", "[memory_limiter, wasm/pii-mask, wasm/sampler]")
            .replace("processors: [wasm/pii-mask]", "processors: [memory_limiter/pct, wasm/pii-mask]");
        let c = parse(&yaml).expect("valid");
        let Some(ProcessorConfig::MemoryLimiter(m)) = c.collector.processors.get("memory_limiter")
        else {
            panic!("a memory limiter");
        };
        assert_eq!(m.check_interval, Duration::from_secs(2));
        assert_eq!(m.limit, MemoryAmount::Bytes(400 << 20));
        assert_eq!(m.spike_limit, None, "20 % of the limit, by default");
        let Some(ProcessorConfig::MemoryLimiter(p)) =
            c.collector.processors.get("memory_limiter/pct")
        else {
            panic!("a memory limiter");
        };
        assert_eq!((p.limit, p.spike_limit), (MemoryAmount::Percent(75), None));
        assert_eq!(
            p.check_interval,
            Duration::from_secs(1),
            "1 s when left out"
        );
        // Not a plugin: nothing to load or hot-reload.
        assert!(!c.wasm_units().keys().any(|k| k.contains("memory_limiter")));
    }

    const PROXY_ONLY: &str = r#"
proxies:
  edge:
    listen: 127.0.0.1:8080
    upstream: http://127.0.0.1:9000
    timeout: 2s
    filters:
      - component: filters/ab_router.wasm
        config: {split: [{version: v1, percent: 100}]}
        fail_policy: closed
        deadline: 20ms
        memory_limit_mib: 16
      - name: second
        component: builtin:sampler
"#;

    #[test]
    fn a_proxy_only_configuration_is_valid() {
        let c = parse(PROXY_ONLY).expect("proxy-only config");
        assert!(c.collector.pipelines.is_empty() && c.collector.receivers.is_empty());
        let p = &c.proxies["edge"];
        assert_eq!(p.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(p.upstream, "127.0.0.1:9000");
        assert_eq!(p.timeout, Duration::from_secs(2));
        assert_eq!(p.max_body, 4 << 20);
        let names: Vec<&str> = p.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["ab_router", "second"],
            "default name: the file stem"
        );
        let f = &p.filters[0].wasm;
        assert_eq!(
            f.component,
            ComponentSource::File(PathBuf::from("/base/filters/ab_router.wasm"))
        );
        assert_eq!(f.fail_policy, FailPolicy::Closed);
        assert_eq!(f.deadline, Duration::from_millis(20));
        assert_eq!(f.memory_limit, 16 << 20);
        let units = c.wasm_units();
        assert_eq!(
            units.keys().collect::<Vec<_>>(),
            [
                "proxies.edge.filters.ab_router",
                "proxies.edge.filters.second"
            ]
        );
        // Changing a filter's settings keeps the structure; changing the chain does not.
        let tweaked = parse(&PROXY_ONLY.replace("deadline: 20ms", "deadline: 30ms")).expect("ok");
        assert!(c.same_structure(&tweaked));
        let renamed = parse(&PROXY_ONLY.replace("name: second", "name: third")).expect("ok");
        assert!(!c.same_structure(&renamed));
        let moved = parse(&PROXY_ONLY.replace(":9000", ":9001")).expect("ok");
        assert!(!c.same_structure(&moved));
    }

    #[test]
    fn proxy_errors_name_the_offending_key() {
        let cases = [
            (
                PROXY_ONLY.replace("listen: 127.0.0.1:8080", "listen: eighty"),
                "proxies.edge.listen",
            ),
            (
                PROXY_ONLY.replace("    listen: 127.0.0.1:8080\n", ""),
                "proxies.edge",
            ),
            (
                PROXY_ONLY.replace("http://127.0.0.1:9000", "https://127.0.0.1:9000"),
                "proxies.edge.upstream",
            ),
            (
                PROXY_ONLY.replace("http://127.0.0.1:9000", "http://127.0.0.1:9000/api"),
                "proxies.edge.upstream",
            ),
            (
                PROXY_ONLY.replace("http://127.0.0.1:9000", "127.0.0.1"),
                "proxies.edge.upstream",
            ),
            (
                PROXY_ONLY.replace("timeout: 2s", "timeout: later"),
                "proxies.edge.timeout",
            ),
            (
                PROXY_ONLY.replace("deadline: 20ms", "deadline: soon"),
                "proxies.edge.filters[0].deadline",
            ),
            (
                PROXY_ONLY.replace("memory_limit_mib: 16", "memory_limit_mib: 0"),
                "proxies.edge.filters[0].memory_limit_mib",
            ),
            (
                PROXY_ONLY.replace("fail_policy: closed", "fail_policy: maybe"),
                "proxies.edge.filters[0]",
            ),
            (
                PROXY_ONLY.replace("fail_policy: closed", "fail_polcy: closed"),
                "proxies.edge.filters[0]",
            ),
            (
                PROXY_ONLY.replace("builtin:sampler", "builtin:nope"),
                "proxies.edge.filters[1].component",
            ),
            (
                PROXY_ONLY.replace("memory_limit_mib: 16", "output_limits: {max_entries: 9}"),
                "proxies.edge.filters[0].output_limits",
            ),
            (
                PROXY_ONLY.replace("name: second", "name: ab_router"),
                "proxies.edge.filters[1].name",
            ),
            (
                PROXY_ONLY.replace("name: second", "name: a/b"),
                "proxies.edge.filters[1].name",
            ),
            (
                PROXY_ONLY.replace("timeout: 2s", "timeout: 2s\n    colour: blue"),
                "proxies.edge",
            ),
            (PROXY_ONLY.replace("  edge:", "  ed.ge:"), "proxies.ed.ge"),
            ("proxies: {}\n".to_string(), "service.pipelines"),
        ];
        for (yaml, key) in cases {
            let e = parse(&yaml).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
    }
}
