//! A running Envoy, and the small blocking HTTP/1.1 client that talks to it.
//!
//! Blocking on purpose: tests need no async runtime to drive Envoy, and `Drop` can stop the
//! process without one.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// How long Envoy gets to become ready (V8 compiling a module takes a few hundred ms).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of each request made by [`http_request`].
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request on a new connection (`Connection: close`) and reads the whole
/// response. Enough for admin calls and test requests; not a load generator.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        req.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("{method} {path} on {addr}: read the response"))?;
    parse_response(&raw).with_context(|| {
        format!(
            "{method} {path} on {addr}: bad response {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        )
    })
}

fn parse_response(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        let len: usize = len.parse()?;
        rest.get(..len)
            .ok_or_else(|| anyhow!("body shorter than content-length {len}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_str = std::str::from_utf8(&data[..eol])?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// An Envoy process, killed (and its temp dir removed) on drop.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    admin: SocketAddr,
    listener: SocketAddr,
    ready_after: Duration,
}

static STARTED: AtomicU64 = AtomicU64::new(0);

impl Envoy {
    /// Starts [`envoy_binary`](crate::envoy_binary) with `config_yaml` and `concurrency`
    /// workers; see [`Envoy::start_with`].
    pub fn start(config_yaml: &str, concurrency: u32) -> anyhow::Result<Envoy> {
        Envoy::start_with(&crate::envoy_binary()?, config_yaml, concurrency)
    }

    /// Starts the Envoy binary `envoy` with `config_yaml` and `concurrency` worker threads and waits
    /// (at most [`READY_TIMEOUT`]) until the admin's `/ready` says `LIVE` and the listener
    /// accepts connections.
    ///
    /// The config goes to a fresh temp dir, with Envoy's log (level info, stdout and stderr)
    /// beside it. The admin and listener ports are whatever the config
    /// says; with port 0 Envoy picks them and they are read back from `--admin-address-path`
    /// and the admin's `/listeners`. Hot restart is disabled (`--disable-hot-restart`): no
    /// shared memory and no domain socket, so any number of Envoys run side by side without a
    /// unique `--base-id` each.
    pub fn start_with(envoy: &Path, config_yaml: &str, concurrency: u32) -> anyhow::Result<Envoy> {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("weft-envoy-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, config_yaml)?;
        let admin_path = dir.join("admin.address");
        // Envoy logs to stderr, flushed line by line; `--log-path` would buffer for up to
        // `--file-flush-interval-msec` (10 s), too late for a test reading the log.
        let output = std::fs::File::create(dir.join("envoy.log"))?;
        let started = Instant::now();
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&config)
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--disable-hot-restart")
            .args(["-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("start {}", envoy.display()))?;
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut me = Envoy {
            child,
            dir,
            admin: unspecified,
            listener: unspecified,
            ready_after: Duration::ZERO,
        };
        me.wait_ready(&admin_path, started)?;
        Ok(me)
    }

    fn wait_ready(&mut self, admin_path: &Path, started: Instant) -> anyhow::Result<()> {
        let deadline = started + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "envoy exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "envoy was not LIVE after {READY_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            if self.admin.port() == 0
                && let Some(addr) = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            {
                self.admin = addr;
            }
            if self.admin.port() != 0
                && http_request(self.admin, "GET", "/ready", &[], b"")
                    .is_ok_and(|r| r.status == 200 && r.text().trim() == "LIVE")
            {
                self.ready_after = started.elapsed();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let listeners = http_request(self.admin, "GET", "/listeners?format=json", &[], b"")?;
        let v: serde_json::Value = serde_json::from_slice(&listeners.body)
            .with_context(|| format!("admin /listeners: {}", listeners.text()))?;
        let sock = v["listener_statuses"]
            .as_array()
            .and_then(|l| l.first())
            .map(|l| &l["local_address"]["socket_address"])
            .ok_or_else(|| anyhow!("no listener in {v}"))?;
        let ip = sock["address"].as_str().unwrap_or("127.0.0.1");
        let port = sock["port_value"].as_u64().unwrap_or(0);
        self.listener = format!("{ip}:{port}")
            .parse()
            .with_context(|| format!("listener address in {v}"))?;
        while TcpStream::connect_timeout(&self.listener, Duration::from_secs(1)).is_err() {
            if Instant::now() > deadline {
                bail!("envoy's listener {} does not accept", self.listener);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The listener's address.
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// `http://<listener>`.
    pub fn listener_url(&self) -> String {
        format!("http://{}", self.listener)
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// From spawning the process to `/ready` saying `LIVE` (polled every 5 ms). This includes
    /// loading every Wasm module: Envoy compiles it in V8, runs `_initialize` and
    /// `proxy_on_configure` in the main thread and on each worker before going LIVE.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Sends a request through the listener.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<HttpResponse> {
        http_request(self.listener, method, path, headers, body)
    }

    /// The admin's `/stats` (text: one `name: value` per line).
    pub fn stats(&self) -> anyhow::Result<String> {
        Ok(http_request(self.admin, "GET", "/stats", &[], b"")?.text())
    }

    /// One counter or gauge from `/stats` (`None` if absent or not an integer).
    pub fn stat(&self, name: &str) -> Option<u64> {
        let stats = self.stats().ok()?;
        stats.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            if n == name {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    }

    /// Waits (up to 5 s) until stat `name` is `want` and returns what it was last: Envoy counts
    /// a request when its stream completes, which can be just after the client got the response.
    pub fn wait_stat(&self, name: &str, want: u64) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.stat(name);
            if v == Some(want) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Envoy's log so far (level info; what it wrote to stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Resident set size now (VmRSS from /proc), KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS for envoy {}", self.pid()))
    }

    /// User + system CPU time used so far by every thread, in clock ticks (/proc/<pid>/stat
    /// fields 14 and 15; see [`clock_ticks_per_second`]).
    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // The command name may hold spaces and parentheses: the fields start after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        match (field(11), field(12)) {
            (Some(u), Some(s)) => Ok(u + s),
            _ => bail!("cannot read utime/stime from /proc/{}/stat", self.pid()),
        }
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // SIGKILL: Envoy holds nothing that needs flushing, and tests should not wait for drain.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `envoy --mode validate -c <config>` in `cwd` (relative module paths resolve against
/// it) and returns its output on success, or an error holding it.
pub fn validate(envoy: &Path, config: &Path, cwd: &Path) -> anyhow::Result<String> {
    let out = Command::new(envoy)
        .current_dir(cwd)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "info",
            "-c",
        ])
        .arg(config)
        .output()
        .with_context(|| format!("run {}", envoy.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "envoy --mode validate -c {} failed ({}):\n{text}",
            config.display(),
            out.status
        );
    }
    Ok(text)
}
