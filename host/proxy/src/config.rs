//! The filter proxy's configuration: `proxies.<id>` with a listener, one upstream and a chain of
//! Wasm filters, each with the settings of a `wasm` processor plus a `name`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use weft_runtime::config::{
    ComponentSource, ConfigError, RawWasm, WasmConfig, err, from_value, positive_duration_at,
    wasm_config,
};
use weft_runtime::net::ServerLimits;

/// The key of filter `name` of proxy `proxy` in logs and hot reload, and its plugin name's base.
pub fn filter_key(proxy: &str, name: &str) -> String {
    format!("proxies.{proxy}.filters.{name}")
}

/// An HTTP filter proxy: a listener, one upstream, a chain of Wasm filters.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Where the proxy listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The upstream's `host:port` (from `http://host:port`).
    pub upstream: String,
    /// The filters, in request order (responses go through them in reverse).
    pub filters: Vec<FilterConfig>,
    /// Deadline for the upstream's whole response (default 15 s, as Envoy's route timeout).
    pub timeout: Duration,
    /// Largest request or response body buffered, bytes (default 4 MiB).
    pub max_body: usize,
    /// The downstream listener's connection limits and timeouts (`max_connections`,
    /// `read_header_timeout`, `idle_timeout`).
    pub limits: ServerLimits,
    /// Time for a whole request body to arrive once its headers did (`read_timeout`); past it
    /// the client gets a `408` and the connection is closed.
    pub read_timeout: Duration,
}

impl Default for ProxyConfig {
    /// No listener or upstream (YAML must name both), no filters, a 15 s timeout (Envoy's route
    /// timeout), 4 MiB bodies, [`ServerLimits::default`] (1000 connections, 60 s for headers,
    /// 60 s idle) and 30 s to read a request body.
    fn default() -> Self {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: String::new(),
            filters: Vec::new(),
            timeout: Duration::from_secs(15),
            max_body: 4 << 20,
            limits: ServerLimits::default(),
            read_timeout: Duration::from_secs(30),
        }
    }
}

impl ProxyConfig {
    /// Checks the proxy at `key`: bodies between 1 and 1024 MiB.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1 << 20..=1 << 30).contains(&self.max_body) {
            return Err(err(
                format!("{key}.max_body_mib"),
                "must be between 1 and 1024",
            ));
        }
        Ok(())
    }

    /// Whether `other` has the same listener, upstream, limits and filter names in the same
    /// order (what hot reload can keep while swapping filter versions and settings).
    pub fn same_structure(&self, other: &ProxyConfig) -> bool {
        self.listen == other.listen
            && self.upstream == other.upstream
            && self.timeout == other.timeout
            && self.max_body == other.max_body
            && self.limits == other.limits
            && self.read_timeout == other.read_timeout
            && self.filters.len() == other.filters.len()
            && self
                .filters
                .iter()
                .zip(&other.filters)
                .all(|(a, b)| a.name == b.name)
    }
}

/// One filter of a proxy's chain.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// Its name in the chain (unique per proxy): `name:` or the component's file stem. The
    /// plugin is called `<proxy>/<name>` in logs and metrics.
    pub name: String,
    /// The component and its settings, as for a `wasm` processor.
    pub wasm: WasmConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: String,
    upstream: String,
    #[serde(default)]
    filters: Vec<serde_norway::Value>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_body_mib: Option<usize>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    read_header_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    read_timeout: Option<String>,
}

/// Parses and validates the `proxies:` section. Relative component paths are taken relative to
/// `base`.
pub fn parse_proxies(
    raw: BTreeMap<String, serde_norway::Value>,
    base: &std::path::Path,
) -> Result<BTreeMap<String, ProxyConfig>, ConfigError> {
    let mut proxies = BTreeMap::new();
    for (id, v) in raw {
        let key = format!("proxies.{id}");
        if id.is_empty() || id.contains(['/', '.', '"', '\\']) {
            return Err(err(
                key,
                "a proxy id is a plain name (no `/`, `.` or quotes)",
            ));
        }
        let r: RawProxy = from_value(&key, v)?;
        proxies.insert(id.clone(), proxy_config(&key, r, base)?);
    }
    Ok(proxies)
}

/// Checks one proxy at `key` (`proxies.<id>`).
fn proxy_config(
    key: &str,
    r: RawProxy,
    base: &std::path::Path,
) -> Result<ProxyConfig, ConfigError> {
    let listen = r.listen.parse().map_err(|_| {
        err(
            format!("{key}.listen"),
            format!("`{}` is not host:port (e.g. 127.0.0.1:8080)", r.listen),
        )
    })?;
    let upstream = upstream_authority(&r.upstream)
        .map_err(|m| err(format!("{key}.upstream"), format!("`{}`: {m}", r.upstream)))?;
    let defaults = ProxyConfig::default();
    let timeout =
        positive_duration_at(format!("{key}.timeout"), r.timeout, defaults.timeout, "15s")?;
    let max_body = r
        .max_body_mib
        .map_or(defaults.max_body, |mib| mib.saturating_mul(1 << 20));
    let max_connections = match r.max_connections {
        Some(0) => return Err(err(format!("{key}.max_connections"), "must be at least 1")),
        Some(n) => n,
        None => defaults.limits.max_connections,
    };
    let dl = &defaults.limits;
    let limits = ServerLimits {
        max_connections,
        header_read_timeout: Some(positive_duration_at(
            format!("{key}.read_header_timeout"),
            r.read_header_timeout,
            dl.header_read_timeout.unwrap_or(Duration::from_secs(60)),
            "1m",
        )?),
        idle_timeout: Some(positive_duration_at(
            format!("{key}.idle_timeout"),
            r.idle_timeout,
            dl.idle_timeout.unwrap_or(Duration::from_secs(60)),
            "1m",
        )?),
        ..defaults.limits.clone()
    };
    let read_timeout = positive_duration_at(
        format!("{key}.read_timeout"),
        r.read_timeout,
        defaults.read_timeout,
        "30s",
    )?;
    let mut filters: Vec<FilterConfig> = Vec::new();
    for (i, v) in r.filters.into_iter().enumerate() {
        let fkey = format!("{key}.filters[{i}]");
        // `name` is the proxy's, the rest is a `wasm` processor's settings.
        let mut v = v;
        let name = match v.as_mapping_mut().and_then(|m| m.remove("name")) {
            None => None,
            Some(serde_norway::Value::String(n)) => Some(n),
            Some(_) => return Err(err(format!("{fkey}.name"), "must be a string")),
        };
        // `output_limits` bounds OTLP a processor returns; a filter returns headers and bodies,
        // which the proxy's `max_body_mib` bounds.
        if v.as_mapping()
            .is_some_and(|m| m.contains_key("output_limits"))
        {
            return Err(err(
                format!("{fkey}.output_limits"),
                "applies to OTLP processors only: what a filter returns is bounded by the proxy's max_body_mib",
            ));
        }
        let raw: RawWasm = from_value(&fkey, v)?;
        let wasm = wasm_config(&fkey, raw, base)?;
        let name = match name {
            Some(n) => n,
            None => match &wasm.component {
                ComponentSource::Builtin(b) => b.clone(),
                ComponentSource::File(path) => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("filter{i}")),
            },
        };
        if name.is_empty() || name.contains(['/', '"', '\\']) {
            return Err(err(
                format!("{fkey}.name"),
                format!("`{name}`: a filter name is a plain name (no `/` or quotes)"),
            ));
        }
        if filters.iter().any(|f| f.name == name) {
            return Err(err(
                format!("{fkey}.name"),
                format!("a second filter named `{name}` in this proxy: give one a `name:`"),
            ));
        }
        filters.push(FilterConfig { name, wasm });
    }
    let proxy = ProxyConfig {
        listen,
        upstream,
        filters,
        timeout,
        max_body,
        limits,
        read_timeout,
    };
    proxy.validate(key)?;
    Ok(proxy)
}

/// `http://host:port` (or a bare `host:port`) → `host:port`. No TLS, no path.
fn upstream_authority(s: &str) -> Result<String, &'static str> {
    let rest = match s.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return Err("use http://host:port (weft does not originate TLS)"),
        None => s,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err("give scheme://host:port without a path");
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(authority.to_string())
        }
        _ => Err("needs a host and a port, e.g. http://127.0.0.1:9000"),
    }
}
