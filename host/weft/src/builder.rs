//! `weft build`: builds a plugin project into a component, whatever its language.
//!
//! - **Rust** (a `Cargo.toml`): `cargo build --release --target wasm32-wasip2`, the profile the
//!   project sets (`weft new` writes a size-tuned one).
//! - **Python** (a `pyproject.toml` with `[tool.weft]`): `componentize-py -d <wit> -w <world>
//!   componentize <module>`.
//! - **JavaScript** (a `package.json` with `"weft"`): `componentize-js <module> --wit <wit>
//!   --world-name <world> --disable <features>` from the project's `node_modules`.
//!
//! The component is written to `<project>/<name>.wasm` and compiled once for this machine
//! (which checks it is a weft plugin and fills weft's cache, so `weft test` starts at once).
//! A missing tool is named with the command that installs it.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A project's language and what its build needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Project {
    /// A cargo package.
    Rust {
        /// The package name.
        name: String,
        /// `[package.metadata.weft] world`, if set.
        world: Option<String>,
    },
    /// A componentize-py project.
    Python {
        /// The project name (`[project] name`).
        name: String,
        /// The WIT world.
        world: String,
        /// The WIT directory, relative to the project.
        wit: String,
        /// The app module.
        module: String,
    },
    /// A componentize-js project.
    Js {
        /// The package name.
        name: String,
        /// The WIT world.
        world: String,
        /// The WIT directory, relative to the project.
        wit: String,
        /// The module (`main` of package.json).
        module: String,
        /// componentize-js features to leave out (`--disable`).
        disable: Vec<String>,
    },
}

impl Project {
    /// The plugin's name (the output is `<name>.wasm`).
    pub fn name(&self) -> &str {
        match self {
            Project::Rust { name, .. }
            | Project::Python { name, .. }
            | Project::Js { name, .. } => name,
        }
    }

    /// The world the project says it targets, if it says.
    pub fn world(&self) -> Option<&str> {
        match self {
            Project::Rust { world, .. } => world.as_deref(),
            Project::Python { world, .. } | Project::Js { world, .. } => Some(world),
        }
    }

    fn lang(&self) -> &'static str {
        match self {
            Project::Rust { .. } => "Rust",
            Project::Python { .. } => "Python",
            Project::Js { .. } => "JavaScript",
        }
    }
}

/// Finds out what kind of project `dir` is.
pub fn detect(dir: &Path) -> anyhow::Result<Project> {
    let cargo = dir.join("Cargo.toml");
    if cargo.is_file() {
        let text = std::fs::read_to_string(&cargo)?;
        let doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("{} is not TOML", cargo.display()))?;
        let package = doc
            .get("package")
            .and_then(|p| p.as_table())
            .with_context(|| format!("{} has no [package]", cargo.display()))?;
        let name = package
            .get("name")
            .and_then(|n| n.as_str())
            .with_context(|| format!("{} has no package name", cargo.display()))?;
        let world = package
            .get("metadata")
            .and_then(|m| m.get("weft"))
            .and_then(|w| w.get("world"))
            .and_then(|w| w.as_str())
            .map(String::from);
        return Ok(Project::Rust {
            name: name.into(),
            world,
        });
    }
    let pyproject = dir.join("pyproject.toml");
    if pyproject.is_file() {
        let text = std::fs::read_to_string(&pyproject)?;
        let doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not TOML", pyproject.display()))?;
        let weft = doc
            .get("tool")
            .and_then(|t| t.get("weft"))
            .with_context(|| {
                format!(
                    "{} has no [tool.weft] (world = \"…\", wit = \"wit\", module = \"app\")",
                    pyproject.display()
                )
            })?;
        let get = |k: &str| weft.get(k).and_then(|v| v.as_str()).map(String::from);
        let name = doc
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .map(String::from)
            .or_else(|| dir_name(dir))
            .unwrap_or_else(|| "plugin".into());
        return Ok(Project::Python {
            name,
            world: get("world")
                .with_context(|| format!("[tool.weft] world in {}", pyproject.display()))?,
            wit: get("wit").unwrap_or_else(|| "wit".into()),
            module: get("module").unwrap_or_else(|| "app".into()),
        });
    }
    let package = dir.join("package.json");
    if package.is_file() {
        let text = std::fs::read_to_string(&package)?;
        let doc: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", package.display()))?;
        let weft = doc.get("weft").with_context(|| {
            format!(
                "{} has no \"weft\" section ({{\"world\": \"…\", \"wit\": \"wit\"}})",
                package.display()
            )
        })?;
        let get = |k: &str| weft.get(k).and_then(|v| v.as_str()).map(String::from);
        let disable = match weft.get("disable") {
            Some(v) => serde_json::from_value(v.clone()).with_context(|| {
                format!(
                    "\"weft\".disable in {} is a list of strings",
                    package.display()
                )
            })?,
            None => JS_DISABLE.iter().map(|s| s.to_string()).collect(),
        };
        return Ok(Project::Js {
            name: doc
                .get("name")
                .and_then(|n| n.as_str())
                .map(String::from)
                .or_else(|| dir_name(dir))
                .unwrap_or_else(|| "plugin".into()),
            world: get("world")
                .with_context(|| format!("\"weft\".world in {}", package.display()))?,
            wit: get("wit").unwrap_or_else(|| "wit".into()),
            module: doc
                .get("main")
                .and_then(|m| m.as_str())
                .unwrap_or("app.js")
                .into(),
            disable,
        });
    }
    bail!(
        "{} is not a plugin project: no Cargo.toml, pyproject.toml ([tool.weft]) or package.json (\"weft\") there (`weft new` makes one)",
        dir.display()
    )
}

/// componentize-js features a weft plugin leaves out when package.json names none: weft
/// provides no `wasi:http` (the `http` and `fetch-event` features import it).
pub const JS_DISABLE: &[&str] = &["http", "fetch-event"];

fn dir_name(dir: &Path) -> Option<String> {
    dir.canonicalize()
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Where the build tools are, when not found the usual way (`$WEFT_COMPONENTIZE_PY`, the
/// project's `.venv` / `node_modules`, `PATH`).
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// componentize-py.
    pub componentize_py: Option<PathBuf>,
    /// componentize-js.
    pub componentize_js: Option<PathBuf>,
}

/// Builds the project in `dir`; writes the component to `output` (default `<dir>/<name>.wasm`)
/// and returns its path.
pub fn build(dir: &Path, output: Option<&Path>) -> anyhow::Result<(Project, PathBuf)> {
    build_with(dir, output, &Tools::default())
}

/// [`build`] with the tools in `tools` preferred.
pub fn build_with(
    dir: &Path,
    output: Option<&Path>,
    tools: &Tools,
) -> anyhow::Result<(Project, PathBuf)> {
    let project = detect(dir)?;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => dir.join(format!("{}.wasm", project.name())),
    };
    step(&format!(
        "building {} ({}{}) in {}",
        project.name(),
        project.lang(),
        project
            .world()
            .map(|w| format!(", world {w}"))
            .unwrap_or_default(),
        dir.display()
    ));
    match &project {
        Project::Rust { .. } => build_rust(dir, &out)?,
        Project::Python {
            world, wit, module, ..
        } => {
            let tool = tools.componentize_py.clone().or_else(|| find_tool(
                "componentize-py",
                "WEFT_COMPONENTIZE_PY",
                &[dir.join(".venv/bin/componentize-py")],
            ))
            .with_context(|| {
                "componentize-py is not installed: run `python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1` in the project (or put it on PATH, or set WEFT_COMPONENTIZE_PY)"
            })?;
            let mut cmd = Command::new(tool);
            cmd.current_dir(dir)
                .args(["-d", wit, "-w", world, "componentize", "-p", "."])
                .arg(module)
                .arg("-o")
                .arg(absolute(&out)?);
            run_slow(cmd, "componentize-py (embeds CPython; ~15 s)")?;
        }
        Project::Js {
            world,
            wit,
            module,
            disable,
            ..
        } => {
            find_tool("node", "WEFT_NODE", &[]).with_context(
                || "node is not installed: install Node.js 20 or newer (https://nodejs.org)",
            )?;
            let local = dir.join("node_modules/.bin/componentize-js");
            let tool = tools.componentize_js.clone().or_else(|| find_tool("componentize-js", "WEFT_COMPONENTIZE_JS", &[local])).with_context(|| {
                format!(
                    "componentize-js is not installed: run `npm install` in {} (package.json pins @bytecodealliance/componentize-js)",
                    dir.display()
                )
            })?;
            let mut cmd = Command::new(tool);
            cmd.current_dir(dir)
                .arg(module)
                .args(["--wit", wit, "--world-name", world]);
            if !disable.is_empty() {
                cmd.arg("--disable").args(disable);
            }
            cmd.arg("-o").arg(absolute(&out)?);
            run_slow(cmd, "componentize-js (embeds SpiderMonkey; ~10 s)")?;
        }
    }
    if !out.is_file() {
        bail!("the build finished but wrote no {}", out.display());
    }
    Ok((project, out))
}

/// Prints a progress line.
pub fn step(what: &str) {
    eprintln!("weft build: {what}");
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// The tool `name`: from `$env`, then `candidates`, then `PATH`.
fn find_tool(name: &str, env: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Some(p.clone());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a slow tool, its output passed through, with a line every 10 s while it works.
fn run_slow(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    step(what);
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let mut next = Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= next {
            step(&format!("… still working ({} s)", next.as_secs()));
            next += Duration::from_secs(10);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("{:?} failed ({status})", cmd.get_program());
    }
    step(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// cargo for wasm32-wasip2, release profile; the cdylib it reports is the component.
fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    const TARGET: &str = "wasm32-wasip2";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| {
            anyhow::anyhow!("rustc is not installed ({e}): install Rust from https://rustup.rs")
        })?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    if !libdir.is_dir() {
        bail!("the Rust target {TARGET} is not installed: run `rustup target add {TARGET}`");
    }
    step(&format!("cargo build --release --target {TARGET}"));
    let started = Instant::now();
    let mut child = Command::new(&cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format",
            "json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cargo is not installed ({e}): install Rust from https://rustup.rs")
        })?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut wasm = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
            && msg["manifest_path"]
                .as_str()
                .is_some_and(|m| Path::new(m).parent() == dir.canonicalize().ok().as_deref())
        {
            wasm = msg["filenames"]
                .as_array()
                .and_then(|f| {
                    f.iter()
                        .filter_map(|f| f.as_str())
                        .find(|f| f.ends_with(".wasm"))
                })
                .map(PathBuf::from);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let Some(wasm) = wasm else {
        bail!(
            "cargo built no cdylib for {}: a plugin crate needs `[lib] crate-type = [\"cdylib\"]`",
            dir.display()
        );
    };
    std::fs::copy(&wasm, out)
        .with_context(|| format!("copying {} to {}", wasm.display(), out.display()))?;
    step(&format!(
        "cargo done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_told_apart_by_their_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = detect(dir.path()).expect_err("an empty directory");
        assert!(err.to_string().contains("`weft new` makes one"), "{err}");

        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"p\"\n[tool.weft]\nworld = \"typed-span-processor\"\n",
        )
        .expect("write");
        assert_eq!(
            detect(dir.path()).expect("python"),
            Project::Python {
                name: "p".into(),
                world: "typed-span-processor".into(),
                wit: "wit".into(),
                module: "app".into()
            }
        );
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"p\"\n",
        )
        .expect("write");
        let err = detect(dir.path()).expect_err("no [tool.weft]");
        assert!(format!("{err:#}").contains("[tool.weft]"), "{err:#}");
        std::fs::remove_file(dir.path().join("pyproject.toml")).expect("rm");

        std::fs::write(
            dir.path().join("package.json"),
            r#"{"name": "j", "main": "src/app.js", "weft": {"world": "http-filter"}}"#,
        )
        .expect("write");
        match detect(dir.path()).expect("js") {
            Project::Js {
                name,
                world,
                module,
                disable,
                ..
            } => {
                assert_eq!(
                    (name.as_str(), world.as_str(), module.as_str()),
                    ("j", "http-filter", "src/app.js")
                );
                assert_eq!(disable, JS_DISABLE);
            }
            other => panic!("{other:?}"),
        }

        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"r\"\n[package.metadata.weft]\nworld = \"span-processor\"\n",
        )
        .expect("write");
        assert_eq!(
            detect(dir.path()).expect("rust"),
            Project::Rust {
                name: "r".into(),
                world: Some("span-processor".into())
            }
        );
    }
}
