//! `hako-rootfs-builder agent|probe`: writes a guest image as a cpio archive or a directory;
//! `busybox-bundle`: writes an OCI bundle with a busybox root file system.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use hako_rootfs_builder::{Manifest, bundle, cpio, dir, images, oci_image};

#[derive(Parser)]
#[command(
    name = "hako-rootfs-builder",
    about = "Build Hako guest images (reproducible)"
)]
struct Cli {
    #[command(subcommand)]
    image: Image,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Uncompressed newc cpio (an initramfs).
    Cpio,
    /// A directory tree (for a virtio-fs root).
    Dir,
}

#[derive(Subcommand)]
enum Image {
    /// The guest image: /init = hako-agent (a static binary).
    Agent {
        #[arg(long)]
        agent: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "cpio")]
        format: Format,
    },
    /// The VM-test probe image: busybox, the guest test program, a marker-printing /init.
    Probe {
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        #[arg(long)]
        program: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "cpio")]
        format: Format,
    },
    /// An OCI bundle (rootfs/ + config.json) whose process runs ARGS with busybox.
    BusyboxBundle {
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "/hako/demo")]
        cgroups_path: String,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// A busybox container image as an OCI archive for `ctr image import` / `podman load`.
    #[command(name = "busybox-image")]
    OciArchive {
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The image's name, e.g. docker.io/library/busybox:hako.
        #[arg(long)]
        name: String,
        /// The image's default command.
        #[arg(last = true)]
        cmd: Vec<String>,
    },
}

fn write_cpio(manifest: &Manifest, path: &Path) -> anyhow::Result<usize> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut file = std::io::BufWriter::new(file);
    let n =
        cpio::write(manifest, &mut file).with_context(|| format!("writing {}", path.display()))?;
    file.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

fn emit(manifest: &Manifest, out: &Path, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Cpio => {
            let tmp = out.with_extension("partial");
            let written = write_cpio(manifest, &tmp).and_then(|n| {
                std::fs::rename(&tmp, out)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
                Ok(n)
            });
            let n = written.inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
            eprintln!(
                "hako-rootfs-builder: wrote {} ({} entries, {n} bytes)",
                out.display(),
                manifest.len()
            );
        }
        Format::Dir => {
            let skipped = dir::write(manifest, out)
                .with_context(|| format!("writing tree {}", out.display()))?;
            if !skipped.is_empty() {
                eprintln!(
                    "hako-rootfs-builder: could not create device nodes (needs root): {}",
                    skipped.join(", ")
                );
            }
            eprintln!(
                "hako-rootfs-builder: wrote tree {} ({} entries)",
                out.display(),
                manifest.len()
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().image {
        Image::Agent { agent, out, format } => {
            let m = images::agent_image(&agent)
                .with_context(|| format!("building the agent image from {}", agent.display()))?;
            emit(&m, &out, format)
        }
        Image::Probe {
            busybox,
            program,
            out,
            format,
        } => {
            if !busybox.exists() {
                bail!(
                    "{} does not exist: install busybox-static (apt-get install busybox-static)",
                    busybox.display()
                );
            }
            let m = images::probe_image(&busybox, &program).context("building the probe image")?;
            emit(&m, &out, format)
        }
        Image::BusyboxBundle {
            busybox,
            out,
            cgroups_path,
            args,
        } => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bundle::write_busybox_bundle(&busybox, &out, &args, &cgroups_path)
                .map_err(anyhow::Error::msg)?;
            eprintln!("hako-rootfs-builder: wrote bundle {}", out.display());
            Ok(())
        }
        Image::OciArchive {
            busybox,
            out,
            name,
            cmd,
        } => {
            let mut cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            if cmd.is_empty() {
                cmd.push("sh");
            }
            oci_image::write_busybox_image(&busybox, &name, &cmd, &out)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "hako-rootfs-builder: wrote image {name} to {}",
                out.display()
            );
            Ok(())
        }
    }
}
