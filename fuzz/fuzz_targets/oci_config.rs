//! A bundle's config.json, any bytes: what the runtime reads from it (the guest's copy, its
//! size, the pod's network namespace, hostname and DNS, the pod role) and the OCI spec type
//! the agent parses it into. Bad input is an error or a default, never a panic.
#![no_main]

use hako_runtime::config::VmDefaults;
use hako_runtime::sandbox::{GuestSetup, guest_spec, sizing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<oci_spec::runtime::Spec>(data);
    let Ok(mut spec) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let defaults = VmDefaults::default();
    let size = sizing::size(&spec, &defaults);
    assert!(
        size.vcpus >= 1 && size.vcpus <= defaults.max_vcpus,
        "{size:?}"
    );
    let _ = hako_runtime::network::namespace_path(&spec);
    let _ = hako_runtime::shim::start::pod_role(&spec);
    let _ = GuestSetup::from_spec(&spec);
    guest_spec::fit(&mut spec);
});
