//! The flag table: every flag metrics-bridge knows, supported or not.
//!
//! One table drives the command-line parser, the `METRICS_BRIDGE_*` environment variables, the
//! config-file keys, `--help` and the generated part of `docs/flags.md`, so the five cannot
//! drift apart. Adding a flag (`--metric-labels-allowlist`, say) is one entry here
//! plus one line where [`super::Options`] is built.

use std::fmt::Write as _;

/// How a flag's value is written and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--flag`, `--flag=true|false` (Go's `strconv.ParseBool` spellings).
    Bool,
    /// A Go duration such as `15s` or `1m30s`.
    Duration,
    /// A TCP port; `zero_ok` when 0 has a meaning.
    Port { zero_ok: bool },
    /// A positive integer.
    Count,
    /// A size in bytes, optionally with a `Ki`/`Mi`/`Gi` or `k`/`M`/`G` suffix.
    Bytes,
    /// A file or directory path; empty means unset.
    Path,
    /// Free text, checked where the option is built.
    Text,
    /// Comma-separated values; repeating the flag appends.
    List,
    /// One value per occurrence, never split on commas (`--tls-sni-cert-key`).
    Repeated,
    /// An IP address.
    Ip,
    /// A klog verbosity level (`-v`).
    Level,
}

impl Kind {
    /// The placeholder shown in `--help`.
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Bool => "",
            Kind::Duration => "duration",
            Kind::Port { .. } | Kind::Count | Kind::Level => "int",
            Kind::Bytes => "size",
            Kind::Path | Kind::Text => "string",
            Kind::List => "strings",
            Kind::Repeated => "cert,key[:names]",
            Kind::Ip => "ip",
        }
    }
}

/// Whether and how metrics-bridge honours a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    /// Fully supported.
    Yes,
    /// Not supported yet. `harmless` is the one value that asks for exactly what metrics-bridge
    /// does anyway (`--profiling=false`), which is accepted; any other use is an error.
    No { harmless: Option<&'static str> },
    /// Accepted and validated, but it cannot change anything here; a warning says why.
    NoEffect { why: &'static str },
}

/// Where a flag may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Command line, environment and config file.
    Everywhere,
    /// Command line and environment (`--config` cannot name another config file).
    FlagAndEnv,
    /// Command line only (`--help`, `--version`).
    FlagOnly,
}

/// Where a flag comes from, for the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// metrics-server 0.7/0.8 has it.
    MetricsServer,
    /// Only older metrics-server releases had it (klog's own flags).
    MetricsServerLegacy,
    /// metrics-bridge's own.
    Ours,
}

/// The sections of `--help` and of the flag reference, in metrics-server's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Group {
    General,
    Kubelet,
    Serving,
    Authentication,
    Authorization,
    Logging,
    Features,
    Audit,
}

impl Group {
    pub(crate) const ALL: [Group; 8] = [
        Group::General,
        Group::Kubelet,
        Group::Serving,
        Group::Authentication,
        Group::Authorization,
        Group::Logging,
        Group::Features,
        Group::Audit,
    ];

    fn title(self) -> &'static str {
        match self {
            Group::General => "General",
            Group::Kubelet => "Kubelet client",
            Group::Serving => "Secure serving",
            Group::Authentication => "Authentication",
            Group::Authorization => "Authorization",
            Group::Logging => "Logging",
            Group::Features => "Features (profiling)",
            Group::Audit => "Audit",
        }
    }
}

/// One flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag {
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    /// The default, written as the flag's value would be; `""` when there is none.
    pub default: &'static str,
    pub group: Group,
    pub origin: Origin,
    pub support: Support,
    pub scope: Scope,
    pub help: &'static str,
}

impl Flag {
    /// `--name` (or `--v` for the verbosity), as messages name the flag.
    pub(crate) fn display(&self) -> String {
        format!("--{}", self.name)
    }

    /// `METRICS_BRIDGE_<NAME_UPPER_SNAKE>`.
    pub(crate) fn env_var(&self) -> String {
        let mut var = String::with_capacity(15 + self.name.len());
        var.push_str("METRICS_BRIDGE_");
        var.extend(self.name.chars().map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        }));
        var
    }
}

/// Finds a flag by its long name. `_` and `-` are the same, as in Kubernetes components.
pub(crate) fn find(name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|f| {
        f.name.len() == name.len()
            && f.name
                .bytes()
                .zip(name.bytes())
                .all(|(a, b)| a == b || (a == b'-' && b == b'_'))
    })
}

const fn flag(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    group: Group,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        short: None,
        kind,
        default,
        group,
        origin: Origin::MetricsServer,
        support: Support::Yes,
        scope: Scope::Everywhere,
        help,
    }
}

const fn ours(flag: Flag) -> Flag {
    Flag {
        origin: Origin::Ours,
        ..flag
    }
}

const fn short(flag: Flag, c: char) -> Flag {
    Flag {
        short: Some(c),
        ..flag
    }
}

const fn scope(flag: Flag, scope: Scope) -> Flag {
    Flag { scope, ..flag }
}

/// A flag metrics-server has and metrics-bridge does not support yet.
const fn unsupported(
    name: &'static str,
    kind: Kind,
    harmless: Option<&'static str>,
    group: Group,
    help: &'static str,
) -> Flag {
    Flag {
        support: Support::No { harmless },
        ..flag(name, kind, "", group, help)
    }
}

/// One of klog's own flags that older metrics-server releases registered.
const fn klog(name: &'static str, kind: Kind, harmless: Option<&'static str>) -> Flag {
    Flag {
        origin: Origin::MetricsServerLegacy,
        ..unsupported(
            name,
            kind,
            harmless,
            Group::Logging,
            "klog's file logging and header controls; metrics-bridge logs to stderr only.",
        )
    }
}

const fn audit(name: &'static str, kind: Kind) -> Flag {
    unsupported(
        name,
        kind,
        None,
        Group::Audit,
        "Audit logging of API requests.",
    )
}

use Group::*;
use Kind::*;

/// Every flag, in `--help` order within each group.
pub(crate) static FLAGS: &[Flag] = &[
    // General.
    scope(
        ours(flag(
            "config",
            Path,
            "",
            General,
            "Read settings from this YAML (.yaml, .yml) or TOML (.toml) file. Keys are flag \
             names. Flags and METRICS_BRIDGE_* variables override the file.",
        )),
        Scope::FlagAndEnv,
    ),
    flag(
        "kubeconfig",
        Path,
        "",
        General,
        "kubeconfig used to reach the API server and the kubelets. Empty: the in-cluster \
         configuration.",
    ),
    flag(
        "metric-resolution",
        Duration,
        "1m",
        General,
        "How often every kubelet is scraped. At least 1s; below 10s a warning is logged. 90% \
         of it must be at least --kubelet-request-timeout.",
    ),
    ours(flag(
        "metric-labels-allowlist",
        Text,
        "",
        General,
        "Kubernetes labels of pods and nodes added to the series of /metrics/resource, in \
         kube-state-metrics' syntax: pods=[app,team],nodes=[topology.kubernetes.io/zone] adds \
         label_app, label_team and label_topology_kubernetes_io_zone. A label may be * (all) \
         or hold one * wildcard. Adds no series beyond one metrics_bridge_{pod,node}_labels \
         per pod or node. Empty: none.",
    )),
    scope(
        flag("version", Bool, "", General, "Print the version and exit."),
        Scope::FlagOnly,
    ),
    scope(
        short(
            flag("help", Bool, "", General, "Print this help and exit."),
            'h',
        ),
        Scope::FlagOnly,
    ),
    // Kubelet client.
    flag(
        "kubelet-certificate-authority",
        Path,
        "",
        Kubelet,
        "CA bundle that kubelet serving certificates are verified against, instead of the \
         kubeconfig's CA.",
    ),
    flag(
        "kubelet-client-certificate",
        Path,
        "",
        Kubelet,
        "Client certificate presented to kubelets. Needs --kubelet-client-key.",
    ),
    flag(
        "kubelet-client-key",
        Path,
        "",
        Kubelet,
        "Private key of --kubelet-client-certificate.",
    ),
    flag(
        "kubelet-insecure-tls",
        Bool,
        "false",
        Kubelet,
        "Do not verify kubelet serving certificates. For test clusters only; logs a warning.",
    ),
    flag(
        "kubelet-port",
        Port { zero_ok: false },
        "10250",
        Kubelet,
        "Port of the kubelets' HTTPS endpoint.",
    ),
    flag(
        "kubelet-preferred-address-types",
        List,
        "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP",
        Kubelet,
        "Order in which a node's status.addresses are tried; the first type present is \
         used. Values: Hostname, InternalDNS, InternalIP, ExternalDNS, ExternalIP.",
    ),
    flag(
        "kubelet-request-timeout",
        Duration,
        "10s",
        Kubelet,
        "Longest time one kubelet request may take. Must be positive.",
    ),
    flag(
        "kubelet-use-node-status-port",
        Bool,
        "false",
        Kubelet,
        "Use the port in the node's status.daemonEndpoints instead of --kubelet-port.",
    ),
    short(
        flag(
            "node-selector",
            Text,
            "",
            Kubelet,
            "Label selector: only matching nodes are scraped and served (full syntax: =, ==, \
             !=, in, notin, key, !key).",
        ),
        'l',
    ),
    ours(flag(
        "kubelet-max-concurrent-scrapes",
        Count,
        "1024",
        Kubelet,
        "Most kubelet requests in flight at once.",
    )),
    ours(flag(
        "kubelet-max-idle-connections",
        Count,
        "0",
        Kubelet,
        "Most idle kept-alive kubelet connections in all; beyond it a connection is closed \
         after its scrape and that node reconnects next tick, resuming its TLS session. 0: \
         the open-file limit (raised to its hard limit at start) minus 1,024 minus \
         --kubelet-max-concurrent-scrapes.",
    )),
    ours(flag(
        "kubelet-max-body-bytes",
        Bytes,
        "10Mi",
        Kubelet,
        "Largest kubelet response accepted; a larger one fails that node's scrape. Suffixes \
         Ki, Mi, Gi, k, M, G.",
    )),
    unsupported(
        "kubelet-certificate-authority-text",
        Text,
        Some(""),
        Kubelet,
        "CA bundle as PEM text instead of a file.",
    ),
    unsupported(
        "deprecated-kubelet-completely-insecure",
        Bool,
        Some("false"),
        Kubelet,
        "Plain HTTP to kubelets, without authentication.",
    ),
    // Secure serving.
    flag(
        "bind-address",
        Ip,
        "0.0.0.0",
        Serving,
        "Address the secure port listens on; 0.0.0.0 or :: for all interfaces.",
    ),
    flag(
        "secure-port",
        Port { zero_ok: true },
        "443",
        Serving,
        "Port of the HTTPS API. 0 picks a free port, which is logged.",
    ),
    flag(
        "cert-dir",
        Path,
        "apiserver.local.config/certificates",
        Serving,
        "Where the self-signed certificate is written and reused when --tls-cert-file is not \
         given.",
    ),
    flag(
        "tls-cert-file",
        Path,
        "",
        Serving,
        "Serving certificate (chain after the leaf). Reloaded when it changes on disk. Needs \
         --tls-private-key-file.",
    ),
    flag(
        "tls-private-key-file",
        Path,
        "",
        Serving,
        "Private key of --tls-cert-file.",
    ),
    flag(
        "tls-min-version",
        Text,
        "VersionTLS12",
        Serving,
        "Lowest TLS version accepted: VersionTLS10, VersionTLS11, VersionTLS12 or \
         VersionTLS13. rustls implements 1.2 and 1.3 only, so 1.0 and 1.1 act as 1.2.",
    ),
    flag(
        "tls-cipher-suites",
        List,
        "",
        Serving,
        "TLS 1.2 cipher suites, by their Go (IANA) names; empty means the defaults. As in Go, \
         TLS 1.3 suites are always enabled. Names Go knows but rustls does not implement are \
         rejected.",
    ),
    flag(
        "tls-sni-cert-key",
        Repeated,
        "",
        Serving,
        "Extra certificate chosen by SNI: cert,key or cert,key:name1,name2 (names may start \
         with *.). Repeat for more.",
    ),
    flag(
        "disable-http2-serving",
        Bool,
        "false",
        Serving,
        "Serve HTTP/1.1 only.",
    ),
    unsupported(
        "http2-max-streams-per-connection",
        Count,
        Some("0"),
        Serving,
        "HTTP/2 stream limit per connection.",
    ),
    unsupported(
        "permit-address-sharing",
        Bool,
        None,
        Serving,
        "SO_REUSEADDR on the secure port.",
    ),
    unsupported(
        "permit-port-sharing",
        Bool,
        Some("false"),
        Serving,
        "SO_REUSEPORT on the secure port.",
    ),
    // Authentication.
    flag(
        "authentication-kubeconfig",
        Path,
        "",
        Authentication,
        "kubeconfig allowed to create TokenReviews and read the \
         extension-apiserver-authentication ConfigMap. Empty: the cluster --kubeconfig reaches (in-cluster when that is empty too).",
    ),
    flag(
        "authentication-skip-lookup",
        Bool,
        "false",
        Authentication,
        "Do not read missing authentication settings from the \
         kube-system/extension-apiserver-authentication ConfigMap.",
    ),
    flag(
        "authentication-token-webhook-cache-ttl",
        Duration,
        "10s",
        Authentication,
        "How long TokenReview answers are cached.",
    ),
    flag(
        "authentication-tolerate-lookup-failure",
        Bool,
        "false",
        Authentication,
        "Start even if the ConfigMap lookup fails; client certificates and front-proxy \
         requests are refused (401) until the ConfigMap can be read.",
    ),
    flag(
        "client-ca-file",
        Path,
        "",
        Authentication,
        "CA bundle for client certificates; the user is the CN, the groups the O values.",
    ),
    flag(
        "requestheader-client-ca-file",
        Path,
        "",
        Authentication,
        "CA bundle that front-proxy client certificates must verify against before the \
         --requestheader-* headers are trusted.",
    ),
    flag(
        "requestheader-allowed-names",
        List,
        "",
        Authentication,
        "Front-proxy certificate CNs allowed; empty means any CN signed by the requestheader \
         CA.",
    ),
    flag(
        "requestheader-username-headers",
        List,
        "x-remote-user",
        Authentication,
        "Headers carrying the user name; empty disables front-proxy authentication.",
    ),
    flag(
        "requestheader-uid-headers",
        List,
        "",
        Authentication,
        "Headers carrying the user's UID.",
    ),
    flag(
        "requestheader-group-headers",
        List,
        "x-remote-group",
        Authentication,
        "Headers carrying the groups.",
    ),
    flag(
        "requestheader-extra-headers-prefix",
        List,
        "x-remote-extra-",
        Authentication,
        "Header prefixes carrying extra user attributes.",
    ),
    // Authorization.
    flag(
        "authorization-kubeconfig",
        Path,
        "",
        Authorization,
        "kubeconfig allowed to create SubjectAccessReviews. Empty: the cluster --kubeconfig reaches (in-cluster when that is empty too).",
    ),
    flag(
        "authorization-always-allow-paths",
        List,
        "/healthz,/readyz,/livez",
        Authorization,
        "Paths served without authorization. A trailing * matches a prefix.",
    ),
    flag(
        "authorization-webhook-cache-authorized-ttl",
        Duration,
        "10s",
        Authorization,
        "How long allowed SubjectAccessReview answers are cached.",
    ),
    flag(
        "authorization-webhook-cache-unauthorized-ttl",
        Duration,
        "10s",
        Authorization,
        "How long denied SubjectAccessReview answers are cached.",
    ),
    // Logging.
    short(
        flag(
            "v",
            Level,
            "0",
            Logging,
            "Log verbosity, as klog's: 0-1 info, 2-3 debug, 4-5 trace and dependencies' info, \
             6-7 dependencies' debug, 8+ everything.",
        ),
        'v',
    ),
    flag(
        "logging-format",
        Text,
        "text",
        Logging,
        "Log format: text, or json (one JSON object per line).",
    ),
    Flag {
        support: Support::NoEffect {
            why: "metrics-bridge writes every log line as it happens",
        },
        ..flag(
            "log-flush-frequency",
            Duration,
            "5s",
            Logging,
            "Accepted for compatibility; log lines are never buffered.",
        )
    },
    unsupported(
        "vmodule",
        Text,
        Some(""),
        Logging,
        "Per-file log verbosity.",
    ),
    unsupported(
        "log-json-info-buffer-size",
        Text,
        Some("0"),
        Logging,
        "Buffering of JSON info logs.",
    ),
    unsupported(
        "log-json-split-stream",
        Bool,
        Some("false"),
        Logging,
        "JSON errors to stderr, info to stdout.",
    ),
    unsupported(
        "log-text-info-buffer-size",
        Text,
        Some("0"),
        Logging,
        "Buffering of text info logs.",
    ),
    unsupported(
        "log-text-split-stream",
        Bool,
        Some("false"),
        Logging,
        "Text errors to stderr, info to stdout.",
    ),
    klog("add-dir-header", Bool, Some("false")),
    klog("alsologtostderr", Bool, Some("false")),
    klog("log-backtrace-at", Text, Some("")),
    klog("log-dir", Path, Some("")),
    klog("log-file", Path, Some("")),
    klog("log-file-max-size", Count, None),
    klog("logtostderr", Bool, Some("true")),
    klog("one-output", Bool, Some("false")),
    klog("skip-headers", Bool, Some("false")),
    klog("skip-log-headers", Bool, Some("false")),
    klog("stderrthreshold", Text, None),
    // Features.
    unsupported(
        "profiling",
        Bool,
        Some("false"),
        Features,
        "pprof profiling at /debug/pprof.",
    ),
    unsupported(
        "contention-profiling",
        Bool,
        Some("false"),
        Features,
        "Lock contention profiling.",
    ),
    unsupported(
        "debug-socket-path",
        Path,
        Some(""),
        Features,
        "Profiling on an unauthenticated unix socket.",
    ),
    // Audit.
    audit("audit-log-batch-buffer-size", Count),
    audit("audit-log-batch-max-size", Count),
    audit("audit-log-batch-max-wait", Duration),
    audit("audit-log-batch-throttle-burst", Count),
    audit("audit-log-batch-throttle-enable", Bool),
    audit("audit-log-batch-throttle-qps", Text),
    audit("audit-log-compress", Bool),
    audit("audit-log-format", Text),
    audit("audit-log-maxage", Count),
    audit("audit-log-maxbackup", Count),
    audit("audit-log-maxsize", Count),
    audit("audit-log-mode", Text),
    audit("audit-log-path", Path),
    audit("audit-log-truncate-enabled", Bool),
    audit("audit-log-truncate-max-batch-size", Count),
    audit("audit-log-truncate-max-event-size", Count),
    audit("audit-log-version", Text),
    audit("audit-policy-file", Path),
    audit("audit-webhook-batch-buffer-size", Count),
    audit("audit-webhook-batch-max-size", Count),
    audit("audit-webhook-batch-max-wait", Duration),
    audit("audit-webhook-batch-throttle-burst", Count),
    audit("audit-webhook-batch-throttle-enable", Bool),
    audit("audit-webhook-batch-throttle-qps", Text),
    audit("audit-webhook-config-file", Path),
    audit("audit-webhook-initial-backoff", Duration),
    audit("audit-webhook-mode", Text),
    audit("audit-webhook-truncate-enabled", Bool),
    audit("audit-webhook-truncate-max-batch-size", Count),
    audit("audit-webhook-truncate-max-event-size", Count),
    audit("audit-webhook-version", Text),
];

/// The supported flags of one group, in table order.
fn supported_in(group: Group) -> Vec<&'static Flag> {
    FLAGS
        .iter()
        .filter(|f| f.group == group && !matches!(f.support, Support::No { .. }))
        .collect()
}

/// The `--help` text.
pub(crate) fn help() -> String {
    let mut out = String::from(
        "metrics-bridge: a drop-in replacement for Kubernetes metrics-server that is also the\n\
         cluster's Prometheus target for resource metrics.\n\nUsage:\n  metrics-bridge [flags]\n",
    );
    for group in Group::ALL {
        let flags = supported_in(group);
        if flags.is_empty() {
            continue;
        }
        let _ = write!(out, "\n{} flags:\n", group.title());
        for f in flags {
            let short = f.short.map(|c| format!("-{c}, ")).unwrap_or_default();
            let lead = format!("  {short}--{} {}", f.name, f.kind.placeholder());
            let mut help = f.help.to_string();
            if !f.default.is_empty() && f.kind != Kind::Bool {
                let _ = write!(help, " (default {})", f.default);
            }
            if f.origin == Origin::Ours {
                help.push_str(" [metrics-bridge only]");
            }
            push_wrapped(&mut out, &lead, &help);
        }
    }
    out.push_str(
        "\nmetrics-server flags that metrics-bridge does not support yet are rejected with an\n\
         error naming them. Settings can also come from --config FILE and METRICS_BRIDGE_<FLAG>\n\
         variables; see docs/flags.md.\n",
    );
    out
}

/// Appends `lead` and `text` as a help entry: the text starts in column 44 (or on the next
/// line after a long lead) and wraps at 100 columns.
fn push_wrapped(out: &mut String, lead: &str, text: &str) {
    const INDENT: usize = 44;
    const WIDTH: usize = 100;
    out.push_str(lead);
    let mut column = lead.len();
    if column + 1 > INDENT {
        out.push('\n');
        column = 0;
    }
    let mut first = true;
    for word in text.split_whitespace() {
        if !first && column + 1 + word.len() > WIDTH {
            out.push('\n');
            column = 0;
        }
        if column < INDENT {
            out.extend(std::iter::repeat_n(' ', INDENT - column));
            column = INDENT;
        } else {
            out.push(' ');
            column += 1;
        }
        out.push_str(word);
        column += word.len();
        first = false;
    }
    out.push('\n');
}

/// The flag tables of `docs/flags.md`, between its `BEGIN`/`END GENERATED` markers. A unit
/// test keeps the document equal to this.
#[cfg(test)]
pub(crate) fn markdown() -> String {
    let mut out = String::new();
    for group in Group::ALL {
        let flags = supported_in(group);
        if flags.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "\n### {}\n\n| Flag | Default | Meaning | metrics-server |\n|---|---|---|---|\n",
            group.title()
        );
        for f in flags {
            let name = match f.short {
                Some(c) => format!("`-{c}`, `--{}`", f.name),
                None => format!("`--{}`", f.name),
            };
            let default = if f.default.is_empty() {
                String::from("")
            } else {
                format!("`{}`", f.default)
            };
            let mut meaning = f.help.to_string();
            if let Support::NoEffect { why } = f.support {
                let _ = write!(meaning, " No effect: {why}.");
            }
            match f.scope {
                Scope::Everywhere => {}
                Scope::FlagAndEnv => meaning.push_str(" Not a config-file key."),
                Scope::FlagOnly => meaning.push_str(" Command line only."),
            }
            let origin = match f.origin {
                Origin::MetricsServer => "yes",
                Origin::MetricsServerLegacy => "older releases",
                Origin::Ours => "no (ours)",
            };
            let _ = writeln!(out, "| {name} | {default} | {meaning} | {origin} |");
        }
    }
    out.push_str(
        "\n### Not supported yet\n\nThese metrics-server flags are recognised and rejected \
         with `flag --NAME is not supported by metrics-bridge yet`. Where a value asks for \
         exactly what metrics-bridge does anyway, that value is accepted.\n\n| Flag | \
         Accepted value | What it does in metrics-server | metrics-server |\n|---|---|---|---|\n",
    );
    for f in FLAGS {
        if let Support::No { harmless } = f.support {
            let accepted = match harmless {
                Some("") => String::from("empty"),
                Some(v) => format!("`{v}`"),
                None => String::from("none"),
            };
            let origin = match f.origin {
                Origin::MetricsServerLegacy => "older releases",
                _ => "yes",
            };
            let _ = writeln!(
                out,
                "| `--{}` | {accepted} | {} | {origin} |",
                f.name, f.help
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_and_shorthands_are_unique() {
        let mut names = HashSet::new();
        let mut shorts = HashSet::new();
        for f in FLAGS {
            assert!(names.insert(f.name), "duplicate flag {}", f.name);
            if let Some(c) = f.short {
                assert!(shorts.insert(c), "duplicate shorthand -{c}");
            }
            assert!(
                f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "flag names are lowercase kebab-case: {}",
                f.name
            );
        }
    }

    #[test]
    fn env_var_names_are_upper_snake() {
        let f = find("metric-resolution").map(Flag::env_var);
        assert_eq!(f.as_deref(), Some("METRICS_BRIDGE_METRIC_RESOLUTION"));
        assert_eq!(
            find("v").map(Flag::env_var).as_deref(),
            Some("METRICS_BRIDGE_V")
        );
    }

    #[test]
    fn lookup_treats_underscore_as_dash() {
        assert_eq!(find("log_dir").map(|f| f.name), Some("log-dir"));
        assert_eq!(find("kubelet_port").map(|f| f.name), Some("kubelet-port"));
        assert!(find("kubelet-portx").is_none());
        assert!(find("").is_none());
    }

    #[test]
    fn every_harmless_value_fits_its_kind() {
        for f in FLAGS {
            if let Support::No {
                harmless: Some(v), ..
            } = f.support
                && f.kind == Kind::Bool
            {
                assert!(matches!(v, "true" | "false"), "{}", f.name);
            }
        }
    }

    #[test]
    fn help_wraps_at_100_columns_with_the_text_aligned() {
        let help = help();
        for line in help.lines() {
            assert!(line.chars().count() <= 100, "too long: {line:?}");
        }
        let mut out = String::new();
        push_wrapped(&mut out, "  --x", "short text");
        assert_eq!(out, format!("  --x{}short text\n", " ".repeat(39)));
        let mut out = String::new();
        let long_lead = format!("  --{}", "y".repeat(45));
        push_wrapped(&mut out, &long_lead, "text");
        assert_eq!(out, format!("{long_lead}\n{}text\n", " ".repeat(44)));
    }

    #[test]
    fn help_lists_every_supported_flag_and_no_unsupported_one() {
        let help = help();
        for f in FLAGS {
            let shown = help.contains(&format!("--{} ", f.name));
            assert_eq!(
                shown,
                !matches!(f.support, Support::No { .. }),
                "--{} in help",
                f.name
            );
        }
    }
}
