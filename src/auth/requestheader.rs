//! The front proxy's identity headers, read as k8s.io/apiserver's requestheader
//! authenticator reads them: the first non-empty username header, the first non-empty UID
//! header, every value of every group header, and extras from every header under an extra
//! prefix, keyed by the rest of the header name lower-cased and then percent-decoded
//! (`X-Remote-Extra-Scopes` → `scopes`, `X-Remote-Extra-Foo%2Fbar` → `foo/bar`).
//!
//! These headers are trusted only after the connection's certificate passed the
//! requestheader checks; on every other request they are removed before anything reads
//! them (see [`clear`]).

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::User;
use super::x509::CaBundle;

/// The header names a standard aggregator uses, removed from every request whatever the
/// configuration, as k8s.io/apiserver does after authentication.
pub const STANDARD_USER: &str = "x-remote-user";
pub const STANDARD_UID: &str = "x-remote-uid";
pub const STANDARD_GROUP: &str = "x-remote-group";
pub const STANDARD_EXTRA_PREFIX: &str = "x-remote-extra-";

/// The requestheader configuration in force: from the `--requestheader-*` flags, or from the
/// `extension-apiserver-authentication` ConfigMap.
#[derive(Debug)]
pub struct RequestHeader {
    /// `None` when the source names no CA: then no certificate qualifies.
    pub ca: Option<CaBundle>,
    /// Empty allows any CN the CA signed.
    pub allowed_names: Vec<String>,
    /// Where the allowed names came from, for messages.
    pub allowed_names_origin: String,
    pub username_headers: Vec<HeaderName>,
    pub uid_headers: Vec<HeaderName>,
    pub group_headers: Vec<HeaderName>,
    /// Lower-cased.
    pub extra_prefixes: Vec<String>,
}

/// Header names from configuration (flags or the ConfigMap), lower-cased; names that are
/// not valid header names are reported.
pub fn header_names(origin: &str, names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| {
            HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("{origin}: {n:?} is not a valid header name"))
        })
        .collect()
}

/// The value as text; `Err` for bytes that are not UTF-8 (a user name must be text).
fn text<'a>(name: &HeaderName, value: &'a HeaderValue) -> Result<&'a str, String> {
    std::str::from_utf8(value.as_bytes())
        .map_err(|_| format!("the {name} header is not valid UTF-8"))
}

/// Go's `url.PathUnescape`: `None` for a malformed escape or a result that is not UTF-8.
fn path_unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl RequestHeader {
    /// The user the headers name; `Ok(None)` when no username header has a value, which
    /// leaves the request to the other authenticators.
    pub fn user(&self, headers: &HeaderMap) -> Result<Option<User>, String> {
        let first = |names: &[HeaderName]| -> Result<Option<String>, String> {
            for name in names {
                if let Some(v) = headers.get(name) {
                    let v = text(name, v)?;
                    if !v.is_empty() {
                        return Ok(Some(v.to_owned()));
                    }
                }
            }
            Ok(None)
        };
        let Some(name) = first(&self.username_headers)? else {
            return Ok(None);
        };
        let uid = first(&self.uid_headers)?.unwrap_or_default();
        let mut groups = Vec::new();
        for header in &self.group_headers {
            for v in headers.get_all(header) {
                let v = text(header, v)?;
                if !v.is_empty() {
                    groups.push(v.to_owned());
                }
            }
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for prefix in &self.extra_prefixes {
            for (header, value) in headers {
                let Some(rest) = header.as_str().strip_prefix(prefix.as_str()) else {
                    continue;
                };
                // Header names are lower-case already; decode after lower-casing, as Go does.
                let key = path_unescape(rest).unwrap_or_else(|| rest.to_owned());
                extra
                    .entry(key)
                    .or_default()
                    .push(text(header, value)?.to_owned());
            }
        }
        Ok(Some(User {
            name,
            uid,
            groups,
            extra,
        }))
    }

    /// Whether `header` carries identity under this configuration.
    fn is_identity_header(&self, header: &HeaderName) -> bool {
        self.username_headers.contains(header)
            || self.uid_headers.contains(header)
            || self.group_headers.contains(header)
            || self
                .extra_prefixes
                .iter()
                .any(|p| header.as_str().starts_with(p.as_str()))
    }
}

/// Removes every identity header, the configured ones and the standard `X-Remote-*` ones,
/// so that nothing behind authentication can mistake a client's claim for a fact.
pub fn clear(headers: &mut HeaderMap, config: Option<&RequestHeader>) {
    let is_identity = |h: &HeaderName| {
        let s = h.as_str();
        s == STANDARD_USER
            || s == STANDARD_UID
            || s == STANDARD_GROUP
            || s.starts_with(STANDARD_EXTRA_PREFIX)
            || config.is_some_and(|c| c.is_identity_header(h))
    };
    // Collect first: removing while iterating is not possible with `HeaderMap`. Requests
    // rarely carry any of these, so the common case allocates nothing.
    let doomed: Vec<HeaderName> = headers.keys().filter(|h| is_identity(h)).cloned().collect();
    for h in doomed {
        headers.remove(&h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard() -> RequestHeader {
        RequestHeader {
            ca: None,
            allowed_names: Vec::new(),
            allowed_names_origin: "test".into(),
            username_headers: header_names("t", &["X-Remote-User".into()]).unwrap(),
            uid_headers: header_names("t", &["X-Remote-Uid".into()]).unwrap(),
            group_headers: header_names("t", &["X-Remote-Group".into()]).unwrap(),
            extra_prefixes: vec!["x-remote-extra-".into()],
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn user_groups_and_extras_as_the_aggregator_sends_them() {
        let h = headers(&[
            ("X-Remote-User", "jane"),
            ("X-Remote-Uid", "u-1"),
            ("X-Remote-Group", "team-a"),
            ("X-Remote-Group", ""),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Extra-Scopes", "view"),
            ("X-Remote-Extra-Scopes", "edit"),
            (
                "X-Remote-Extra-Authentication.kubernetes.io%2fcredential-id",
                "JTI=1",
            ),
            ("X-Remote-Extra-Bad%zz", "kept"),
            ("X-Remote-Extra-%41", "upper"),
            ("X-Other", "ignored"),
        ]);
        let user = standard().user(&h).unwrap().unwrap();
        assert_eq!(user.name, "jane");
        assert_eq!(user.uid, "u-1");
        assert_eq!(user.groups, ["team-a", "system:authenticated"]);
        assert_eq!(
            user.extra,
            BTreeMap::from([
                (
                    "scopes".to_owned(),
                    vec!["view".to_owned(), "edit".to_owned()]
                ),
                (
                    "authentication.kubernetes.io/credential-id".to_owned(),
                    vec!["JTI=1".to_owned()]
                ),
                ("bad%zz".to_owned(), vec!["kept".to_owned()]),
                ("A".to_owned(), vec!["upper".to_owned()]),
            ])
        );
    }

    #[test]
    fn the_first_non_empty_username_header_wins_and_none_means_no_opinion() {
        let mut rh = standard();
        rh.username_headers = header_names("t", &["X-A".into(), "X-B".into()]).unwrap();
        let h = headers(&[("X-A", ""), ("X-B", "bob")]);
        assert_eq!(rh.user(&h).unwrap().unwrap().name, "bob");
        assert_eq!(rh.user(&headers(&[("X-Remote-Group", "g")])).unwrap(), None);
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_bytes(b"b\xffd").unwrap());
        assert!(rh.user(&h).is_err(), "a name that is not text is refused");
    }

    #[test]
    fn clearing_removes_configured_and_standard_identity_headers() {
        let mut rh = standard();
        rh.username_headers = header_names("t", &["X-Proxy-User".into()]).unwrap();
        rh.extra_prefixes = vec!["x-proxy-extra-".into()];
        let mut h = headers(&[
            ("X-Remote-User", "forged"),
            ("x-remote-uid", "1"),
            ("X-Remote-Group", "system:masters"),
            ("X-Remote-Extra-Foo", "bar"),
            ("X-Proxy-User", "forged"),
            ("X-Proxy-Extra-A", "b"),
            ("Accept", "application/json"),
        ]);
        clear(&mut h, Some(&rh));
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
        let mut h = headers(&[("X-Remote-User", "forged"), ("X-Proxy-User", "x")]);
        clear(&mut h, None);
        assert_eq!(h.len(), 1, "without a configuration, the standard ones go");
    }

    #[test]
    fn path_unescape_is_gos() {
        assert_eq!(path_unescape("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(path_unescape("a+b").as_deref(), Some("a+b"));
        assert_eq!(path_unescape("a%2"), None);
        assert_eq!(path_unescape("a%g0"), None);
        assert_eq!(path_unescape("%ff"), None, "not UTF-8");
        assert_eq!(path_unescape("%e2%82%ac").as_deref(), Some("€"));
    }
}
