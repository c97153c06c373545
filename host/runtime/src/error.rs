//! Errors of the host library. Each variant says what went wrong and what the operator can do.

use std::path::PathBuf;

/// Why a plugin could not be loaded. Loading never half-succeeds: on error nothing is replaced.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly binary at all.
    #[error("{what} is not a WebAssembly binary (it does not start with `\\0asm`)")]
    NotWasm {
        /// The file name or a description of the bytes.
        what: String,
    },
    /// A core module was given where a component is required.
    #[error(
        "{what} is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule {
        /// The file name or a description of the bytes.
        what: String,
    },
    /// The component does not export what a weft plugin exports.
    #[error(
        "{what} is not a weft plugin of the expected world: it must export {expected}, but it \
         exports [{found}]"
    )]
    WrongWorld {
        /// The file name or a description of the bytes.
        what: String,
        /// What was needed, e.g. `weft:plugin/spans@0.2.0`.
        expected: String,
        /// What the component exports.
        found: String,
    },
    /// The component imports something weft does not provide (or does not grant). Build it
    /// with [`LoadError::link`], which says what to do about the usual imports.
    #[error("{what} cannot be linked: {message}")]
    Link {
        /// The file name or a description of the bytes.
        what: String,
        /// wasmtime's explanation, naming the missing import.
        message: String,
    },
    /// wasmtime rejected or could not compile the component.
    #[error("{what} is not a valid component: {message}")]
    Compile {
        /// The file name or a description of the bytes.
        what: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The plugin's `init` rejected its configuration; the message is the plugin's own.
    #[error("plugin `{plugin}` rejected its configuration: {message}")]
    InvalidConfig {
        /// The plugin's name.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin's `init` failed in another way (trapped, or returned another error).
    #[error("plugin `{plugin}` failed to start: {cause}")]
    Init {
        /// The plugin's name.
        plugin: String,
        /// What happened. Not a `source`: the message already says it, and error reports that
        /// print the chain (`{:#}`) would say it twice.
        cause: Box<CallError>,
    },
    /// The host configuration of the plugin is wrong (limits, capabilities, config JSON).
    #[error("plugin `{plugin}`: {message}")]
    Settings {
        /// The plugin's name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

impl LoadError {
    /// A [`LoadError::Link`] from wasmtime's message, with what to do about the import it names.
    pub fn link(what: &str, error: impl std::fmt::Display) -> LoadError {
        let message = format!("{error:#}");
        let hint = link_hint(&message)
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        LoadError::Link {
            what: what.to_string(),
            message: format!("{message}{hint}"),
        }
    }
}

/// What to do about the import a wasmtime link error names (``imports instance `x` ``).
fn link_hint(message: &str) -> Option<String> {
    let import = message
        .split("imports instance `")
        .nth(1)
        .or_else(|| message.split("imports func `").nth(1))
        .and_then(|rest| rest.split('`').next())?;
    let iface = import.split('@').next().unwrap_or(import);
    let hint = if iface.starts_with("wasi:http/") {
        format!(
            "weft gives plugins no `{import}`: an http filter calls out with `http.dispatch-http-call`. componentize-js adds wasi:http unless built with `--disable http fetch-event` (what `weft build` does)"
        )
    } else if iface.starts_with("wasi:filesystem/") || iface.starts_with("wasi:sockets/") {
        format!(
            "`{import}` is not granted: plugins get no filesystem or network; leave it out of the build"
        )
    } else if let Some(name) = iface.strip_prefix("weft:plugin/") {
        let version = import.split('@').nth(1).unwrap_or("?");
        format!(
            "this weft provides weft:plugin/{name} of weft:plugin@0.2.0, the component wants @{version}: rebuild it against weft-guest 0.2 or the WIT that `weft wit <dir>` writes"
        )
    } else {
        format!(
            "weft provides the weft:plugin@0.2.0 interfaces and WASI 0.2 clocks, random, io and cli; rebuild the plugin without `{import}`"
        )
    };
    Some(hint)
}

/// How a guest trap happened. A trapped instance is discarded, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrapKind {
    /// The call ran past its CPU deadline (an infinite loop, or just too slow).
    Deadline,
    /// The guest tried to grow its memory past the plugin's memory cap.
    MemoryLimit,
    /// The guest overflowed its stack (deep or infinite recursion).
    StackOverflow,
    /// The guest panicked or executed `unreachable`.
    Panic,
    /// The call used up its fuel budget.
    Fuel,
    /// Any other trap (out-of-bounds access, division by zero, ...) or ABI violation.
    Other,
}

impl TrapKind {
    /// The label used in metrics (`kind="deadline"`, ...).
    /// Every kind, in the order of the metrics.
    pub const ALL: [TrapKind; 6] = [
        TrapKind::Deadline,
        TrapKind::MemoryLimit,
        TrapKind::StackOverflow,
        TrapKind::Panic,
        TrapKind::Fuel,
        TrapKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Deadline => "deadline",
            TrapKind::MemoryLimit => "memory_limit",
            TrapKind::StackOverflow => "stack_overflow",
            TrapKind::Panic => "panic",
            TrapKind::Fuel => "fuel",
            TrapKind::Other => "other",
        }
    }
}

/// Why one call into a plugin failed. `Trapped` is the guest crashing; `Guest` is the guest
/// reporting an error; the two are counted apart.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guest trapped: its instance was discarded, the fail policy applies.
    #[error("plugin `{plugin}` trapped ({}): {message}", kind.as_str())]
    Trapped {
        /// The plugin's name.
        plugin: String,
        /// How it trapped.
        kind: TrapKind,
        /// wasmtime's trap message (one line, without the backtrace).
        message: String,
        /// The guest's wasm backtrace, when wasmtime captured one (several lines; logged at
        /// debug level).
        backtrace: Option<String>,
    },
    /// The guest returned an error; the fail policy applies.
    #[error("plugin `{plugin}` returned an error: {message}")]
    Guest {
        /// The plugin's name.
        plugin: String,
        /// The error's case (`invalid-config`, `invalid-input`, `other`).
        kind: &'static str,
        /// The plugin's message.
        message: String,
    },
    /// The guest returned data the host cannot turn back into OTLP (e.g. a malformed nested value).
    #[error("plugin `{plugin}` returned malformed output: {message}")]
    MalformedOutput {
        /// The plugin's name.
        plugin: String,
        /// What is malformed.
        message: String,
    },
    /// A new instance could not be created (out of pooled slots, or `init` failed).
    #[error("plugin `{plugin}`: cannot create an instance: {message}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// What happened.
        message: String,
    },
    /// The plugin does not export what this call needs (e.g. logs sent to a spans-only plugin).
    #[error("plugin `{plugin}` does not process {signal}")]
    Unsupported {
        /// The plugin's name.
        plugin: String,
        /// `spans` or `logs`.
        signal: &'static str,
    },
}

impl CallError {
    /// The metrics label of this error's kind.
    pub fn kind_label(&self) -> &'static str {
        match self {
            CallError::Trapped { kind, .. } => kind.as_str(),
            CallError::Guest { .. } => "guest_error",
            CallError::MalformedOutput { .. } => "malformed_output",
            CallError::Instantiate { .. } => "instantiate",
            CallError::Unsupported { .. } => "unsupported",
        }
    }
}

/// OTLP input the host cannot convert (the receiver answers INVALID_ARGUMENT / 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    /// An id has the wrong number of bytes.
    #[error("{field} must be {expected} bytes, got {got}")]
    IdLength {
        /// Which field, e.g. `span.trace_id`.
        field: &'static str,
        /// The expected lengths, e.g. `16`.
        expected: &'static str,
        /// The length found.
        got: usize,
    },
    /// A nested value from the guest is not a well-formed tree.
    #[error("malformed nested value: {0}")]
    MalformedTree(String),
    /// Protobuf that is not a well-formed OTLP request.
    #[error("{0}")]
    Wire(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_errors_say_what_to_do_about_the_import() {
        let js = "component imports instance `wasi:http/types@0.2.10`, but a matching \
                  implementation was not found in the linker";
        let e = LoadError::link("f.wasm", js).to_string();
        assert!(
            e.starts_with("f.wasm cannot be linked: component imports")
                && e.contains("--disable http fetch-event"),
            "{e}"
        );
        let old = "component imports instance `weft:plugin/log@0.1.0`, but no match";
        assert!(
            LoadError::link("f", old)
                .to_string()
                .contains("wants @0.1.0")
        );
        let fs = "component imports instance `wasi:filesystem/types@0.2.0`, but no match";
        assert!(
            LoadError::link("f", fs)
                .to_string()
                .contains("no filesystem or network")
        );
        assert_eq!(
            LoadError::link("f", "something else").to_string(),
            "f cannot be linked: something else"
        );
    }
}
