//! Flags and the config file: metrics-server's flags with the same names, defaults and
//! validation, plus `--config FILE`.
//!
//! OWNER: options helper. The typed structs below are the contract the rest of the program
//! reads; the options helper implements loading (defaults < file < `METRICS_BRIDGE_*` env <
//! flags) and validation, and may add fields.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::NodeAddressType;
use crate::selector::LabelSelector;

/// Everything metrics-bridge is configured with.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--metric-resolution`: how often every kubelet is scraped (default 1m).
    pub metric_resolution: Duration,
    pub cluster: ClusterOptions,
    pub kubelet: KubeletOptions,
    pub serving: ServingOptions,
    pub authentication: AuthenticationOptions,
    pub authorization: AuthorizationOptions,
    pub logging: LoggingOptions,
}

/// How to reach the API server and which nodes to watch.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `--kubeconfig`; in-cluster config when unset.
    pub kubeconfig: Option<PathBuf>,
    /// `-l/--node-selector`.
    pub node_selector: Option<LabelSelector>,
}

/// How to scrape kubelets.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// `--kubelet-insecure-tls`.
    pub insecure_tls: bool,
    /// `--kubelet-certificate-authority`.
    pub certificate_authority: Option<PathBuf>,
    /// `--kubelet-client-certificate` and `--kubelet-client-key` (both or neither).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `--kubelet-port` (10250).
    pub port: u16,
    /// `--kubelet-use-node-status-port`.
    pub use_node_status_port: bool,
    /// `--kubelet-preferred-address-types`.
    pub preferred_address_types: Vec<NodeAddressType>,
    /// `--kubelet-request-timeout` (10s).
    pub request_timeout: Duration,
    /// Ours: the most scrapes in flight at once.
    pub max_concurrent_scrapes: usize,
    /// Ours: the largest kubelet response body accepted, in bytes.
    pub max_body_bytes: usize,
}

/// The secure port.
#[derive(Debug, Clone)]
pub struct ServingOptions {
    /// `--bind-address` (0.0.0.0).
    pub bind_address: IpAddr,
    /// `--secure-port` (443).
    pub secure_port: u16,
    /// `--cert-dir`.
    pub cert_dir: PathBuf,
    /// `--tls-cert-file` and `--tls-private-key-file`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `--tls-min-version` (VersionTLS12).
    pub tls_min_version: TlsVersion,
    /// `--tls-cipher-suites`, IANA names as Go spells them; empty means the defaults.
    pub tls_cipher_suites: Vec<String>,
    /// `--tls-sni-cert-key`.
    pub tls_sni_cert_keys: Vec<SniCertKey>,
    /// `--disable-http2-serving`.
    pub disable_http2_serving: bool,
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
#[derive(Debug, Clone)]
pub struct AuthenticationOptions {
    pub kubeconfig: Option<PathBuf>,
    pub skip_lookup: bool,
    pub tolerate_lookup_failure: bool,
    pub token_webhook_cache_ttl: Duration,
    pub client_ca_file: Option<PathBuf>,
    pub requestheader_client_ca_file: Option<PathBuf>,
    pub requestheader_allowed_names: Vec<String>,
    pub requestheader_username_headers: Vec<String>,
    pub requestheader_group_headers: Vec<String>,
    pub requestheader_extra_headers_prefix: Vec<String>,
    pub requestheader_uid_headers: Vec<String>,
}

/// Delegated authorization.
#[derive(Debug, Clone)]
pub struct AuthorizationOptions {
    pub kubeconfig: Option<PathBuf>,
    pub always_allow_paths: Vec<String>,
    pub always_allow_groups: Vec<String>,
    pub webhook_cache_authorized_ttl: Duration,
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
