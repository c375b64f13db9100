//! `hako-kconfig merge|verify`: used by guest-kernel-config/build.sh.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Merge Hako's kernel config fragments and verify the final .config")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply FRAGMENTS onto BASE and write OUT (run `make olddefconfig` afterwards).
    Merge {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(required = true)]
        fragments: Vec<PathBuf>,
    },
    /// Fail, listing each one, if any option requested by FRAGMENTS is not in CONFIG as requested.
    Verify {
        #[arg(long)]
        config: PathBuf,
        #[arg(required = true)]
        fragments: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Merge {
            base,
            out,
            fragments,
        } => {
            let n = hako_kconfig::merge_files(&base, &fragments, &out).with_context(|| {
                format!(
                    "merging {} fragment(s) onto {}",
                    fragments.len(),
                    base.display()
                )
            })?;
            eprintln!("hako-kconfig: merged {n} option(s) into {}", out.display());
        }
        Command::Verify { config, fragments } => {
            let n = hako_kconfig::verify_files(&config, &fragments)
                .with_context(|| format!("verifying {}", config.display()))?;
            eprintln!(
                "hako-kconfig: all {n} requested option(s) are in {}",
                config.display()
            );
        }
    }
    Ok(())
}
