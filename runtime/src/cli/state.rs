//! `hako state` (the OCI state document) and `hako list`.

use super::Global;
use super::client::{Container, OciStatus};
use super::control::Format;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

pub fn state(g: &Global, id: &str) -> anyhow::Result<u8> {
    let c = Container::open(&g.root, id)?;
    let status = block_on(c.status())?;
    println!("{}", serde_json::to_string_pretty(&c.state_json(status))?);
    Ok(0)
}

pub fn list(g: &Global, format: Format, quiet: bool) -> anyhow::Result<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&g.root).into_iter().flatten().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        if let Ok(c) = Container::open(&g.root, &id) {
            let status = block_on(c.status())?;
            all.push((c, status));
        }
    }
    all.sort_by(|a, b| a.0.record.id.cmp(&b.0.record.id));
    if quiet {
        for (c, _) in &all {
            println!("{}", c.record.id);
        }
        return Ok(0);
    }
    match format {
        Format::Json => {
            let v: Vec<_> = all.iter().map(|(c, s)| c.state_json(*s)).collect();
            println!("{}", serde_json::to_string(&v)?);
        }
        Format::Table => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} CREATED",
                "ID", "PID", "STATUS", "BUNDLE"
            );
            for (c, s) in &all {
                let pid = if *s == OciStatus::Stopped {
                    0
                } else {
                    c.record.state_pid()
                };
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {}",
                    c.record.id,
                    pid,
                    s.as_str(),
                    c.record.bundle.display(),
                    c.record.created
                );
            }
        }
    }
    Ok(0)
}
