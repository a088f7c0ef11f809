//! Content negotiation as k8s.io/apiserver performs it.
//!
//! Two checks run in order, as in the generic apiserver:
//! 1. go-restful's route check: some `Accept` media range (before any `;`, trimmed) must be
//!    `*/*` or one of the route's types exactly, else `406` with message `406: Not Acceptable`.
//! 2. apiserver's negotiation (`NegotiateMediaTypeOptions`): clauses parsed and ordered as
//!    goautoneg orders them, `q=0` rejecting a type, wildcards, and the `as`/`g`/`v`
//!    conversion parameters checked against what the endpoint can produce. Failure is `406`
//!    with `only the following media types are accepted: …`.

use std::borrow::Cow;

use http::StatusCode;

use crate::status::Status;

/// A wire format the server can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Protobuf,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Json, Format::Yaml, Format::Protobuf];

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
            Format::Protobuf => "application/vnd.kubernetes.protobuf",
        }
    }

    fn type_subtype(self) -> (&'static str, &'static str) {
        match self {
            Format::Json => ("application", "json"),
            Format::Yaml => ("application", "yaml"),
            Format::Protobuf => ("application", "vnd.kubernetes.protobuf"),
        }
    }
}

/// A group/version/kind the client asked the response to be converted to (`as`, `g`, `v`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Convert<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
}

/// The outcome of negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated<'a> {
    pub format: Format,
    /// `None` when the client wants the object as it is.
    pub convert: Option<Convert<'a>>,
    /// `pretty=1` in the media type.
    pub pretty: bool,
}

/// What an endpoint can convert its objects to (apiserver's `EndpointRestrictions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Objects as they are only (discovery documents and other generic endpoints).
    Plain,
    /// The metrics resources: also `Table` (JSON and YAML) and `PartialObjectMetadata[List]`.
    Resource,
    /// `/apis` asked for aggregated discovery: only `APIGroupDiscoveryList` v2 or v2beta1.
    AggregatedDiscovery,
}

impl Endpoint {
    fn allows(self, format: Format, convert: Option<&Convert<'_>>) -> bool {
        match (self, convert) {
            (Endpoint::AggregatedDiscovery, Some(c)) => is_aggregated_discovery(c),
            (Endpoint::AggregatedDiscovery, None) => false,
            (_, None) => true,
            (Endpoint::Plain, Some(_)) => false,
            (Endpoint::Resource, Some(c)) => {
                if c.group != "meta.k8s.io" || !matches!(c.version, "v1" | "v1beta1") {
                    return false;
                }
                match c.kind {
                    "Table" => matches!(format, Format::Json | Format::Yaml),
                    "PartialObjectMetadata" | "PartialObjectMetadataList" => true,
                    _ => false,
                }
            }
        }
    }
}

/// Whether `c` asks for aggregated discovery (`APIGroupDiscoveryList` in
/// `apidiscovery.k8s.io` v2 or v2beta1).
pub fn is_aggregated_discovery(c: &Convert<'_>) -> bool {
    c.group == "apidiscovery.k8s.io"
        && matches!(c.version, "v2" | "v2beta1")
        && c.kind == "APIGroupDiscoveryList"
}

/// One clause of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
struct Clause<'a> {
    typ: &'a str,
    subtype: &'a str,
    q: f32,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Clause<'a> {
    fn param(&self, key: &str) -> Option<&'a str> {
        // goautoneg keeps parameters in a map: the last occurrence wins.
        self.params
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// 2 for an exact match, 1 for `type/*`, 0 for `*/*`, -1 for none.
    fn specificity(&self, format: Format) -> i32 {
        let (t, s) = format.type_subtype();
        if self.typ == t && self.subtype == s {
            2
        } else if self.typ == t && self.subtype == "*" {
            1
        } else if self.typ == "*" && self.subtype == "*" {
            0
        } else {
            -1
        }
    }
}

/// goautoneg's `ParseAccept`: clauses in header order, then sorted by its comparator.
fn parse_accept(header: &str) -> Vec<Clause<'_>> {
    let mut clauses = Vec::new();
    for part in header.split(',') {
        let part = part.trim_matches(' ');
        let mut pieces = part.split(';');
        let media_range = pieces.next().unwrap_or("");
        let mut sp = media_range.split('/');
        let typ = sp.next().unwrap_or("").trim_matches(' ');
        let rest: Vec<&str> = sp.collect();
        let subtype = match rest.as_slice() {
            [] if typ == "*" => "*",
            [sub] => sub.trim_matches(' '),
            _ => continue,
        };
        let mut clause = Clause {
            typ,
            subtype,
            q: 1.0,
            params: Vec::new(),
        };
        for param in pieces {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            let k = k.trim_matches(' ');
            if k == "q" {
                // Go parses q as a 32-bit float and keeps 0 when it fails.
                clause.q = v.parse::<f32>().unwrap_or(0.0);
            } else {
                clause.params.push((k, v.trim_matches(' ')));
            }
        }
        clauses.push(clause);
    }
    // goautoneg sorts with sort.Sort; for the short lists a header holds that is Go's
    // insertion sort, whose result we reproduce exactly with its (non-strict) comparator.
    let less = |a: &Clause<'_>, b: &Clause<'_>| {
        a.q > b.q || (a.typ != "*" && b.typ == "*") || (a.subtype != "*" && b.subtype == "*")
    };
    for i in 1..clauses.len() {
        let mut j = i;
        while j > 0 && less(&clauses[j], &clauses[j - 1]) {
            clauses.swap(j, j - 1);
            j -= 1;
        }
    }
    clauses
}

/// go-restful's check that some media range in `accept` is one the route produces.
pub fn restful_accepts(accept: &str, produces: &[&str]) -> bool {
    if accept.is_empty() {
        return true;
    }
    accept.split(',').any(|part| {
        let range = part.split(';').next().unwrap_or("").trim_matches(' ');
        range == "*/*" || produces.contains(&range)
    })
}

/// The 406 go-restful writes when no media range matches a route.
pub fn restful_not_acceptable() -> Status {
    let mut status = Status::failure(
        StatusCode::NOT_ACCEPTABLE,
        "NotAcceptable",
        "406: Not Acceptable",
    );
    status.details = Some(Default::default());
    status
}

/// apiserver's 406 when negotiation finds nothing it can produce.
pub fn not_acceptable(formats: &[Format]) -> Status {
    let supported: Vec<&str> = formats.iter().map(|f| f.media_type()).collect();
    Status::not_acceptable(&supported)
}

/// apiserver's `NegotiateMediaTypeOptions` over `formats` (in server preference order).
/// `None` means nothing in `accept` can be met.
pub fn negotiate<'a>(
    accept: &'a str,
    formats: &[Format],
    endpoint: Endpoint,
) -> Option<Negotiated<'a>> {
    let first = formats.first().copied()?;
    if accept.is_empty() {
        return (endpoint != Endpoint::AggregatedDiscovery).then_some(Negotiated {
            format: first,
            convert: None,
            pretty: false,
        });
    }
    let clauses = parse_accept(accept);
    // A format is rejected when its most specific matching clause has q <= 0.
    let rejected = |format: Format| {
        let mut best = -1;
        let mut rejected = false;
        for c in &clauses {
            let spec = c.specificity(format);
            if spec > best {
                best = spec;
                rejected = c.q <= 0.0;
            }
        }
        rejected
    };
    for clause in &clauses {
        if clause.q <= 0.0 {
            continue;
        }
        for &format in formats {
            if clause.specificity(format) < 0 || rejected(format) {
                continue;
            }
            let convert = match (clause.param("as"), clause.param("g"), clause.param("v")) {
                (None, None, None) => None,
                (kind, group, version) => Some(Convert {
                    group: group.unwrap_or(""),
                    version: version.unwrap_or(""),
                    kind: kind.unwrap_or(""),
                }),
            };
            // `stream=watch` is accepted for formats with a stream serializer (and ignored by
            // a plain GET); any other stream schema is refused.
            if let Some(stream) = clause.param("stream")
                && !stream.is_empty()
                && (format == Format::Yaml || stream != "watch")
            {
                continue;
            }
            // `sv` names the meta API version; only resource endpoints know one ("v1").
            if let Some(sv) = clause.param("sv")
                && !sv.is_empty()
                && (endpoint != Endpoint::Resource || sv != "v1")
            {
                continue;
            }
            if !endpoint.allows(format, convert.as_ref()) {
                continue;
            }
            return Some(Negotiated {
                format,
                convert,
                pretty: clause.param("pretty") == Some("1"),
            });
        }
    }
    None
}

/// The response `Content-Type` for a negotiated conversion, as apiserver's
/// `generateMediaTypeWithGVK` writes it for discovery (`application/json;g=…;v=…;as=…`).
pub fn media_type_with_gvk(format: Format, convert: &Convert<'_>) -> String {
    let mut s = String::from(format.media_type());
    for (key, value) in [
        ("g", convert.group),
        ("v", convert.version),
        ("as", convert.kind),
    ] {
        if !value.is_empty() {
            s.push(';');
            s.push_str(key);
            s.push('=');
            s.push_str(value);
        }
    }
    s
}

/// A header value as text; non-UTF-8 bytes make it match nothing rather than fail.
pub fn header_text(value: Option<&http::HeaderValue>) -> Cow<'_, str> {
    match value {
        None => Cow::Borrowed(""),
        Some(v) => String::from_utf8_lossy(v.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Format] = &Format::ALL;

    fn pick(accept: &str, endpoint: Endpoint) -> Option<(Format, Option<String>)> {
        negotiate(accept, ALL, endpoint).map(|n| {
            (
                n.format,
                n.convert
                    .map(|c| format!("{}/{}/{}", c.group, c.version, c.kind)),
            )
        })
    }

    #[test]
    fn plain_types_and_wildcards() {
        use Format::*;
        let r = Endpoint::Resource;
        assert_eq!(pick("", r), Some((Json, None)));
        assert_eq!(pick("*/*", r), Some((Json, None)));
        assert_eq!(pick("application/*", r), Some((Json, None)));
        assert_eq!(pick("application/yaml", r), Some((Yaml, None)));
        // The HPA's header.
        assert_eq!(
            pick("application/vnd.kubernetes.protobuf, */*", r),
            Some((Protobuf, None))
        );
        assert_eq!(pick("text/plain", r), None);
        assert_eq!(pick("text/plain, */*;q=0.1", r), Some((Json, None)));
    }

    #[test]
    fn q_values_order_and_reject() {
        use Format::*;
        let r = Endpoint::Resource;
        assert_eq!(
            pick("application/json;q=0.5, application/yaml", r),
            Some((Yaml, None))
        );
        assert_eq!(
            pick(
                "application/json;q=0.9,application/vnd.kubernetes.protobuf",
                r
            ),
            Some((Protobuf, None))
        );
        // q=0 on a specific type overrides a wildcard that would accept it.
        assert_eq!(pick("application/json;q=0, */*", r), Some((Yaml, None)));
        assert_eq!(pick("*/*;q=0", r), None);
        // An unparsable q counts as 0.
        assert_eq!(pick("application/json;q=x", r), None);
        // More specific types sort before wildcards of equal q.
        assert_eq!(pick("*/*, application/yaml", r), Some((Yaml, None)));
    }

    #[test]
    fn conversions() {
        use Format::*;
        let r = Endpoint::Resource;
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            pick(kubectl, r),
            Some((Json, Some("meta.k8s.io/v1/Table".into())))
        );
        // Table has no protobuf form: the next clause is used.
        assert_eq!(
            pick(
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json",
                r
            ),
            Some((Json, None))
        );
        assert_eq!(
            pick(
                "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                r
            ),
            Some((
                Protobuf,
                Some("meta.k8s.io/v1/PartialObjectMetadataList".into())
            ))
        );
        assert_eq!(pick("application/json;as=Table", r), None);
        assert_eq!(
            pick("application/json;as=Table;g=meta.k8s.io;v=v2", r),
            None
        );
        assert_eq!(
            pick(
                "application/json;as=Table;v=v1;g=meta.k8s.io",
                Endpoint::Plain
            ),
            None
        );
        assert_eq!(pick("application/json;stream=watch", r), Some((Json, None)));
        assert_eq!(pick("application/yaml;stream=watch", r), None);
        assert_eq!(pick("application/json;stream=other", r), None);
        assert!(
            negotiate("application/json;pretty=1", ALL, r)
                .unwrap()
                .pretty
        );
    }

    #[test]
    fn aggregated_discovery() {
        use Format::*;
        let a = Endpoint::AggregatedDiscovery;
        let apiserver = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            pick(apiserver, a),
            Some((
                Json,
                Some("apidiscovery.k8s.io/v2/APIGroupDiscoveryList".into())
            ))
        );
        assert_eq!(
            pick(
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
                a
            ),
            Some((
                Json,
                Some("apidiscovery.k8s.io/v2beta1/APIGroupDiscoveryList".into())
            ))
        );
        assert_eq!(pick("application/json", a), None);
        assert_eq!(pick("", a), None);
        let n = negotiate(apiserver, ALL, a).unwrap();
        assert_eq!(
            media_type_with_gvk(n.format, &n.convert.unwrap()),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
    }

    #[test]
    fn restful_route_check() {
        let produces = ["application/json", "application/yaml"];
        assert!(restful_accepts("", &produces));
        assert!(restful_accepts("text/plain, */*", &produces));
        assert!(restful_accepts(
            "text/plain, application/json;q=0.1",
            &produces
        ));
        assert!(!restful_accepts("text/plain", &produces));
        assert!(!restful_accepts("application/*", &produces));
        let s = restful_not_acceptable();
        assert_eq!(s.code, 406);
        assert_eq!(s.message, "406: Not Acceptable");
        assert_eq!(
            not_acceptable(ALL).message,
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
        );
    }
}
