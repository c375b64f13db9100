//! Prerequisites. A test whose prerequisite is missing is reported as ignored with the reason
//! printed, never as passed.

use std::path::Path;

/// Why a test cannot run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// /dev/kvm exists and opens read-write.
pub fn kvm() -> Result<(), Skip> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| Skip(format!("/dev/kvm is not usable: {e}")))
}

/// The test runs as root (effective uid 0, from /proc/self/status).
pub fn root() -> Result<(), Skip> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1));
    if euid == Some("0") {
        Ok(())
    } else {
        Err(Skip("needs root (mount namespaces and mounts)".into()))
    }
}

/// A program is on PATH (or an absolute path exists).
pub fn program(name: &str) -> Result<(), Skip> {
    if Path::new(name).is_absolute() {
        return if Path::new(name).exists() {
            Ok(())
        } else {
            Err(Skip(format!("{name} is missing")))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join(name).is_file()) {
        Ok(())
    } else {
        Err(Skip(format!("{name} is not installed")))
    }
}

/// Builds a libtest-mimic trial that is ignored, with its reason printed, when `check` fails.
pub fn trial(
    name: &str,
    check: impl FnOnce() -> Result<(), Skip>,
    test: impl FnOnce() -> Result<(), libtest_mimic::Failed> + Send + 'static,
) -> libtest_mimic::Trial {
    match check() {
        Ok(()) => libtest_mimic::Trial::test(name, test),
        Err(skip) => {
            eprintln!("SKIP {name}: {skip}");
            // Ignored by default; run anyway (--include-ignored), it fails with the reason.
            libtest_mimic::Trial::test(name, move || {
                Err(libtest_mimic::Failed::from(format!("skipped: {skip}")))
            })
            .with_ignored_flag(true)
        }
    }
}

/// The `main` of a suite with one trial: parses the test arguments, runs it, exits.
pub fn run_one(
    name: &str,
    check: impl FnOnce() -> Result<(), Skip>,
    test: impl FnOnce() -> Result<(), libtest_mimic::Failed> + Send + 'static,
) -> ! {
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, vec![trial(name, check, test)]).exit()
}
