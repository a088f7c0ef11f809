//! `--config FILE`: flag settings from a YAML or TOML file.
//!
//! Keys are flag names (`metric-resolution: 15s`); lists are YAML/TOML lists or
//! comma-separated strings. A key that is no flag, or names a command-line-only flag, is an
//! error naming the key and the file, so that a typo never silently falls back to a default.

use std::path::Path;

use config::{FileFormat, Value, ValueKind};

use super::spec::{self, Flag, Kind, Scope};
use super::{OptionsError, Setting, Source};

/// Reads `path` and returns the settings it makes, sorted by key.
pub(crate) fn load(path: &Path) -> Result<Vec<(&'static Flag, Setting)>, OptionsError> {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => FileFormat::Yaml,
        Some("toml") => FileFormat::Toml,
        _ => {
            return Err(OptionsError::ConfigFile {
                path: path.to_path_buf(),
                problem: "unknown format: the name must end in .yaml, .yml or .toml".into(),
            });
        }
    };
    let text = std::fs::read_to_string(path).map_err(|source| OptionsError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, format, path)
}

/// Parses the text of a config file; `path` is only for messages and sources.
pub(crate) fn parse(
    text: &str,
    format: FileFormat,
    path: &Path,
) -> Result<Vec<(&'static Flag, Setting)>, OptionsError> {
    let parse_error = |source| OptionsError::ConfigParse {
        path: path.to_path_buf(),
        source,
    };
    let parsed = config::Config::builder()
        .add_source(config::File::from_str(text, format))
        .build()
        .map_err(parse_error)?;
    let table = match parsed.cache.kind {
        ValueKind::Nil => return Ok(Vec::new()),
        ValueKind::Table(table) => table,
        _ => {
            return Err(OptionsError::ConfigFile {
                path: path.to_path_buf(),
                problem: "the top level must be a mapping of flag names to values".into(),
            });
        }
    };
    let mut entries: Vec<(String, Value)> = table.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let key_error = |key: &str, problem: String| OptionsError::ConfigFile {
        path: path.to_path_buf(),
        problem: format!("key {key:?}: {problem}"),
    };
    let source = Source::File(path.to_path_buf());
    let mut settings = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Some(flag) = spec::find(&key) else {
            return Err(OptionsError::ConfigFile {
                path: path.to_path_buf(),
                problem: format!("unknown key {key:?}"),
            });
        };
        if flag.scope != Scope::Everywhere {
            return Err(key_error(
                &key,
                format!("--{} is not allowed in a config file", flag.name),
            ));
        }
        let values = values(flag, value).map_err(|p| key_error(&key, p))?;
        settings.extend(super::admit(flag, values, source.clone())?);
    }
    Ok(settings)
}

/// A file value as the flag values it stands for: one per list element, or one.
fn values(flag: &Flag, value: Value) -> Result<Vec<String>, String> {
    let takes_list = matches!(flag.kind, Kind::List | Kind::Repeated);
    match value.kind {
        ValueKind::Array(items) if takes_list => items
            .into_iter()
            .map(|item| scalar(item.kind).ok_or_else(|| "list items must be plain values".into()))
            .collect(),
        ValueKind::Array(_) => Err(format!("--{} takes one value, not a list", flag.name)),
        kind => scalar(kind)
            .map(|v| vec![v])
            .ok_or_else(|| "must be a value or a list of values, not a mapping".into()),
    }
}

fn scalar(kind: ValueKind) -> Option<String> {
    Some(match kind {
        ValueKind::Nil => String::new(),
        ValueKind::Boolean(b) => b.to_string(),
        ValueKind::I64(n) => n.to_string(),
        ValueKind::I128(n) => n.to_string(),
        ValueKind::U64(n) => n.to_string(),
        ValueKind::U128(n) => n.to_string(),
        ValueKind::Float(n) => n.to_string(),
        ValueKind::String(s) => s,
        ValueKind::Table(_) | ValueKind::Array(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Vec<(&'static str, Vec<String>)>, String> {
        parse(text, FileFormat::Yaml, Path::new("/etc/mb.yaml"))
            .map(|v| v.into_iter().map(|(f, s)| (f.name, s.values)).collect())
            .map_err(|e| e.to_string())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn scalars_lists_and_numbers_become_flag_values() {
        let got = yaml(
            "metric-resolution: 15s\nkubelet-port: 10250\nkubelet-insecure-tls: true\n\
             kubelet-preferred-address-types: [InternalIP, Hostname]\n\
             requestheader-allowed-names: a,b\nkubeconfig:\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("kubeconfig", strings(&[""])),
                ("kubelet-insecure-tls", strings(&["true"])),
                ("kubelet-port", strings(&["10250"])),
                (
                    "kubelet-preferred-address-types",
                    strings(&["InternalIP", "Hostname"])
                ),
                ("metric-resolution", strings(&["15s"])),
                ("requestheader-allowed-names", strings(&["a,b"])),
            ]
        );
    }

    #[test]
    fn keys_keep_their_case_and_underscores_are_dashes() {
        assert_eq!(
            yaml("kubelet_port: 1").unwrap(),
            vec![("kubelet-port", strings(&["1"]))]
        );
        assert_eq!(
            yaml("Kubelet-Port: 1").unwrap_err(),
            "config file \"/etc/mb.yaml\": unknown key \"Kubelet-Port\""
        );
    }

    #[test]
    fn empty_files_set_nothing() {
        assert_eq!(yaml("").unwrap(), vec![]);
        assert_eq!(yaml("# only a comment\n").unwrap(), vec![]);
    }

    #[test]
    fn bad_keys_and_shapes_name_the_key_and_the_file() {
        assert_eq!(
            yaml("metric-resolution: 15s\nfrobnicate: 1\n").unwrap_err(),
            "config file \"/etc/mb.yaml\": unknown key \"frobnicate\""
        );
        assert_eq!(
            yaml("version: true").unwrap_err(),
            "config file \"/etc/mb.yaml\": key \"version\": --version is not allowed in a \
             config file"
        );
        assert_eq!(
            yaml("config: other.yaml").unwrap_err(),
            "config file \"/etc/mb.yaml\": key \"config\": --config is not allowed in a config \
             file"
        );
        assert_eq!(
            yaml("metric-resolution: [1s, 2s]").unwrap_err(),
            "config file \"/etc/mb.yaml\": key \"metric-resolution\": --metric-resolution \
             takes one value, not a list"
        );
        assert_eq!(
            yaml("kubelet:\n  port: 1\n").unwrap_err(),
            "config file \"/etc/mb.yaml\": unknown key \"kubelet\""
        );
        assert_eq!(
            yaml("kubelet-port:\n  value: 1\n").unwrap_err(),
            "config file \"/etc/mb.yaml\": key \"kubelet-port\": must be a value or a list of \
             values, not a mapping"
        );
        let err = yaml("- a\n- b\n").unwrap_err();
        assert!(err.starts_with("config file \"/etc/mb.yaml\": "), "{err}");
    }

    #[test]
    fn unsupported_keys_are_errors_unless_harmless() {
        assert_eq!(
            yaml("profiling: true").unwrap_err(),
            "profiling in config file \"/etc/mb.yaml\" is not supported by metrics-bridge yet \
             (only --profiling=false is accepted)"
        );
        assert_eq!(yaml("profiling: false").unwrap(), vec![]);
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = yaml("metric-resolution: [15s\n").unwrap_err();
        assert!(err.starts_with("config file \"/etc/mb.yaml\": "), "{err}");
    }

    #[test]
    fn toml_works_the_same() {
        let got = parse(
            "metric-resolution = \"15s\"\nkubelet-port = 10250\n\
             kubelet-preferred-address-types = [\"InternalIP\"]\n",
            FileFormat::Toml,
            Path::new("x.toml"),
        )
        .unwrap();
        let got: Vec<_> = got.into_iter().map(|(f, s)| (f.name, s.values)).collect();
        assert_eq!(
            got,
            vec![
                ("kubelet-port", strings(&["10250"])),
                ("kubelet-preferred-address-types", strings(&["InternalIP"])),
                ("metric-resolution", strings(&["15s"])),
            ]
        );
    }

    #[test]
    fn the_extension_chooses_the_format() {
        let err = load(Path::new("/nonexistent/mb.json")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config file \"/nonexistent/mb.json\": unknown format: the name must end in .yaml, \
             .yml or .toml"
        );
        let err = load(Path::new("/nonexistent/mb.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read config file \"/nonexistent/mb.yaml\": "),
            "{err}"
        );
    }
}
