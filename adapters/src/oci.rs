//! An OCI image layout holding an adapted module, in the form Istio's `WasmPlugin` pulls.
//!
//! The image follows the Wasm OCI artifact "compat" variant that Istio and Envoy Gateway read:
//! one layer of media type `application/vnd.module.wasm.content.layer.v1+wasm` (the module
//! itself, not a tarball) and a config of media type `application/vnd.module.wasm.config.v1+json`.
//! It is written as an OCI *image layout* directory (`oci-layout`, `index.json`, `blobs/sha256/`),
//! which `oras cp --from-oci-layout <dir>:<tag> <registry>/<repo>:<tag>` or
//! `skopeo copy oci:<dir>:<tag> docker://<registry>/<repo>:<tag>` pushes to a registry.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Media type of the layer that holds the module.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Media type of the image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// Media type of the manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What was written.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>` of the manifest.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the module layer (Istio's `sha256` field takes the hex part).
    pub layer_digest: String,
    /// The tag recorded in `index.json`.
    pub tag: String,
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<String> {
    let d = digest(bytes);
    let hex = d.trim_start_matches("sha256:");
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    std::fs::write(blobs.join(hex), bytes)?;
    Ok(d)
}

/// Writes an OCI image layout with `module` into `dir` (created if needed), tagged `tag`.
pub fn write_layout(dir: &Path, module: &[u8], tag: &str, plugin_name: &str) -> io::Result<Image> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let layer_digest = write_blob(dir, module)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "author": "weft adapt",
        "platform": {"architecture": "wasm", "os": "wasip1"},
    }))?;
    let config_digest = write_blob(dir, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": module.len(),
            "annotations": {"org.opencontainers.image.title": format!("{plugin_name}.wasm")},
        }],
        "annotations": {"org.opencontainers.image.title": plugin_name},
    }))?;
    let manifest_digest = write_blob(dir, &manifest)?;
    let index = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }))?;
    std::fs::write(dir.join("index.json"), index)?;
    Ok(Image {
        manifest_digest,
        layer_digest,
        tag: tag.to_string(),
    })
}
