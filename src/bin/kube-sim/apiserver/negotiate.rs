//! `Accept` header negotiation, as kube-apiserver's (`goautoneg` ordering: by q-value, then by
//! order of appearance), including the `as`, `g` and `v` parameters that select a conversion
//! target (Table, PartialObjectMetadata, aggregated discovery).

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange<'a> {
    pub type_: &'a str,
    pub subtype: &'a str,
    pub params: Vec<(&'a str, &'a str)>,
    pub q: f32,
}

impl<'a> MediaRange<'a> {
    /// The value of a parameter (names are case-insensitive).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    /// Whether this range accepts `application/json` (or is a wildcard that does).
    pub fn accepts_json(&self) -> bool {
        (self.type_ == "*" && self.subtype == "*")
            || (self.type_.eq_ignore_ascii_case("application")
                && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case("json")))
    }

    /// The conversion target `(as, g, v)`, if any.
    pub fn target(&self) -> Option<(&'a str, &'a str, &'a str)> {
        Some((
            self.param("as")?,
            self.param("g").unwrap_or(""),
            self.param("v").unwrap_or(""),
        ))
    }
}

/// Parses an `Accept` header into media ranges sorted by preference. An absent or empty header
/// means `*/*`. Ranges with q=0 are dropped.
pub fn parse_accept(header: Option<&str>) -> Vec<MediaRange<'_>> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or("*/*");
    let mut out: Vec<MediaRange<'_>> = Vec::new();
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let Some(mt) = pieces.next().map(str::trim).filter(|m| !m.is_empty()) else {
            continue;
        };
        let (type_, subtype) = mt.split_once('/').unwrap_or((mt, "*"));
        let mut params = Vec::new();
        let mut q = 1.0f32;
        for p in pieces {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if k.eq_ignore_ascii_case("q") {
                q = v.parse().unwrap_or(1.0);
            } else {
                params.push((k, v));
            }
        }
        if q > 0.0 {
            out.push(MediaRange {
                type_: type_.trim(),
                subtype: subtype.trim(),
                params,
                q,
            });
        }
    }
    // A stable sort keeps the order of appearance among equal q-values.
    out.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_headers() {
        let r = parse_accept(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json",
        ));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].target(), Some(("Table", "meta.k8s.io", "v1")));
        assert_eq!(r[2].target(), None);
        assert!(r[2].accepts_json());
        let r = parse_accept(Some("application/vnd.kubernetes.protobuf, */*;q=0.5"));
        assert!(!r[0].accepts_json());
        assert!(r[1].accepts_json());
        let r = parse_accept(Some("text/plain;q=0.1, application/json;q=0.9"));
        assert_eq!(r[0].subtype, "json");
        assert!(parse_accept(None)[0].accepts_json());
    }
}
