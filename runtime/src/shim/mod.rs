//! `containerd-shim-hako-v2`: containerd's task API v2 (containerd-shim 0.11) for Hako
//! sandboxes. One shim process serves one sandbox (a pod, or a lone container).

pub mod convert;
pub mod delete;
pub mod events;
pub mod info;
pub mod options;
pub mod start;
pub mod task;

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config as ShimConfig, Flags, StartOpts};

use crate::config::Config;

/// The runtime name containerd knows Hako by (`--runtime io.containerd.hako.v2`).
pub const RUNTIME_ID: &str = "io.containerd.hako.v2";

pub struct HakoShim {
    id: String,
    namespace: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for HakoShim {
    type T = task::TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut ShimConfig) -> Self {
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        start::start(opts).await
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().unwrap_or_default();
        Ok(delete::delete(&self.id, &bundle))
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> task::TaskService {
        let config = match Config::load() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}; using the defaults");
                Config::default()
            }
        };
        task::TaskService::new(
            config,
            Arc::new(events::Publisher::new(Some(publisher), &self.namespace)),
            self.exit.clone(),
        )
    }
}

/// The shim binary's main: containerd-shim parses the flags and runs the action; `-info`,
/// which it does not act on, is answered here.
pub async fn main() {
    if info::asked(std::env::args_os()) {
        use std::io::Write;
        match info::answer(std::io::stdin()) {
            Ok(bytes) => {
                let mut out = std::io::stdout();
                let _ = out.write_all(&bytes).and_then(|()| out.flush());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("{RUNTIME_ID}: {e}");
                std::process::exit(1);
            }
        }
    }
    let config = Config::load().unwrap_or_default();
    let shim_config = ShimConfig {
        default_log_level: config.runtime.log_level.clone(),
        // The shim reaps its own hako-vmm children (containerd-shim's reaper would take
        // their exit statuses), and runs nothing that could orphan grandchildren.
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<HakoShim>(RUNTIME_ID, Some(shim_config)).await;
}
