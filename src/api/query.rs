//! Query strings and list options, read as Go's `url.ParseQuery` and apimachinery's
//! `ListOptions` conversion read them.

use std::borrow::Cow;

use crate::selector::{FieldSelector, LabelSelector};
use crate::status::Status;

/// Decoded query parameters in request order.
#[derive(Debug, Default)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses like Go's `url.ParseQuery`: `&`-separated `key=value` pairs, `+` as a space and
    /// `%XX` escapes decoded. Pairs containing `;` or a bad escape are dropped, as Go drops
    /// them (and the request still proceeds).
    pub fn parse(raw: Option<&'a str>) -> Self {
        let mut pairs = Vec::new();
        for pair in raw.unwrap_or("").split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if let (Some(k), Some(v)) = (unescape(k), unescape(v)) {
                pairs.push((k, v));
            }
        }
        Self { pairs }
    }

    /// The first value of `key`, as Go's `Values.Get`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// A boolean parameter as apimachinery converts it: present and not `0`/`false`
    /// (any case) is true, including an empty value.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    }
}

/// Decodes `+` and `%XX`; `None` on a malformed escape.
fn unescape(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = b.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
                let lo = b.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// Decodes `%XX` escapes in a URL path, as Go's `URL.Path` holds it. A malformed escape is
/// kept as it is (Go's server would have refused the request before any handler).
pub fn unescape_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The list options the metrics endpoints honour.
#[derive(Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub watch: bool,
}

/// The fields every kind accepts in a field selector (`DefaultMetaV1FieldSelectorConversion`).
pub const SELECTABLE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

impl ListOptions {
    /// Reads list options as `ListResource` does: parameters are decoded first (a bad
    /// selector or integer is a 400 with the parser's message), then field selector names are
    /// checked against the kind's selectable fields (also a 400).
    pub fn from_query(q: &Query<'_>) -> Result<Self, Box<Status>> {
        let opts = Self::decode(q).map_err(|e| Box::new(Status::bad_request(e)))?;
        opts.fields
            .check_fields(SELECTABLE_FIELDS)
            .map_err(|e| Box::new(Status::bad_request(e.0)))?;
        Ok(opts)
    }

    /// apimachinery's parameter decoding alone; the error is its message.
    pub fn decode(q: &Query<'_>) -> Result<Self, String> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(|e| e.0)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(|e| e.0)?;
        for key in ["timeoutSeconds", "limit"] {
            if let Some(v) = q.get(key) {
                parse_go_int64(v)?;
            }
        }
        Ok(Self {
            labels,
            fields,
            watch: q.flag("watch"),
        })
    }
}

/// `strconv.ParseInt(v, 10, 64)` with Go's error messages.
fn parse_go_int64(v: &str) -> Result<i64, String> {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"));
    }
    v.parse::<i64>()
        .map_err(|_| format!("strconv.ParseInt: parsing {v:?}: value out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&watch&x=1&x=2&bad=%zz&semi=a;b&=v",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a,b)"));
        assert_eq!(q.get("x"), Some("1"));
        assert_eq!(q.get("bad"), None);
        assert_eq!(q.get("semi"), None);
        assert_eq!(q.get(""), Some("v"));
        assert!(q.flag("watch"));
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert!(!Query::parse(Some("watch=FALSE")).flag("watch"));
        assert!(!Query::parse(Some("watch=0")).flag("watch"));
        assert!(Query::parse(Some("watch=yes")).flag("watch"));
        assert!(!Query::parse(None).flag("watch"));
    }

    #[test]
    fn list_options_errors_are_apiserver_messages() {
        let err = |raw: &str| ListOptions::from_query(&Query::parse(Some(raw))).unwrap_err();
        let s = err("fieldSelector=spec.nodeName%3Dx");
        assert_eq!(s.code, 400);
        assert_eq!(
            s.message,
            r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert_eq!(
            err("limit=abc").message,
            r#"strconv.ParseInt: parsing "abc": invalid syntax"#
        );
        assert_eq!(
            err("timeoutSeconds=99999999999999999999").message,
            r#"strconv.ParseInt: parsing "99999999999999999999": value out of range"#
        );
        assert_eq!(err("labelSelector=a%20b").reason, "BadRequest");
        let ok = ListOptions::from_query(&Query::parse(Some(
            "labelSelector=app!%3Dx&fieldSelector=metadata.name%3Dy&limit=-5",
        )))
        .unwrap();
        assert_eq!(ok.labels.to_string(), "app!=x");
        assert_eq!(ok.fields.required_value("metadata.name"), Some("y"));
    }

    #[test]
    fn path_unescaping() {
        assert_eq!(unescape_path("/a/b%20c/%2F"), "/a/b c//");
        assert_eq!(unescape_path("/plain"), "/plain");
        assert_eq!(unescape_path("/bad%zz%4"), "/bad%zz%4");
    }
}
