//! `hako-bench-guest-profile PID [SECONDS] [TOP]` (defaults 10 and 30): where a running guest's
//! kernel time goes, on a host that emulates guest kernel mode (KVM PVM). Never asserts.
//!
//! There every guest kernel instruction goes through KVM's instruction emulator, which fires
//! the `kvm:kvm_emulate_insn` tracepoint with the guest RIP. `perf record` takes every such
//! event of hako-vmm `PID` for SECONDS; each RIP is mapped to its kernel function through the
//! guest kernel's System.map (beside the vmlinux that fixtures::kernel() finds). Prints the
//! instruction count (the guest's kernel time: about 1.7 µs each here), the share and count
//! per function, and the timer interrupts: how many, and what share of all instructions ran
//! between their entry and `irqentry_exit` (the tick's cost), and the kernel entries from user
//! mode (here system calls also arrive through `asm_exc_page_fault`: guest-kernel-config's
//! patch 0003) named by the `__x64_sys_*` function they run, or `page fault`, each counted to
//! the next entry. On a host where guest kernel code runs natively nothing is emulated and
//! the count is zero.
//!
//! Needs root and perf (linux-perf).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use hako_tests::fixtures;

/// The guest's text symbols, sorted by address.
struct SymbolMap {
    addrs: Vec<u64>,
    names: Vec<String>,
}

impl SymbolMap {
    fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                matches!(kind, "t" | "T" | "w" | "W").then(|| (addr, name.to_owned()))
            })
            .collect();
        syms.sort();
        let (addrs, names) = syms.into_iter().unzip();
        Ok(Self { addrs, names })
    }

    /// The address of function `name`.
    fn address_of(&self, name: &str) -> Option<u64> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.addrs[i])
    }

    fn function(&self, rip: u64) -> &str {
        match self.addrs.partition_point(|&a| a <= rip) {
            0 => "?",
            i => &self.names[i - 1],
        }
    }
}

/// The guest RIP of one `kvm_emulate_insn` line of `perf script -F trace`
/// (`0:ffffffff81400c70:0f 1f 00 (prot64)`: cs base, RIP, bytes).
fn rip_of(line: &str) -> Option<u64> {
    let mut parts = line.trim().split(':');
    parts.next()?;
    u64::from_str_radix(parts.next()?, 16).ok()
}

/// Per-function counts, the timer interrupts' count and instructions, and the kernel entries
/// from user mode (system calls by name, page faults) with their instructions.
#[derive(Default)]
struct Profile {
    total: u64,
    per_function: HashMap<String, u64>,
    timer_interrupts: u64,
    in_timer_interrupts: u64,
    /// Entry kind (a system call's name, `page fault`, `other entry`) → (entries, instructions).
    per_entry: HashMap<String, (u64, u64)>,
    /// Entry kind → function → instructions in entries of that kind.
    per_entry_function: HashMap<String, HashMap<String, u64>>,
}

/// A kernel entry from user mode being counted: its kind so far, its instructions, and its
/// functions.
type OpenEntry = (String, u64, HashMap<String, u64>);

/// What one kernel entry (from `asm_exc_page_fault`, through which this host delivers user
/// system calls too) turns out to be, from the functions it runs.
fn entry_kind(current: &str, f: &str) -> Option<String> {
    if current != OTHER_ENTRY {
        return None;
    }
    if let Some(name) = ["__x64_sys_", "__do_sys_", "__se_sys_"]
        .iter()
        .find_map(|p| f.strip_prefix(p))
    {
        return Some(name.to_owned());
    }
    (f == "handle_mm_fault").then(|| PAGE_FAULT.to_owned())
}

const OTHER_ENTRY: &str = "other entry";
/// How many of the costliest entry kinds get their functions listed, and how many each.
const ENTRIES_DETAILED: usize = 6;
const FUNCTIONS_PER_ENTRY: usize = 12;
const PAGE_FAULT: &str = "page fault";

impl Profile {
    fn add_all(&mut self, map: &SymbolMap, lines: impl Iterator<Item = String>) {
        // An interrupt starts at the entry stub's first instruction (the stub's own return
        // path, after the handler, is in the same symbol) and its work ends at irqentry_exit.
        let entry = map.address_of("asm_sysvec_apic_timer_interrupt");
        // A user entry (fault or system call) lasts until the next one; timer interrupts
        // inside it are counted apart.
        let fault = map.address_of("asm_exc_page_fault");
        let mut in_timer = false;
        let mut current: Option<OpenEntry> = None;
        for line in lines {
            let Some(rip) = rip_of(&line) else { continue };
            let f = map.function(rip);
            self.total += 1;
            *self.per_function.entry(f.to_owned()).or_insert(0) += 1;
            if Some(rip) == entry {
                in_timer = true;
                self.timer_interrupts += 1;
            } else if in_timer && f.starts_with("irqentry_exit") {
                in_timer = false;
            }
            if in_timer {
                self.in_timer_interrupts += 1;
                continue;
            }
            if Some(rip) == fault {
                self.close_entry(current.take());
                current = Some((OTHER_ENTRY.to_owned(), 0, HashMap::new()));
            }
            if let Some((kind, n, functions)) = &mut current {
                if let Some(k) = entry_kind(kind, f) {
                    *kind = k;
                }
                *n += 1;
                *functions.entry(f.to_owned()).or_insert(0) += 1;
            }
        }
        self.close_entry(current);
    }

    fn close_entry(&mut self, entry: Option<OpenEntry>) {
        if let Some((kind, n, functions)) = entry {
            let into = self.per_entry_function.entry(kind.clone()).or_default();
            for (f, c) in functions {
                *into.entry(f).or_insert(0) += c;
            }
            let e = self.per_entry.entry(kind).or_insert((0, 0));
            e.0 += 1;
            e.1 += n;
        }
    }

    fn print(&self, seconds: f64, top: usize) {
        let share = |n: u64| n as f64 * 100.0 / self.total.max(1) as f64;
        println!(
            "{} emulated guest kernel instructions in {seconds} s ({:.0} a second)",
            self.total,
            self.total as f64 / seconds
        );
        println!(
            "timer interrupts: {} ({:.1} a second), {:.1} % of the instructions, {:.0} each",
            self.timer_interrupts,
            self.timer_interrupts as f64 / seconds,
            share(self.in_timer_interrupts),
            self.in_timer_interrupts as f64 / self.timer_interrupts.max(1) as f64
        );
        let mut kinds: Vec<_> = self.per_entry.iter().collect();
        kinds.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
        println!("\nkernel entries from user mode (until the next one; timer interrupts apart)");
        println!("{:>7} {:>8} {:>10}  entry", "share", "entries", "each");
        for (kind, (count, n)) in kinds.iter().take(top) {
            println!(
                "{:>6.2}% {:>8} {:>10.0}  {kind}",
                share(*n),
                count,
                *n as f64 / (*count).max(1) as f64
            );
        }
        for (kind, _) in kinds.into_iter().take(ENTRIES_DETAILED) {
            println!("\n  {kind}: its functions");
            let mut v: Vec<_> = self.per_entry_function[kind].iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (f, n) in v.into_iter().take(FUNCTIONS_PER_ENTRY) {
                println!("{:>6.2}% {:>10}  {f}", share(*n), n);
            }
        }
        let mut v: Vec<_> = self.per_function.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!("\n{:>7} {:>10}  function", "share", "count");
        for (f, n) in v.into_iter().take(top) {
            println!("{:>6.2}% {:>10}  {f}", share(*n), n);
        }
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let pid: u32 = args
        .next()
        .context("usage: hako-bench-guest-profile PID [SECONDS] [TOP]")?
        .parse()?;
    let seconds: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10.0);
    let top: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    let kernel = fixtures::kernel().map_err(|s| anyhow::anyhow!("{s}"))?;
    let map_path: PathBuf = kernel.with_file_name("System.map");
    let map = SymbolMap::read(&map_path)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("perf.data");
    let status = Command::new("perf")
        .args(["record", "-q", "-e", "kvm:kvm_emulate_insn", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running perf (apt-get install linux-perf)")?;
    if !status.success() {
        bail!("perf record failed: {status}");
    }
    let mut script = Command::new("perf")
        .args(["script", "-F", "trace", "-i"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running perf script")?;
    let out = script.stdout.take().context("perf script's output")?;
    let mut profile = Profile::default();
    profile.add_all(&map, BufReader::new(out).lines().map_while(Result::ok));
    script.wait()?;
    profile.print(seconds, top);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_named_by_the_system_call_or_fault_they_run() {
        let map = SymbolMap {
            addrs: vec![0x100, 0x200, 0x300, 0x400, 0x500, 0x600],
            names: [
                "asm_exc_page_fault",
                "__x64_sys_mkdir",
                "handle_mm_fault",
                "work",
                "asm_sysvec_apic_timer_interrupt",
                "irqentry_exit",
            ]
            .map(str::to_owned)
            .to_vec(),
        };
        // mkdir (entry, the call, a timer interrupt of two inside it, the interrupt's exit,
        // the call again), a fault (entry, handler), then an entry that ran neither.
        let rips = [
            0x100, 0x200, 0x500, 0x400, 0x600, 0x210, 0x100, 0x300, 0x100, 0x400,
        ];
        let mut p = Profile::default();
        p.add_all(&map, rips.iter().map(|r| format!(" 0:{r:x}:90")));
        assert_eq!(
            p.per_entry["mkdir"],
            (1, 4),
            "the interrupt's two are not mkdir's"
        );
        assert_eq!(p.per_entry[PAGE_FAULT], (1, 2));
        assert_eq!(p.per_entry[OTHER_ENTRY], (1, 2));
        assert_eq!(p.in_timer_interrupts, 2);
    }

    #[test]
    fn instructions_go_to_their_function_and_timer_interrupts_end_at_irqentry_exit() {
        let map = SymbolMap {
            addrs: vec![0x100, 0x200, 0x300, 0x400],
            names: [
                "asm_sysvec_apic_timer_interrupt",
                "tick",
                "irqentry_exit",
                "work",
            ]
            .map(str::to_owned)
            .to_vec(),
        };
        // work, interrupt entry (2), tick (2), exit, the stub's return path, work, below all.
        let rips = [0x400, 0x100, 0x104, 0x210, 0x220, 0x300, 0x108, 0x410, 0x50];
        let lines = rips.iter().map(|r| format!(" 0:{r:x}:90 (prot64)"));
        let mut p = Profile::default();
        p.add_all(&map, lines);
        assert_eq!(p.total, 9);
        assert_eq!(
            p.timer_interrupts, 1,
            "one entry, however many of its instructions"
        );
        assert_eq!(
            p.in_timer_interrupts, 4,
            "entry (2) and tick (2), up to irqentry_exit"
        );
        assert_eq!(p.per_function["work"], 2);
        assert_eq!(p.per_function["?"], 1, "below every symbol");
    }
}
