//! `hako check`: runs `hako-vmm probe` and turns its report into verdict lines a person can
//! act on, plus `--json` for machines. Exit 0 when sandboxes can run on this host.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hako_vmm_api::{
    GuestProbe, KVM_API_VERSION, KvmAccess, ProbeReport, SyscallOutcome, UserNamespaceProbe,
};

use crate::config::{Config, UserNamespaceMode};
use serde::Serialize;

/// Guest kernel code slower than guest user code by more than this factor is emulated.
const EMULATED_SLOWDOWN: f64 = 50.0;
/// How long the probe may take before it is killed (a guest that never reports).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print one JSON object instead of verdict lines.
    #[arg(long)]
    pub json: bool,
    /// The hako-vmm binary (default: $HAKO_VMM, then next to `hako`, then $PATH).
    #[arg(long)]
    pub vmm: Option<PathBuf>,
    /// The KVM device to probe.
    #[arg(long, default_value = "/dev/kvm")]
    pub device: PathBuf,
}

/// How a verdict line is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Info,
    Warn,
    Fail,
}

/// One finding: what was checked, how it went, and in plain words what it means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
}

/// Whether guest kernel code runs on the CPU or through the host's instruction emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelMode {
    Native,
    Emulated,
    Unknown,
}

/// The whole verdict (this is what `--json` prints).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub can_run: bool,
    pub kernel_mode: KernelMode,
    /// None when the probe guest could not run.
    pub syscall_enters_kernel: Option<bool>,
    /// Guests need Hako's patched guest kernel (guest-kernel-config/patches).
    pub needs_patched_guest_kernel: bool,
    /// The CPU profile hako-vmm should use by default here.
    pub cpu_profile: &'static str,
    pub summary: String,
    pub findings: Vec<Finding>,
    pub probe: ProbeReport,
}

fn finding(check: &'static str, status: Status, detail: impl Into<String>) -> Finding {
    Finding {
        check,
        status,
        detail: detail.into(),
    }
}

fn kernel_mode(report: &ProbeReport, guest: Option<&GuestProbe>) -> KernelMode {
    match guest {
        Some(g) if g.kernel_slowdown() >= EMULATED_SLOWDOWN => KernelMode::Emulated,
        Some(_) => KernelMode::Native,
        None if report.kvm_modules.iter().any(|m| m == "kvm_pvm") => KernelMode::Emulated,
        None => KernelMode::Unknown,
    }
}

/// Turns a probe report into the verdict, for the default `[vm] user_namespace`.
pub fn assess(report: ProbeReport) -> Verdict {
    assess_for(report, UserNamespaceMode::Auto)
}

/// Turns a probe report into the verdict for a runtime whose `[vm] user_namespace` is
/// `mode`. Pure, so every branch is unit-tested.
pub fn assess_for(report: ProbeReport, mode_config: UserNamespaceMode) -> Verdict {
    let mut findings = Vec::new();
    let mut blocked = false;
    let dev = &report.kvm_device;

    match &report.access {
        KvmAccess::Ok => findings.push(finding(
            "kvm_device",
            Status::Ok,
            format!("{dev} opens read-write"),
        )),
        KvmAccess::Missing => {
            blocked = true;
            findings.push(finding(
                "kvm_device",
                Status::Fail,
                format!("{dev} does not exist: enable virtualization (VT-x/AMD-V or nested) and load kvm_intel or kvm_amd"),
            ));
        }
        KvmAccess::PermissionDenied => {
            blocked = true;
            findings.push(finding(
                "kvm_device",
                Status::Fail,
                format!("{dev} exists but this user may not open it: run as root or join the group that owns it"),
            ));
        }
        KvmAccess::Error(e) => {
            blocked = true;
            findings.push(finding(
                "kvm_device",
                Status::Fail,
                format!("{dev} cannot be used: {e}"),
            ));
        }
    }

    if let Some(v) = report.api_version {
        if v == KVM_API_VERSION {
            findings.push(finding(
                "kvm_api",
                Status::Ok,
                format!("KVM API version {v}"),
            ));
        } else {
            blocked = true;
            findings.push(finding(
                "kvm_api",
                Status::Fail,
                format!("KVM API version {v}, expected {KVM_API_VERSION}"),
            ));
        }
    }

    let module_detail = match report.kvm_modules.as_slice() {
        [] => "no kvm_intel, kvm_amd or kvm_pvm module found under /sys/module (built in, or KVM is absent)".to_string(),
        mods if mods.iter().any(|m| m == "kvm_pvm") => format!(
            "KVM is served by {}: a KVM built on PVM, which runs guest user code on the CPU and emulates guest kernel code",
            mods.join(", ")
        ),
        mods => format!("KVM is served by {}", mods.join(", ")),
    };
    findings.push(finding("kvm_module", Status::Info, module_detail));

    if !report.capabilities.is_empty() {
        let missing_required: Vec<&str> = report
            .capabilities
            .iter()
            .filter(|c| c.required && !c.present)
            .map(|c| c.name.as_str())
            .collect();
        let missing_optional: Vec<&str> = report
            .capabilities
            .iter()
            .filter(|c| !c.required && !c.present)
            .map(|c| c.name.as_str())
            .collect();
        if missing_required.is_empty() {
            let n = report.capabilities.iter().filter(|c| c.required).count();
            findings.push(finding(
                "kvm_capabilities",
                Status::Ok,
                format!("all {n} capabilities hako-vmm needs are present"),
            ));
        } else {
            blocked = true;
            findings.push(finding(
                "kvm_capabilities",
                Status::Fail,
                format!(
                    "KVM lacks capabilities hako-vmm needs: {}",
                    missing_required.join(", ")
                ),
            ));
        }
        if !missing_optional.is_empty() {
            findings.push(finding(
                "kvm_optional_capabilities",
                Status::Warn,
                format!(
                    "optional capabilities missing (some features degrade): {}",
                    missing_optional.join(", ")
                ),
            ));
        }
    }

    match report.tsc_deadline_timer {
        Some(true) => findings.push(finding(
            "tsc_deadline_timer",
            Status::Ok,
            "the TSC-deadline timer can be offered to guests",
        )),
        Some(false) => {
            blocked = true;
            findings.push(finding(
                "tsc_deadline_timer",
                Status::Fail,
                "KVM cannot offer the TSC-deadline timer: where guest kernel mode is emulated, guest timers then never fire",
            ));
        }
        None => {}
    }

    let guest = report.guest.as_ref();
    let mode = kernel_mode(&report, guest);
    let mut syscall_enters_kernel = None;
    let mut needs_patched = false;
    match (guest, &report.guest_error) {
        (Some(g), _) => {
            let slowdown = g.kernel_slowdown();
            match mode {
                KernelMode::Emulated => findings.push(finding(
                    "guest_kernel_mode",
                    Status::Warn,
                    format!(
                        "guest kernel mode is emulated on this host: guest kernel code ran {slowdown:.0}x slower than guest user code \
                         ({:.0} ns vs {:.2} ns per loop iteration). Guests run, but slowly: expect tens of seconds to boot \
                         and about a second per guest command",
                        g.kernel_loop_ns_per_iter, g.user_loop_ns_per_iter
                    ),
                )),
                _ => findings.push(finding(
                    "guest_kernel_mode",
                    Status::Ok,
                    format!("guest kernel code runs natively ({slowdown:.1}x guest user code)"),
                )),
            }
            match &g.syscall {
                SyscallOutcome::EnteredKernel => {
                    syscall_enters_kernel = Some(true);
                    findings.push(finding(
                        "guest_syscall",
                        Status::Ok,
                        "a guest `syscall` enters guest kernel mode",
                    ));
                }
                SyscallOutcome::FaultedAtEntryInUserMode {
                    rcx_is_return_address,
                    ..
                } => {
                    syscall_enters_kernel = Some(false);
                    needs_patched = true;
                    let regs = if *rcx_is_return_address {
                        "with RCX holding the return address, as SYSCALL sets it"
                    } else {
                        "but RCX is not the return address"
                    };
                    findings.push(finding(
                        "guest_syscall",
                        Status::Warn,
                        format!(
                            "a guest `syscall` does not enter guest kernel mode here: the CPU jumps to the kernel's SYSCALL entry \
                             still in user mode and page-faults there ({regs}). Guests need Hako's guest kernel, whose \
                             compatibility patches finish that fault as a system call (guest-kernel-config/patches); \
                             a stock kernel fails at its first system call"
                        ),
                    ));
                }
                SyscallOutcome::Unexpected { detail } => {
                    blocked = true;
                    findings.push(finding(
                        "guest_syscall",
                        Status::Fail,
                        format!("a guest `syscall` went wrong: {detail}"),
                    ));
                }
            }
        }
        (None, Some(e)) => {
            blocked = true;
            findings.push(finding(
                "guest_probe",
                Status::Fail,
                format!("the probe guest could not run: {e}"),
            ));
        }
        (None, None) => {}
    }

    if let Some(userns) = &report.user_namespace {
        let (f, blocks) = user_namespace_finding(userns, mode_config);
        blocked |= blocks;
        findings.push(f);
    }

    let cpu_profile = if mode == KernelMode::Emulated {
        "conservative"
    } else {
        "host"
    };
    if report.access == KvmAccess::Ok {
        findings.push(finding(
            "cpu_profile",
            Status::Info,
            match mode {
                KernelMode::Emulated => "hako-vmm will use the `conservative` CPU profile (hides CPU features the host cannot emulate in guest kernel mode)",
                _ => "hako-vmm will use the `host` CPU profile",
            },
        ));
    }

    let can_run = !blocked && report.access == KvmAccess::Ok && guest.is_some();
    let summary = match (can_run, mode, needs_patched) {
        (false, _, _) => "Hako sandboxes cannot run on this host (see the failed checks above).".to_string(),
        (true, KernelMode::Emulated, true) => "Hako sandboxes can run on this host, slowly: guest kernel mode is emulated, and guests need Hako's patched guest kernel.".to_string(),
        (true, KernelMode::Emulated, false) => "Hako sandboxes can run on this host, slowly: guest kernel mode is emulated.".to_string(),
        (true, _, true) => "Hako sandboxes can run on this host with Hako's patched guest kernel.".to_string(),
        (true, _, false) => "Hako sandboxes can run on this host.".to_string(),
    };
    Verdict {
        can_run,
        kernel_mode: mode,
        syscall_enters_kernel,
        needs_patched_guest_kernel: needs_patched,
        cpu_profile,
        summary,
        findings,
        probe: report,
    }
}

/// What the user-namespace probe means under the configured mode, and whether it stops
/// sandboxes from starting.
fn user_namespace_finding(p: &UserNamespaceProbe, mode: UserNamespaceMode) -> (Finding, bool) {
    let check = "user_namespace";
    match (&p.error, mode) {
        (_, UserNamespaceMode::Off) => (
            finding(
                check,
                Status::Info,
                "sandboxes' hako-vmm runs as uid 0 in its jail ([vm] user_namespace = \"off\")",
            ),
            false,
        ),
        (None, _) => (
            finding(
                check,
                Status::Ok,
                format!(
                    "each sandbox's hako-vmm runs as an unprivileged host uid (a user namespace \
                     and id-mapped binds work here, {} included)",
                    p.path
                ),
            ),
            false,
        ),
        (Some(e), UserNamespaceMode::Auto) => (
            finding(
                check,
                Status::Warn,
                format!(
                    "hako-vmm cannot run as an unprivileged uid here ({e}); with [vm] \
                     user_namespace = \"auto\" it runs as uid 0 in its jail"
                ),
            ),
            false,
        ),
        (Some(e), UserNamespaceMode::Required) => (
            finding(
                check,
                Status::Fail,
                format!(
                    "hako-vmm cannot run as an unprivileged uid here ({e}), and [vm] \
                     user_namespace = \"required\": sandboxes will not start"
                ),
            ),
            true,
        ),
    }
}

/// Renders the verdict as lines for a person.
pub fn render(verdict: &Verdict) -> String {
    let mut out = String::new();
    for f in &verdict.findings {
        let tag = match f.status {
            Status::Ok => "ok  ",
            Status::Info => "info",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("[{tag}] {}: {}\n", f.check, f.detail));
    }
    out.push_str(&format!("\n{}\n", verdict.summary));
    out
}

/// Runs `hako-vmm probe` with a deadline and parses its report; with `idmap_path`, it also
/// tries a user namespace and an id-mapped bind of that path.
fn run_probe(vmm: &Path, device: &Path, idmap_path: Option<&Path>) -> anyhow::Result<ProbeReport> {
    let mut cmd = Command::new(vmm);
    cmd.arg("probe").arg("--device").arg(device);
    if let Some(p) = idmap_path {
        cmd.arg("--idmap-path").arg(p);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", vmm.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for hako-vmm probe")? {
            break status;
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} probe did not finish within {:?} (a probe guest that never reported)",
                vmm.display(),
                PROBE_TIMEOUT
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut json = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_string(&mut json)
            .context("reading hako-vmm probe output")?;
    }
    if !status.success() {
        bail!("{} probe failed with {status}", vmm.display());
    }
    serde_json::from_str(&json)
        .with_context(|| format!("parsing the report of {} probe", vmm.display()))
}

pub fn run(args: &CheckArgs) -> anyhow::Result<u8> {
    let vmm = crate::backend::find_vmm(args.vmm.as_deref())?;
    let config = Config::load()?;
    // The state root (or where it will be made) holds the sandboxes' shares: the bind most
    // likely to be on a file system without id-mapped mounts (tmpfs before Linux 6.3).
    let idmap_path = (config.vm.jail && config.vm.user_namespace != UserNamespaceMode::Off)
        .then(|| existing_ancestor(&config.runtime.root));
    let report = run_probe(&vmm, &args.device, idmap_path.as_deref())?;
    let verdict = assess_for(report, config.vm.user_namespace);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&verdict).context("encoding the verdict")?
        );
    } else {
        print!("{}", render(&verdict));
    }
    Ok(if verdict.can_run { 0 } else { 1 })
}

/// `path`, or its nearest ancestor that exists.
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hako_vmm_api::CapabilityCheck;

    fn report(guest: Option<GuestProbe>, modules: &[&str]) -> ProbeReport {
        ProbeReport {
            kvm_device: "/dev/kvm".into(),
            access: KvmAccess::Ok,
            api_version: Some(12),
            kvm_modules: modules.iter().map(|m| m.to_string()).collect(),
            capabilities: vec![
                CapabilityCheck {
                    name: "irqchip".into(),
                    present: true,
                    required: true,
                },
                CapabilityCheck {
                    name: "xsave".into(),
                    present: true,
                    required: false,
                },
            ],
            tsc_deadline_timer: Some(true),
            guest,
            guest_error: None,
            user_namespace: None,
        }
    }

    fn pvm_guest() -> GuestProbe {
        GuestProbe {
            kernel_loop_ns_per_iter: 1500.0,
            user_loop_ns_per_iter: 0.4,
            syscall: SyscallOutcome::FaultedAtEntryInUserMode {
                error_code: 5,
                rcx_is_return_address: true,
            },
        }
    }

    fn status_of(v: &Verdict, check: &str) -> Status {
        v.findings
            .iter()
            .find(|f| f.check == check)
            .map(|f| f.status)
            .unwrap_or_else(|| panic!("no {check} finding"))
    }

    #[test]
    fn pvm_host_runs_slowly_and_needs_patched_kernel() {
        let v = assess(report(Some(pvm_guest()), &["kvm_pvm"]));
        assert!(v.can_run);
        assert_eq!(v.kernel_mode, KernelMode::Emulated);
        assert_eq!(v.syscall_enters_kernel, Some(false));
        assert!(v.needs_patched_guest_kernel);
        assert_eq!(v.cpu_profile, "conservative");
        let text = render(&v);
        assert!(text.contains("guest kernel mode is emulated"), "{text}");
        assert!(text.contains("does not enter guest kernel mode"), "{text}");
        assert!(text.contains("compatibility patches"), "{text}");
        assert!(text.contains("kvm_pvm"), "{text}");
    }

    #[test]
    fn native_host_is_plainly_fine() {
        let guest = GuestProbe {
            kernel_loop_ns_per_iter: 0.4,
            user_loop_ns_per_iter: 0.35,
            syscall: SyscallOutcome::EnteredKernel,
        };
        let v = assess(report(Some(guest), &["kvm_intel"]));
        assert!(v.can_run);
        assert_eq!(v.kernel_mode, KernelMode::Native);
        assert!(!v.needs_patched_guest_kernel);
        assert_eq!(v.cpu_profile, "host");
        assert_eq!(v.summary, "Hako sandboxes can run on this host.");
        assert!(
            v.findings
                .iter()
                .all(|f| f.status != Status::Warn && f.status != Status::Fail)
        );
    }

    #[test]
    fn the_user_namespace_verdict_follows_the_configured_mode() {
        let with = |error: Option<&str>| {
            let mut r = report(Some(pvm_guest()), &["kvm_pvm"]);
            r.user_namespace = Some(UserNamespaceProbe {
                path: "/run/hako".into(),
                error: error.map(str::to_owned),
            });
            r
        };
        let v = assess_for(with(None), UserNamespaceMode::Auto);
        assert!(v.can_run);
        assert_eq!(status_of(&v, "user_namespace"), Status::Ok);
        assert!(render(&v).contains("unprivileged host uid"));
        let why = Some("id-mapped mounts: Invalid argument");
        let v = assess_for(with(why), UserNamespaceMode::Auto);
        assert!(v.can_run);
        assert_eq!(status_of(&v, "user_namespace"), Status::Warn);
        assert!(render(&v).contains("runs as uid 0"));
        let v = assess_for(with(why), UserNamespaceMode::Required);
        assert!(!v.can_run);
        assert_eq!(status_of(&v, "user_namespace"), Status::Fail);
        let v = assess_for(with(why), UserNamespaceMode::Off);
        assert!(v.can_run);
        assert_eq!(status_of(&v, "user_namespace"), Status::Info);
        // Not asked: no finding.
        let v = assess(report(Some(pvm_guest()), &["kvm_pvm"]));
        assert!(v.findings.iter().all(|f| f.check != "user_namespace"));
    }

    #[test]
    fn missing_or_forbidden_device_blocks() {
        for access in [KvmAccess::Missing, KvmAccess::PermissionDenied] {
            let mut r = report(None, &[]);
            r.access = access;
            r.api_version = None;
            r.capabilities.clear();
            r.tsc_deadline_timer = None;
            let v = assess(r);
            assert!(!v.can_run);
            assert_eq!(status_of(&v, "kvm_device"), Status::Fail);
            assert!(v.summary.contains("cannot run"));
        }
    }

    #[test]
    fn missing_required_capability_or_timer_blocks_and_is_named() {
        let mut r = report(Some(pvm_guest()), &["kvm_pvm"]);
        r.capabilities[0].present = false;
        let v = assess(r);
        assert!(!v.can_run);
        assert!(render(&v).contains("irqchip"));

        let mut r = report(Some(pvm_guest()), &["kvm_pvm"]);
        r.capabilities[1].present = false; // optional: only a warning
        r.tsc_deadline_timer = Some(false);
        let v = assess(r);
        assert!(!v.can_run);
        assert_eq!(status_of(&v, "kvm_optional_capabilities"), Status::Warn);
        assert_eq!(status_of(&v, "tsc_deadline_timer"), Status::Fail);
    }

    #[test]
    fn broken_probe_guest_blocks() {
        let mut r = report(None, &["kvm_intel"]);
        r.guest_error = Some("KVM internal error".into());
        let v = assess(r);
        assert!(!v.can_run);
        assert_eq!(status_of(&v, "guest_probe"), Status::Fail);

        let mut g = pvm_guest();
        g.syscall = SyscallOutcome::Unexpected {
            detail: "exception vector 13".into(),
        };
        let v = assess(report(Some(g), &["kvm_intel"]));
        assert!(!v.can_run);
        assert_eq!(status_of(&v, "guest_syscall"), Status::Fail);
    }

    #[test]
    fn slowdown_alone_marks_kernel_mode_emulated() {
        let mut g = pvm_guest();
        g.syscall = SyscallOutcome::EnteredKernel;
        let v = assess(report(Some(g), &["kvm_intel"]));
        assert_eq!(v.kernel_mode, KernelMode::Emulated);
        assert!(v.can_run);
        assert!(v.summary.contains("slowly"));
    }

    #[test]
    fn json_names_the_verdict_fields() {
        let v = assess(report(Some(pvm_guest()), &["kvm_pvm"]));
        let json: serde_json::Value = serde_json::to_value(&v).unwrap();
        assert_eq!(json["can_run"], true);
        assert_eq!(json["kernel_mode"], "emulated");
        assert_eq!(json["syscall_enters_kernel"], false);
        assert_eq!(json["probe"]["kvm_modules"][0], "kvm_pvm");
    }
}
