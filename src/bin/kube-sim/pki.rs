//! kube-sim's public key infrastructure: the cluster CA, the client CA, the front-proxy CA, the
//! certificates they issue, the bearer tokens, and the files written to `--dir`.
//!
//! The layout follows kubeadm: one cluster CA signs the API server's and the kubelets' serving
//! certificates and (until rotated) the client certificates; a separate front-proxy CA signs
//! the aggregator's client certificate (CN `front-proxy-client`). The client CA and the
//! front-proxy CA can be rotated at run time (`POST /sim/rotate-ca`), which rewrites the files,
//! the admin kubeconfig and the `extension-apiserver-authentication` ConfigMap, so that
//! consumers can be tested for CA rotation without a restart.
//!
//! Kubelet serving certificates share one key pair and differ only in their SANs: signing is
//! the only per-node work, so 20,000 nodes start in well under a second of CPU.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName as TlsDn, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

/// Why a certificate, key, configuration or file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the TLS configuration for {what}: {source}")]
    Tls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the random number generator failed")]
    Random,
}

/// The crypto provider every TLS configuration of kube-sim uses (ring, as the project rules
/// say), built once and shared: thousands of kubelet configurations point at the same one.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

/// A certificate authority that can issue certificates.
pub struct Ca {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its private key.
#[derive(Clone)]
pub struct Issued {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
    pub key_der: Arc<PrivatePkcs8KeyDer<'static>>,
}

/// What a leaf certificate is for.
pub struct LeafSpec<'a> {
    pub common_name: &'a str,
    pub organizations: &'a [&'a str],
    pub dns_names: &'a [&'a str],
    pub ips: &'a [IpAddr],
    pub server: bool,
    pub client: bool,
    /// Validity (UTC days: the bounds are truncated to midnight); `None` means from yesterday
    /// to a year from now.
    pub validity: Option<(SystemTime, SystemTime)>,
}

fn generate_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

pub fn random_bytes(bytes: &mut [u8]) -> Result<(), PkiError> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(bytes)
        .map_err(|_| PkiError::Random)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    // A positive INTEGER: clear the top bit.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The UTC calendar day of `t`, as rcgen takes validity bounds. Day granularity is enough for
/// a simulator: bounds are always at least a day away from "now" (see [`LeafSpec::validity`]).
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let day = |t: SystemTime| {
        let days = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() / 86400) as i64,
            Err(e) => -(e.duration().as_secs().div_ceil(86400) as i64),
        };
        civil_from_days(days)
    };
    let (y, m, d) = day(not_before);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = day(not_after);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

impl Ca {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn new(common_name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(generate_err(common_name))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let now = SystemTime::now();
        set_validity(
            &mut params,
            now - Duration::from_secs(86400),
            now + Duration::from_secs(10 * 365 * 86400),
        );
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(generate_err(common_name))?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues a leaf certificate for `spec` with a fresh key.
    pub fn issue(&self, spec: &LeafSpec<'_>) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(generate_err(spec.common_name))?;
        self.issue_for_key(spec, &key)
    }

    /// Issues a leaf certificate for `spec` certifying the given key.
    pub fn issue_for_key(&self, spec: &LeafSpec<'_>, key: &KeyPair) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // rcgen keeps one value per attribute type; kube-sim's identities have at most one O.
        if let Some(o) = spec.organizations.first() {
            dn.push(DnType::OrganizationName, *o);
        }
        dn.push(DnType::CommonName, spec.common_name);
        params.distinguished_name = dn;
        for name in spec.dns_names {
            params.subject_alt_names.push(SanType::DnsName(
                (*name)
                    .to_string()
                    .try_into()
                    .map_err(generate_err(spec.common_name))?,
            ));
        }
        for ip in spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let (not_before, not_after) = spec.validity.unwrap_or_else(|| {
            let now = SystemTime::now();
            (
                now - Duration::from_secs(86400),
                now + Duration::from_secs(365 * 86400),
            )
        });
        set_validity(&mut params, not_before, not_after);
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(generate_err(spec.common_name))?;
        Ok(Issued {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: Arc::new(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

impl Issued {
    /// The private key in the form rustls loads.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.as_ref().clone_key())
    }

    /// A rustls `CertifiedKey` for serving (or presenting) this certificate.
    pub fn certified_key(&self, what: &str) -> Result<Arc<CertifiedKey>, PkiError> {
        CertifiedKey::from_der(vec![self.cert_der.clone()], self.private_key(), &provider())
            .map(Arc::new)
            .map_err(|source| PkiError::Tls {
                what: what.to_string(),
                source,
            })
    }
}

/// A client CA bundle: the CAs whose client certificates are accepted, newest first.
pub struct ClientCaBundle {
    pub pem: String,
    verifier: Arc<dyn ClientCertVerifier>,
    hints: Vec<TlsDn>,
}

impl ClientCaBundle {
    /// A bundle of the certificates of a PEM file (such as a `client-ca-file`).
    pub fn from_pem(pem: &str) -> Result<ClientCaBundle, PkiError> {
        let ders = bundle_ders(pem);
        let refs: Vec<&CertificateDer<'static>> = ders.iter().collect();
        ClientCaBundle::new(&refs)
    }

    fn new(cas: &[&CertificateDer<'static>]) -> Result<ClientCaBundle, PkiError> {
        let mut roots = RootCertStore::empty();
        let mut pem = String::new();
        for ca in cas {
            roots.add((*ca).clone()).map_err(|source| PkiError::Tls {
                what: "the client CA bundle".into(),
                source,
            })?;
            pem.push_str(&pem_encode("CERTIFICATE", ca));
        }
        let hints = roots.subjects();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(PkiError::Verifier)?;
        Ok(ClientCaBundle {
            pem,
            verifier,
            hints,
        })
    }

    /// Verifies a presented client chain (leaf first) against this bundle, as the x509
    /// authenticator of kube-apiserver does after a handshake that only *requested* a cert.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A client-certificate verifier that accepts any chain at the TLS layer (checking only the
/// handshake signature, i.e. possession of the key) and advertises the client CA subjects as
/// hints. kube-apiserver and the kubelet do the same (`tls.RequestClientCert`): a certificate
/// from an unknown CA or an expired one still completes the handshake and is rejected by the
/// authenticator with 401, instead of failing the TLS handshake.
#[derive(Debug)]
struct RequestClientCert {
    hints: Vec<TlsDn>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[TlsDn] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl std::fmt::Debug for ClientCaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCaBundle").finish_non_exhaustive()
    }
}

impl ClientCaBundle {
    /// The TLS-layer verifier for servers that authenticate against this bundle: requests a
    /// client certificate, hinting this bundle's subjects, and leaves verification to
    /// [`ClientCaBundle::verify`].
    pub fn request_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(RequestClientCert {
            hints: self.hints.clone(),
            provider: provider(),
        })
    }
}

/// A serving TLS configuration that requests (not requires) client certificates, hinting the
/// client CA subjects, with HTTP/2 and HTTP/1.1 by ALPN.
pub fn serving_config(
    key: Arc<CertifiedKey>,
    client_cas: &ClientCaBundle,
    what: &str,
) -> Result<Arc<ServerConfig>, PkiError> {
    serving_config_with(key, client_cas.request_verifier(), None, what)
}

/// [`serving_config`] with a shared verifier and, optionally, a shared session cache.
pub fn serving_config_with(
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
    sessions: Option<Arc<dyn rustls::server::StoresServerSessions>>,
    what: &str,
) -> Result<Arc<ServerConfig>, PkiError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| PkiError::Tls {
            what: what.to_string(),
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = metrics_bridge::https::alpn(true);
    if let Some(sessions) = sessions {
        config.session_storage = sessions;
    }
    Ok(Arc::new(config))
}

/// The current state of the rotatable CAs.
pub struct Rotating {
    /// Issues client certificates (admin). Starts as the cluster CA, as in kubeadm.
    pub client_ca: Arc<Ca>,
    /// What `client-ca-file` holds: the client CA, plus the previous ones kept on rotation.
    pub client_bundle: Arc<ClientCaBundle>,
    pub front_proxy_ca: Arc<Ca>,
    /// What `requestheader-client-ca-file` holds.
    pub front_proxy_bundle_pem: String,
    pub front_proxy_client: Issued,
    pub admin: Issued,
    /// Bumped on each rotation so that caches keyed on it (the aggregator's HTTP client) rebuild.
    pub generation: u64,
}

/// The bearer tokens kube-sim issues, one per fixed identity.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub metrics_bridge: String,
    pub viewer: String,
    pub hpa: String,
    /// `kubernetes-admin` in `system:masters`, like the admin client certificate.
    pub admin: String,
    /// `system:serviceaccount:kube-system:kube-sim`, bound to the ClusterRole an external
    /// kube-sim needs (`--external-apiserver`).
    pub external: String,
}

/// Everything cryptographic kube-sim owns.
pub struct Pki {
    pub dir: PathBuf,
    pub cluster_ca: Arc<Ca>,
    /// A CA nobody trusts, for the kubelet `wrong-ca` fault.
    pub rogue_ca: Ca,
    pub apiserver_key: Arc<CertifiedKey>,
    /// The key every kubelet serving certificate certifies.
    kubelet_key: KeyPair,
    kubelet_signer: Arc<dyn rustls::sign::SigningKey>,
    pub tokens: Tokens,
    rotating: RwLock<Arc<Rotating>>,
}

/// Which CA `rotate` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhichCa {
    Client,
    FrontProxy,
}

fn random_token() -> Result<String, PkiError> {
    let mut bytes = [0u8; 24];
    random_bytes(&mut bytes)?;
    let mut s = String::with_capacity(48);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    Ok(s)
}

fn admin_cert(ca: &Ca) -> Result<Issued, PkiError> {
    ca.issue(&LeafSpec {
        common_name: "kubernetes-admin",
        organizations: &["system:masters"],
        dns_names: &[],
        ips: &[],
        server: false,
        client: true,
        validity: None,
    })
}

fn front_proxy_client_cert(ca: &Ca) -> Result<Issued, PkiError> {
    ca.issue(&LeafSpec {
        common_name: "front-proxy-client",
        organizations: &[],
        dns_names: &[],
        ips: &[],
        server: false,
        client: true,
        validity: None,
    })
}

impl Pki {
    /// Creates every CA, certificate and token. `apiserver_ip` goes into the API server's SANs
    /// besides 127.0.0.1 and localhost.
    pub fn new(dir: &Path, apiserver_ip: IpAddr) -> Result<Pki, PkiError> {
        let cluster_ca = Arc::new(Ca::new("kubernetes")?);
        let front_proxy_ca = Arc::new(Ca::new("front-proxy-ca")?);
        let rogue_ca = Ca::new("kube-sim-untrusted-ca")?;
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        if !ips.contains(&apiserver_ip) && !apiserver_ip.is_unspecified() {
            ips.push(apiserver_ip);
        }
        let apiserver = cluster_ca.issue(&LeafSpec {
            common_name: "kube-apiserver",
            organizations: &[],
            dns_names: &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            ips: &ips,
            server: true,
            client: false,
            validity: None,
        })?;
        let apiserver_key = apiserver.certified_key("the API server")?;
        let kubelet_key = KeyPair::generate().map_err(generate_err("the kubelet key"))?;
        let kubelet_signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(kubelet_key.serialize_der()),
        ))
        .map_err(|source| PkiError::Tls {
            what: "the kubelet key".into(),
            source,
        })?;
        let rotating = Rotating {
            client_bundle: Arc::new(ClientCaBundle::new(&[&cluster_ca.cert_der])?),
            client_ca: Arc::clone(&cluster_ca),
            front_proxy_bundle_pem: front_proxy_ca.cert_pem.clone(),
            front_proxy_client: front_proxy_client_cert(&front_proxy_ca)?,
            front_proxy_ca,
            admin: admin_cert(&cluster_ca)?,
            generation: 1,
        };
        Ok(Pki {
            dir: dir.to_path_buf(),
            cluster_ca,
            rogue_ca,
            apiserver_key,
            kubelet_key,
            kubelet_signer,
            tokens: Tokens {
                metrics_bridge: random_token()?,
                viewer: random_token()?,
                hpa: random_token()?,
                admin: random_token()?,
                external: random_token()?,
            },
            rotating: RwLock::new(Arc::new(rotating)),
        })
    }

    /// The current rotatable state.
    pub fn current(&self) -> Arc<Rotating> {
        match self.rotating.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// A kubelet serving certificate for `ip` and `node_name`, signed by `ca` (the cluster CA
    /// normally; the rogue CA for the `wrong-ca` fault).
    pub fn kubelet_cert(
        &self,
        ca: &Ca,
        node_name: &str,
        ip: IpAddr,
    ) -> Result<Arc<CertifiedKey>, PkiError> {
        let cn = format!("system:node:{node_name}");
        let issued = ca.issue_for_key(
            &LeafSpec {
                common_name: &cn,
                organizations: &["system:nodes"],
                dns_names: &[node_name],
                ips: &[ip],
                server: true,
                client: false,
                validity: None,
            },
            &self.kubelet_key,
        )?;
        Ok(Arc::new(CertifiedKey::new(
            vec![issued.cert_der],
            Arc::clone(&self.kubelet_signer),
        )))
    }

    /// Replaces the client or front-proxy CA. With `keep_old`, the previous CA stays in the
    /// bundle (a rotation in progress); without, only the new one is trusted. Re-issues the
    /// certificates that CA signs and rewrites the files.
    pub fn rotate(&self, which: WhichCa, keep_old: bool) -> Result<Arc<Rotating>, PkiError> {
        let mut guard = match self.rotating.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let cur = Arc::clone(&guard);
        let generation = cur.generation + 1;
        let next = match which {
            WhichCa::Client => {
                let ca = Arc::new(Ca::new(&format!("kubernetes-client-ca-{generation}"))?);
                let bundle = if keep_old {
                    let old = bundle_ders(&cur.client_bundle.pem);
                    let mut ders = vec![&ca.cert_der];
                    ders.extend(old.iter());
                    ClientCaBundle::new(&ders)?
                } else {
                    ClientCaBundle::new(&[&ca.cert_der])?
                };
                Rotating {
                    admin: admin_cert(&ca)?,
                    client_bundle: Arc::new(bundle),
                    client_ca: ca,
                    front_proxy_ca: Arc::clone(&cur.front_proxy_ca),
                    front_proxy_bundle_pem: cur.front_proxy_bundle_pem.clone(),
                    front_proxy_client: cur.front_proxy_client.clone(),
                    generation,
                }
            }
            WhichCa::FrontProxy => {
                let ca = Arc::new(Ca::new(&format!("front-proxy-ca-{generation}"))?);
                let mut pem = ca.cert_pem.clone();
                if keep_old {
                    pem.push_str(&cur.front_proxy_bundle_pem);
                }
                Rotating {
                    admin: cur.admin.clone(),
                    client_bundle: Arc::clone(&cur.client_bundle),
                    client_ca: Arc::clone(&cur.client_ca),
                    front_proxy_client: front_proxy_client_cert(&ca)?,
                    front_proxy_ca: ca,
                    front_proxy_bundle_pem: pem,
                    generation,
                }
            }
        };
        let next = Arc::new(next);
        *guard = Arc::clone(&next);
        drop(guard);
        Ok(next)
    }
}

/// The DER certificates of a PEM bundle (ignoring anything malformed: bundles here are ours).
fn bundle_ders(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// PEM-encodes DER data.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    let _ = writeln!(out, "-----BEGIN {label}-----");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// Standard base64 with padding (RFC 4648 §4), as kubeconfig `*-data` fields hold.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let idx = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

/// How a kubeconfig authenticates its user.
pub enum KubeconfigUser<'a> {
    ClientCert { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

/// A kubeconfig with one cluster, one user and one current context.
pub fn kubeconfig(server: &str, ca_pem: &str, user_name: &str, user: KubeconfigUser<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim"
    );
    let _ = writeln!(
        out,
        "  cluster:\n    server: {server}\n    certificate-authority-data: {}",
        base64(ca_pem.as_bytes())
    );
    let _ = writeln!(out, "users:\n- name: {user_name}\n  user:");
    match user {
        KubeconfigUser::ClientCert { cert_pem, key_pem } => {
            let _ = writeln!(
                out,
                "    client-certificate-data: {}\n    client-key-data: {}",
                base64(cert_pem.as_bytes()),
                base64(key_pem.as_bytes())
            );
        }
        KubeconfigUser::Token(token) => {
            let _ = writeln!(out, "    token: {token}");
        }
    }
    let _ = writeln!(
        out,
        "contexts:\n- name: {user_name}@kube-sim\n  context:\n    cluster: kube-sim\n    user: {user_name}\ncurrent-context: {user_name}@kube-sim"
    );
    out
}

/// The files kube-sim writes into `--dir`, for `--help` and the docs.
pub const FILES: &[(&str, &str)] = &[
    (
        "kubeconfig",
        "admin kubeconfig (client certificate CN=kubernetes-admin, O=system:masters)",
    ),
    (
        "ca.crt",
        "cluster CA: signs the API server's and every kubelet's serving certificate",
    ),
    (
        "ca.key",
        "cluster CA key (lets tests mint their own certificates)",
    ),
    (
        "client-ca.crt",
        "client CA bundle (the ConfigMap's client-ca-file; the cluster CA until rotated)",
    ),
    ("admin.crt", "admin client certificate"),
    ("admin.key", "admin client key"),
    (
        "front-proxy-ca.crt",
        "front-proxy CA bundle (the ConfigMap's requestheader-client-ca-file)",
    ),
    ("front-proxy-ca.key", "front-proxy CA key"),
    (
        "front-proxy-client.crt",
        "the aggregator's client certificate (CN=front-proxy-client)",
    ),
    ("front-proxy-client.key", "the aggregator's client key"),
    (
        "metrics-bridge.token",
        "bearer token of system:serviceaccount:kube-system:metrics-bridge",
    ),
    (
        "metrics-bridge.kubeconfig",
        "kubeconfig using the metrics-bridge token",
    ),
    ("viewer.token", "bearer token of user viewer"),
    ("viewer.kubeconfig", "kubeconfig using the viewer token"),
    (
        "hpa.token",
        "bearer token of system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    ),
    ("hpa.kubeconfig", "kubeconfig using the HPA token"),
    (
        "admin.token",
        "bearer token of kubernetes-admin (system:masters); in --external-apiserver mode, the credential of /sim/*",
    ),
    (
        "kube-sim-external.token",
        "bearer token of system:serviceaccount:kube-system:kube-sim, the identity an external kube-sim needs (ClusterRole kube-sim:external)",
    ),
    (
        "kube-sim-external.kubeconfig",
        "kubeconfig using that token: pass it to another kube-sim's --external-apiserver",
    ),
    (
        "kube-sim.json",
        "API server URL, kubelet port, node count and pid, written when ready",
    ),
];

/// Writes `contents` to `dir/name` atomically (a temporary file renamed over the old one), so
/// a reader never sees half a certificate.
pub fn write_file(dir: &Path, name: &str, contents: &[u8]) -> Result<(), PkiError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |source| PkiError::Write {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, contents).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

impl Pki {
    /// Writes every file of [`FILES`] except `kube-sim.json`.
    pub fn write_files(&self, server: &str) -> Result<(), PkiError> {
        let dir = &self.dir;
        let cur = self.current();
        let ca = &self.cluster_ca.cert_pem;
        write_file(dir, "ca.crt", ca.as_bytes())?;
        write_file(dir, "ca.key", self.cluster_ca.key_pem.as_bytes())?;
        self.write_rotating(server, &cur)?;
        for (name, token, user) in [
            (
                "metrics-bridge",
                &self.tokens.metrics_bridge,
                "system:serviceaccount:kube-system:metrics-bridge",
            ),
            ("viewer", &self.tokens.viewer, "viewer"),
            (
                "hpa",
                &self.tokens.hpa,
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            ),
            (
                "kube-sim-external",
                &self.tokens.external,
                "system:serviceaccount:kube-system:kube-sim",
            ),
        ] {
            write_file(dir, &format!("{name}.token"), token.as_bytes())?;
            let kc = kubeconfig(server, ca, user, KubeconfigUser::Token(token));
            write_file(dir, &format!("{name}.kubeconfig"), kc.as_bytes())?;
        }
        write_file(dir, "admin.token", self.tokens.admin.as_bytes())
    }

    /// The files of `--external-apiserver` mode: the CA of the kubelets' serving certificates
    /// (for `--kubelet-certificate-authority`) and the admin credentials of kube-sim's own
    /// control endpoint (`/sim/*` on `--apiserver-addr`), with a kubeconfig pointing at it.
    pub fn write_external_files(&self, server: &str) -> Result<(), PkiError> {
        let dir = &self.dir;
        let cur = self.current();
        write_file(dir, "ca.crt", self.cluster_ca.cert_pem.as_bytes())?;
        write_file(dir, "ca.key", self.cluster_ca.key_pem.as_bytes())?;
        write_file(dir, "admin.crt", cur.admin.cert_pem.as_bytes())?;
        write_file(dir, "admin.key", cur.admin.key_pem.as_bytes())?;
        write_file(dir, "admin.token", self.tokens.admin.as_bytes())?;
        self.write_admin_kubeconfig(server, cur.as_ref())
    }

    /// Writes the files a CA rotation changes.
    pub fn write_rotating(&self, server: &str, cur: &Rotating) -> Result<(), PkiError> {
        let dir = &self.dir;
        write_file(dir, "client-ca.crt", cur.client_bundle.pem.as_bytes())?;
        write_file(dir, "admin.crt", cur.admin.cert_pem.as_bytes())?;
        write_file(dir, "admin.key", cur.admin.key_pem.as_bytes())?;
        write_file(
            dir,
            "front-proxy-ca.crt",
            cur.front_proxy_bundle_pem.as_bytes(),
        )?;
        write_file(
            dir,
            "front-proxy-ca.key",
            cur.front_proxy_ca.key_pem.as_bytes(),
        )?;
        write_file(
            dir,
            "front-proxy-client.crt",
            cur.front_proxy_client.cert_pem.as_bytes(),
        )?;
        write_file(
            dir,
            "front-proxy-client.key",
            cur.front_proxy_client.key_pem.as_bytes(),
        )?;
        self.write_admin_kubeconfig(server, cur)
    }

    /// The admin kubeconfig (client certificate) for `server`.
    fn write_admin_kubeconfig(&self, server: &str, cur: &Rotating) -> Result<(), PkiError> {
        let kc = kubeconfig(
            server,
            &self.cluster_ca.cert_pem,
            "kubernetes-admin",
            KubeconfigUser::ClientCert {
                cert_pem: &cur.admin.cert_pem,
                key_pem: &cur.admin.key_pem,
            },
        );
        write_file(&self.dir, "kubeconfig", kc.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn issued_certificates_verify_against_their_bundle_only() {
        let ca = Ca::new("test-ca").unwrap();
        let other = Ca::new("other-ca").unwrap();
        let bundle = ClientCaBundle::new(&[&ca.cert_der]).unwrap();
        let good = admin_cert(&ca).unwrap();
        let bad = admin_cert(&other).unwrap();
        assert!(bundle.verify(std::slice::from_ref(&good.cert_der)).is_ok());
        assert!(bundle.verify(std::slice::from_ref(&bad.cert_der)).is_err());
        let expired = ca
            .issue(&LeafSpec {
                common_name: "old",
                organizations: &[],
                dns_names: &[],
                ips: &[],
                server: false,
                client: true,
                validity: Some((
                    SystemTime::now() - Duration::from_secs(3 * 86400),
                    SystemTime::now() - Duration::from_secs(2 * 86400),
                )),
            })
            .unwrap();
        let err = bundle.verify(&[expired.cert_der]).unwrap_err();
        assert!(err.contains("expired"), "{err}");
    }

    #[test]
    fn rotation_keeps_or_drops_the_old_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), IpAddr::from([127, 0, 0, 1])).unwrap();
        let first = pki.current();
        let kept = pki.rotate(WhichCa::Client, true).unwrap();
        assert!(
            kept.client_bundle
                .verify(std::slice::from_ref(&first.admin.cert_der))
                .is_ok()
        );
        assert!(
            kept.client_bundle
                .verify(std::slice::from_ref(&kept.admin.cert_der))
                .is_ok()
        );
        let dropped = pki.rotate(WhichCa::Client, false).unwrap();
        assert!(
            dropped
                .client_bundle
                .verify(std::slice::from_ref(&first.admin.cert_der))
                .is_err()
        );
        assert!(
            dropped
                .client_bundle
                .verify(std::slice::from_ref(&dropped.admin.cert_der))
                .is_ok()
        );
        assert_eq!(dropped.generation, 3);
        let fp = pki.rotate(WhichCa::FrontProxy, false).unwrap();
        assert_ne!(fp.front_proxy_bundle_pem, first.front_proxy_bundle_pem);
        assert_eq!(bundle_ders(&fp.front_proxy_bundle_pem).len(), 1);
    }

    #[test]
    fn kubeconfig_is_parsed_by_kube_rs() {
        let ca = Ca::new("kc").unwrap();
        let admin = admin_cert(&ca).unwrap();
        let text = kubeconfig(
            "https://127.0.0.1:6443",
            &ca.cert_pem,
            "kubernetes-admin",
            KubeconfigUser::ClientCert {
                cert_pem: &admin.cert_pem,
                key_pem: &admin.key_pem,
            },
        );
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(
            kc.current_context.as_deref(),
            Some("kubernetes-admin@kube-sim")
        );
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
    }
}
