//! `hako template create|list|remove`: the templates sandboxes resume from (see
//! `crate::template`); `[template]` in the config says where they live and whether they are used.

use anyhow::Context;
use clap::Subcommand;

use super::Global;
use crate::sandbox::{self, sizing};
use crate::template;

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Boot a sandbox VM to its agent, snapshot it and keep it as the template for sandboxes
    /// of this make (kept as is when a valid one exists, unless --force).
    Create {
        /// vCPUs (default: the config's default_vcpus, what a sandbox without limits gets).
        #[arg(long)]
        vcpus: Option<u8>,
        /// Guest memory in MiB (default: the config's default_memory_mib).
        #[arg(long)]
        memory_mib: Option<u32>,
        /// Make it again even if a valid one exists.
        #[arg(long)]
        force: bool,
    },
    /// List the templates (key, size, when made, how long their boot took).
    List,
    /// Remove the templates with these keys, or all of them.
    Remove {
        keys: Vec<String>,
        #[arg(long, conflicts_with = "keys")]
        all: bool,
    },
}

pub fn run(g: &Global, command: &TemplateCommand) -> anyhow::Result<u8> {
    let config = g.load_config()?;
    let store = &config.template.dir;
    match command {
        TemplateCommand::Create {
            vcpus,
            memory_mib,
            force,
        } => {
            let mut size = sizing::size(&serde_json::Value::Null, &config.vm);
            if let Some(v) = vcpus {
                size.vcpus = *v;
            }
            if let Some(m) = memory_mib {
                size.memory_mib = *m;
            }
            let spec = sandbox::vm_spec(&config, size)?;
            let t = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(template::create(
                    store,
                    &spec,
                    config.agent_timeout(),
                    *force,
                ))
                .context("making the template")?;
            println!(
                "{}\t{} vCPU\t{} MiB\tboot {:.1}s",
                t.dir.display(),
                t.manifest.vcpus,
                t.manifest.memory_mib,
                t.manifest.boot_secs
            );
            if !config.template.enabled {
                eprintln!(
                    "note: sandboxes use templates only with `enabled = true` under [template] in {}",
                    if config.source.as_os_str().is_empty() {
                        "/etc/hako/config.toml".into()
                    } else {
                        config.source.display().to_string()
                    }
                );
            }
            Ok(0)
        }
        TemplateCommand::List => {
            for (dir, manifest) in template::list(store) {
                let key = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match manifest {
                    Some(m) => println!(
                        "{key}\t{} vCPU\t{} MiB\t{}\tboot {:.1}s\t{}",
                        m.vcpus,
                        m.memory_mib,
                        m.created,
                        m.boot_secs,
                        m.kernel.display()
                    ),
                    None => println!("{key}\t(no readable manifest)"),
                }
            }
            Ok(0)
        }
        TemplateCommand::Remove { keys, all } => {
            let listed = template::list(store);
            let mut missing = Vec::new();
            for key in keys {
                match listed
                    .iter()
                    .find(|(d, _)| d.file_name().is_some_and(|n| n.to_string_lossy() == *key))
                {
                    Some((dir, _)) => template::remove_dir(dir),
                    None => missing.push(key.clone()),
                }
            }
            if *all {
                for (dir, _) in &listed {
                    template::remove_dir(dir);
                }
            }
            if missing.is_empty() {
                Ok(0)
            } else {
                anyhow::bail!("no template {} in {}", missing.join(", "), store.display())
            }
        }
    }
}
