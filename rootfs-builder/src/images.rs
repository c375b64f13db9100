//! The two images Hako builds: the agent initramfs (the real guest) and the probe image that
//! VM tests boot (busybox, a guest test program and an `/init` that prints markers).

use std::path::Path;

use crate::manifest::{Manifest, ManifestError};

/// Marker the probe image's `/init` prints first.
pub const PROBE_INIT_MARKER: &str = "HAKO-PROBE: init running";
/// Prefix of the probe image's last line, followed by the test program's exit status.
pub const PROBE_DONE_MARKER: &str = "HAKO-PROBE: done status=";
/// Where the probe image holds the guest test program.
pub const PROBE_PROGRAM_PATH: &str = "/bin/hako-guest-probe";

/// Device nodes the kernel needs before anything mounts devtmpfs (the initial console).
fn add_early_devices(m: &mut Manifest) -> Result<(), ManifestError> {
    m.char_dev("/dev/console", 0o600, 5, 1)?;
    m.char_dev("/dev/null", 0o666, 1, 3)?;
    Ok(())
}

/// The agent image: `/init` is the (static) agent, plus the directories it mounts onto.
pub fn agent_image(agent: &Path) -> Result<Manifest, ManifestError> {
    let mut m = Manifest::new();
    for dir in hako_agent_api::GUEST_IMAGE_DIRS {
        m.dir(
            &format!("/{dir}"),
            if *dir == "tmp" { 0o1777 } else { 0o755 },
        )?;
    }
    add_early_devices(&mut m)?;
    m.static_binary("/init", agent)?;
    Ok(m)
}

/// Kernel argument that makes the probe image power off instead of rebooting when done.
pub const PROBE_POWEROFF_ARG: &str = "hako.end=poweroff";

/// The `/init` script of the probe image. Every command costs about a second where guest
/// kernel mode is emulated, so it does little besides running the test program; it reads the
/// command line with the shell's own `read` (no fork) to choose reboot or poweroff.
pub fn probe_init_script() -> String {
    format!(
        "#!/bin/busybox sh\n\
         echo '{PROBE_INIT_MARKER}'\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t sysfs sysfs /sys\n\
         /bin/busybox mount -t devtmpfs dev /dev\n\
         {PROBE_PROGRAM_PATH}\n\
         echo \"{PROBE_DONE_MARKER}$?\"\n\
         read -r cmdline < /proc/cmdline\n\
         case \" $cmdline \" in\n\
         *' {PROBE_POWEROFF_ARG} '*) /bin/busybox poweroff -f ;;\n\
         *) /bin/busybox reboot -f ;;\n\
         esac\n"
    )
}

/// The probe image: static busybox, the guest test program and the marker-printing `/init`.
pub fn probe_image(busybox: &Path, program: &Path) -> Result<Manifest, ManifestError> {
    let mut m = Manifest::new();
    for dir in ["/proc", "/sys", "/dev", "/etc"] {
        m.dir(dir, 0o755)?;
    }
    m.dir("/tmp", 0o1777)?;
    add_early_devices(&mut m)?;
    m.static_binary("/bin/busybox", busybox)?;
    m.symlink("/bin/sh", "busybox")?;
    m.static_binary(PROBE_PROGRAM_PATH, program)?;
    m.file("/init", 0o755, probe_init_script().into_bytes())?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_init_prints_both_markers_and_reboots() {
        let s = probe_init_script();
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        assert!(s.contains(PROBE_INIT_MARKER));
        assert!(s.contains(PROBE_DONE_MARKER));
        assert!(s.contains("reboot -f ;;"));
        assert!(s.contains(&format!(
            "' {PROBE_POWEROFF_ARG} '*) /bin/busybox poweroff -f"
        )));
    }

    #[test]
    fn agent_image_refuses_a_dynamic_agent() {
        let err = agent_image(Path::new("/bin/ls")).unwrap_err();
        assert!(matches!(err, ManifestError::Dynamic { .. }), "{err}");
    }

    #[test]
    fn probe_image_holds_busybox_program_and_init() {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "busybox-static is not installed: scripts/setup.sh installs it"
        );
        // busybox is static, so it can stand in for the test program here.
        let m = probe_image(busybox, busybox).unwrap();
        let paths: Vec<_> = m.entries().map(|(p, _)| p.to_string()).collect();
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/hako-guest-probe",
            "init",
            "dev/console",
            "tmp",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing from {paths:?}"
            );
        }
    }
}
