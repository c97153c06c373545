//! What a plugin author does, from nothing: `weft new` for every world in Rust, Python and
//! JavaScript, in a temporary directory outside the repository; `weft build`; `weft test` with
//! `--expect` over the fixtures the project came with (it must pass); `weft validate` of the
//! project's weft.yaml; then one change to each language's plugin, rebuilt, for which `--expect`
//! must fail with a diff that shows the change. And the errors an author meets: a bad name, a
//! directory in use, a directory that is no project, a build tool that is not installed, a
//! JavaScript component built with the features that import wasi:http.
//!
//! Rust projects depend on this checkout's SDK by path (what `weft new` writes when weft was
//! built from a checkout): the SDK's WIT travels with it. Python uses componentize-py from
//! `.venv` (`bash tests/peers/setup-python.sh`), JavaScript componentize-js from
//! tests/peers/node (`bash tests/peers/setup-node.sh`); `cargo xtask test` runs both. Every
//! command is bounded in time; http fixtures run on 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{run_bounded, workspace};

/// A Rust build compiles the SDK and serde first (~45 s cold on 2 cores); componentize-py and
/// componentize-js take 10-30 s, and weft's first compile of their 12-18 MB components 10-25 s.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

const WORLDS: [&str; 4] = [
    "span-processor",
    "log-transform",
    "otlp-processor",
    "http-filter",
];

/// Scratch space kept by cargo between runs of this test binary: a cargo target directory the
/// Rust projects share (the SDK is compiled once) and weft's compile cache.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("authors")
        .join(name);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `weft <args>` in `dir`, with the tools of this checkout.
fn weft(dir: &Path, what: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.current_dir(dir)
        .args(args)
        .env("WEFT_CACHE_DIR", scratch("weft-cache"))
        .env("CARGO_TARGET_DIR", scratch("cargo-target"))
        .env("WEFT_COMPONENTIZE_PY", tool("componentize-py"))
        .env("WEFT_COMPONENTIZE_JS", tool("componentize-js"));
    let timeout = if args.first() == Some(&"build") {
        BUILD_TIMEOUT
    } else {
        TEST_TIMEOUT
    };
    let logs = scratch("logs");
    let (status, out, err) = run_bounded(cmd, &logs, what, timeout);
    (status.success(), out, err)
}

fn tool(name: &str) -> PathBuf {
    let path = match name {
        "componentize-py" => workspace().join(".venv/bin/componentize-py"),
        _ => workspace().join("tests/peers/node/node_modules/.bin/componentize-js"),
    };
    assert!(
        path.is_file(),
        "{} is missing: run `bash tests/peers/setup-python.sh` and `bash tests/peers/setup-node.sh`",
        path.display()
    );
    path
}

/// Creates, builds and tests the project of `world` in `lang` under `root`; returns its
/// directory and name.
fn new_build_test(root: &Path, lang: &str, world: &str) -> (PathBuf, String) {
    let name = format!("{lang}-{world}");
    let (ok, out, err) = weft(
        root,
        &format!("new-{name}"),
        &["new", &name, "--world", world, "--lang", lang],
    );
    assert!(ok, "weft new {name}: {out}{err}");
    assert!(out.contains(&format!("created {name}")), "{out}");
    let dir = root.join(&name);
    let (ok, out, err) = weft(&dir, &format!("build-{name}"), &["build"]);
    assert!(ok, "weft build {name}:\n{out}\n{err}");
    assert!(
        out.contains(&format!("built ./{name}.wasm")),
        "weft build {name} said: {out}"
    );
    let component = format!("{name}.wasm");
    for fixture in fixtures(&dir) {
        let expected = fixture.replace(".json", ".expected.json");
        let (ok, out, err) = weft(
            &dir,
            &format!("test-{name}-{}", fixture.replace('/', "-")),
            &[
                "test", &component, "--input", &fixture, "--expect", &expected,
            ],
        );
        assert!(ok, "weft test {name} {fixture}:\n{out}\n{err}");
        assert!(
            err.contains(&format!("the output matches {expected}")),
            "{name} {fixture}: {err}"
        );
    }
    let (ok, out, err) = weft(
        &dir,
        &format!("validate-{name}"),
        &["validate", "weft.yaml"],
    );
    assert!(ok, "weft validate {name}/weft.yaml:\n{out}\n{err}");
    assert!(out.contains("valid"), "{out}");
    if world == "http-filter" {
        // Every language's http filter adapts for Envoy (tests/tests/envoy_languages.rs runs
        // adapted ones in a real Envoy).
        let proxy = format!("{name}.proxy.wasm");
        let (ok, out, err) = weft(
            &dir,
            &format!("adapt-{name}"),
            &["adapt", &component, "-o", &proxy],
        );
        assert!(ok, "weft adapt {name}:\n{out}\n{err}");
        assert!(err.contains("Proxy-Wasm 0.2.1, verified"), "{err}");
        assert!(out.contains("envoy.filters.http.wasm"), "{out}");
        assert!(dir.join(&proxy).is_file());
    }
    (dir, name)
}

/// The project's input fixtures (`fixtures/*.json` without `.expected`).
fn fixtures(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir.join("fixtures"))
        .expect("fixtures/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json") && !n.ends_with(".expected.json"))
        .map(|n| format!("fixtures/{n}"))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no fixture in {}", dir.display());
    found
}

/// Changes `from` to `to` in the project's `source`, rebuilds, and checks that `--expect` over
/// `fixture` fails with a diff naming both.
fn changed_output_fails_with_a_diff(
    dir: &Path,
    name: &str,
    source: &str,
    (from, to): (&str, &str),
    fixture: &str,
) {
    let path = dir.join(source);
    let text = std::fs::read_to_string(&path).expect("source");
    assert!(text.contains(from), "{source} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).expect("write source");
    let (ok, out, err) = weft(dir, &format!("rebuild-{name}"), &["build"]);
    assert!(ok, "rebuilding {name}:\n{out}\n{err}");
    let expected = fixture.replace(".json", ".expected.json");
    let (ok, out, err) = weft(
        dir,
        &format!("mismatch-{name}"),
        &[
            "test",
            &format!("{name}.wasm"),
            "--input",
            fixture,
            "--expect",
            &expected,
        ],
    );
    assert!(!ok, "--expect passed after the output changed: {out}{err}");
    assert!(
        err.contains(&format!("--- {expected}")) && err.contains("+++ output"),
        "no diff header: {err}"
    );
    // The source spells them quoted; the output has them as JSON strings or header lines.
    let (from, to) = (from.trim_matches(['\'', '"']), to.trim_matches(['\'', '"']));
    let removed = err.lines().any(|l| l.starts_with('-') && l.contains(from));
    let added = err.lines().any(|l| l.starts_with('+') && l.contains(to));
    assert!(
        removed && added,
        "the diff does not show {from} -> {to}:\n{err}"
    );
    assert!(
        err.contains(&format!("the output differs from {expected}")),
        "{err}"
    );
    assert!(out.is_empty(), "--expect printed the output too: {out}");
}

/// Every world in `lang`, then the change `(from, to)` to the project of `WORLDS[changed]` in
/// `source`, which `--expect` over `fixture` must catch.
fn every_world(lang: &str, changed: usize, source: &str, change: (&str, &str), fixture: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    assert!(!root.path().starts_with(workspace()));
    let projects: Vec<(PathBuf, String)> = WORLDS
        .iter()
        .map(|world| new_build_test(root.path(), lang, world))
        .collect();
    if lang == "rust" {
        let cargo = std::fs::read_to_string(projects[0].0.join("Cargo.toml")).expect("Cargo.toml");
        let sdk = workspace().join("guests/sdk").canonicalize().expect("sdk");
        assert!(
            cargo.contains(&format!(
                "weft-guest = {{ path = {:?} }}",
                sdk.display().to_string()
            )),
            "{cargo}"
        );
    }
    let (dir, name) = &projects[changed];
    changed_output_fails_with_a_diff(dir, name, source, change, fixture);
}

#[test]
fn rust_plugins_of_every_world_are_created_built_and_tested_outside_the_repository() {
    every_world(
        "rust",
        0,
        "src/lib.rs",
        ("\"tagged.by\"", "\"tagged.with\""),
        "fixtures/traces.json",
    );
}

#[test]
fn python_plugins_of_every_world_are_created_built_and_tested_outside_the_repository() {
    every_world(
        "python",
        1,
        "app.py",
        ("\"tagged.by\"", "\"tagged.with\""),
        "fixtures/logs.json",
    );
}

#[test]
fn javascript_plugins_of_every_world_are_created_built_and_tested_outside_the_repository() {
    every_world(
        "js",
        3,
        "app.js",
        ("'x-tagged-by'", "'x-tagged-with'"),
        "fixtures/requests.json",
    );
}

#[test]
fn authors_are_told_what_is_wrong_and_what_to_install() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();

    let (ok, _, err) = weft(r, "bad-name", &["new", "My_Plugin"]);
    assert!(!ok && err.contains("is not a plugin name"), "{err}");

    std::fs::create_dir(r.join("taken")).expect("mkdir");
    std::fs::write(r.join("taken/notes.txt"), "mine").expect("write");
    let (ok, _, err) = weft(r, "taken", &["new", "taken"]);
    assert!(!ok && err.contains("exists and is not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(r.join("taken/notes.txt")).expect("kept"),
        "mine"
    );

    std::fs::create_dir(r.join("empty")).expect("mkdir");
    let (ok, _, err) = weft(&r.join("empty"), "not-a-project", &["build"]);
    assert!(!ok && err.contains("is not a plugin project"), "{err}");

    // componentize-py and componentize-js missing: no env override, nothing on PATH, no
    // project-local install.
    for (lang, needs) in [
        ("python", "pip install componentize-py==0.25.1"),
        ("js", "run `npm install` in"),
    ] {
        let name = format!("{lang}-missing-tool");
        let (ok, out, err) = weft(r, &format!("new-{name}"), &["new", &name, "--lang", lang]);
        assert!(ok, "{out}{err}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.current_dir(r.join(&name))
            .arg("build")
            .env_remove("WEFT_COMPONENTIZE_PY")
            .env_remove("WEFT_COMPONENTIZE_JS")
            .env("PATH", "/usr/bin:/bin");
        let (status, _, err) = run_bounded(cmd, &scratch("logs"), &name, TEST_TIMEOUT);
        assert!(!status.success(), "{lang} built without its tool");
        assert!(err.contains(needs), "{lang}: {err}");
    }

    // A JavaScript plugin built with componentize-js's default features imports wasi:http, which
    // weft does not provide: `weft test` must name the import and say how to build without it.
    let (ok, out, err) = weft(r, "new-js-default", &["new", "js-default", "--lang", "js"]);
    assert!(ok, "{out}{err}");
    let package = r.join("js-default/package.json");
    let text = std::fs::read_to_string(&package).expect("package.json");
    let all_features = text.replace(r#""disable": ["http", "fetch-event"]"#, r#""disable": []"#);
    assert_ne!(text, all_features, "{text}");
    std::fs::write(&package, all_features).expect("write package.json");
    let dir = r.join("js-default");
    let (ok, out, err) = weft(&dir, "build-js-default", &["build"]);
    assert!(ok, "a component with wasi:http still builds: {out}{err}");
    let (ok, _, err) = weft(
        &dir,
        "test-js-default",
        &["test", "js-default.wasm", "--input", "fixtures/traces.json"],
    );
    assert!(!ok, "a component importing wasi:http ran");
    assert!(
        err.contains("cannot be linked")
            && err.contains("wasi:http/")
            && err.contains("--disable http fetch-event"),
        "{err}"
    );

    // `--sdk <version>` depends on the registry's SDK; a component that is not there is named.
    let (ok, out, err) = weft(
        r,
        "new-rust-expect",
        &["new", "expect-check", "--sdk", "0.2"],
    );
    assert!(ok, "{out}{err}");
    let cargo = std::fs::read_to_string(r.join("expect-check/Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains("weft-guest = \"0.2\""), "{cargo}");
    let (ok, _, err) = weft(
        r,
        "expect-missing-component",
        &[
            "test",
            "expect-check/nothing.wasm",
            "--input",
            "expect-check/fixtures/traces.json",
        ],
    );
    assert!(
        !ok && err.contains("cannot read expect-check/nothing.wasm"),
        "{err}"
    );
}
