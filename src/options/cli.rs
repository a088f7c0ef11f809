//! The command line, parsed by clap with pflag's rules, and clap's errors turned into our
//! one-line messages.
//!
//! pflag (what metrics-server uses) and clap differ in details that manifests depend on, so
//! the clap command is configured to behave like pflag:
//! - a boolean takes its value only after `=` (`--kubelet-insecure-tls=false`); a bare
//!   `--flag` means true;
//! - a value flag takes the next argument even if it starts with `-`;
//! - a repeated flag is allowed: the last value wins, and lists append;
//! - `-v 2`, `-v=2` and `-v2` are the same, and so are `-l sel`, `-l=sel` and `-lsel`;
//! - `_` and `-` in flag names are the same (`--log_dir`), as in Kubernetes components.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::spec::{self, Flag, Kind, Scope};
use super::{OptionsError, Setting, Source, parse_go_bool};

/// What the command line asked for.
#[derive(Debug, Default)]
pub(crate) struct CommandLine {
    /// Every supported (or no-effect) flag given, with its values in order.
    pub settings: Vec<(&'static Flag, Setting)>,
    pub help: bool,
    pub version: bool,
}

/// Parses `args` (the program name first). Unsupported flags given with a value other than
/// their harmless one are an error naming the first of them.
pub(crate) fn parse(args: &[String]) -> Result<CommandLine, OptionsError> {
    let normalized = normalize(args);
    let matches = command()
        .try_get_matches_from(&normalized)
        .map_err(|e| clap_error(&e, &normalized))?;

    let mut out = CommandLine::default();
    let mut unsupported: Option<(usize, OptionsError)> = None;
    for flag in spec::FLAGS {
        let Some(values) = values_of(&matches, flag.name) else {
            continue;
        };
        match flag.name {
            "help" => out.help = last_bool(flag, &values)?,
            "version" => out.version = last_bool(flag, &values)?,
            _ => match super::admit(flag, values, Source::Flag) {
                Ok(setting) => out.settings.extend(setting),
                Err(err) => {
                    // Name the first unsupported flag as written on the command line.
                    let index = matches.index_of(flag.name).unwrap_or(usize::MAX);
                    if unsupported.as_ref().is_none_or(|(i, _)| index < *i) {
                        unsupported = Some((index, err));
                    }
                }
            },
        }
    }
    match unsupported {
        Some((_, err)) => Err(err),
        None => Ok(out),
    }
}

/// Whether every value given to an unsupported flag asks for what metrics-bridge does anyway.
pub(crate) fn is_harmless(flag: &Flag, harmless: Option<&str>, values: &[String]) -> bool {
    let Some(harmless) = harmless else {
        return false;
    };
    values.iter().all(|v| {
        if flag.kind == Kind::Bool {
            matches!((parse_go_bool(v), parse_go_bool(harmless)), (Ok(a), Ok(b)) if a == b)
        } else {
            v.trim() == harmless
        }
    })
}

/// The last value of a boolean flag given on the command line.
fn last_bool(flag: &Flag, values: &[String]) -> Result<bool, OptionsError> {
    match values.last() {
        Some(v) => parse_go_bool(v).map_err(|e| super::invalid(flag, &Source::Flag, v, e)),
        None => Ok(false),
    }
}

fn values_of(matches: &ArgMatches, id: &str) -> Option<Vec<String>> {
    let occurrences = matches.get_raw_occurrences(id)?;
    let values: Vec<String> = occurrences
        .flatten()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    Some(values)
}

/// Rewrites `--log_dir` as `--log-dir`, up to a bare `--`.
fn normalize(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut flags_done = false;
    for (i, arg) in args.iter().enumerate() {
        if i == 0 || flags_done || !arg.starts_with("--") {
            out.push(arg.clone());
            continue;
        }
        if arg == "--" {
            flags_done = true;
            out.push(arg.clone());
            continue;
        }
        let (name, rest) = match arg.find('=') {
            Some(eq) => arg.split_at(eq),
            None => (arg.as_str(), ""),
        };
        out.push(format!("--{}{rest}", name[2..].replace('_', "-")));
    }
    out
}

/// The clap command for the whole table.
fn command() -> Command {
    let mut cmd = Command::new("metrics-bridge")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true);
    for flag in spec::FLAGS {
        let mut arg = Arg::new(flag.name)
            .long(flag.name)
            .action(ArgAction::Append)
            .value_name("VALUE");
        if let Some(c) = flag.short {
            arg = arg.short(c);
        }
        arg = if flag.kind == Kind::Bool {
            arg.num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
        } else {
            arg.num_args(1).allow_hyphen_values(true)
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// One line for whatever clap rejected.
fn clap_error(err: &clap::Error, args: &[String]) -> OptionsError {
    let context = |kind: ContextKind| -> Option<String> {
        match err.get(kind)? {
            ContextValue::String(s) => Some(s.clone()),
            ContextValue::Strings(v) => v.first().cloned(),
            _ => None,
        }
    };
    let invalid = context(ContextKind::InvalidArg);
    match (err.kind(), invalid) {
        (ErrorKind::UnknownArgument, Some(arg))
            if arg.starts_with('-') && arg != "-" && !after_double_dash(&arg, args) =>
        {
            let flag = arg.split('=').next().unwrap_or(&arg).to_string();
            // pflag's wording for `--=x` and `---x`, which name no flag at all.
            let name = flag.trim_start_matches('-');
            if name.is_empty() || flag.starts_with("---") {
                // clap reports `--=x` as `--`; name the argument as it was written.
                let written = args
                    .iter()
                    .skip(1)
                    .find(|a| **a == arg || a.starts_with(&format!("{arg}=")))
                    .unwrap_or(&arg);
                return OptionsError::CommandLine(format!("bad flag syntax: {written}"));
            }
            OptionsError::UnknownFlag {
                flag,
                suggestion: context(ContextKind::SuggestedArg),
            }
        }
        (ErrorKind::UnknownArgument, Some(arg)) => {
            let after_bool = args
                .iter()
                .position(|a| *a == arg)
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| args.get(i))
                .and_then(|prev| bool_flag_named(prev));
            OptionsError::UnexpectedArgument {
                arg,
                bool_flag: after_bool.map(|f| f.name),
            }
        }
        (ErrorKind::InvalidValue, Some(arg))
            if context(ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
        {
            // clap renders the argument as "--kubeconfig <VALUE>".
            let flag = arg.split_whitespace().next().unwrap_or(&arg).to_string();
            OptionsError::MissingValue { flag }
        }
        _ => {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("").trim();
            OptionsError::CommandLine(first.trim_start_matches("error: ").to_string())
        }
    }
}

/// Whether `arg` comes after a bare `--`, where nothing is a flag.
fn after_double_dash(arg: &str, args: &[String]) -> bool {
    let dash = args.iter().position(|a| a == "--");
    let at = args.iter().rposition(|a| a == arg);
    matches!((dash, at), (Some(d), Some(a)) if a > d)
}

/// The boolean flag an argument like `--kubelet-insecure-tls` or `-h` names, if any.
fn bool_flag_named(arg: &str) -> Option<&'static Flag> {
    let flag = if let Some(long) = arg.strip_prefix("--") {
        spec::find(long)?
    } else {
        let c = arg.strip_prefix('-')?.chars().next()?;
        spec::FLAGS.iter().find(|f| f.short == Some(c))?
    };
    (flag.kind == Kind::Bool && flag.scope != Scope::FlagOnly).then_some(flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<CommandLine, OptionsError> {
        let mut all = vec![String::from("metrics-bridge")];
        all.extend(args.iter().map(|s| (*s).to_string()));
        parse(&all)
    }

    fn values(cl: &CommandLine, name: &str) -> Vec<String> {
        cl.settings
            .iter()
            .filter(|(f, _)| f.name == name)
            .flat_map(|(_, s)| s.values.clone())
            .collect()
    }

    #[test]
    fn long_flags_take_values_after_equals_or_as_the_next_argument() {
        let cl = parse_args(&["--kubeconfig=/a", "--metric-resolution", "15s"]).unwrap();
        assert_eq!(values(&cl, "kubeconfig"), ["/a"]);
        assert_eq!(values(&cl, "metric-resolution"), ["15s"]);
    }

    #[test]
    fn booleans_are_bare_or_take_their_value_after_equals() {
        let cl = parse_args(&[
            "--kubelet-insecure-tls",
            "--kubelet-use-node-status-port=false",
        ])
        .unwrap();
        assert_eq!(values(&cl, "kubelet-insecure-tls"), ["true"]);
        assert_eq!(values(&cl, "kubelet-use-node-status-port"), ["false"]);
        // As with pflag, a separate "false" is not the flag's value.
        let err = parse_args(&["--kubelet-insecure-tls", "false"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected argument \"false\": boolean flags take their value after \"=\", as in \
             --kubelet-insecure-tls=false"
        );
    }

    #[test]
    fn shorthands_take_values_in_every_pflag_form() {
        for form in [
            &["-v", "3"][..],
            &["-v=3"],
            &["-v3"],
            &["--v=3"],
            &["--v", "3"],
        ] {
            let cl = parse_args(form).unwrap();
            assert_eq!(values(&cl, "v"), ["3"], "{form:?}");
        }
        for form in [
            &["-l", "a=b"][..],
            &["-l=a=b"],
            &["-la=b"],
            &["--node-selector=a=b"],
        ] {
            let cl = parse_args(form).unwrap();
            assert_eq!(values(&cl, "node-selector"), ["a=b"], "{form:?}");
        }
    }

    #[test]
    fn repeated_flags_keep_every_value_in_order() {
        let cl = parse_args(&[
            "--requestheader-allowed-names=a,b",
            "--requestheader-allowed-names",
            "c",
            "--metric-resolution=1m",
            "--metric-resolution=15s",
        ])
        .unwrap();
        assert_eq!(values(&cl, "requestheader-allowed-names"), ["a,b", "c"]);
        assert_eq!(values(&cl, "metric-resolution"), ["1m", "15s"]);
    }

    #[test]
    fn values_may_start_with_a_dash_and_may_be_empty() {
        let cl = parse_args(&["--metric-resolution", "-5s", "--kubeconfig="]).unwrap();
        assert_eq!(values(&cl, "metric-resolution"), ["-5s"]);
        assert_eq!(values(&cl, "kubeconfig"), [""]);
    }

    #[test]
    fn underscores_in_names_are_dashes() {
        let cl = parse_args(&["--kubelet_port=1", "--metric_resolution", "2s"]).unwrap();
        assert_eq!(values(&cl, "kubelet-port"), ["1"]);
        assert_eq!(values(&cl, "metric-resolution"), ["2s"]);
    }

    #[test]
    fn unknown_flags_are_named_with_a_suggestion() {
        let err = parse_args(&["--kubelet-prot=1"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown flag: --kubelet-prot (did you mean --kubelet-port?)"
        );
        let err = parse_args(&["--frobnicate"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown flag: --frobnicate");
        let err = parse_args(&["-x"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown flag: -x");
    }

    #[test]
    fn positional_arguments_are_rejected() {
        let err = parse_args(&["serve"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected argument \"serve\": metrics-bridge takes no positional arguments"
        );
        let err = parse_args(&["--", "--kubeconfig=x"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected argument \"--kubeconfig=x\": metrics-bridge takes no positional arguments"
        );
    }

    #[test]
    fn a_value_flag_at_the_end_needs_its_value() {
        let err = parse_args(&["--kubeconfig"]).unwrap_err();
        assert_eq!(err.to_string(), "flag needs an argument: --kubeconfig");
        let err = parse_args(&["-l"]).unwrap_err();
        assert_eq!(err.to_string(), "flag needs an argument: --node-selector");
    }

    #[test]
    fn unsupported_flags_are_errors_unless_harmless() {
        let err = parse_args(&["--profiling"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "flag --profiling is not supported by metrics-bridge yet (only --profiling=false \
             is accepted)"
        );
        assert!(
            parse_args(&["--profiling=false"])
                .unwrap()
                .settings
                .is_empty()
        );
        assert!(parse_args(&["--logtostderr"]).is_ok());
        let err = parse_args(&["--audit-log-path", "/var/log/audit"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "flag --audit-log-path is not supported by metrics-bridge yet"
        );
        // The first unsupported flag on the command line is the one named.
        let err = parse_args(&["--vmodule=x=2", "--profiling"]).unwrap_err();
        assert!(err.to_string().starts_with("flag --vmodule "), "{err}");
        let err = parse_args(&["--log_dir=/tmp"]).unwrap_err();
        assert!(err.to_string().starts_with("flag --log-dir "), "{err}");
    }

    #[test]
    fn help_and_version_are_seen() {
        assert!(parse_args(&["--version"]).unwrap().version);
        assert!(!parse_args(&["--version=false"]).unwrap().version);
        assert!(parse_args(&["-h"]).unwrap().help);
        assert!(parse_args(&["--help"]).unwrap().help);
        assert_eq!(
            parse_args(&["--version=maybe"]).unwrap_err().to_string(),
            "invalid value \"maybe\" for --version: must be true or false"
        );
    }

    #[test]
    fn malformed_flags_are_bad_syntax() {
        for arg in ["--=x", "---x"] {
            assert_eq!(
                parse_args(&[arg]).unwrap_err().to_string(),
                format!("bad flag syntax: {arg}")
            );
        }
    }
}
