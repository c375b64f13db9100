//! Sandbox templates through the runtime (`hako` OCI CLI): `hako template create` boots one
//! VM and snapshots it (once per test run: the store is shared with the other suites), and
//! two containers created at the same time each get a sandbox resumed from it.
//!
//! What shows they were resumed and made their own: each VMM's log says it restored the
//! template (no kernel boot), while each has its own vsock CID (in its VMM config), its own
//! hostname, and different random bytes. (The runtime also reseeds each guest's RNG from
//! the host: CreateSandbox fails if the agent cannot, so the created sandboxes show it
//! happened; the bytes would differ here even without it, since interrupt timing feeds the
//! guests' pools.) Each container's output comes back, and deleting them leaves
//! nothing behind.
//!
//! Then the shared template's memory file is written to: the next sandbox does not resume it
//! (its VMM boots the kernel), the template is removed and, with `auto_create`, rebuilt in the
//! background (a new manifest, no build left over).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hako_rootfs_builder::bundle;
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::Failed;

const SCRIPT: &str = "echo host=$(hostname); \
     echo rand=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \\n'); exit 7";

struct Hako {
    bin: PathBuf,
    root: tempfile::TempDir,
    config: PathBuf,
}

impl Hako {
    /// `hako` with `config` and a state root of its own (short: socket paths under it must
    /// stay below 108 bytes).
    fn new(bin: PathBuf, config: PathBuf) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("hkt")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        Ok(Self {
            bin,
            root: dir,
            config,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(self.root.path())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> Result<Output, String> {
        let o = self
            .cmd(args)
            .output()
            .map_err(|e| format!("hako {args:?}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "hako {args:?}: exit {:?}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(o)
    }

    /// Waits (up to 10 minutes) until the container has stopped.
    fn wait_stopped(&self, id: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.status(id)? != "stopped" {
            if Instant::now() > deadline {
                return Err(format!("{id} did not stop"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    fn status(&self, id: &str) -> Result<String, String> {
        let o = self.ok(&["state", id])?;
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).map_err(|e| format!("state {id}: {e}"))?;
        Ok(v["status"].as_str().unwrap_or_default().to_owned())
    }
}

/// One container's report, parsed from its output.
#[derive(Debug)]
struct Report {
    host: String,
    rand: String,
}

fn parse(out: &str) -> Option<Report> {
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_owned)
    };
    Some(Report {
        host: field("host=")?,
        rand: field("rand=")?,
    })
}

fn bundle_for(work: &Path, i: usize) -> Result<PathBuf, String> {
    let dir = work.join(format!("bundle-{i}"));
    bundle::write_busybox_bundle(
        Path::new("/bin/busybox"),
        &dir,
        &["sh", "-c", SCRIPT],
        &format!("/hako-template-test-{i}"),
    )?;
    let path = dir.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    spec["hostname"] = format!("from-template-{i}").into();
    std::fs::write(&path, spec.to_string()).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn two_sandboxes_from_one_template() -> Result<(), Failed> {
    let bin = fixtures::workspace_binary("hako")?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = work.path().join("hako.toml");
    fixtures::templated_runtime_config(&bin, &config)?;
    let hako = Hako::new(bin, config)?;
    let list = hako.ok(&["template", "list"])?;
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    if !listed.contains("vCPU") || !listed.contains("MiB") {
        return Err(format!("hako template list printed {listed:?}").into());
    }

    // Both created at once, each in its own sandbox resumed from the template.
    let ids = ["tpl-1", "tpl-2"];
    let started = Instant::now();
    let creators: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let b = bundle_for(work.path(), i + 1)?;
            let out = std::fs::File::create(work.path().join(format!("{id}.out")))
                .map_err(|e| e.to_string())?;
            let err = std::fs::File::create(work.path().join(format!("{id}.err")))
                .map_err(|e| e.to_string())?;
            // info: hako-vmm logs that it restored a snapshot (into the sandbox's vmm.log).
            hako.cmd(&["create", "--bundle", &b.display().to_string(), id])
                .env("HAKO_LOG", "info")
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| format!("hako create {id}: {e}"))
        })
        .collect::<Result<_, String>>()?;
    for (mut c, id) in creators.into_iter().zip(ids) {
        let status = c.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            let err =
                std::fs::read_to_string(work.path().join(format!("{id}.err"))).unwrap_or_default();
            return Err(format!("hako create {id}: {status}: {err}").into());
        }
    }
    eprintln!(
        "two sandboxes created from the template in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let cids: Vec<u64> = ids
        .iter()
        .map(|id| {
            let path = hako.root.path().join(id).join("vm").join("vm.json");
            let v: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
            )
            .map_err(|e| e.to_string())?;
            v.pointer("/devices/vsock/guest_cid")
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| format!("no vsock CID in {}", path.display()))
        })
        .collect::<Result<_, String>>()?;
    for id in ids {
        let path = hako.root.path().join(id).join("vm").join("vmm.log");
        let log = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !log.contains("restored from a snapshot") {
            return Err(format!("{id}'s VMM did not resume the template: {log}").into());
        }
    }
    if cids[0] == cids[1] {
        return Err(format!("both sandboxes have vsock CID {}", cids[0]).into());
    }
    for id in ids {
        hako.ok(&["start", id])?;
    }
    let mut reports = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        hako.wait_stopped(id)?;
        let out = std::fs::read_to_string(work.path().join(format!("{id}.out")))
            .map_err(|e| e.to_string())?;
        eprintln!("{id}: {out:?}");
        let r = parse(&out).ok_or_else(|| format!("{id} printed {out:?}"))?;
        if r.host != format!("from-template-{}", i + 1) || r.rand.len() != 32 {
            return Err(format!("{id} reported {r:?}").into());
        }
        reports.push(r);
    }
    for id in ids {
        hako.ok(&["delete", id])?;
    }
    if reports[0].rand == reports[1].rand {
        return Err(format!(
            "both guests drew the same random bytes {}: their RNGs were not reseeded",
            reports[0].rand
        )
        .into());
    }
    let left: Vec<_> = std::fs::read_dir(hako.root.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if !left.is_empty() {
        return Err(format!("delete left {left:?} in the root").into());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounts.contains(&*hako.root.path().to_string_lossy()) {
        return Err("delete left a mount".into());
    }
    Ok(())
}

/// A template whose memory file was written to is removed, the sandbox boots cold instead, and
/// (`auto_create`) a new template is built in the background.
fn a_tampered_template_is_never_used_and_is_rebuilt() -> Result<(), Failed> {
    let bin = fixtures::workspace_binary("hako")?;
    let kernel = fixtures::kernel().map_err(|s| Failed::from(s.to_string()))?;
    let image = fixtures::agent_image()?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = fixtures::template_store();
    let config = work.path().join("hako.toml");
    std::fs::write(
        &config,
        format!(
            "[vm]\nkernel = {kernel:?}\nimage = {image:?}\n\
             [template]\nenabled = true\nauto_create = true\ndir = {store:?}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let template = fixtures::ensure_template(&bin, &config)?;
    let hako = Hako::new(bin, config)?;
    let manifest_of = |dir: &Path| std::fs::read_to_string(dir.join("manifest.json")).ok();
    let before = manifest_of(&template).unwrap_or_default();
    let memory = std::fs::OpenOptions::new()
        .write(true)
        .open(template.join("memory"))
        .map_err(|e| e.to_string())?;
    std::os::unix::fs::FileExt::write_all_at(&memory, b"evil", 4096).map_err(|e| e.to_string())?;
    drop(memory);

    let id = "tpl-3";
    let b = bundle_for(work.path(), 3)?;
    let out = std::fs::File::create(work.path().join("tpl-3.out")).map_err(|e| e.to_string())?;
    let err_path = work.path().join("tpl-3.err");
    let err = std::fs::File::create(&err_path).map_err(|e| e.to_string())?;
    // Files, not pipes: the container's monitor keeps its stdio open until it is deleted.
    let status = hako
        .cmd(&["create", "--bundle", &b.display().to_string(), id])
        .env("HAKO_LOG", "info")
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        return Err(format!("hako create {id}: {status}: {err}").into());
    }
    let log = std::fs::read_to_string(hako.root.path().join(id).join("vm").join("vmm.log"))
        .map_err(|e| e.to_string())?;
    if log.contains("restored from a snapshot") {
        return Err("the sandbox resumed a tampered template".into());
    }
    hako.ok(&["start", id])?;
    hako.wait_stopped(id)?;
    let out = std::fs::read_to_string(work.path().join("tpl-3.out")).map_err(|e| e.to_string())?;
    if !out.contains("host=from-template-3") {
        return Err(format!("{id} printed {out:?}").into());
    }
    // The background build: a new manifest (made after the tampering), no build left over.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let building = std::fs::read_dir(&store)
            .map_err(|e| e.to_string())?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".build-"));
        match manifest_of(&template) {
            Some(m) if m != before && !building => break,
            _ if Instant::now() > deadline => {
                let log = std::fs::read_to_string(store.join(".build.log")).unwrap_or_default();
                return Err(format!("no template was rebuilt; build log: {log}").into());
            }
            _ => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    hako.ok(&["delete", id])?;
    Ok(())
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::kvm()?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let trials = vec![
        require::trial(
            "templates_two_sandboxes_resume_one_template",
            prerequisites,
            two_sandboxes_from_one_template,
        ),
        require::trial(
            "templates_a_tampered_one_is_never_used_and_is_rebuilt",
            prerequisites,
            a_tampered_template_is_never_used_and_is_rebuilt,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
