//! A Kubernetes CRI (v1) client over containerd's socket, for the end-to-end suite: what
//! kubelet would send, pods with `runtime_handler: hako`, on the host's network or with a
//! network of their own (CNI).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatsRequest, CreateContainerRequest,
    ExecSyncRequest, ExecSyncResponse, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    pub log_dir: PathBuf,
}

fn err(what: &str) -> impl FnOnce(tonic::Status) -> String + '_ {
    move |s| format!("{what}: {} ({:?})", s.message(), s.code())
}

impl Cri {
    pub async fn connect(socket: &Path, log_dir: &Path) -> Result<Self, String> {
        let path = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:0")
            .map_err(|e| e.to_string())?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| format!("connecting to CRI at {}: {e}", socket.display()))?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            log_dir: log_dir.into(),
        })
    }

    /// The pod's config: host network, logs under `log_dir`.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        self.config(name, NamespaceMode::Node)
    }

    /// The pod's config with a network namespace of its own (made and set up by CNI).
    pub fn pod_config_with_network(&self, name: &str) -> PodSandboxConfig {
        self.config(name, NamespaceMode::Pod)
    }

    fn config(&self, name: &str, network: NamespaceMode) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub async fn run_pod(
        &mut self,
        config: &PodSandboxConfig,
        handler: &str,
    ) -> Result<String, String> {
        Ok(self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .map_err(err("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Creates and starts a container running `command` in the pod; its log is `<name>.log`.
    pub async fn start_container(
        &mut self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String, String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let id = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map_err(err("CreateContainer"))?
            .into_inner()
            .container_id;
        self.runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map_err(err("StartContainer"))?;
        Ok(id)
    }

    pub async fn exec_sync(&mut self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, String> {
        Ok(self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 0,
            })
            .await
            .map_err(err("ExecSync"))?
            .into_inner())
    }

    /// (memory working set bytes, cpu usage core nanoseconds) of a container.
    pub async fn stats(&mut self, id: &str) -> Result<(u64, u64), String> {
        let s = self
            .runtime
            .container_stats(ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .map_err(err("ContainerStats"))?
            .into_inner()
            .stats
            .ok_or("ContainerStats returned no stats")?;
        let mem = s
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value)
            .unwrap_or(0);
        let cpu = s
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map(|v| v.value)
            .unwrap_or(0);
        Ok((mem, cpu))
    }

    pub async fn stop_and_remove_container(&mut self, id: &str) -> Result<(), String> {
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: 0,
            })
            .await
            .map_err(err("StopContainer"))?;
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map_err(err("RemoveContainer"))?;
        Ok(())
    }

    /// The pod's IP address, as CNI gave it (empty for host-network pods).
    pub async fn pod_ip(&mut self, id: &str) -> Result<String, String> {
        Ok(self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(err("PodSandboxStatus"))?
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    pub async fn stop_and_remove_pod(&mut self, id: &str) -> Result<(), String> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map_err(err("StopPodSandbox"))?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map_err(err("RemovePodSandbox"))?;
        Ok(())
    }
}
