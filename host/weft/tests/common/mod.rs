#![allow(dead_code)] // each test binary uses its own part of it

//! What the `weft` crate's integration tests share: the workspace root and the guest components,
//! built from source once per test binary with the shared guest build routine (the `weft`
//! binary's own build script builds only the two built-in plugins).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/weft is two levels inside the workspace")
        .to_path_buf()
}

/// The component of guest `name` (`pii-mask`, `fault`, ...), every guest built on first use.
pub fn guest(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = weft_guest_build::build_guests(&workspace(), &cargo)
            .unwrap_or_else(|e| panic!("building the guests: {e}"));
        built
            .first()
            .and_then(|(_, p)| p.parent())
            .map(Path::to_path_buf)
            .expect("the guests were built")
    });
    dir.join(format!("guest_{}.wasm", name.replace('-', "_")))
}

/// Runs `cmd` with stdout and stderr captured to files in `dir` (named by `what`), killing it
/// and failing the test if it runs longer than `timeout`. Returns (status, stdout, stderr).
pub fn run_bounded(
    mut cmd: std::process::Command,
    dir: &Path,
    what: &str,
    timeout: std::time::Duration,
) -> (std::process::ExitStatus, String, String) {
    let out_path = dir.join(format!("{what}.stdout"));
    let err_path = dir.join(format!("{what}.stderr"));
    let spawned = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => panic!("{what}: cannot start {cmd:?}: {e}"),
    };
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {timeout:?}; stderr so far:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out_path), read(&err_path))
}

/// A free TCP port on 127.0.0.1 (bound and released; the child binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `weft run` child over a configuration file: SIGTERM and a bounded wait in
/// [`WeftRun::stop`], a kill if the test failed first.
pub struct WeftRun {
    child: std::process::Child,
    stderr: PathBuf,
    metrics: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl WeftRun {
    /// Starts `weft run` over `config` and waits (at most 60 s) until it listens on every port
    /// of `ports` and on `metrics_port` (which the configuration must serve its metrics on).
    pub fn start(config: &str, ports: &[u16], metrics_port: u16) -> WeftRun {
        WeftRun::start_limited(config, ports, metrics_port, None)
    }

    /// [`WeftRun::start`] under `prlimit --nofile=<n>` when `nofile` is given (prlimit execs
    /// weft: the child's pid is weft's).
    pub fn start_limited(
        config: &str,
        ports: &[u16],
        metrics_port: u16,
        nofile: Option<u32>,
    ) -> WeftRun {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weft.yaml");
        std::fs::write(&path, config).expect("write config");
        let stderr = dir.path().join("stderr.log");
        let weft = env!("CARGO_BIN_EXE_weft");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = std::process::Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(weft);
                c
            }
            None => std::process::Command::new(weft),
        };
        let child = cmd
            .args(["run", path.to_str().expect("utf-8")])
            .env("WEFT_CACHE_DIR", dir.path().join("cache"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn weft run");
        let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
        let w = WeftRun {
            child,
            stderr,
            metrics,
            _dir: dir,
        };
        let start = Instant::now();
        let all = ports.iter().chain([&metrics_port]);
        for port in all {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "weft run did not listen on {port}: {}",
                    w.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        w
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its /metrics text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.metrics).expect("connect to /metrics");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .expect("write");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    }

    /// The value of sample `series` (name and labels, as printed) in `metrics`.
    pub fn sample(metrics: &str, series: &str) -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    }

    /// The child's resident set size now, in bytes (VmRSS).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .expect("VmRSS")
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit.
    pub fn stop(mut self) {
        use std::time::{Duration, Instant};
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "weft run exited with {status}: {}",
                    self.log()
                );
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "weft run did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WeftRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OTLP/HTTP backend on `listener` (127.0.0.1): answers every POST 200 with an empty
/// protobuf response and hands each request body to `on_body`. Serves until the test ends.
pub fn otlp_http_sink(
    listener: std::net::TcpListener,
    on_body: impl Fn(Vec<u8>) + Clone + Send + 'static,
) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let on_body = on_body.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(60)));
                let mut reader = std::io::BufReader::new(conn);
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        match std::io::BufRead::read_line(&mut reader, &mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse::<usize>().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    on_body(body);
                    let _ = reader.get_mut().write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
}
