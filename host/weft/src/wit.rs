//! The WIT package `weft:plugin` this binary was built against, for authors who generate
//! bindings themselves (wit-bindgen, componentize-py, componentize-js): `weft wit <dir>` writes
//! it out, one file per interface as in the repository's `wit/`.

use std::path::Path;

/// Each file of `wit/`: its name and text.
pub const FILES: &[(&str, &str)] = &[
    ("clock.wit", include_str!("../../../wit/clock.wit")),
    ("config.wit", include_str!("../../../wit/config.wit")),
    ("http.wit", include_str!("../../../wit/http.wit")),
    ("keyvalue.wit", include_str!("../../../wit/keyvalue.wit")),
    ("lifecycle.wit", include_str!("../../../wit/lifecycle.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("logs.wit", include_str!("../../../wit/logs.wit")),
    ("metrics.wit", include_str!("../../../wit/metrics.wit")),
    ("otlp.wit", include_str!("../../../wit/otlp.wit")),
    ("spans.wit", include_str!("../../../wit/spans.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// The package's name and version, as its `package` line says (`weft:plugin@0.2.0`).
pub fn package() -> &'static str {
    FILES
        .iter()
        .flat_map(|(_, text)| text.lines())
        .find_map(|l| l.trim().strip_prefix("package ")?.strip_suffix(';'))
        .unwrap_or("weft:plugin")
}

/// Writes the package's files into `dir` (created if missing). A file already there with other
/// text is an error unless `force`: the directory may hold an author's edits.
pub fn write(dir: &Path, force: bool) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in FILES {
        let path = dir.join(name);
        if !force
            && let Ok(old) = std::fs::read_to_string(&path)
            && old != *text
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists with other content (pass --force to overwrite)",
                    path.display()
                ),
            ));
        }
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_wit_folder_is_embedded_as_it_is() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(&wit)
            .expect("wit/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded, "add the new file to FILES");
        for (name, text) in FILES {
            assert_eq!(
                std::fs::read_to_string(wit.join(name)).expect("read"),
                *text
            );
        }
        assert!(package().starts_with("weft:plugin@"), "{}", package());
    }
}
