//! A busybox container image as an OCI image-layout archive (`oci-layout`, `index.json`,
//! `blobs/sha256/...` in one tar), which `ctr image import` and `podman load` take: the tests'
//! and the main job's image, built locally since no registry is reachable.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bundle::APPLETS;

/// Annotation containerd names imported images by.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A minimal ustar writer: directories, regular files and symlinks, root-owned, mtime 0.
struct Tar<W: Write> {
    out: W,
}

impl<W: Write> Tar<W> {
    fn header(
        &mut self,
        name: &str,
        kind: u8,
        mode: u32,
        size: usize,
        link: &str,
    ) -> std::io::Result<()> {
        if name.len() > 100 || link.len() > 100 {
            return Err(std::io::Error::other(format!("tar name too long: {name}")));
        }
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, size as u64);
        octal(&mut h, 136, 12, 0);
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.write_all(&h)
    }

    fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.header(&format!("{name}/"), b'5', 0o755, 0, "")
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.header(name, b'0', mode, data.len(), "")?;
        self.out.write_all(data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.out.write_all(&vec![0u8; pad])
    }

    fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        self.header(name, b'2', 0o777, 0, target)
    }

    fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The layer: busybox, its applet links and the usual top-level directories.
fn layer(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut t = Tar { out: Vec::new() };
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp", "root"] {
        t.dir(d)?;
    }
    t.file("bin/busybox", 0o755, busybox)?;
    for applet in APPLETS {
        t.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    t.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    t.file("etc/group", 0o644, b"root:x:0:\n")?;
    t.finish()
}

/// Writes the archive of an image named `name` (e.g. `docker.io/library/busybox:hako`) whose
/// default command is `cmd`.
pub fn write_busybox_image(
    busybox: &Path,
    name: &str,
    cmd: &[&str],
    out: &Path,
) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", out.display());
    let bin = std::fs::read(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    let layer = layer(&bin).map_err(err)?;
    let layer_digest = digest(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest(&manifest), "size": manifest.len(),
                       "annotations": {CONTAINERD_NAME: name, REF_NAME: tag}}],
    });
    let index = serde_json::to_vec(&index).map_err(|e| e.to_string())?;

    let file = std::fs::File::create(out).map_err(err)?;
    let mut t = Tar {
        out: std::io::BufWriter::new(file),
    };
    t.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(err)?;
    t.file("index.json", 0o644, &index).map_err(err)?;
    t.dir("blobs").map_err(err)?;
    t.dir("blobs/sha256").map_err(err)?;
    for blob in [&layer, &config, &manifest] {
        let name = format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]);
        t.file(&name, 0o644, blob).map_err(err)?;
    }
    let mut w = t.finish().map_err(err)?;
    w.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_a_valid_tar_with_matching_digests() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("busybox");
        std::fs::write(&fake, b"#!/bin/true\n").unwrap();
        let out = dir.path().join("img.tar");
        write_busybox_image(&fake, "docker.io/library/busybox:hako", &["sh"], &out).unwrap();
        let listing = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            listing.status.success(),
            "{}",
            String::from_utf8_lossy(&listing.stderr)
        );
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            text.contains("index.json") && text.contains("blobs/sha256/"),
            "{text}"
        );
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        assert!(
            std::process::Command::new("tar")
                .arg("-xf")
                .arg(&out)
                .arg("-C")
                .arg(&x)
                .status()
                .unwrap()
                .success()
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(x.join("index.json")).unwrap()).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"][CONTAINERD_NAME],
            "docker.io/library/busybox:hako"
        );
        let d = m["digest"].as_str().unwrap();
        let blob = std::fs::read(x.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(digest(&blob), d);
        let manifest: serde_json::Value = serde_json::from_slice(&blob).unwrap();
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer = x.join("blobs/sha256").join(&layer_digest[7..]);
        let l = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&layer)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&l.stdout);
        assert!(
            text.contains("bin/busybox") && text.contains("bin/sh -> busybox"),
            "{text}"
        );
    }
}
