//! `weft test --expect`: compares a plugin's output with a file and shows a readable diff.

use std::path::Path;

use anyhow::Context as _;
use weft_runtime::otlp_io::read_otlp;

/// What `--expect` found.
#[derive(Debug)]
pub enum Verdict {
    /// The output is what the file says.
    Matches,
    /// It is not: a unified diff, expected (`-`) against the output (`+`).
    Differs(String),
}

/// Compares OTLP output (`got`, weft's OTLP/JSON) with the OTLP file `expected` (JSON or
/// protobuf). Both are brought to the same form first, so the file's spelling (key order,
/// spacing, protobuf) does not matter, only the data.
pub fn otlp(expected: &Path, got: &str) -> anyhow::Result<Verdict> {
    let bytes =
        std::fs::read(expected).with_context(|| format!("cannot read {}", expected.display()))?;
    let want = read_otlp(&bytes)
        .with_context(|| format!("{} is not OTLP", expected.display()))?
        .to_json();
    Ok(compare(expected, &want, got))
}

/// Compares JSON output with the JSON file `expected` (both pretty-printed the same way).
pub fn json(expected: &Path, got: &serde_json::Value) -> anyhow::Result<Verdict> {
    let text = std::fs::read_to_string(expected)
        .with_context(|| format!("cannot read {}", expected.display()))?;
    let want: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", expected.display()))?;
    Ok(compare(
        expected,
        &serde_json::to_string_pretty(&want)?,
        &serde_json::to_string_pretty(got)?,
    ))
}

fn compare(expected: &Path, want: &str, got: &str) -> Verdict {
    let (want, got) = (want.trim_end(), got.trim_end());
    if want == got {
        return Verdict::Matches;
    }
    let diff = similar::TextDiff::from_lines(want, got);
    let name = expected.display().to_string();
    Verdict::Differs(
        diff.unified_diff()
            .context_radius(3)
            .missing_newline_hint(false)
            .header(&name, "output")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_value_is_shown_in_context_and_the_same_data_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("want.json");
        std::fs::write(&file, r#"{"a": 1, "b": [1, 2, 3], "c": "x"}"#).expect("write");
        let same = serde_json::json!({"c": "x", "b": [1, 2, 3], "a": 1});
        assert!(matches!(
            json(&file, &same).expect("json"),
            Verdict::Matches
        ));
        let other = serde_json::json!({"a": 1, "b": [1, 2, 4], "c": "x"});
        let Verdict::Differs(diff) = json(&file, &other).expect("json") else {
            panic!("a changed value matched");
        };
        assert!(diff.contains("-    3") && diff.contains("+    4"), "{diff}");
        assert!(
            diff.starts_with(&format!("--- {}", file.display())),
            "{diff}"
        );
    }
}
