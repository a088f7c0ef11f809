//! `--tls-min-version` and `--tls-cipher-suites` names, as Go and Kubernetes spell them, and
//! what they become in rustls.
//!
//! Kubernetes components accept every name Go's `crypto/tls` knows (`tls.CipherSuites()` and
//! `tls.InsecureCipherSuites()`, plus two legacy ChaCha20 spellings). rustls implements a
//! subset: the AEAD suites with ECDHE key exchange. A known Go name outside that subset is an
//! error that says so, rather than "unknown", because the user's manifest is not wrong for
//! metrics-server.

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::cipher_suite as rs;

use super::TlsVersion;

/// Go's name for each suite rustls (ring provider) implements.
static RUSTLS_SUITES: &[(&str, SupportedCipherSuite)] = &[
    ("TLS_AES_128_GCM_SHA256", rs::TLS13_AES_128_GCM_SHA256),
    ("TLS_AES_256_GCM_SHA384", rs::TLS13_AES_256_GCM_SHA384),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        rs::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        rs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        rs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        rs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        rs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        rs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        rs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Names Go accepts that rustls does not implement: CBC, RC4, 3DES and RSA key exchange.
static GO_ONLY_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_RC4_128_SHA",
];

/// Checks one `--tls-cipher-suites` name; the error says whether Go knows it.
pub(crate) fn check_cipher_suite(name: &str) -> Result<(), String> {
    if RUSTLS_SUITES.iter().any(|(n, _)| *n == name) {
        return Ok(());
    }
    if GO_ONLY_SUITES.contains(&name) {
        return Err(format!(
            "cipher suite {name} is not implemented by metrics-bridge's TLS library (rustls); \
             use ECDHE with AES-GCM or ChaCha20-Poly1305, such as \
             TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ));
    }
    Err(format!("unknown cipher suite {name:?}"))
}

/// Whether `name` is a TLS 1.2 suite rustls implements.
pub(crate) fn is_tls12_suite(name: &str) -> bool {
    RUSTLS_SUITES
        .iter()
        .any(|(n, s)| *n == name && s.version() == &rustls::version::TLS12)
}

/// The rustls suites for a validated `--tls-cipher-suites` list, in Go's semantics: the list
/// restricts TLS 1.2 only and every TLS 1.3 suite stays enabled. `None` for an empty list
/// (the provider's defaults).
pub(crate) fn rustls_cipher_suites(names: &[String]) -> Option<Vec<SupportedCipherSuite>> {
    if names.is_empty() {
        return None;
    }
    let mut suites: Vec<SupportedCipherSuite> = RUSTLS_SUITES
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| s.version() == &rustls::version::TLS13)
        .collect();
    suites.dedup_by(|a, b| a.suite() == b.suite());
    for name in names {
        if let Some((_, s)) = RUSTLS_SUITES.iter().find(|(n, _)| n == name)
            && s.version() == &rustls::version::TLS12
            && !suites.iter().any(|x| x.suite() == s.suite())
        {
            suites.push(*s);
        }
    }
    Some(suites)
}

impl TlsVersion {
    /// Parses Go's spelling (`VersionTLS12`). The empty string is Go's default, TLS 1.2.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "VersionTLS10" => TlsVersion::Tls10,
            "VersionTLS11" => TlsVersion::Tls11,
            "" | "VersionTLS12" => TlsVersion::Tls12,
            "VersionTLS13" => TlsVersion::Tls13,
            _ => return None,
        })
    }

    /// Go's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls10 => "VersionTLS10",
            TlsVersion::Tls11 => "VersionTLS11",
            TlsVersion::Tls12 => "VersionTLS12",
            TlsVersion::Tls13 => "VersionTLS13",
        }
    }

    /// The rustls protocol versions allowed with this minimum. rustls has no TLS 1.0 or 1.1,
    /// so those minimums allow what rustls can do: 1.2 and 1.3.
    pub fn rustls_versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static FROM_12: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        static FROM_13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match self {
            TlsVersion::Tls13 => FROM_13,
            _ => FROM_12,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

    #[test]
    fn rustls_names_are_accepted_and_go_only_names_explain_themselves() {
        assert_eq!(
            check_cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            Ok(())
        );
        assert_eq!(check_cipher_suite("TLS_AES_128_GCM_SHA256"), Ok(()));
        let err = check_cipher_suite("TLS_RSA_WITH_AES_128_GCM_SHA256").unwrap_err();
        assert!(err.contains("not implemented by metrics-bridge's TLS library (rustls)"));
        assert_eq!(
            check_cipher_suite("tls_ecdhe_rsa_with_aes_128_gcm_sha256").unwrap_err(),
            "unknown cipher suite \"tls_ecdhe_rsa_with_aes_128_gcm_sha256\""
        );
    }

    #[test]
    fn go_names_map_to_the_same_iana_suites() {
        // rustls spells TLS 1.3 suites with a TLS13_ prefix; Go keeps two legacy ChaCha20
        // names without the _SHA256 suffix.
        for (name, suite) in RUSTLS_SUITES {
            let expected = if suite.version() == &rustls::version::TLS13 {
                name.replacen("TLS_", "TLS13_", 1)
            } else if name.ends_with("POLY1305") {
                format!("{name}_SHA256")
            } else {
                (*name).to_string()
            };
            assert_eq!(format!("{:?}", suite.suite()), expected);
        }
    }

    #[test]
    fn a_list_restricts_tls12_and_keeps_every_tls13_suite() {
        let suites = rustls_cipher_suites(&["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into()])
            .unwrap_or_default();
        let ids: Vec<CipherSuite> = suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            ids,
            vec![
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        // Legacy and current ChaCha20 spellings are one suite.
        let suites = rustls_cipher_suites(&[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(),
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".into(),
        ])
        .unwrap_or_default();
        assert_eq!(suites.len(), 4);
        assert!(rustls_cipher_suites(&[]).is_none());
    }

    #[test]
    fn versions_round_trip_and_floor_at_tls12() {
        for v in [
            TlsVersion::Tls10,
            TlsVersion::Tls11,
            TlsVersion::Tls12,
            TlsVersion::Tls13,
        ] {
            assert_eq!(TlsVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(TlsVersion::parse(""), Some(TlsVersion::Tls12));
        assert_eq!(TlsVersion::parse("VersionTLS14"), None);
        assert_eq!(TlsVersion::parse("tls12"), None);
        assert_eq!(TlsVersion::Tls10.rustls_versions().len(), 2);
        assert_eq!(
            TlsVersion::Tls13.rustls_versions(),
            &[&rustls::version::TLS13]
        );
    }
}
