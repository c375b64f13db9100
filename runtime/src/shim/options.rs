//! The runtime options a CRI runtime handler passes with each task (`options` in its table of
//! containerd's config): for a runtime that is not runc, CRI sends
//! `runtimeoptions.v1.Options { type_url, config_path }`. Its `ConfigPath` names the Hako config
//! that pod's sandbox uses, so one cluster can run several Hako handlers (sizes, kernels,
//! templates) side by side. The sandbox's runtime root is recorded in the bundle
//! ([`ROOT_FILE`]) for the shim's `delete` action, which gets no options.

use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::CodedInputStream;
use containerd_shim::protos::protobuf::rt::WireType;
use containerd_shim::protos::protobuf::well_known_types::any::Any;

use crate::config::{Config, ConfigError};

/// The message CRI wraps a non-runc handler's options in.
const OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// In the bundle: the runtime root of the sandbox the task's shim made.
pub const ROOT_FILE: &str = "hako-runtime-root";

#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("the task's runtime options ({0}) are not a valid {OPTIONS_TYPE}")]
    Malformed(String, #[source] containerd_shim::protos::protobuf::Error),
    #[error("the runtime handler's ConfigPath")]
    Config(#[from] ConfigError),
}

/// The `config_path` of `options` when they are CRI's runtime options and name one.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, OptionsError> {
    let Some(any) = options.filter(|a| a.type_url.ends_with(OPTIONS_TYPE)) else {
        return Ok(None);
    };
    let malformed = |e| OptionsError::Malformed(any.type_url.clone(), e);
    let mut input = CodedInputStream::from_bytes(&any.value);
    let mut path = String::new();
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(malformed)? {
        // Field 2, length-delimited: config_path. Field 1 (type_url) and unknown fields skip.
        if tag == (2 << 3 | 2) {
            path = input.read_string().map_err(malformed)?;
        } else {
            let wire = WireType::new(tag & 7).ok_or_else(|| {
                malformed(
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad wire type").into(),
                )
            })?;
            input.skip_field(wire).map_err(malformed)?;
        }
    }
    Ok((!path.is_empty()).then(|| PathBuf::from(path)))
}

/// The config a sandbox created with `options` runs under: the handler's ConfigPath, else
/// the shim's own.
pub fn sandbox_config(options: Option<&Any>, default: &Config) -> Result<Config, OptionsError> {
    match config_path(options)? {
        Some(path) => Ok(Config::from_file(&path)?),
        None => Ok(default.clone()),
    }
}

/// Records `root` in the bundle; failure only loses `delete`'s way to a crashed sandbox's
/// leftovers under a root other than the default config's.
pub fn record_root(bundle: &Path, root: &Path) {
    if let Err(e) = std::fs::write(bundle.join(ROOT_FILE), root.as_os_str().as_encoded_bytes()) {
        tracing::warn!("recording the runtime root in {}: {e}", bundle.display());
    }
}

/// The runtime root recorded in the bundle, if any.
pub fn recorded_root(bundle: &Path) -> Option<PathBuf> {
    let bytes = std::fs::read(bundle.join(ROOT_FILE)).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    Path::new(&text).is_absolute().then(|| PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(type_url: &str, value: &[u8]) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value.to_vec();
        a
    }

    #[test]
    fn the_config_path_is_read_from_cri_runtime_options() {
        // type_url "runtimeoptions.v1.Options", config_path "/etc/hako/small.toml".
        let mut value = vec![0x0a, 25];
        value.extend_from_slice(b"runtimeoptions.v1.Options");
        value.extend_from_slice(&[0x12, 20]);
        value.extend_from_slice(b"/etc/hako/small.toml");
        let got = config_path(Some(&options("runtimeoptions.v1.Options", &value))).unwrap();
        assert_eq!(got, Some(PathBuf::from("/etc/hako/small.toml")));
        let typed = options("type.googleapis.com/runtimeoptions.v1.Options", &value);
        assert!(config_path(Some(&typed)).unwrap().is_some());
        // No path, other options, none at all.
        assert_eq!(
            config_path(Some(&options(OPTIONS_TYPE, &[0x0a, 1, b'x']))).unwrap(),
            None
        );
        assert_eq!(
            config_path(Some(&options("containerd.runc.v1.Options", &[0xff]))).unwrap(),
            None
        );
        assert_eq!(config_path(None).unwrap(), None);
        // Truncated.
        assert!(config_path(Some(&options(OPTIONS_TYPE, &[0x12, 30, b'/']))).is_err());
    }

    #[test]
    fn a_missing_config_path_is_an_error_naming_it() {
        let mut value = vec![0x12, 17];
        value.extend_from_slice(b"/nonexistent.toml");
        let e =
            sandbox_config(Some(&options(OPTIONS_TYPE, &value)), &Config::default()).unwrap_err();
        assert!(format!("{:#}", anyhow::Error::from(e)).contains("/nonexistent.toml"));
    }

    #[test]
    fn the_root_is_recorded_in_the_bundle() {
        let bundle = tempfile::tempdir().unwrap();
        assert_eq!(recorded_root(bundle.path()), None);
        record_root(bundle.path(), Path::new("/run/hako-small"));
        assert_eq!(
            recorded_root(bundle.path()),
            Some(PathBuf::from("/run/hako-small"))
        );
    }
}
