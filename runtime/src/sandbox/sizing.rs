//! A sandbox VM's size, fixed at boot (no hotplug): from the pod's annotations (containerd
//! 1.7+ sets `io.kubernetes.cri.sandbox-{cpu-quota,cpu-period,memory}`), else the first
//! container's own limits, plus a fixed memory overhead; the config's defaults otherwise.

use serde_json::Value;

use crate::config::VmDefaults;

pub const ANNOTATION_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const ANNOTATION_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub const ANNOTATION_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

/// vCPUs and guest memory of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub vcpus: u8,
    pub memory_mib: u32,
}

/// Sizes the sandbox whose first container's OCI config is `spec`.
pub fn size(spec: &Value, defaults: &VmDefaults) -> VmSize {
    let annotation = |k: &str| {
        spec.pointer("/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<i64>().ok())
    };
    let quota = annotation(ANNOTATION_CPU_QUOTA).or_else(|| {
        spec.pointer("/linux/resources/cpu/quota")
            .and_then(Value::as_i64)
    });
    let period = annotation(ANNOTATION_CPU_PERIOD).or_else(|| {
        spec.pointer("/linux/resources/cpu/period")
            .and_then(Value::as_i64)
    });
    let memory = annotation(ANNOTATION_MEMORY).or_else(|| {
        spec.pointer("/linux/resources/memory/limit")
            .and_then(Value::as_i64)
    });

    let vcpus = match (quota, period) {
        (Some(q), Some(p)) if q > 0 && p > 0 => {
            let wanted = (q + p - 1) / p;
            u8::try_from(wanted).unwrap_or(u8::MAX).max(1)
        }
        _ => defaults.default_vcpus,
    }
    .min(defaults.max_vcpus);
    let memory_mib = match memory {
        Some(bytes) if bytes > 0 => {
            let mib = u32::try_from((bytes + (1 << 20) - 1) >> 20).unwrap_or(u32::MAX);
            mib.saturating_add(defaults.overhead_memory_mib)
        }
        _ => defaults.default_memory_mib,
    };
    VmSize { vcpus, memory_mib }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limits_give_the_defaults() {
        let d = VmDefaults::default();
        let s = size(&serde_json::json!({}), &d);
        assert_eq!(s.vcpus, d.default_vcpus);
        assert_eq!(s.memory_mib, d.default_memory_mib);
    }

    #[test]
    fn container_limits_plus_overhead() {
        let d = VmDefaults::default();
        let spec = serde_json::json!({"linux": {"resources": {
            "cpu": {"quota": 150000, "period": 100000},
            "memory": {"limit": 512 * 1024 * 1024}
        }}});
        let s = size(&spec, &d);
        assert_eq!(s.vcpus, 2);
        assert_eq!(s.memory_mib, 512 + d.overhead_memory_mib);
    }

    #[test]
    fn pod_annotations_win_and_vcpus_are_capped() {
        let d = VmDefaults {
            max_vcpus: 4,
            ..VmDefaults::default()
        };
        let spec = serde_json::json!({
            "annotations": {
                ANNOTATION_CPU_QUOTA: "1600000", ANNOTATION_CPU_PERIOD: "100000",
                ANNOTATION_MEMORY: "1073741824"
            },
            "linux": {"resources": {"memory": {"limit": 1}}}
        });
        let s = size(&spec, &d);
        assert_eq!(s.vcpus, 4);
        assert_eq!(s.memory_mib, 1024 + d.overhead_memory_mib);
    }
}
