//! Kernel config fragments: parsing `.config`-style files, merging fragments onto a base
//! config, and verifying that every requested option survived `make olddefconfig`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Errors reading, merging or verifying configs.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a config line: {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error(
        "{option} is {first_value} in {first} but {second_value} in {second}: fragments must not disagree"
    )]
    Conflict {
        option: String,
        first: PathBuf,
        first_value: Value,
        second: PathBuf,
        second_value: Value,
    },
    #[error("{} requested option(s) did not end up in {config}:\n{}", .missing.len(), format_mismatches(.missing))]
    Unsatisfied {
        config: PathBuf,
        missing: Vec<Mismatch>,
    },
}

/// A config option's value: `# CONFIG_X is not set` is [`Value::NotSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    NotSet,
    Set(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::NotSet => f.write_str("not set"),
            Value::Set(v) => write!(f, "={v}"),
        }
    }
}

/// One entry of a config file, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub option: String,
    pub value: Value,
    pub source: PathBuf,
}

/// A requested option whose final value differs from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub option: String,
    pub requested: Value,
    pub actual: Value,
    pub fragment: PathBuf,
}

fn format_mismatches(missing: &[Mismatch]) -> String {
    missing
        .iter()
        .map(|m| {
            format!(
                "  {} requested {} by {}, final config has it {}",
                m.option,
                m.requested,
                m.fragment.display(),
                m.actual
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses config text: `CONFIG_X=value` and `# CONFIG_X is not set` lines; blank lines and
/// other comments are skipped. Any other line is a syntax error naming the file and line.
pub fn parse(text: &str, source: &Path) -> Result<Vec<Setting>, KconfigError> {
    let mut settings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(option) = rest.strip_suffix(" is not set")
                && is_option_name(option)
            {
                settings.push(Setting {
                    option: option.to_string(),
                    value: Value::NotSet,
                    source: source.into(),
                });
                continue;
            }
            continue; // a plain comment
        }
        if line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            // `=n` is another way to write "is not set" (olddefconfig writes the latter).
            Some((option, "n")) if is_option_name(option) => settings.push(Setting {
                option: option.to_string(),
                value: Value::NotSet,
                source: source.into(),
            }),
            Some((option, value)) if is_option_name(option) && !value.is_empty() => {
                settings.push(Setting {
                    option: option.to_string(),
                    value: Value::Set(value.to_string()),
                    source: source.into(),
                })
            }
            _ => {
                return Err(KconfigError::Syntax {
                    path: source.into(),
                    line: index + 1,
                    text: raw.to_string(),
                });
            }
        }
    }
    Ok(settings)
}

fn is_option_name(s: &str) -> bool {
    s.strip_prefix("CONFIG_").is_some_and(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Reads and parses a config file.
pub fn read(path: &Path) -> Result<Vec<Setting>, KconfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| KconfigError::Read {
        path: path.into(),
        source,
    })?;
    parse(&text, path)
}

/// The requests of all fragments, in order, refusing two fragments that set one option
/// to different values (each fragment owns one concern; a clash is a mistake).
pub fn requests(fragments: &[Vec<Setting>]) -> Result<BTreeMap<String, Setting>, KconfigError> {
    let mut wanted: BTreeMap<String, Setting> = BTreeMap::new();
    for setting in fragments.iter().flatten() {
        if let Some(prev) = wanted.get(&setting.option)
            && prev.value != setting.value
        {
            return Err(KconfigError::Conflict {
                option: setting.option.clone(),
                first: prev.source.clone(),
                first_value: prev.value.clone(),
                second: setting.source.clone(),
                second_value: setting.value.clone(),
            });
        }
        wanted.insert(setting.option.clone(), setting.clone());
    }
    Ok(wanted)
}

/// Merges fragment requests onto a base config's text: the base's lines for requested
/// options are dropped and the requests appended, in name order. Appending matters for
/// Kconfig choices (HZ, kernel compression): the last `=y` of a choice group read wins.
pub fn merge(base_text: &str, wanted: &BTreeMap<String, Setting>) -> String {
    let mut out = String::with_capacity(base_text.len());
    for line in base_text.lines() {
        if line_option(line).is_some_and(|o| wanted.contains_key(o)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for setting in wanted.values() {
        out.push_str(&render(setting));
        out.push('\n');
    }
    out
}

fn line_option(line: &str) -> Option<&str> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        return rest
            .strip_suffix(" is not set")
            .filter(|o| is_option_name(o));
    }
    line.split_once('=')
        .map(|(o, _)| o)
        .filter(|o| is_option_name(o))
}

fn render(setting: &Setting) -> String {
    match &setting.value {
        Value::NotSet => format!("# {} is not set", setting.option),
        Value::Set(v) => format!("{}={}", setting.option, v),
    }
}

/// Checks every request against the final config. An option absent from the final config
/// counts as not set (that is what Kconfig means by it).
pub fn verify(final_config: &[Setting], wanted: &BTreeMap<String, Setting>) -> Vec<Mismatch> {
    let actual: BTreeMap<&str, &Value> = final_config
        .iter()
        .map(|s| (s.option.as_str(), &s.value))
        .collect();
    wanted
        .values()
        .filter_map(|want| {
            let got = actual
                .get(want.option.as_str())
                .copied()
                .cloned()
                .unwrap_or(Value::NotSet);
            (got != want.value).then(|| Mismatch {
                option: want.option.clone(),
                requested: want.value.clone(),
                actual: got,
                fragment: want.source.clone(),
            })
        })
        .collect()
}

/// Reads fragment files into their requests.
pub fn read_requests(fragments: &[PathBuf]) -> Result<BTreeMap<String, Setting>, KconfigError> {
    let parsed = fragments
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<_>, _>>()?;
    requests(&parsed)
}

/// `merge`: base file + fragments → output file.
pub fn merge_files(base: &Path, fragments: &[PathBuf], out: &Path) -> Result<usize, KconfigError> {
    let wanted = read_requests(fragments)?;
    let base_text = std::fs::read_to_string(base).map_err(|source| KconfigError::Read {
        path: base.into(),
        source,
    })?;
    std::fs::write(out, merge(&base_text, &wanted)).map_err(|source| KconfigError::Write {
        path: out.into(),
        source,
    })?;
    Ok(wanted.len())
}

/// `verify`: final config + fragments → Ok(number of checked options) or every mismatch.
pub fn verify_files(config: &Path, fragments: &[PathBuf]) -> Result<usize, KconfigError> {
    let wanted = read_requests(fragments)?;
    let missing = verify(&read(config)?, &wanted);
    if missing.is_empty() {
        Ok(wanted.len())
    } else {
        Err(KconfigError::Unsatisfied {
            config: config.into(),
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn parses_set_unset_and_comments() {
        let s = parse(
            "# a comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n",
            &p("f"),
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].value, Value::Set("y".into()));
        assert_eq!(s[1].option, "CONFIG_B");
        assert_eq!(s[1].value, Value::NotSet);
        assert_eq!(s[2].value, Value::Set("\"x y\"".into()));
        let n = parse("CONFIG_D=n\n", &p("f")).unwrap();
        assert_eq!(n[0].value, Value::NotSet, "=n means not set");
    }

    #[test]
    fn rejects_garbage_with_file_and_line() {
        let err = parse("CONFIG_A=y\nCONFIG_a=y\n", &p("frag.config")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("frag.config:2"), "{msg}");
        assert!(parse("CONFIG_A=\n", &p("f")).is_err());
        assert!(parse("hello\n", &p("f")).is_err());
    }

    #[test]
    fn conflicting_fragments_are_refused() {
        let a = parse("CONFIG_A=y\n", &p("a")).unwrap();
        let b = parse("# CONFIG_A is not set\n", &p("b")).unwrap();
        let err = requests(&[a.clone(), b]).unwrap_err();
        assert!(matches!(err, KconfigError::Conflict { ref option, .. } if option == "CONFIG_A"));
        // Repeating the same value is fine.
        assert_eq!(requests(&[a.clone(), a]).unwrap().len(), 1);
    }

    #[test]
    fn merge_moves_requests_after_the_base() {
        // The base picks CONFIG_XZ in a choice; the fragment's CONFIG_GZ must come last to win.
        let wanted =
            requests(&[
                parse("CONFIG_GZ=y\n# CONFIG_A is not set\nCONFIG_Z=16\n", &p("f")).unwrap(),
            ])
            .unwrap();
        let merged = merge(
            "CONFIG_A=y\n# CONFIG_GZ is not set\nCONFIG_XZ=y\n# comment\n",
            &wanted,
        );
        assert_eq!(
            merged,
            "CONFIG_XZ=y\n# comment\n# CONFIG_A is not set\nCONFIG_GZ=y\nCONFIG_Z=16\n"
        );
    }

    #[test]
    fn verify_reports_each_dropped_request() {
        let wanted = requests(&[parse(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n",
            &p("frag"),
        )
        .unwrap()])
        .unwrap();
        // A survived, B absent (= not set, as requested), C dropped by olddefconfig.
        let final_cfg = parse("CONFIG_A=y\n# CONFIG_C is not set\n", &p(".config")).unwrap();
        let missing = verify(&final_cfg, &wanted);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].option, "CONFIG_C");
        assert_eq!(missing[0].actual, Value::NotSet);
        // A request for "not set" that ended up set is caught too.
        let final_cfg = parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n", &p(".config")).unwrap();
        assert_eq!(verify(&final_cfg, &wanted)[0].option, "CONFIG_B");
    }

    #[test]
    fn verify_files_names_the_fragment_in_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let frag = dir.path().join("vsock.config");
        let cfg = dir.path().join(".config");
        std::fs::write(&frag, "CONFIG_VSOCKETS=y\n").unwrap();
        std::fs::write(&cfg, "# CONFIG_VSOCKETS is not set\n").unwrap();
        let msg = verify_files(&cfg, std::slice::from_ref(&frag))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("CONFIG_VSOCKETS") && msg.contains("vsock.config"),
            "{msg}"
        );
        std::fs::write(&cfg, "CONFIG_VSOCKETS=y\n").unwrap();
        assert_eq!(verify_files(&cfg, &[frag]).unwrap(), 1);
    }
}
