//! Flags and the config file: metrics-server's flags with the same names, defaults and
//! validation, plus `--config FILE`.
//!
//! Settings come from four layers, each overriding the one before, flag by flag:
//! defaults < config file (`--config`) < environment (`METRICS_BRIDGE_<FLAG_NAME>`) < flags.
//! A layer that sets a list replaces the whole list. Every metrics-server flag is either
//! supported or rejected with an error naming it; unknown flags and config keys are errors
//! too. Every error is one line that names the flag (or variable, or key and file) and the
//! problem.
//!
//! The typed structs below are the contract the rest of the program reads.

mod cli;
mod file;
pub(crate) mod spec;
mod tls;

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::NodeAddressType;
use crate::duration::{self, DurationError};
use crate::exposition::LabelsAllowlist;
use crate::selector::{LabelSelector, SelectorError};

use spec::{Flag, Kind, Support};

/// The version `--version` prints.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Everything metrics-bridge is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `--metric-resolution`: how often every kubelet is scraped (default 1m).
    pub metric_resolution: Duration,
    /// `--config`, when settings were read from a file.
    pub config_file: Option<PathBuf>,
    /// Ours, `--metric-labels-allowlist`: the pod and node labels `/metrics/resource` adds,
    /// in kube-state-metrics' syntax; none by default.
    pub metric_labels_allowlist: LabelsAllowlist,
    pub cluster: ClusterOptions,
    pub kubelet: KubeletOptions,
    pub serving: ServingOptions,
    pub authentication: AuthenticationOptions,
    pub authorization: AuthorizationOptions,
    pub logging: LoggingOptions,
}

/// How to reach the API server and which nodes to watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterOptions {
    /// `--kubeconfig`; in-cluster config when unset.
    pub kubeconfig: Option<PathBuf>,
    /// `-l/--node-selector`; `None` when empty.
    pub node_selector: Option<LabelSelector>,
}

/// How to scrape kubelets.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletOptions {
    /// `--kubelet-insecure-tls`.
    pub insecure_tls: bool,
    /// `--kubelet-certificate-authority`.
    pub certificate_authority: Option<PathBuf>,
    /// `--kubelet-client-certificate` and `--kubelet-client-key`: both or neither.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `--kubelet-port` (10250).
    pub port: u16,
    /// `--kubelet-use-node-status-port`.
    pub use_node_status_port: bool,
    /// `--kubelet-preferred-address-types`: never empty.
    pub preferred_address_types: Vec<NodeAddressType>,
    /// `--kubelet-request-timeout` (10s): positive, and at most 90% of the resolution.
    pub request_timeout: Duration,
    /// Ours, `--kubelet-max-concurrent-scrapes` (1024): the most scrapes in flight at once,
    /// at least 1.
    pub max_concurrent_scrapes: usize,
    /// Ours, `--kubelet-max-idle-connections` (0): the most idle kept-alive kubelet
    /// connections; 0 derives it from the open-file limit (`scrape::idle_budget_for`).
    pub max_idle_connections: usize,
    /// Ours, `--kubelet-max-body-bytes` (10Mi): the largest kubelet response body accepted,
    /// at least 1.
    pub max_body_bytes: usize,
}

/// The secure port.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingOptions {
    /// `--bind-address` (0.0.0.0).
    pub bind_address: IpAddr,
    /// `--secure-port` (443); 0 asks the OS for a free port.
    pub secure_port: u16,
    /// `--cert-dir`: where the self-signed certificate is kept when no `--tls-cert-file` is
    /// given. Empty keeps it in memory only, as in metrics-server.
    pub cert_dir: PathBuf,
    /// `--tls-cert-file` and `--tls-private-key-file`: both or neither.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `--tls-min-version` (VersionTLS12).
    pub tls_min_version: TlsVersion,
    /// `--tls-cipher-suites`, IANA names as Go spells them, each one rustls implements; empty
    /// means the defaults. Use [`ServingOptions::rustls_cipher_suites`] to apply them.
    pub tls_cipher_suites: Vec<String>,
    /// `--tls-sni-cert-key`.
    pub tls_sni_cert_keys: Vec<SniCertKey>,
    /// `--disable-http2-serving`.
    pub disable_http2_serving: bool,
}

impl ServingOptions {
    /// The rustls cipher suites `--tls-cipher-suites` asks for, with Go's meaning: the list
    /// restricts TLS 1.2 and every TLS 1.3 suite stays enabled. `None` means the provider's
    /// defaults.
    pub fn rustls_cipher_suites(&self) -> Option<Vec<rustls::SupportedCipherSuite>> {
        tls::rustls_cipher_suites(&self.tls_cipher_suites)
    }

    /// The ring crypto provider with [`ServingOptions::rustls_cipher_suites`] applied: what a
    /// rustls `ServerConfig` for the secure port is built from.
    pub fn rustls_provider(&self) -> Arc<rustls::crypto::CryptoProvider> {
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suites) = self.rustls_cipher_suites() {
            provider.cipher_suites = suites;
        }
        Arc::new(provider)
    }

    /// The rustls protocol versions `--tls-min-version` allows.
    pub fn rustls_protocol_versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        self.tls_min_version.rustls_versions()
    }
}

/// A TLS protocol version as `--tls-min-version` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

/// One `--tls-sni-cert-key`: `cert,key` or `cert,key:name1,name2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniCertKey {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Explicit domain patterns; empty means the names in the certificate.
    pub names: Vec<String>,
}

/// Delegated authentication, as k8s.io/apiserver configures it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticationOptions {
    /// `--authentication-kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--authentication-skip-lookup`.
    pub skip_lookup: bool,
    /// `--authentication-tolerate-lookup-failure`.
    pub tolerate_lookup_failure: bool,
    /// `--authentication-token-webhook-cache-ttl` (10s).
    pub token_webhook_cache_ttl: Duration,
    /// `--client-ca-file`.
    pub client_ca_file: Option<PathBuf>,
    /// `--requestheader-client-ca-file`.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// `--requestheader-allowed-names`; empty allows any CN the requestheader CA signed.
    pub requestheader_allowed_names: Vec<String>,
    /// `--requestheader-username-headers` (x-remote-user); empty disables the front proxy.
    pub requestheader_username_headers: Vec<String>,
    /// `--requestheader-group-headers` (x-remote-group).
    pub requestheader_group_headers: Vec<String>,
    /// `--requestheader-extra-headers-prefix` (x-remote-extra-).
    pub requestheader_extra_headers_prefix: Vec<String>,
    /// `--requestheader-uid-headers` (none).
    pub requestheader_uid_headers: Vec<String>,
}

/// Delegated authorization.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizationOptions {
    /// `--authorization-kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--authorization-always-allow-paths` (/healthz, /readyz, /livez), each starting with
    /// `/`; a trailing `*` matches a prefix.
    pub always_allow_paths: Vec<String>,
    /// Groups allowed everything without a SubjectAccessReview: `system:masters`, as
    /// k8s.io/apiserver's delegated authorization has it. No flag sets it.
    pub always_allow_groups: Vec<String>,
    /// `--authorization-webhook-cache-authorized-ttl` (10s).
    pub webhook_cache_authorized_ttl: Duration,
    /// `--authorization-webhook-cache-unauthorized-ttl` (10s).
    pub webhook_cache_unauthorized_ttl: Duration,
}

/// `-v` and `--logging-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggingOptions {
    pub verbosity: u8,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Options {
    /// metrics-server's defaults.
    fn default() -> Self {
        Self {
            metric_resolution: Duration::from_secs(60),
            config_file: None,
            metric_labels_allowlist: LabelsAllowlist::default(),
            cluster: ClusterOptions::default(),
            kubelet: KubeletOptions {
                insecure_tls: false,
                certificate_authority: None,
                client_certificate: None,
                client_key: None,
                port: 10250,
                use_node_status_port: false,
                preferred_address_types: vec![
                    NodeAddressType::Hostname,
                    NodeAddressType::InternalDNS,
                    NodeAddressType::InternalIP,
                    NodeAddressType::ExternalDNS,
                    NodeAddressType::ExternalIP,
                ],
                request_timeout: Duration::from_secs(10),
                max_concurrent_scrapes: 1024,
                max_idle_connections: 0,
                max_body_bytes: 10 << 20,
            },
            serving: ServingOptions {
                bind_address: IpAddr::from([0, 0, 0, 0]),
                secure_port: 443,
                cert_dir: PathBuf::from("apiserver.local.config/certificates"),
                tls_cert_file: None,
                tls_private_key_file: None,
                tls_min_version: TlsVersion::Tls12,
                tls_cipher_suites: Vec::new(),
                tls_sni_cert_keys: Vec::new(),
                disable_http2_serving: false,
            },
            authentication: AuthenticationOptions {
                kubeconfig: None,
                skip_lookup: false,
                tolerate_lookup_failure: false,
                token_webhook_cache_ttl: Duration::from_secs(10),
                client_ca_file: None,
                requestheader_client_ca_file: None,
                requestheader_allowed_names: Vec::new(),
                requestheader_username_headers: vec!["x-remote-user".into()],
                requestheader_group_headers: vec!["x-remote-group".into()],
                requestheader_extra_headers_prefix: vec!["x-remote-extra-".into()],
                requestheader_uid_headers: Vec::new(),
            },
            authorization: AuthorizationOptions {
                kubeconfig: None,
                always_allow_paths: vec!["/healthz".into(), "/readyz".into(), "/livez".into()],
                always_allow_groups: vec!["system:masters".into()],
                webhook_cache_authorized_ttl: Duration::from_secs(10),
                webhook_cache_unauthorized_ttl: Duration::from_secs(10),
            },
            logging: LoggingOptions {
                verbosity: 0,
                format: LogFormat::Text,
            },
        }
    }
}

/// What the command line asks the process to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Run with these options. `warnings` are to be logged once logging is set up (a
    /// resolution below 10s, insecure kubelet TLS, flags that have no effect).
    Run {
        options: Box<Options>,
        warnings: Vec<String>,
    },
    /// `--version`: print [`VERSION`] and exit 0.
    Version,
    /// `--help`: print this text and exit 0.
    Help(String),
}

/// Where a setting came from, so that an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    /// The environment variable's name.
    Env(String),
    Flag,
}

/// Why a value was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("not an IP address")]
    Ip(#[source] std::net::AddrParseError),
    #[error("{0}")]
    Invalid(String),
}

/// Why the options could not be loaded. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error("unknown flag: {flag}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownFlag {
        flag: String,
        suggestion: Option<String>,
    },
    #[error("unexpected argument {arg:?}: {}", match bool_flag {
        Some(f) => format!("boolean flags take their value after \"=\", as in --{f}=false"),
        None => "metrics-bridge takes no positional arguments".into(),
    })]
    UnexpectedArgument {
        arg: String,
        /// The boolean flag just before it, which a user may have meant to give a value.
        bool_flag: Option<&'static str>,
    },
    #[error("flag needs an argument: {flag}")]
    MissingValue { flag: String },
    #[error("argument {index} is not valid UTF-8: {lossy:?}")]
    NotUtf8 { index: usize, lossy: String },
    #[error("{0}")]
    CommandLine(String),
    #[error("{what} is not supported by metrics-bridge yet{hint}")]
    Unsupported { what: String, hint: String },
    #[error("invalid value {value:?} for {what}: {source}")]
    InvalidValue {
        what: String,
        value: String,
        #[source]
        source: ValueError,
    },
    /// A rule across flags, such as a certificate without its key.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read config file {path:?}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path:?}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    #[error("config file {path:?}: {problem}")]
    ConfigFile { path: PathBuf, problem: String },
    #[error("{flag} prints information instead of running")]
    NotARun { flag: &'static str },
}

/// One flag's raw values from one layer: every occurrence, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setting {
    pub values: Vec<String>,
    pub source: Source,
}

impl Options {
    /// Loads the options from `args` (the program name first, as `std::env::args_os` gives
    /// them), the config file they or the environment name, and the environment, read
    /// through `env` so that callers and tests decide what it holds.
    pub fn load<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Invocation, OptionsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args = utf8_args(args)?;
        let command_line = cli::parse(&args)?;
        if command_line.help {
            return Ok(Invocation::Help(spec::help()));
        }
        if command_line.version {
            return Ok(Invocation::Version);
        }

        let mut layers = Layers::default();
        let config_file = layers.config_path(&command_line, &env);
        if let Some(path) = &config_file {
            layers.apply(file::load(path)?);
        }
        layers.apply(env_settings(&env)?);
        layers.apply(command_line.settings);

        let mut warnings = Vec::new();
        let mut options = layers.build(&mut warnings)?;
        options.config_file = config_file;
        Ok(Invocation::Run {
            options: Box::new(options),
            warnings,
        })
    }

    /// Loads options from `args` alone (no environment), for tests and tools that build a
    /// configuration the way a user would write it. `--help` and `--version` are errors here.
    pub fn from_args<I, T>(args: I) -> Result<Options, OptionsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        match Self::load(args, |_| None)? {
            Invocation::Run { options, .. } => Ok(*options),
            Invocation::Version => Err(OptionsError::NotARun { flag: "--version" }),
            Invocation::Help(_) => Err(OptionsError::NotARun { flag: "--help" }),
        }
    }
}

fn utf8_args<I, T>(args: I) -> Result<Vec<String>, OptionsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    args.into_iter()
        .enumerate()
        .map(|(index, arg)| {
            arg.into()
                .into_string()
                .map_err(|bad| OptionsError::NotUtf8 {
                    index,
                    lossy: bad.to_string_lossy().into_owned(),
                })
        })
        .collect()
}

/// The `METRICS_BRIDGE_*` variables that are set, as settings.
fn env_settings(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static Flag, Setting)>, OptionsError> {
    let mut settings = Vec::new();
    for flag in spec::FLAGS {
        if flag.scope != spec::Scope::Everywhere {
            continue;
        }
        let var = flag.env_var();
        let Some(value) = env(&var) else {
            continue;
        };
        // A variable is one flag occurrence; `--tls-sni-cert-key` entries are separated by
        // ';' because commas and colons are part of each entry.
        let values: Vec<String> = if flag.kind == Kind::Repeated {
            value
                .split(';')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(String::from)
                .collect()
        } else {
            vec![value]
        };
        settings.extend(admit(flag, values, Source::Env(var))?);
    }
    Ok(settings)
}

/// What one layer's values for `flag` become: a setting when the flag is supported (or has
/// no effect), nothing when it is unsupported but given its harmless value, else the error
/// that names it.
pub(crate) fn admit(
    flag: &'static Flag,
    values: Vec<String>,
    source: Source,
) -> Result<Option<(&'static Flag, Setting)>, OptionsError> {
    match flag.support {
        Support::No { harmless } if !cli::is_harmless(flag, harmless, &values) => {
            Err(unsupported(flag, &source))
        }
        Support::No { .. } => Ok(None),
        Support::Yes | Support::NoEffect { .. } => Ok(Some((flag, Setting { values, source }))),
    }
}

/// The error for an unsupported flag set from `source`.
pub(crate) fn unsupported(flag: &Flag, source: &Source) -> OptionsError {
    let hint = match flag.support {
        Support::No {
            harmless: Some(v), ..
        } if flag.kind == Kind::Bool => format!(" (only --{}={v} is accepted)", flag.name),
        Support::No {
            harmless: Some(""), ..
        } => format!(" (only an empty --{} is accepted)", flag.name),
        Support::No {
            harmless: Some(v), ..
        } => format!(" (only --{}={v} is accepted)", flag.name),
        _ => String::new(),
    };
    let what = match source {
        Source::Flag | Source::Default => format!("flag --{}", flag.name),
        other => describe(flag, other),
    };
    OptionsError::Unsupported { what, hint }
}

/// How a message names a setting: the flag, the variable, or the key and its file.
fn describe(flag: &Flag, source: &Source) -> String {
    match source {
        Source::Default | Source::Flag => flag.display(),
        Source::Env(var) => var.clone(),
        Source::File(path) => format!("{} in config file {path:?}", flag.name),
    }
}

/// The error for a value `flag` cannot take, naming where it came from.
pub(crate) fn invalid(
    flag: &Flag,
    source: &Source,
    value: &str,
    reason: ValueError,
) -> OptionsError {
    OptionsError::InvalidValue {
        what: describe(flag, source),
        value: value.to_string(),
        source: reason,
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(v: &str) -> Result<bool, ValueError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ValueError::Invalid("must be true or false".into())),
    }
}

/// The merged settings: the last layer to set a flag wins.
#[derive(Debug, Default)]
struct Layers {
    set: Vec<(&'static Flag, Setting)>,
}

impl Layers {
    fn apply(&mut self, settings: Vec<(&'static Flag, Setting)>) {
        for (flag, setting) in settings {
            match self.set.iter_mut().find(|(f, _)| f.name == flag.name) {
                Some(slot) => slot.1 = setting,
                None => self.set.push((flag, setting)),
            }
        }
    }

    /// `--config` from the command line, else `METRICS_BRIDGE_CONFIG`; empty means none.
    fn config_path(
        &self,
        command_line: &cli::CommandLine,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Option<PathBuf> {
        let from_flag = command_line
            .settings
            .iter()
            .find(|(f, _)| f.name == "config")
            .and_then(|(_, s)| s.values.last().cloned());
        from_flag
            .or_else(|| env("METRICS_BRIDGE_CONFIG"))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    }

    /// The flag's values and where they came from; its default when no layer set it.
    fn raw(&self, name: &str) -> Result<(&'static Flag, Vec<&str>, Source), OptionsError> {
        let flag = spec::find(name)
            .ok_or_else(|| OptionsError::Invalid(format!("internal error: no flag --{name}")))?;
        Ok(match self.set.iter().find(|(f, _)| f.name == flag.name) {
            Some((_, s)) => (
                flag,
                s.values.iter().map(String::as_str).collect(),
                s.source.clone(),
            ),
            None => (flag, vec![flag.default], Source::Default),
        })
    }

    /// A single value (the last one given), parsed.
    fn one<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<T, OptionsError> {
        let (flag, values, source) = self.raw(name)?;
        let value = values.last().copied().unwrap_or(flag.default);
        parse(value).map_err(|e| invalid(flag, &source, value, e))
    }

    /// A comma-separated list over every occurrence, each item trimmed and checked; empty
    /// items are dropped, so `--flag=` gives an empty list.
    fn list<T>(
        &self,
        name: &str,
        mut item: impl FnMut(&str) -> Result<T, ValueError>,
    ) -> Result<Vec<T>, OptionsError> {
        let (flag, values, source) = self.raw(name)?;
        let mut out = Vec::new();
        for value in values {
            for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                out.push(item(part).map_err(|e| invalid(flag, &source, value, e))?);
            }
        }
        Ok(out)
    }

    /// One item per occurrence, never split.
    fn repeated<T>(
        &self,
        name: &str,
        mut item: impl FnMut(&str) -> Result<T, ValueError>,
    ) -> Result<Vec<T>, OptionsError> {
        let (flag, values, source) = self.raw(name)?;
        values
            .into_iter()
            .filter(|v| !v.trim().is_empty())
            .map(|v| item(v).map_err(|e| invalid(flag, &source, v, e)))
            .collect()
    }

    fn is_set(&self, name: &str) -> bool {
        self.set.iter().any(|(f, _)| f.name == name)
    }

    fn build(&self, warnings: &mut Vec<String>) -> Result<Options, OptionsError> {
        let strings = |name| self.list(name, |v| Ok(v.to_string()));
        let metric_resolution = self.one("metric-resolution", |v| {
            let d = duration::parse(v)?;
            if d < Duration::from_secs(1) {
                return Err(ValueError::Invalid("must be at least 1s".into()));
            }
            Ok(d)
        })?;
        let options = Options {
            metric_resolution,
            config_file: None,
            metric_labels_allowlist: self.one("metric-labels-allowlist", |v| {
                LabelsAllowlist::parse(v).map_err(|e| ValueError::Invalid(e.to_string()))
            })?,
            cluster: ClusterOptions {
                kubeconfig: self.one("kubeconfig", path)?,
                node_selector: self.one("node-selector", |v| {
                    if v.trim().is_empty() {
                        return Ok(None);
                    }
                    Ok(Some(LabelSelector::parse(v)?))
                })?,
            },
            kubelet: KubeletOptions {
                insecure_tls: self.one("kubelet-insecure-tls", parse_go_bool)?,
                certificate_authority: self.one("kubelet-certificate-authority", path)?,
                client_certificate: self.one("kubelet-client-certificate", path)?,
                client_key: self.one("kubelet-client-key", path)?,
                port: self.one("kubelet-port", |v| port(v, false))?,
                use_node_status_port: self.one("kubelet-use-node-status-port", parse_go_bool)?,
                preferred_address_types: self.list("kubelet-preferred-address-types", |v| {
                    NodeAddressType::parse(v).ok_or_else(|| {
                        ValueError::Invalid(format!(
                            "unknown address type {v:?}; use Hostname, InternalDNS, \
                             InternalIP, ExternalDNS or ExternalIP"
                        ))
                    })
                })?,
                request_timeout: self.one("kubelet-request-timeout", |v| {
                    let d = duration::parse(v)?;
                    if d.is_zero() {
                        return Err(ValueError::Invalid("must be positive".into()));
                    }
                    Ok(d)
                })?,
                max_concurrent_scrapes: self.one("kubelet-max-concurrent-scrapes", count)?,
                max_idle_connections: self.one("kubelet-max-idle-connections", count_or_zero)?,
                max_body_bytes: self.one("kubelet-max-body-bytes", bytes)?,
            },
            serving: ServingOptions {
                bind_address: self
                    .one("bind-address", |v| v.trim().parse().map_err(ValueError::Ip))?,
                secure_port: self.one("secure-port", |v| port(v, true))?,
                cert_dir: self.one("cert-dir", |v| Ok(PathBuf::from(v)))?,
                tls_cert_file: self.one("tls-cert-file", path)?,
                tls_private_key_file: self.one("tls-private-key-file", path)?,
                tls_min_version: self.one("tls-min-version", |v| {
                    TlsVersion::parse(v.trim()).ok_or_else(|| {
                        ValueError::Invalid(
                            "use VersionTLS10, VersionTLS11, VersionTLS12 or VersionTLS13".into(),
                        )
                    })
                })?,
                tls_cipher_suites: self.list("tls-cipher-suites", |v| {
                    tls::check_cipher_suite(v).map_err(ValueError::Invalid)?;
                    Ok(v.to_string())
                })?,
                tls_sni_cert_keys: self.repeated("tls-sni-cert-key", sni_cert_key)?,
                disable_http2_serving: self.one("disable-http2-serving", parse_go_bool)?,
            },
            authentication: AuthenticationOptions {
                kubeconfig: self.one("authentication-kubeconfig", path)?,
                skip_lookup: self.one("authentication-skip-lookup", parse_go_bool)?,
                tolerate_lookup_failure: self
                    .one("authentication-tolerate-lookup-failure", parse_go_bool)?,
                token_webhook_cache_ttl: self
                    .one("authentication-token-webhook-cache-ttl", go_duration)?,
                client_ca_file: self.one("client-ca-file", path)?,
                requestheader_client_ca_file: self.one("requestheader-client-ca-file", path)?,
                requestheader_allowed_names: strings("requestheader-allowed-names")?,
                requestheader_username_headers: strings("requestheader-username-headers")?,
                requestheader_group_headers: strings("requestheader-group-headers")?,
                requestheader_extra_headers_prefix: strings("requestheader-extra-headers-prefix")?,
                requestheader_uid_headers: strings("requestheader-uid-headers")?,
            },
            authorization: AuthorizationOptions {
                kubeconfig: self.one("authorization-kubeconfig", path)?,
                always_allow_paths: self.list("authorization-always-allow-paths", allow_path)?,
                always_allow_groups: vec!["system:masters".into()],
                webhook_cache_authorized_ttl: self
                    .one("authorization-webhook-cache-authorized-ttl", go_duration)?,
                webhook_cache_unauthorized_ttl: self
                    .one("authorization-webhook-cache-unauthorized-ttl", go_duration)?,
            },
            logging: LoggingOptions {
                verbosity: self.one("v", |v| {
                    v.trim()
                        .parse()
                        .map_err(|_| ValueError::Invalid("must be an integer from 0 to 255".into()))
                })?,
                format: self.one("logging-format", |v| match v.trim() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err(ValueError::Invalid("use text or json".into())),
                })?,
            },
        };
        // No-effect flags are still checked, so a typo in their value is caught.
        self.one("log-flush-frequency", go_duration)?;
        check_rules(&options)?;
        self.collect_warnings(&options, warnings);
        Ok(options)
    }

    fn collect_warnings(&self, options: &Options, warnings: &mut Vec<String>) {
        if options.metric_resolution < Duration::from_secs(10) {
            warnings.push(format!(
                "--metric-resolution={} is below 10s: kubelets refresh resource metrics about \
                 every 10s, so scrapes may return the same samples and CPU rates may be noisy",
                duration::format(options.metric_resolution)
            ));
        }
        if options.kubelet.insecure_tls {
            warnings.push(
                "--kubelet-insecure-tls: kubelet serving certificates are not verified, so \
                 anyone able to intercept kubelet traffic can feed false metrics; use \
                 --kubelet-certificate-authority outside test clusters"
                    .into(),
            );
        }
        let serving = &options.serving;
        if !serving.tls_cipher_suites.is_empty()
            && serving.tls_min_version < TlsVersion::Tls13
            && !serving
                .tls_cipher_suites
                .iter()
                .any(|name| tls::is_tls12_suite(name))
        {
            warnings.push(
                "--tls-cipher-suites names no TLS 1.2 cipher suite, so only TLS 1.3 clients can \
                 connect; add a TLS 1.2 suite or set --tls-min-version=VersionTLS13"
                    .into(),
            );
        }
        if options.serving.tls_min_version < TlsVersion::Tls12 {
            warnings.push(format!(
                "--tls-min-version={}: rustls implements TLS 1.2 and 1.3 only, so the \
                 effective minimum is VersionTLS12",
                options.serving.tls_min_version.as_str()
            ));
        }
        for flag in spec::FLAGS {
            if let Support::NoEffect { why } = flag.support
                && self.is_set(flag.name)
            {
                warnings.push(format!("--{} has no effect: {why}", flag.name));
            }
        }
    }
}

/// The rules that tie flags together, as metrics-server checks them.
fn check_rules(o: &Options) -> Result<(), OptionsError> {
    let k = &o.kubelet;
    // metrics-server: resolution*9/10 must not be less than the timeout, in nanoseconds.
    let allowed = o.metric_resolution.as_nanos() * 9 / 10;
    if allowed < k.request_timeout.as_nanos() {
        return Err(OptionsError::Invalid(format!(
            "--kubelet-request-timeout={} must not exceed 90% of --metric-resolution={} ({}); \
             lower the timeout or raise the resolution",
            duration::format(k.request_timeout),
            duration::format(o.metric_resolution),
            duration::format(Duration::from_nanos(
                u64::try_from(allowed).unwrap_or(u64::MAX)
            )),
        )));
    }
    both_or_neither(
        &k.client_certificate,
        "--kubelet-client-certificate",
        &k.client_key,
        "--kubelet-client-key",
    )?;
    if k.certificate_authority.is_some() && k.insecure_tls {
        return Err(OptionsError::Invalid(
            "--kubelet-certificate-authority and --kubelet-insecure-tls cannot be used together"
                .into(),
        ));
    }
    if k.preferred_address_types.is_empty() {
        return Err(OptionsError::Invalid(
            "--kubelet-preferred-address-types must name at least one address type".into(),
        ));
    }
    both_or_neither(
        &o.serving.tls_cert_file,
        "--tls-cert-file",
        &o.serving.tls_private_key_file,
        "--tls-private-key-file",
    )
}

fn both_or_neither<T>(
    a: &Option<T>,
    a_name: &str,
    b: &Option<T>,
    b_name: &str,
) -> Result<(), OptionsError> {
    let missing = match (a, b) {
        (Some(_), None) => b_name,
        (None, Some(_)) => a_name,
        _ => return Ok(()),
    };
    Err(OptionsError::Invalid(format!(
        "{a_name} and {b_name} must be given together ({missing} is missing)"
    )))
}

/// An optional path: empty means unset, as in metrics-server.
fn path(v: &str) -> Result<Option<PathBuf>, ValueError> {
    Ok((!v.is_empty()).then(|| PathBuf::from(v)))
}

fn go_duration(v: &str) -> Result<Duration, ValueError> {
    Ok(duration::parse(v.trim())?)
}

fn port(v: &str, zero_ok: bool) -> Result<u16, ValueError> {
    match v.trim().parse::<u16>() {
        Ok(0) if !zero_ok => Err(ValueError::Invalid("must be a port from 1 to 65535".into())),
        Ok(p) => Ok(p),
        Err(_) if zero_ok => Err(ValueError::Invalid("must be a port from 0 to 65535".into())),
        Err(_) => Err(ValueError::Invalid("must be a port from 1 to 65535".into())),
    }
}

fn count(v: &str) -> Result<usize, ValueError> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ValueError::Invalid("must be a positive integer".into())),
    }
}

/// A count where 0 has a meaning (`--kubelet-max-idle-connections`: derive it).
fn count_or_zero(v: &str) -> Result<usize, ValueError> {
    v.trim()
        .parse::<usize>()
        .map_err(|_| ValueError::Invalid("must be a non-negative integer".into()))
}

/// A size: digits with an optional `Ki`/`Mi`/`Gi` (powers of 1024) or `k`/`M`/`G` (powers of
/// 1000) suffix, as Kubernetes quantities write them.
fn bytes(v: &str) -> Result<usize, ValueError> {
    let v = v.trim();
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = v.split_at(digits);
    let scale: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => {
            return Err(ValueError::Invalid(
                "must be a size such as 10Mi, 512Ki or 1048576".into(),
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| ValueError::Invalid("must be a size such as 10Mi, 512Ki or 1048576".into()))?;
    n.checked_mul(scale)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|b| *b > 0)
        .ok_or_else(|| ValueError::Invalid("must be at least 1 byte and fit in memory".into()))
}

/// `cert,key` or `cert,key:name1,name2`, as Kubernetes' NamedCertKey parses it.
fn sni_cert_key(v: &str) -> Result<SniCertKey, ValueError> {
    let (pair, names) = match v.split_once(':') {
        Some((pair, names)) => {
            let names = names.trim();
            if names.is_empty() {
                return Err(ValueError::Invalid(
                    "empty names list after ':'; drop the ':' to use the certificate's names"
                        .into(),
                ));
            }
            let names: Vec<String> = names.split(',').map(|n| n.trim().to_string()).collect();
            if names.iter().any(String::is_empty) {
                return Err(ValueError::Invalid("empty name in the names list".into()));
            }
            (pair, names)
        }
        None => (v, Vec::new()),
    };
    let mut files = pair.trim().split(',').map(str::trim);
    match (files.next(), files.next(), files.next()) {
        (Some(cert), Some(key), None) if !cert.is_empty() && !key.is_empty() => Ok(SniCertKey {
            cert_file: PathBuf::from(cert),
            key_file: PathBuf::from(key),
            names,
        }),
        _ => Err(ValueError::Invalid(
            "expected cert,key or cert,key:name1,name2".into(),
        )),
    }
}

/// An always-allowed path: `*` only at the end, and a leading `/` added as k8s.io/apiserver
/// treats `healthz` and `/healthz` alike.
fn allow_path(v: &str) -> Result<String, ValueError> {
    if v.find('*').is_some_and(|star| star != v.len() - 1) {
        return Err(ValueError::Invalid(format!(
            "only a trailing * is allowed in {v:?}"
        )));
    }
    Ok(if v.starts_with('/') {
        v.to_string()
    } else {
        format!("/{v}")
    })
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests;
