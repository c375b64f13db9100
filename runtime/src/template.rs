//! Sandbox templates: a VM booted once to the point where its agent answers, snapshotted by
//! hako-vmm, and resumed by every sandbox of the same make instead of a cold boot.
//!
//! A template lives in `<template dir>/<key>/` (`manifest.json`, and hako-vmm's `state.json`
//! and `memory`). The key is a SHA-256 over what the VM is made of: this Hako's version, the
//! identity (path, size, inode, modification and change times) of the hako-vmm binary, the
//! kernel and the agent image, the vCPUs, memory, CPU profile and kernel arguments. Change any
//! of them and the old template no longer matches. The manifest records the SHA-256 of the
//! state file and the identity of the memory file (size, inode, change time, which no write
//! can leave as it was): a template that fails either check was modified and is removed,
//! never used.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use hako_agent_api::AGENT_API_PORT;
use hako_agent_api::health::CheckRequest;
use hako_vmm_api::{ControlReply, ControlRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::agent_client::{self, ctx};
use crate::backend::find_program;
use crate::backend::vm::{Vm, VmPaths, VmSpec};
use crate::config::Config;
use crate::sandbox::sizing::VmSize;
use crate::state::lock_file;

/// Bumped when the manifest's meaning changes.
const MANIFEST_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
/// hako-vmm's files in a snapshot directory.
const STATE_FILE: &str = "state.json";
const MEMORY_FILE: &str = "memory";
const LOCK: &str = ".lock";

/// What a template's files must still be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub key: String,
    pub hako_version: String,
    pub created: String,
    pub vcpus: u8,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub image: PathBuf,
    /// Seconds the cold boot took, to compare with a restore.
    pub boot_secs: f64,
    pub state_sha256: String,
    pub memory: FileIdentity,
}

/// A file as stat(2) sees it; any write changes `ctime_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub len: u64,
    pub ino: u64,
    pub ctime_ns: i128,
}

impl FileIdentity {
    fn of(path: &Path) -> anyhow::Result<Self> {
        let m = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            len: m.len(),
            ino: m.ino(),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// A usable template.
#[derive(Debug, Clone)]
pub struct Template {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The key of templates for VMs made as `spec`.
pub fn key(spec: &VmSpec) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    h.update(format!(
        "hako {} manifest {MANIFEST_VERSION}\n",
        env!("CARGO_PKG_VERSION")
    ));
    for (what, path) in [
        ("vmm", &spec.vmm),
        ("kernel", &spec.kernel),
        ("image", &spec.image),
    ] {
        let m =
            fs::metadata(path).with_context(|| format!("reading the {what} {}", path.display()))?;
        h.update(format!(
            "{what} {} {} {} {}.{} {}.{}\n",
            path.display(),
            m.len(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ));
    }
    h.update(format!(
        "vcpus {} memory {} profile {:?} cmdline {}\n",
        spec.vcpus, spec.memory_mib, spec.cpu_profile, spec.cmdline
    ));
    Ok(h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks the template in `dir` against its manifest and `key`.
fn verify(dir: &Path, key: &str) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let m: Manifest =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    if m.version != MANIFEST_VERSION || m.key != key {
        bail!(
            "made for another key or manifest version ({} v{})",
            m.key,
            m.version
        );
    }
    let state = fs::read(dir.join(STATE_FILE)).context("reading the snapshot state")?;
    if sha256_hex(&state) != m.state_sha256 {
        bail!("its snapshot state does not match the manifest's SHA-256");
    }
    if FileIdentity::of(&dir.join(MEMORY_FILE))? != m.memory {
        bail!("its memory file was changed after the template was made");
    }
    Ok(m)
}

/// The valid template for `spec` in `store`, if any. One that fails its checks is removed
/// (with a warning) so that it is rebuilt rather than used.
pub fn find(store: &Path, spec: &VmSpec) -> anyhow::Result<Option<Template>> {
    let key = key(spec)?;
    let dir = store.join(&key);
    if !dir.exists() {
        return Ok(None);
    }
    match verify(&dir, &key) {
        Ok(manifest) => Ok(Some(Template { dir, manifest })),
        Err(e) => {
            tracing::warn!(template = %dir.display(), "removing a template that fails its checks: {e:#}");
            remove_dir(&dir);
            Ok(None)
        }
    }
}

/// Removes a template (or a failed build).
pub fn remove_dir(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
}

/// Every template in `store` with its manifest (None for unreadable ones).
pub fn list(store: &Path) -> Vec<(PathBuf, Option<Manifest>)> {
    let Ok(entries) = fs::read_dir(store) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .map(|p| {
            let m = fs::read(p.join(MANIFEST))
                .ok()
                .and_then(|t| serde_json::from_slice(&t).ok());
            (p, m)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Creates the template store, owner-only: a template's memory is every resumed guest's.
fn create_store(store: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(store)
        .with_context(|| format!("creating {}", store.display()))
}

/// Starts `hako template create` for a VM of `size` as a detached process (its output in
/// `<store>/.build.log`); a sandbox that found no template calls it so the next ones find
/// one. Concurrent builders wait on the store's lock, and the first one's template satisfies
/// the others, so at most one VM boots per key.
pub fn create_in_background(config: &Config, size: VmSize) {
    let Some(hako) = find_program("hako") else {
        tracing::warn!("no template is made in the background: the hako binary was not found");
        return;
    };
    let store = &config.template.dir;
    let log = create_store(store)
        .map_err(std::io::Error::other)
        .and_then(|()| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(store.join(".build.log"))
        });
    let log = match log {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(store = %store.display(), "no template is made in the background: {e}");
            return;
        }
    };
    let mut cmd = std::process::Command::new(&hako);
    if !config.source.as_os_str().is_empty() {
        cmd.arg("--config").arg(&config.source);
    }
    cmd.args(["template", "create", "--vcpus"])
        .arg(size.vcpus.to_string())
        .arg("--memory-mib")
        .arg(size.memory_mib.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    match cmd.spawn() {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), "making a template in the background");
            // Reaped here: shims and monitors do not reap children in general.
            std::thread::spawn(move || child.wait());
        }
        Err(e) => tracing::warn!("starting {}: {e}", hako.display()),
    }
}

/// Makes the template for `spec` in `store` unless a valid one exists (or `force`): boots a
/// VM, waits for its agent (up to `deadline`), snapshots it and stops it. Concurrent callers
/// wait for each other (a lock in `store`), so one VM is booted per key.
pub async fn create(
    store: &Path,
    spec: &VmSpec,
    deadline: Duration,
    force: bool,
) -> anyhow::Result<Template> {
    create_store(store)?;
    let _lock = lock_file(&store.join(LOCK))?;
    if !force && let Some(t) = find(store, spec)? {
        return Ok(t);
    }
    let key = key(spec)?;
    let dest = store.join(&key);
    remove_dir(&dest);
    let work = store.join(format!(".build-{}", std::process::id()));
    remove_dir(&work);
    let result = build(&work, spec, deadline, &key).await;
    let built = match result {
        Ok(m) => m,
        Err(e) => {
            remove_dir(&work);
            return Err(e);
        }
    };
    let snapshot = work.join("snapshot");
    fs::rename(&snapshot, &dest)
        .with_context(|| format!("moving the template into {}", dest.display()))?;
    remove_dir(&work);
    tracing::info!(template = %dest.display(), boot_secs = built.boot_secs, "template created");
    Ok(Template {
        dir: dest,
        manifest: built,
    })
}

async fn build(
    work: &Path,
    spec: &VmSpec,
    deadline: Duration,
    key: &str,
) -> anyhow::Result<Manifest> {
    let vm_dir = work.join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("creating {}", vm_dir.display()))?;
    let paths = VmPaths::under(&vm_dir);
    fs::create_dir(&paths.shared)
        .with_context(|| format!("creating {}", paths.shared.display()))?;
    let started = Instant::now();
    let mut vm = Vm::start(spec, paths.clone())?;
    let ready = async {
        let client = agent_client::connect_hybrid(&paths.vsock, AGENT_API_PORT, deadline, || {
            matches!(vm.exited(), Ok(None))
        })
        .await
        .map_err(anyhow::Error::msg)?;
        client
            .health
            .check(ctx(Duration::from_secs(60)), &CheckRequest::new())
            .await
            .context("the template's agent did not answer its health check")?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = ready {
        let words = vm.last_words(15);
        return Err(e.context(format!("booting the template VM: {words}")));
    }
    let boot_secs = started.elapsed().as_secs_f64();
    let snapshot = work.join("snapshot");
    match vm.control(&ControlRequest::Snapshot {
        dir: snapshot.clone(),
    })? {
        ControlReply::Done => {}
        other => bail!("hako-vmm refused the snapshot: {other:?}"),
    }
    let _ = vm.control(&ControlRequest::Shutdown { grace_ms: 0 });
    let _ = vm.wait(Duration::from_secs(10));
    let state = fs::read(snapshot.join(STATE_FILE)).context("reading the snapshot state")?;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        key: key.to_owned(),
        hako_version: env!("CARGO_PKG_VERSION").to_owned(),
        created: crate::state::rfc3339(SystemTime::now()),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        kernel: spec.kernel.clone(),
        image: spec.image.clone(),
        boot_secs,
        state_sha256: sha256_hex(&state),
        memory: FileIdentity::of(&snapshot.join(MEMORY_FILE))?,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    fs::write(snapshot.join(MANIFEST), json).context("writing the template manifest")?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_vmm_api::CpuProfile;

    fn spec(dir: &Path) -> VmSpec {
        for f in ["vmm", "kernel", "image"] {
            fs::write(dir.join(f), f).unwrap();
        }
        VmSpec {
            vmm: dir.join("vmm"),
            kernel: dir.join("kernel"),
            image: dir.join("image"),
            vcpus: 1,
            memory_mib: 256,
            cpu_profile: CpuProfile::Conservative,
            cmdline: "quiet".into(),
            guest_cid: 3,
            netns: None,
            net: Vec::new(),
            jail: None,
            jail_user: None,
            host_cgroup: None,
        }
    }

    /// A template directory as `create` leaves it, without booting anything.
    fn fake_template(store: &Path, spec: &VmSpec) -> PathBuf {
        let key = key(spec).unwrap();
        let dir = store.join(&key);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(STATE_FILE), b"{\"format_version\":1}").unwrap();
        fs::write(dir.join(MEMORY_FILE), vec![0u8; 8192]).unwrap();
        let m = Manifest {
            version: MANIFEST_VERSION,
            key,
            hako_version: "test".into(),
            created: "now".into(),
            vcpus: 1,
            memory_mib: 256,
            kernel: spec.kernel.clone(),
            image: spec.image.clone(),
            boot_secs: 1.0,
            state_sha256: sha256_hex(b"{\"format_version\":1}"),
            memory: FileIdentity::of(&dir.join(MEMORY_FILE)).unwrap(),
        };
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        dir
    }

    #[test]
    fn key_follows_what_the_vm_is_made_of() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let k = key(&s).unwrap();
        assert_eq!(k, key(&s).unwrap());
        assert_eq!(k.len(), 32);
        let mut bigger = s.clone();
        bigger.memory_mib = 512;
        assert_ne!(k, key(&bigger).unwrap());
        let mut other_cid = s.clone();
        other_cid.guest_cid = 9;
        assert_eq!(k, key(&other_cid).unwrap(), "the CID is per sandbox");
        std::thread::sleep(Duration::from_millis(10));
        fs::write(&s.kernel, "a rebuilt kernel").unwrap();
        assert_ne!(k, key(&s).unwrap(), "a changed kernel file changes the key");
    }

    #[test]
    fn a_valid_template_is_found_and_a_tampered_one_removed() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let store = d.path().join("store");
        let dir = fake_template(&store, &s);
        assert!(find(&store, &s).unwrap().is_some());
        assert_eq!(list(&store).len(), 1);

        // A changed state file.
        fs::write(dir.join(STATE_FILE), b"{\"format_version\":2}").unwrap();
        assert!(find(&store, &s).unwrap().is_none());
        assert!(!dir.exists(), "the bad template is removed");

        // A memory file written in place (same size).
        let dir = fake_template(&store, &s);
        std::thread::sleep(Duration::from_millis(10));
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(MEMORY_FILE))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"evil", 100).unwrap();
        drop(f);
        assert!(find(&store, &s).unwrap().is_none());
        assert!(!dir.exists());

        // No template at all.
        assert!(find(&store, &s).unwrap().is_none());
    }
}
