//! What hako-vmm opens on the host before it confines itself: /dev/kvm and its taps. Opened
//! first, while it is still root in the host's namespaces, so that a jail without device
//! nodes and an unprivileged uid (which could neither open /dev/kvm, mode 0600 on many
//! hosts, nor attach to a tap it does not own) take nothing from the VM.

use std::collections::HashMap;

use hako_vmm_api::{KVM_API_VERSION, VmConfig};
use kvm_ioctls::Kvm;

use crate::devices::virtio::net::{Tap, TapError};

/// Errors opening the host's devices.
#[derive(Debug, thiserror::Error)]
pub enum HostDevicesError {
    #[error("opening /dev/kvm (is KVM available and are you allowed to use it?)")]
    Kvm(#[source] kvm_ioctls::Error),
    #[error(
        "/dev/kvm answered KVM_GET_API_VERSION with {0}, not {KVM_API_VERSION}: it is not a usable KVM device"
    )]
    KvmApi(i32),
    #[error("devices.net {id}")]
    Tap {
        id: String,
        #[source]
        source: TapError,
    },
}

/// /dev/kvm and the taps, open.
pub struct HostDevices {
    pub kvm: Kvm,
    /// By tap name; each is taken by its device.
    pub taps: HashMap<String, Tap>,
}

impl HostDevices {
    /// Opens /dev/kvm (checking that it is one) and attaches every tap `config` names.
    pub fn open(config: &VmConfig) -> Result<Self, HostDevicesError> {
        let kvm = Kvm::new().map_err(HostDevicesError::Kvm)?;
        // A file that opens but is no KVM device (a bind over /dev/kvm, a wrong node) would
        // only fail later with a bare "Inappropriate ioctl": say what is wrong here.
        let api = kvm.get_api_version();
        if api != KVM_API_VERSION {
            return Err(HostDevicesError::KvmApi(api));
        }
        let mut taps = HashMap::new();
        for net in &config.devices.net {
            let tap = Tap::open(&net.tap).map_err(|source| HostDevicesError::Tap {
                id: net.id.clone(),
                source,
            })?;
            taps.insert(net.tap.clone(), tap);
        }
        Ok(Self { kvm, taps })
    }
}
