//! `containerd-shim-hako-v2 -info`: containerd 2.x asks each runtime's shim binary for its
//! name, version, options and OCI features (the introspection service, `ctr plugins
//! inspect-runtime`, CRI's runtime handler features). The request's runtime options arrive on
//! stdin as a protobuf `Any` (nothing when the runtime has none); the answer is a protobuf
//! `containerd.types.RuntimeInfo` on stdout. containerd-shim 0.11 parses the flag but does
//! nothing with it, so the binary answers before handing over to it.

use std::io::Read;

use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use super::RUNTIME_ID;

/// The type URL containerd (typeurl) gives the OCI features document, which it carries as JSON.
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// The most of stdin read: runtime options are a few hundred bytes.
const OPTIONS_BYTES: u64 = 1 << 20;

/// The shim was asked for its info (`-info`; Go's flag package takes `--info` and
/// `-info=true` too).
pub fn asked(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter().any(|a| {
        ["-info", "--info", "-info=true", "--info=true"]
            .map(std::ffi::OsString::from)
            .contains(&a)
    })
}

/// Reads the runtime options from `stdin` and returns the encoded RuntimeInfo.
pub fn answer(stdin: impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    stdin
        .take(OPTIONS_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the runtime options from stdin: {e}"))?;
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_ID.into();
    let mut version = RuntimeVersion::new();
    version.version = env!("CARGO_PKG_VERSION").into();
    info.version = Some(version).into();
    if !bytes.is_empty() {
        let options = Any::parse_from_bytes(&bytes)
            .map_err(|e| format!("the runtime options on stdin are not a protobuf Any: {e}"))?;
        info.options = Some(options).into();
    }
    let mut features = Any::new();
    features.type_url = FEATURES_TYPE_URL.into();
    features.value = crate::features::document().to_string().into_bytes();
    info.features = Some(features).into();
    info.write_to_bytes()
        .map_err(|e| format!("encoding the runtime info: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_hako_and_carries_its_features_and_options() {
        assert!(asked(["shim".into(), "-info".into()]));
        assert!(asked(["shim".into(), "-info=true".into()]));
        assert!(!asked(["shim".into(), "start".into()]));
        let info = RuntimeInfo::parse_from_bytes(&answer(&b""[..]).unwrap()).unwrap();
        assert_eq!(info.name, RUNTIME_ID);
        assert!(info.options.is_none());
        assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
        let doc: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
        assert_eq!(doc["ociVersionMax"], "1.1.0");
        let mut opts = Any::new();
        opts.type_url = "runtimeoptions.v1.Options".into();
        opts.value = b"\x12\x09/etc/x.toml".to_vec();
        let info =
            RuntimeInfo::parse_from_bytes(&answer(&opts.write_to_bytes().unwrap()[..]).unwrap())
                .unwrap();
        assert_eq!(info.options.as_ref(), Some(&opts));
        assert!(
            answer(&b"\xff\xff\xff"[..])
                .unwrap_err()
                .contains("not a protobuf Any")
        );
    }
}
