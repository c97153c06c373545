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
    /// The component imports something weft does not provide (or does not grant).
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
    #[error("plugin `{plugin}` failed to start: {source}")]
    Init {
        /// The plugin's name.
        plugin: String,
        /// What happened.
        source: Box<CallError>,
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
