//! The faults of weft's fault fixtures (`guests/fixtures/fault` on the batch ABI,
//! `guests/fixtures/typed-fault` on typed records), written once: configuration, the
//! shot counter in the plugin's key-value store, and the traps, loops, errors and prints.
//! Each fixture adds the faults that depend on its ABI (malformed output, drops, probes).

use weft_guest::{Config, Error, keyvalue, metrics};

/// The fault an instance injects, from its configuration.
pub struct Fault {
    /// The fault's name (`none`, `panic`, …, or one the fixture handles itself).
    pub kind: String,
    times: Option<u32>,
}

/// The faults [`Fault::inject`] fires itself.
const OWN: &[&str] = &["none", "panic", "loop", "oom", "stack", "error", "print"];

impl Fault {
    /// Reads `{"fault": "<kind>", "times": n}`; `own` are the kinds the fixture handles itself
    /// (for which [`Self::inject`] returns `Ok(false)`).
    pub fn from_config(config: &Config, own: &[&str]) -> Result<Self, Error> {
        let kind = config.get_str("fault").unwrap_or("none").to_string();
        if kind == "bad-config" {
            return Err(Error::InvalidConfig(
                "fault: this plugin rejects its configuration on purpose".into(),
            ));
        }
        if !OWN.contains(&kind.as_str()) && !own.contains(&kind.as_str()) {
            let all: Vec<&str> = OWN.iter().chain(own).copied().collect();
            return Err(Error::InvalidConfig(format!(
                "fault: unknown fault `{kind}`, expected one of {all:?}"
            )));
        }
        let times = match config.json().get("times") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| Error::InvalidConfig("fault: `times` must be a u32".into()))?,
            ),
        };
        Ok(Fault { kind, times })
    }
}

/// Takes one "shot" from the shared counter: true if the fault should fire on this call.
fn take_shot(limit: u32) -> Result<bool, Error> {
    loop {
        let (fired, cas) = match keyvalue::get("fired") {
            Ok(Some(e)) => (
                e.value
                    .try_into()
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX),
                e.cas,
            ),
            Ok(None) => (0, 0),
            Err(e) => return Err(Error::Other(format!("keyvalue get: {e:?}"))),
        };
        if fired >= limit {
            return Ok(false);
        }
        match keyvalue::set("fired", &(fired + 1).to_le_bytes(), Some(cas)) {
            Ok(()) => return Ok(true),
            Err(keyvalue::Error::CasMismatch) => continue,
            Err(e) => return Err(Error::Other(format!("keyvalue set: {e:?}"))),
        }
    }
}

impl Fault {
    /// Injects the configured fault; returns `Ok(true)` when the batch should pass untouched,
    /// `Ok(false)` when the fixture is to apply its own kind.
    pub fn inject(&mut self) -> Result<bool, Error> {
        metrics::counter_add("fault_calls", &[("fault".into(), self.kind.clone())], 1);
        if let Some(limit) = self.times
            && !take_shot(limit)?
        {
            return Ok(true);
        }
        weft_guest::log::info(&format!("fault: injecting `{}`", self.kind));
        match self.kind.as_str() {
            "panic" => panic!("fault: panicking on purpose"),
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stack" => {
                std::hint::black_box(recurse(std::hint::black_box(1)));
                Ok(true)
            }
            "error" => Err(Error::Other("fault: returning an error on purpose".into())),
            "print" => {
                println!("fault: hello from stdout");
                eprintln!("fault: hello from stderr");
                Ok(true)
            }
            "none" => Ok(true),
            _ => Ok(false),
        }
    }
}

/// Unbounded recursion on wasm's own call stack: values stay in locals (no shadow-stack
/// frames), and the subtraction after the call keeps LLVM from turning it into a loop.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let next = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1) | 1;
    recurse(next).wrapping_sub(n)
}
