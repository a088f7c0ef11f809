//! Client certificates: the TLS layer asks for one, and authentication verifies it against
//! the CA pools current at request time, as k8s.io/apiserver's x509 and requestheader
//! authenticators do.
//!
//! What it promises:
//! - the handshake requests but never requires a certificate, and accepts any chain whose
//!   holder proves possession of the key (the CertificateVerify signature is checked); chain
//!   verification is left to the authenticator, because the CAs can rotate while connections
//!   stay open;
//! - verification is webpki's (ring): the chain must lead to one of the pool's certificates,
//!   every certificate must be valid now, and an extended key usage, where present, must
//!   allow client authentication (Go's `x509.ExtKeyUsageClientAuth` rule);
//! - a verdict is computed once per distinct chain and CA generation and then served from a
//!   cache shared by all connections until the earliest `notAfter` of the chain (at most
//!   `MAX_VERDICT_AGE`; a rejection for `REJECTION_AGE`);
//! - each connection keeps its chain's verdict ([`VerdictMemo`]) under the same generation
//!   and expiry, so the hot path (the aggregator's front-proxy certificate on every request
//!   over a few long-lived connections) neither hashes the chain nor touches the shared
//!   cache.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::User;
use super::cache::{KeyBuilder, TtlCache};
use super::sources::CaState;

/// The extra key under which Kubernetes records which credential authenticated a user.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// How long a verdict may be reused at most, even when the chain is valid for longer: a CA in
/// the pool may expire before the leaf does.
const MAX_VERDICT_AGE: Duration = Duration::from_secs(300);

/// How long a rejection is remembered: a not-yet-valid certificate becomes valid, and a
/// failing chain should not cost a verification on every request of a misbehaving client.
const REJECTION_AGE: Duration = Duration::from_secs(10);

/// A CA bundle that client certificates are verified against.
pub struct CaBundle {
    verifier: Arc<dyn ClientCertVerifier>,
    /// Where the bundle came from (a flag and file, or the ConfigMap key), for messages.
    pub origin: String,
    /// The PEM it was built from, to tell a real change from a repeated one.
    pub pem: Vec<u8>,
    /// Subjects of the CAs, for messages.
    subjects: Vec<String>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("origin", &self.origin)
            .field("subjects", &self.subjects)
            .finish_non_exhaustive()
    }
}

/// Why a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{origin} is not a PEM certificate bundle: {source}")]
    Pem {
        origin: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{origin} holds no certificate")]
    Empty { origin: String },
    #[error("{origin} holds no usable CA certificate ({rejected} could not be parsed)")]
    Unusable { origin: String, rejected: usize },
    #[error("cannot build a verifier for {origin}: {source}")]
    Verifier {
        origin: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

impl CaBundle {
    /// Parses a PEM bundle; `origin` names it in errors and logs.
    pub fn from_pem(
        origin: &str,
        pem: &[u8],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, CaError> {
        use rustls_pki_types::pem::PemObject as _;
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CaError::Pem {
                origin: origin.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(CaError::Empty {
                origin: origin.to_owned(),
            });
        }
        let subjects = certs
            .iter()
            .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
            .map(|(_, c)| c.subject().to_string())
            .collect();
        let mut roots = RootCertStore::empty();
        let (added, rejected) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(CaError::Unusable {
                origin: origin.to_owned(),
                rejected,
            });
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                .build()
                .map_err(|source| CaError::Verifier {
                    origin: origin.to_owned(),
                    source,
                })?;
        Ok(Self {
            verifier,
            origin: origin.to_owned(),
            pem: pem.to_vec(),
            subjects,
        })
    }

    /// Verifies `chain` (leaf first) against this bundle at `now`.
    pub fn verify(&self, chain: &[CertificateDer<'static>], now: UnixTime) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "verifying certificate {} against the {} failed: {}",
                    describe(leaf),
                    self.origin,
                    explain(&e, &self.subjects)
                )
            })
    }
}

/// `subject "…", issuer "…"` of a certificate, for messages.
fn describe(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => format!("(subject \"{}\", issuer \"{}\")", c.subject(), c.issuer()),
        Err(_) => "(unparsable)".into(),
    }
}

/// rustls's verdict in Go's x509 wording, which operators search for.
fn explain(e: &rustls::Error, trusted: &[String]) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "x509: certificate signed by unknown authority (trusted: {})",
                trusted.join("; ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "x509: certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "x509: certificate is not valid yet".into()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "x509: certificate specifies an incompatible key usage (not client \
                 authentication)"
                    .into()
            }
            other => format!("x509: {other:?}"),
        },
        other => other.to_string(),
    }
}

/// The Go `x509` user conversion (`CommonNameUserConversion`): the CN is the user, the O
/// values the groups, and the SHA-256 of the certificate the credential ID. `None` for a
/// certificate without a CN, which authenticates no one.
pub fn user_from_certificate(leaf: &CertificateDer<'_>) -> Result<Option<User>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("cannot parse the client certificate: {e}"))?;
    let subject = cert.subject();
    let Some(name) = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
    else {
        return Ok(None);
    };
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut id = String::with_capacity(11 + 64);
    id.push_str("X509SHA256=");
    for b in digest.as_ref() {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(Some(User {
        name: name.to_owned(),
        uid: String::new(),
        groups,
        extra: BTreeMap::from([(CREDENTIAL_ID_KEY.to_owned(), vec![id])]),
    }))
}

/// The common name of a certificate, if it has one.
fn common_name(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// The earliest `notAfter` of a chain, if every certificate parses.
fn chain_not_after(chain: &[CertificateDer<'_>]) -> Option<SystemTime> {
    chain
        .iter()
        .map(|c| {
            let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
            let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
        })
        .try_fold(None::<SystemTime>, |min, t| {
            let t = t?;
            Some(Some(min.map_or(t, |m| m.min(t))))
        })
        .flatten()
}

/// What one client certificate chain proves, under one CA generation.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The requestheader check (chain verifies against the requestheader CA and the CN is
    /// allowed): `None` when no requestheader CA is configured.
    pub front_proxy: Option<Result<(), String>>,
    /// The x509 check: `None` when no client CA is configured; `Ok(None)` for a verified
    /// certificate without a CN. The user is complete (in `system:authenticated`), shared by
    /// every request on the chain.
    pub client: Option<Result<Option<Arc<User>>, String>>,
}

/// A verdict with what it holds for: the CA generation it was computed under, and the
/// instant it must be recomputed by.
#[derive(Clone)]
struct Cached {
    generation: u64,
    expires: Instant,
    verdict: Arc<Verdict>,
}

impl Cached {
    fn holds(&self, generation: u64, now: Instant) -> bool {
        self.generation == generation && self.expires > now
    }
}

/// One connection's verdict on its own client certificate chain, kept with the connection
/// (see [`crate::https::ConnInfo`]) because the chain cannot change while it is open: every
/// request after the first then costs a pointer comparison and a read of this slot instead
/// of hashing the chain for the shared [`CertCache`].
///
/// It promises the same answers as the [`CertCache`] entry it was copied from: it is served
/// only for the very chain it was computed on (the same allocation), under the same CA
/// generation, and not past that entry's expiry. Its lock is the connection's own, shared
/// with nothing but that connection's concurrent requests, which only read it once warm.
#[derive(Default)]
pub struct VerdictMemo(RwLock<Option<Memo>>);

struct Memo {
    chain: Arc<[CertificateDer<'static>]>,
    cached: Cached,
}

impl std::fmt::Debug for VerdictMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictMemo").finish_non_exhaustive()
    }
}

impl VerdictMemo {
    fn get(
        &self,
        chain: &Arc<[CertificateDer<'static>]>,
        generation: u64,
        now: Instant,
    ) -> Option<Arc<Verdict>> {
        let slot = self.0.read().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref()
            .filter(|m| Arc::ptr_eq(&m.chain, chain) && m.cached.holds(generation, now))
            .map(|m| Arc::clone(&m.cached.verdict))
    }

    /// Keeps `cached` unless the slot holds a verdict of a newer generation already (a
    /// request that read the CA state before a rotation finishing after one that read it
    /// after).
    fn set(&self, chain: &Arc<[CertificateDer<'static>]>, cached: Cached) {
        let mut slot = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if slot
            .as_ref()
            .is_none_or(|m| m.cached.generation <= cached.generation)
        {
            *slot = Some(Memo {
                chain: Arc::clone(chain),
                cached,
            });
        }
    }
}

/// Verdicts by chain, for as long as they hold.
pub struct CertCache {
    cache: TtlCache<Cached>,
    /// How many times a chain was hashed to look its verdict up, and how many verdicts were
    /// computed: what the per-connection memo saves.
    #[cfg(test)]
    counts: Counts,
}

#[cfg(test)]
#[derive(Debug, Default)]
pub struct Counts {
    pub lookups: std::sync::atomic::AtomicUsize,
    pub verifications: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for CertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertCache").finish_non_exhaustive()
    }
}

impl Default for CertCache {
    fn default() -> Self {
        Self {
            cache: TtlCache::new(4096),
            #[cfg(test)]
            counts: Counts::default(),
        }
    }
}

impl CertCache {
    /// The verdict on `chain`, the certificate chain of the connection that `memo` belongs
    /// to, under `state`: from the connection's memo while it holds, else from the cache
    /// shared by all connections, computed at most once per chain and generation while it
    /// stays valid.
    pub fn verdict(
        &self,
        chain: &Arc<[CertificateDer<'static>]>,
        memo: &VerdictMemo,
        state: &CaState,
    ) -> Arc<Verdict> {
        self.verdict_at(chain, memo, state, Instant::now(), SystemTime::now())
    }

    /// [`Self::verdict`] at the monotonic instant `now` and the wall-clock time `wall`.
    pub(super) fn verdict_at(
        &self,
        chain: &Arc<[CertificateDer<'static>]>,
        memo: &VerdictMemo,
        state: &CaState,
        now: Instant,
        wall: SystemTime,
    ) -> Arc<Verdict> {
        if let Some(verdict) = memo.get(chain, state.generation, now) {
            return verdict;
        }
        let cached = self.shared_verdict(chain, state, now, wall);
        let verdict = Arc::clone(&cached.verdict);
        memo.set(chain, cached);
        verdict
    }

    fn shared_verdict(
        &self,
        chain: &[CertificateDer<'static>],
        state: &CaState,
        now: Instant,
        wall: SystemTime,
    ) -> Cached {
        #[cfg(test)]
        self.counts
            .lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut key = KeyBuilder::new("x509-chain");
        for cert in chain {
            key.field(cert.as_ref());
        }
        let key = key.finish();
        if let Some(hit) = self.cache.get(&key, now)
            && hit.generation == state.generation
        {
            return hit;
        }
        #[cfg(test)]
        self.counts
            .verifications
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let unix = UnixTime::since_unix_epoch(
            wall.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let verdict = Arc::new(verify(chain, state, unix));
        let accepted =
            matches!(verdict.front_proxy, Some(Ok(()))) || matches!(verdict.client, Some(Ok(_)));
        let ttl = if accepted {
            chain_not_after(chain)
                .and_then(|t| t.duration_since(wall).ok())
                .map_or(Duration::ZERO, |left| left.min(MAX_VERDICT_AGE))
        } else {
            REJECTION_AGE
        };
        let cached = Cached {
            generation: state.generation,
            // `ttl` is at most MAX_VERDICT_AGE; should the clock end sooner, nothing is reused.
            expires: now.checked_add(ttl).unwrap_or(now),
            verdict,
        };
        self.cache.insert(key, cached.clone(), now, ttl);
        cached
    }

    #[cfg(test)]
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// Computes the verdict on `chain` under `state` at `now`.
pub fn verify(chain: &[CertificateDer<'static>], state: &CaState, now: UnixTime) -> Verdict {
    let front_proxy = state
        .request_header
        .as_ref()
        .and_then(|rh| rh.ca.as_ref().map(|ca| (rh, ca)))
        .map(|(rh, ca)| {
            ca.verify(chain, now)?;
            if rh.allowed_names.is_empty() {
                return Ok(());
            }
            let cn = chain.first().and_then(common_name).unwrap_or_default();
            if rh.allowed_names.contains(&cn) {
                Ok(())
            } else {
                Err(format!(
                    "x509: subject with cn={cn} is not in the allowed list ({}: {:?})",
                    rh.allowed_names_origin, rh.allowed_names
                ))
            }
        });
    let client = state.client_ca.as_ref().map(|ca| {
        ca.verify(chain, now)?;
        let leaf = chain.first().ok_or("no certificate")?;
        Ok(user_from_certificate(leaf)?.map(|u| Arc::new(u.with_authenticated_group())))
    });
    Verdict {
        front_proxy,
        client,
    }
}

/// The TLS layer's part: ask every client for a certificate, require none, accept any chain
/// whose holder signs the handshake with its key. The hint list is empty: client-go, Go,
/// curl and OpenSSL clients then send the certificate they hold whatever CA signed it, and
/// the verdict comes from the CAs current at request time rather than those of the
/// handshake.
#[derive(Debug)]
pub struct RequestClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl RequestClientCert {
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
