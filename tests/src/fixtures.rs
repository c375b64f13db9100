//! Fixtures built at test time from packaged inputs: the guest kernel (cached by
//! guest-kernel-config/build.sh, never built by a test), static guest binaries, and the probe
//! image under `target/hako-fixtures`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::repo_root;
use crate::require::Skip;

/// The guest kernel: `$HAKO_KERNEL`, else the cached build of the current inputs.
pub fn kernel() -> Result<PathBuf, Skip> {
    if let Some(p) = std::env::var_os("HAKO_KERNEL") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Skip(format!("HAKO_KERNEL={} does not exist", p.display())))
        };
    }
    let script = repo_root().join("guest-kernel-config/build.sh");
    let out = Command::new(&script)
        .arg("--cached-only")
        .output()
        .map_err(|e| Skip(format!("running {}: {e}", script.display())))?;
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    if out.status.success() && !path.is_empty() {
        Ok(PathBuf::from(path))
    } else {
        Err(Skip("the guest kernel is not built for the current inputs: run guest-kernel-config/build.sh".into()))
    }
}

/// Runs `cargo build --quiet ARGS --target-dir TARGET_DIR` in the workspace.
fn cargo_build(
    what: &str,
    target_dir: &Path,
    args: &[&str],
    rustflags: Option<&str>,
) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo to build {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {what} failed: {status}"))
    }
}

/// Builds (if needed) a static guest binary of this workspace with the `guest` profile.
pub fn guest_binary(package: &str) -> Result<PathBuf, String> {
    let target_dir = repo_root().join("target/guest");
    let args = [
        "--profile",
        "guest",
        "--target",
        "x86_64-unknown-linux-gnu",
        "-p",
        package,
    ];
    cargo_build(
        &format!("the static guest binary {package}"),
        &target_dir,
        &args,
        Some("-C target-feature=+crt-static"),
    )?;
    Ok(target_dir
        .join("x86_64-unknown-linux-gnu/guest")
        .join(package))
}

/// The workspace's release binary `bin`, built first if needed (once per test process) the
/// way scripts/setup.sh builds it: the whole workspace, so dependencies resolve with the same
/// features and nothing is compiled twice, into the workspace's own target directory. A
/// suite never runs a stale build, and never waits on the `cargo test` that runs it (cargo
/// locks `target/release` only while it compiles).
pub fn workspace_binary(bin: &str) -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_build(
                "the workspace's binaries",
                &repo_root().join("target"),
                &["--release", "--workspace", "--bins"],
                None,
            )
        })
        .clone()?;
    Ok(repo_root().join("target/release").join(bin))
}

fn probe_manifest() -> Result<hako_rootfs_builder::manifest::Manifest, String> {
    let program = guest_binary("hako-guest-probe")?;
    hako_rootfs_builder::images::probe_image(std::path::Path::new("/bin/busybox"), &program)
        .map_err(|e| format!("building the probe image: {e}"))
}

/// Writes the probe image's tree into `dir` (a virtio-fs root; needs root for /dev nodes).
pub fn probe_root_dir(dir: &Path) -> Result<(), String> {
    let manifest = probe_manifest()?;
    let skipped = hako_rootfs_builder::dir::write(&manifest, dir)
        .map_err(|e| format!("writing the probe tree into {}: {e}", dir.display()))?;
    if skipped.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "could not create {skipped:?} (device nodes need root)"
        ))
    }
}

/// Writes the probe image (busybox + hako-guest-probe) and returns its path.
pub fn probe_image() -> Result<PathBuf, String> {
    write_image("probe", &probe_manifest()?)
}

/// Writes the agent image (the static hako-agent as /init) and returns its path.
pub fn agent_image() -> Result<PathBuf, String> {
    let agent = guest_binary("hako-agent")?;
    let manifest = hako_rootfs_builder::images::agent_image(&agent)
        .map_err(|e| format!("building the agent image: {e}"))?;
    write_image("agent", &manifest)
}

/// Writes `manifest` as an uncompressed cpio under target/hako-fixtures, named by a hash of
/// its bytes: an unchanged image keeps its file (and so its identity, which template keys
/// include) from suite to suite. Written aside and renamed, so readers never see half a file.
fn write_image(
    name: &str,
    manifest: &hako_rootfs_builder::manifest::Manifest,
) -> Result<PathBuf, String> {
    use sha2::Digest;
    let dir = repo_root().join("target/hako-fixtures");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut bytes = Vec::new();
    hako_rootfs_builder::cpio::write(manifest, &mut bytes)
        .map_err(|e| format!("building the {name} image: {e}"))?;
    let hash: String = sha2::Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("{name}-{hash}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{name}-{hash}.{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    Ok(path)
}

/// Where the suites keep sandbox templates: one store for the whole test run, so the first
/// suite that needs a template boots it and the others resume it.
pub fn template_store() -> PathBuf {
    repo_root().join("target/hako-templates")
}

/// The `[template]` section of a runtime config that resumes sandboxes from
/// [`template_store`]. No background builds: a sandbox of another size boots cold and leaves
/// no builder process behind (the suites check that nothing is left).
pub fn template_config() -> String {
    format!(
        "[template]\nenabled = true\nauto_create = false\ndir = {:?}\n",
        template_store()
    )
}

/// Writes at `path` a runtime config with the test kernel and agent image that resumes
/// sandboxes from the shared template, and makes sure the template exists (see
/// [`ensure_template`]); returns the template's directory.
pub fn templated_runtime_config(hako: &Path, path: &Path) -> Result<PathBuf, String> {
    let kernel = kernel().map_err(|s| s.to_string())?;
    let image = agent_image()?;
    std::fs::write(
        path,
        format!(
            "[vm]\nkernel = {kernel:?}\nimage = {image:?}\n{}",
            template_config()
        ),
    )
    .map_err(|e| format!("writing {}: {e}", path.display()))?;
    ensure_template(hako, path)
}

/// Makes (once per test run, under a lock) the template the runtime config at `config`
/// resumes sandboxes from, with `hako template create` (which keeps a valid one); returns the
/// template's directory.
pub fn ensure_template(hako: &Path, config: &Path) -> Result<PathBuf, String> {
    let started = std::time::Instant::now();
    let out = Command::new(hako)
        .arg("--config")
        .arg(config)
        .args(["template", "create"])
        .output()
        .map_err(|e| format!("running hako template create: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!(
            "hako template create failed ({}): {text}",
            out.status
        ));
    }
    eprintln!(
        "template ready after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        text.trim()
    );
    // `hako template create` prints the directory first, then the size.
    String::from_utf8_lossy(&out.stdout)
        .split('\t')
        .next()
        .map(|d| PathBuf::from(d.trim()))
        .filter(|d| d.is_dir())
        .ok_or_else(|| format!("hako template create printed no directory: {text}"))
}
