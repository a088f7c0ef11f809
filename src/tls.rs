//! TLS configuration for both directions: the secure port's serving certificate, and the
//! client that scrapes kubelets.
//!
//! What it promises:
//! - every config uses rustls with the ring provider, built once at start (never per
//!   connection or per scrape);
//! - a kubelet certificate that fails verification produces a [`KubeletCertError`] that says
//!   what was wrong in terms a cluster operator can act on: the unknown issuer, or the names the
//!   certificate does hold when none matches the address we dialled;
//! - the serving certificate comes from `--tls-cert-file`/`--tls-private-key-file`, or is a
//!   self-signed one for `localhost` and `127.0.0.1` kept in `--cert-dir` (as metrics-server
//!   and every k8s.io/apiserver-based server does), and reloads from disk when the files change.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use crate::https::TlsConfigSource;
use crate::options::{ServingOptions, SniCertKey};

/// File names of the self-signed pair inside `--cert-dir`, as k8s.io/apiserver names them.
pub const SELF_SIGNED_CERT_FILE: &str = "apiserver.crt";
pub const SELF_SIGNED_KEY_FILE: &str = "apiserver.key";

/// How long a generated self-signed certificate is valid (k8s.io/apiserver uses one year).
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A reused self-signed certificate must stay valid at least this long, or it is regenerated.
const SELF_SIGNED_MIN_REMAINING: Duration = Duration::from_secs(24 * 3600);

/// How often the serving certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} ({origin}) is not valid PEM: {source}")]
    Pem {
        what: &'static str,
        origin: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("the {what} ({origin}) holds no certificate")]
    NoCertificate { what: &'static str, origin: String },
    #[error("the {what} ({origin}) holds no private key")]
    NoKey { what: &'static str, origin: String },
    #[error("the {what} ({origin}) holds no usable CA certificate ({rejected} rejected)")]
    NoUsableCa {
        what: &'static str,
        origin: String,
        rejected: usize,
    },
    #[error("the {what} ({origin}) cannot be used: {source}")]
    Rustls {
        what: &'static str,
        origin: String,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the kubelet certificate verifier: {source}")]
    Verifier {
        #[source]
        source: rustls::client::VerifierBuilderError,
    },
    #[error("cannot generate a self-signed serving certificate: {source}")]
    Generate {
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--tls-sni-cert-key {cert}: {problem}")]
    SniName { cert: PathBuf, problem: String },
}

/// The ring provider, which every TLS config in the program uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// PEM loading

/// Reads a file that a flag or the kubeconfig names.
pub fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Parses every certificate in a PEM bundle. `origin` names where it came from, for errors.
pub fn parse_certificates(
    what: &'static str,
    origin: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            origin: origin.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            origin: origin.to_owned(),
        });
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#1, PKCS#8 or SEC1) in a PEM document.
pub fn parse_private_key(
    what: &'static str,
    origin: &str,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            what,
            origin: origin.to_owned(),
        },
        source => TlsError::Pem {
            what,
            origin: origin.to_owned(),
            source,
        },
    })
}

/// Loads a certificate chain file and its key file.
pub fn load_cert_and_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = parse_certificates(
        "certificate file",
        &cert_path.display().to_string(),
        &read_file("certificate file", cert_path)?,
    )?;
    let key = parse_private_key(
        "private key file",
        &key_path.display().to_string(),
        &read_file("private key file", key_path)?,
    )?;
    Ok((chain, key))
}

/// Pairs a chain with its key, checking that they belong together.
fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    origin: &str,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Rustls {
        what: "certificate and key",
        origin: origin.to_owned(),
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// Kubelet client

/// How kubelet serving certificates are checked.
#[derive(Debug, Clone)]
pub enum KubeletTrust {
    /// `--kubelet-insecure-tls` (or an insecure kubeconfig): any certificate is accepted.
    Insecure,
    /// Verify against these CA certificates; `origin` names them for error messages.
    Roots {
        roots: Vec<CertificateDer<'static>>,
        origin: String,
    },
}

/// A client certificate to present to kubelets.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Where it came from, for errors.
    pub origin: String,
}

/// Builds the one client config shared by every kubelet connection: TLS 1.2+,
/// verifying as `trust` says and presenting `identity` if given.
pub fn kubelet_client_config(
    trust: &KubeletTrust,
    identity: Option<ClientIdentity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = kubelet_verifier(trust, &provider)?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "kubelet client TLS settings",
            origin: "built-in".into(),
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|source| TlsError::Rustls {
                what: "kubelet client certificate",
                origin: id.origin,
                source,
            })?,
    };
    // ALPN stays empty: the HTTP connector sets it (HTTP/1.1 only; one request per node at a
    // time gains nothing from HTTP/2 and costs more memory per connection).
    Ok(Arc::new(config))
}

/// The verifier for kubelet serving certificates that `trust` asks for.
fn kubelet_verifier(
    trust: &KubeletTrust,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let webpki = match trust {
        KubeletTrust::Insecure => None,
        KubeletTrust::Roots { roots, origin } => {
            let mut store = RootCertStore::empty();
            let (added, rejected) = store.add_parsable_certificates(roots.iter().cloned());
            if added == 0 {
                return Err(TlsError::NoUsableCa {
                    what: "kubelet CA",
                    origin: origin.clone(),
                    rejected,
                });
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
                    .build()
                    .map_err(|source| TlsError::Verifier { source })?;
            Some(verifier)
        }
    };
    Ok(Arc::new(KubeletVerifier {
        webpki,
        algorithms: provider.signature_verification_algorithms,
    }))
}

/// What was wrong with a kubelet's serving certificate, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletCertError {
    /// No trusted CA signed it. `name_clash` is set when a trusted CA has the issuer's name
    /// but its key did not make the signature (two clusters' CAs both called "kubernetes").
    UnknownAuthority {
        subject: String,
        issuer: String,
        name_clash: bool,
    },
    /// It is valid, but not for the address we connected to.
    NameMismatch {
        expected: String,
        /// The certificate's subject alternative names, as `DNS:name` / `IP:addr`.
        sans: Vec<String>,
        /// The subject's common name, which TLS clients no longer use for matching.
        common_name: Option<String>,
    },
    Expired {
        not_after: String,
    },
    NotYetValid {
        not_before: String,
    },
    /// Anything else rustls reported (bad encoding, wrong key usage, revoked…).
    Other(String),
}

impl fmt::Display for KubeletCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownAuthority {
                subject,
                issuer,
                name_clash,
            } => {
                write!(
                    f,
                    "certificate signed by unknown authority (subject \"{subject}\", issuer \
                     \"{issuer}\")"
                )?;
                if *name_clash {
                    write!(
                        f,
                        "; a trusted CA has that name, but a different key: it is another CA"
                    )?;
                }
                write!(
                    f,
                    "; pass the CA that signs kubelet serving certificates with \
                     --kubelet-certificate-authority"
                )
            }
            Self::NameMismatch {
                expected,
                sans,
                common_name,
            } => {
                write!(f, "certificate is not valid for {expected}: ")?;
                if sans.is_empty() {
                    write!(f, "it has no subject alternative names")?;
                } else {
                    write!(f, "it is valid for {}", sans.join(", "))?;
                }
                if let Some(cn) = common_name {
                    write!(f, " (common name \"{cn}\" is not used for matching)")?;
                }
                write!(
                    f,
                    "; pick an address type the certificate covers with \
                     --kubelet-preferred-address-types, or issue kubelet serving certificates \
                     that include this address"
                )
            }
            Self::Expired { not_after } => write!(
                f,
                "certificate expired at {not_after}; renew the kubelet serving certificate"
            ),
            Self::NotYetValid { not_before } => write!(
                f,
                "certificate is not valid before {not_before}; check the clocks of this host \
                 and the node"
            ),
            Self::Other(detail) => write!(f, "certificate rejected: {detail}"),
        }
    }
}

impl std::error::Error for KubeletCertError {}

impl KubeletCertError {
    /// Finds an explained certificate error anywhere in an error's source chain.
    pub fn find_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        error_chain(err).find_map(|e| {
            if let Some(found) = e.downcast_ref::<Self>() {
                return Some(found);
            }
            match e.downcast_ref::<rustls::Error>() {
                Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
                    other.0.downcast_ref::<Self>()
                }
                _ => None,
            }
        })
    }

    /// Explains rustls's verdict on `end_entity`, reading the certificate for the details.
    pub fn explain(
        error: &CertificateError,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
    ) -> Self {
        let parsed = x509_parser::parse_x509_certificate(end_entity.as_ref())
            .ok()
            .map(|(_, cert)| cert);
        match error {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                let (subject, issuer) = parsed
                    .as_ref()
                    .map(|cert| (cert.subject().to_string(), cert.issuer().to_string()))
                    .unwrap_or_else(|| ("unparsable".into(), "unparsable".into()));
                Self::UnknownAuthority {
                    subject,
                    issuer,
                    name_clash: matches!(error, CertificateError::BadSignature),
                }
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let (sans, common_name) = parsed
                    .as_ref()
                    .map(|cert| (subject_alt_names(cert), common_name(cert)))
                    .unwrap_or_default();
                Self::NameMismatch {
                    expected: server_name_string(server_name),
                    sans,
                    common_name,
                }
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired {
                not_after: parsed
                    .as_ref()
                    .map(|c| c.validity().not_after.to_string())
                    .unwrap_or_else(|| "an unknown time".into()),
            },
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid {
                    not_before: parsed
                        .as_ref()
                        .map(|c| c.validity().not_before.to_string())
                        .unwrap_or_else(|| "an unknown time".into()),
                }
            }
            other => Self::Other(format!("{other:?}")),
        }
    }
}

/// An error and everything beneath it. Unlike following `source()` alone, this also steps
/// into the error an `io::Error` wraps (its `source()` skips that error and goes to the one
/// below), which is where TLS and connector errors hide.
pub fn error_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => match io.get_ref() {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => std::error::Error::source(io),
        },
        None => e.source(),
    })
}

fn server_name_string(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// The certificate's DNS and IP subject alternative names, as `DNS:x` and `IP:y`.
pub fn subject_alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| format!("IP:{ip}")),
            GeneralName::URI(u) => Some(format!("URI:{u}")),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Checks kubelet serving certificates: with webpki against the trusted roots, turning
/// rustls's terse verdicts into [`KubeletCertError`]s, or not at all for
/// `--kubelet-insecure-tls`. Handshake signatures are always checked, so the session belongs
/// to whoever holds the presented certificate's key.
#[derive(Debug)]
struct KubeletVerifier {
    /// `None` accepts any certificate.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for KubeletVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|err| match err {
                rustls::Error::InvalidCertificate(cert_err) => {
                    let explained = KubeletCertError::explain(&cert_err, end_entity, server_name);
                    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                        Arc::new(explained),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------------
// Serving

/// Generates a self-signed certificate for `localhost` and `127.0.0.1`, valid for a year.
/// Returns the certificate and key in PEM.
pub fn generate_self_signed() -> Result<(String, String), TlsError> {
    let err = |source| TlsError::Generate { source };
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(err)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let at = |secs: u64| {
        x509_parser::time::ASN1Time::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
            .map(|t| t.to_datetime())
    };
    // Back-date by a minute so that a peer with a slightly slow clock accepts it at once.
    if let (Ok(from), Ok(until)) = (
        at(now.as_secs().saturating_sub(60)),
        at(now.as_secs() + SELF_SIGNED_VALIDITY.as_secs()),
    ) {
        params.not_before = from;
        params.not_after = until;
    }
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("localhost@{}", now.as_secs()),
    );
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The self-signed pair in `cert_dir`: reused when present, matching, and valid for at least
/// another day; otherwise generated and written there (the key with mode 0600). An empty
/// `cert_dir` keeps the generated pair in memory only.
pub fn self_signed_in(
    cert_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = cert_dir.join(SELF_SIGNED_CERT_FILE);
    let key_path = cert_dir.join(SELF_SIGNED_KEY_FILE);
    if !cert_dir.as_os_str().is_empty() && cert_path.exists() && key_path.exists() {
        match load_cert_and_key(&cert_path, &key_path).and_then(|(chain, key)| {
            let checked = certified_key(chain.clone(), key.clone_key(), "self-signed")?;
            Ok((checked, chain, key))
        }) {
            Ok((checked, chain, key)) if still_valid(&checked) => {
                tracing::info!(cert = %cert_path.display(), "reusing the self-signed serving certificate");
                return Ok((chain, key));
            }
            Ok(_) => tracing::info!(
                cert = %cert_path.display(),
                "the self-signed serving certificate expires soon; generating a new one"
            ),
            Err(e) => tracing::warn!(
                cert = %cert_path.display(),
                error = %e,
                "the self-signed serving certificate is unusable; generating a new one"
            ),
        }
    }
    let (cert_pem, key_pem) = generate_self_signed()?;
    if !cert_dir.as_os_str().is_empty() {
        std::fs::create_dir_all(cert_dir).map_err(|source| TlsError::Write {
            path: cert_dir.to_owned(),
            source,
        })?;
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(cert = %cert_path.display(), "generated a self-signed serving certificate for localhost and 127.0.0.1");
    }
    let chain = parse_certificates("self-signed certificate", "generated", cert_pem.as_bytes())?;
    let key = parse_private_key("self-signed key", "generated", key_pem.as_bytes())?;
    Ok((chain, key))
}

fn still_valid(key: &CertifiedKey) -> bool {
    let Some(leaf) = key.cert.first() else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    let not_before = u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(u64::MAX);
    not_before <= now && now + SELF_SIGNED_MIN_REMAINING.as_secs() < not_after
}

fn write_atomically(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(data).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

/// The certificates the secure port serves: a default, and `--tls-sni-cert-key` ones chosen
/// by the name the client asks for.
#[derive(Debug)]
struct ServingCerts {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` patterns, keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ServingCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&self.default));
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(Arc::clone(k));
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(Arc::clone(k));
        }
        Some(Arc::clone(&self.default))
    }
}

/// The names an SNI certificate answers for: the explicit ones, else its SANs and CN (as
/// k8s.io/apiserver does when `--tls-sni-cert-key` gives no names).
fn sni_names(sni: &SniCertKey, key: &CertifiedKey) -> Result<Vec<String>, TlsError> {
    if !sni.names.is_empty() {
        return Ok(sni.names.iter().map(|n| n.to_ascii_lowercase()).collect());
    }
    let leaf = key.cert.first().ok_or_else(|| TlsError::SniName {
        cert: sni.cert_file.clone(),
        problem: "holds no certificate".into(),
    })?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::SniName {
            cert: sni.cert_file.clone(),
            problem: format!("cannot parse the certificate: {e}"),
        })?;
    let mut names: Vec<String> = subject_alt_names(&cert)
        .into_iter()
        .filter_map(|san| san.strip_prefix("DNS:").map(str::to_ascii_lowercase))
        .collect();
    if let Some(cn) = common_name(&cert) {
        names.push(cn.to_ascii_lowercase());
    }
    if names.is_empty() {
        return Err(TlsError::SniName {
            cert: sni.cert_file.clone(),
            problem: "the certificate names no DNS name; give the names explicitly \
                      (cert,key:name1,name2)"
                .into(),
        });
    }
    Ok(names)
}

/// Loads every serving certificate the options name (or the self-signed one).
fn load_serving_certs(opts: &ServingOptions) -> Result<ServingCerts, TlsError> {
    let default = match (&opts.tls_cert_file, &opts.tls_private_key_file) {
        (Some(cert), Some(key)) => {
            let (chain, k) = load_cert_and_key(cert, key)?;
            certified_key(chain, k, &cert.display().to_string())?
        }
        _ => {
            let (chain, k) = self_signed_in(&opts.cert_dir)?;
            certified_key(chain, k, "self-signed")?
        }
    };
    let mut certs = ServingCerts {
        default: Arc::new(default),
        exact: HashMap::new(),
        wildcard: HashMap::new(),
    };
    // Earlier flags win when names repeat, as in k8s.io/apiserver.
    for sni in &opts.tls_sni_cert_keys {
        let (chain, k) = load_cert_and_key(&sni.cert_file, &sni.key_file)?;
        let key = Arc::new(certified_key(
            chain,
            k,
            &sni.cert_file.display().to_string(),
        )?);
        for name in sni_names(sni, &key)? {
            match name.strip_prefix("*.") {
                Some(parent) => certs
                    .wildcard
                    .entry(parent.to_owned())
                    .or_insert_with(|| Arc::clone(&key)),
                None => certs.exact.entry(name).or_insert_with(|| Arc::clone(&key)),
            };
        }
    }
    Ok(certs)
}

/// Verifies the client certificates the secure port asks for (front-proxy and client CAs).
/// Delegated authentication supplies it; its CAs may change at run time behind the `Arc`.
pub type ClientAuth = Arc<dyn rustls::server::danger::ClientCertVerifier>;

/// Builds the secure port's TLS config from the serving options: `--tls-min-version` and
/// `--tls-cipher-suites` (applied by the options to the ring provider, with Go's meaning),
/// the certificates, and ALPN for `--disable-http2-serving`. With `client_auth`, clients
/// are asked for a certificate and whatever it accepts reaches `ConnInfo`; without, none is
/// asked for.
pub fn serving_config(
    opts: &ServingOptions,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_serving_certs(opts)?;
    let builder = ServerConfig::builder_with_provider(opts.rustls_provider())
        .with_protocol_versions(opts.rustls_protocol_versions())
        .map_err(|source| TlsError::Rustls {
            what: "serving TLS settings",
            origin: "--tls-min-version/--tls-cipher-suites".into(),
            source,
        })?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(Arc::clone(verifier)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(certs));
    config.alpn_protocols = crate::https::alpn(!opts.disable_http2_serving);
    Ok(Arc::new(config))
}

/// The secure port's TLS config, rebuilt when a certificate or key file changes on disk, so
/// that rotated certificates (cert-manager, kubelet CSR renewals) are served without a restart.
/// Connections already open keep the config they started with.
pub struct ReloadingServerConfig {
    opts: ServingOptions,
    client_auth: Option<ClientAuth>,
    current: RwLock<Arc<ServerConfig>>,
    stamps: std::sync::Mutex<Vec<Option<SystemTime>>>,
}

impl fmt::Debug for ReloadingServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingServerConfig")
            .field("files", &self.files())
            .finish()
    }
}

impl ReloadingServerConfig {
    /// Loads the config once; fails when the files are unusable at start. `client_auth` is
    /// kept for every reload (see [`serving_config`]).
    pub fn new(
        opts: ServingOptions,
        client_auth: Option<ClientAuth>,
    ) -> Result<Arc<Self>, TlsError> {
        let config = serving_config(&opts, client_auth.as_ref())?;
        let this = Self {
            opts,
            client_auth,
            current: RwLock::new(config),
            stamps: std::sync::Mutex::new(Vec::new()),
        };
        let stamps = this.stamps_now();
        *this.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        Ok(Arc::new(this))
    }

    /// The files whose change triggers a reload.
    fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = Vec::new();
        // A self-signed pair is ours; only explicitly given files are watched.
        if let (Some(c), Some(k)) = (&self.opts.tls_cert_file, &self.opts.tls_private_key_file) {
            files.extend([c.as_path(), k.as_path()]);
        }
        for sni in &self.opts.tls_sni_cert_keys {
            files.extend([sni.cert_file.as_path(), sni.key_file.as_path()]);
        }
        files
    }

    fn stamps_now(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// Reloads if any file changed since the last look. A half-written or mismatched pair is
    /// logged and the previous config kept; the next check tries again.
    pub fn reload_if_changed(&self) -> bool {
        let now = self.stamps_now();
        {
            let seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
        }
        match serving_config(&self.opts, self.client_auth.as_ref()) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = now;
                tracing::info!(files = ?self.files(), "reloaded the serving certificate");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate changed on disk but cannot be loaded; still serving the previous one");
                false
            }
        }
    }

    /// Checks the files every `interval` until `shutdown` resolves.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: impl std::future::Future) {
        if self.files().is_empty() {
            return;
        }
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let this = Arc::clone(&self);
                    // File reads and parsing block; keep them off the async workers.
                    let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
                }
                _ = &mut shutdown => return,
            }
        }
    }
}

impl TlsConfigSource for Arc<ReloadingServerConfig> {
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::TlsVersion;
    use rustls::SupportedProtocolVersion;

    fn ca_named(cn: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    }

    fn ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
        ca_named("test-ca")
    }

    fn leaf(
        names: &[&str],
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    ) -> (CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubelet-node-1");
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.der().clone(), key)
    }

    fn verify(
        roots: &[CertificateDer<'static>],
        cert: &CertificateDer<'static>,
        name: &str,
    ) -> Result<(), KubeletCertError> {
        let verifier = kubelet_verifier(
            &KubeletTrust::Roots {
                roots: roots.to_vec(),
                origin: "test".into(),
            },
            &provider(),
        )
        .unwrap();
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(cert, &[], &server_name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| KubeletCertError::find_in(&e).cloned().expect("explained"))
    }

    #[test]
    fn name_mismatch_lists_the_sans_the_certificate_has() {
        let (ca_cert, issuer) = ca();
        let (cert, _) = leaf(&["node-1.example", "10.0.0.5"], &issuer);
        let roots = [ca_cert.der().clone()];
        assert_eq!(verify(&roots, &cert, "10.0.0.5"), Ok(()));
        assert_eq!(verify(&roots, &cert, "node-1.example"), Ok(()));
        let err = verify(&roots, &cert, "10.0.0.6").unwrap_err();
        assert_eq!(
            err,
            KubeletCertError::NameMismatch {
                expected: "10.0.0.6".into(),
                sans: vec!["DNS:node-1.example".into(), "IP:10.0.0.5".into()],
                common_name: Some("kubelet-node-1".into()),
            }
        );
        let text = err.to_string();
        assert!(text.contains("not valid for 10.0.0.6"), "{text}");
        assert!(text.contains("DNS:node-1.example, IP:10.0.0.5"), "{text}");
        assert!(text.contains("--kubelet-preferred-address-types"), "{text}");
    }

    #[test]
    fn unknown_issuer_names_the_issuer_and_the_flag() {
        let (ca_cert, _) = ca();
        // Another CA with another name, and another CA with the same name.
        for (other_cn, clash) in [("other-ca", false), ("test-ca", true)] {
            let (_, other_issuer) = ca_named(other_cn);
            let (cert, _) = leaf(&["10.0.0.5"], &other_issuer);
            let err = verify(&[ca_cert.der().clone()], &cert, "10.0.0.5").unwrap_err();
            assert_eq!(
                err,
                KubeletCertError::UnknownAuthority {
                    subject: "CN=kubelet-node-1".into(),
                    issuer: format!("CN={other_cn}"),
                    name_clash: clash,
                }
            );
            let text = err.to_string();
            assert!(text.contains("--kubelet-certificate-authority"), "{text}");
            assert_eq!(text.contains("another CA"), clash, "{text}");
        }
    }

    #[test]
    fn a_bundle_without_certificates_is_an_error_naming_its_origin() {
        let err = parse_certificates("kubelet CA", "/etc/ca.crt", b"not pem").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kubelet CA (/etc/ca.crt) holds no certificate"
        );
        let err = kubelet_client_config(
            &KubeletTrust::Roots {
                roots: vec![CertificateDer::from(vec![1, 2, 3])],
                origin: "/etc/ca.crt".into(),
            },
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kubelet CA (/etc/ca.crt) holds no usable CA certificate (1 rejected)"
        );
    }

    #[test]
    fn self_signed_pair_is_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let (chain1, _) = self_signed_in(&certs).unwrap();
        let (chain2, _) = self_signed_in(&certs).unwrap();
        assert_eq!(chain1, chain2, "the pair on disk is reused");
        let (_, cert) = x509_parser::parse_x509_certificate(chain1[0].as_ref()).unwrap();
        assert_eq!(
            subject_alt_names(&cert),
            vec!["DNS:localhost".to_owned(), "IP:127.0.0.1".to_owned()]
        );
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, SELF_SIGNED_VALIDITY.as_secs() as i64 + 60);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(certs.join(SELF_SIGNED_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // A corrupt pair is replaced rather than failing the start.
        std::fs::write(certs.join(SELF_SIGNED_CERT_FILE), b"garbage").unwrap();
        let (chain3, _) = self_signed_in(&certs).unwrap();
        assert_ne!(chain3, chain1);
    }

    fn serving_options(dir: &Path) -> ServingOptions {
        ServingOptions {
            cert_dir: dir.join("certs"),
            ..crate::options::Options::default().serving
        }
    }

    /// Writes a leaf for `names` from `issuer` as PEM files; returns their paths.
    fn write_pair(
        dir: &Path,
        stem: &str,
        names: &[&str],
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    ) -> (PathBuf, PathBuf, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().clone())
    }

    /// Runs a TLS handshake in memory and returns the certificate the server presented.
    fn served_cert(
        server: Arc<ServerConfig>,
        sni: &str,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Result<CertificateDer<'static>, rustls::Error> {
        let verifier = kubelet_verifier(&KubeletTrust::Insecure, &provider()).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
            buf.clear();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        Ok(client.peer_certificates().unwrap()[0].clone())
    }

    const ALL_VERSIONS: &[&SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];

    #[test]
    fn sni_certificates_are_chosen_by_name_and_the_default_serves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (_, issuer) = ca();
        let (wc, wk, wildcard) = write_pair(dir.path(), "wild", &["*.example.com"], &issuer);
        let (ec, ek, explicit) = write_pair(dir.path(), "explicit", &["ignored.test"], &issuer);
        let mut opts = serving_options(dir.path());
        opts.tls_sni_cert_keys = vec![
            SniCertKey {
                cert_file: wc,
                key_file: wk,
                names: Vec::new(),
            },
            SniCertKey {
                cert_file: ec,
                key_file: ek,
                names: vec!["API.internal".into()],
            },
        ];
        let config = serving_config(&opts, None).unwrap();
        let (default_chain, _) = self_signed_in(&opts.cert_dir).unwrap();
        let serve = |sni| served_cert(Arc::clone(&config), sni, ALL_VERSIONS).unwrap();
        assert_eq!(serve("foo.example.com"), wildcard);
        assert_eq!(serve("api.internal"), explicit);
        assert_eq!(
            serve("ignored.test"),
            default_chain[0],
            "explicit names replace the SANs"
        );
        assert_eq!(
            serve("a.b.example.com"),
            default_chain[0],
            "a wildcard covers one label"
        );
        assert_eq!(serve("localhost"), default_chain[0]);
        assert_eq!(config.alpn_protocols, crate::https::alpn(true));
    }

    #[test]
    fn rotated_serving_files_are_served_after_a_reload_and_bad_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let (_, issuer) = ca();
        let (c, k, first) = write_pair(dir.path(), "serving", &["localhost"], &issuer);
        let mut opts = serving_options(dir.path());
        opts.tls_cert_file = Some(c.clone());
        opts.tls_private_key_file = Some(k.clone());
        let source = ReloadingServerConfig::new(opts, None).unwrap();
        let serve = || served_cert(source.current(), "localhost", ALL_VERSIONS).unwrap();
        assert_eq!(serve(), first);
        assert!(!source.reload_if_changed(), "nothing changed yet");

        let later = SystemTime::now() + Duration::from_secs(60);
        let (_, _, second) = write_pair(dir.path(), "serving", &["localhost"], &issuer);
        for p in [&c, &k] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(source.reload_if_changed());
        assert_eq!(serve(), second);

        // A half-written rotation keeps the previous certificate in service.
        std::fs::write(&c, b"-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
        assert!(!source.reload_if_changed());
        assert_eq!(serve(), second);
    }

    #[test]
    fn min_version_and_cipher_suites_reach_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = serving_options(dir.path());
        opts.tls_min_version = TlsVersion::Tls13;
        let config = serving_config(&opts, None).unwrap();
        assert!(served_cert(Arc::clone(&config), "localhost", &[&rustls::version::TLS12]).is_err());
        assert!(served_cert(config, "localhost", ALL_VERSIONS).is_ok());

        // The self-signed key is ECDSA, so an RSA-only TLS 1.2 suite list leaves a TLS 1.2
        // client nothing to agree on, while an ECDSA suite works.
        opts.tls_min_version = TlsVersion::Tls12;
        opts.tls_cipher_suites = vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()];
        let rsa_only = serving_config(&opts, None).unwrap();
        assert!(served_cert(rsa_only, "localhost", &[&rustls::version::TLS12]).is_err());
        opts.tls_cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
        let ecdsa = serving_config(&opts, None).unwrap();
        assert!(served_cert(ecdsa, "localhost", &[&rustls::version::TLS12]).is_ok());
    }

    #[test]
    fn a_client_verifier_is_asked_and_kept_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let (client_ca, _) = ca();
        let mut roots = RootCertStore::empty();
        roots.add(client_ca.der().clone()).unwrap();
        let mandatory: ClientAuth = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let opts = serving_options(dir.path());
        // A client without a certificate is refused when one is required...
        let config = serving_config(&opts, Some(&mandatory)).unwrap();
        assert!(served_cert(config, "localhost", ALL_VERSIONS).is_err());
        let source =
            ReloadingServerConfig::new(opts.clone(), Some(Arc::clone(&mandatory))).unwrap();
        assert!(served_cert(source.current(), "localhost", ALL_VERSIONS).is_err());
        // ...and accepted when none is asked for.
        let plain = ReloadingServerConfig::new(opts, None).unwrap();
        assert!(served_cert(plain.current(), "localhost", ALL_VERSIONS).is_ok());
    }
}
