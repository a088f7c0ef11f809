//! Which format and encoding a scraper gets, from its `Accept` and `Accept-Encoding`.
//!
//! The rules are those of Go's `expfmt.NegotiateIncludingOpenMetrics` (what every Go
//! exporter does), with `q=0` honoured as "not acceptable" as RFC 9110 says:
//! - `Accept` clauses are ordered by `q` (highest first), concrete types before wildcards;
//!   the first clause that names `application/openmetrics-text` with `version` 1.0.0, 0.0.1
//!   or none picks OpenMetrics (1.0.0, or 0.0.1 when that or no version was asked for, as
//!   Go does), the first that names `text/plain` with `version` 0.0.4 or none picks the text
//!   format;
//! - anything else, including no `Accept` at all, gets the text format (never a 406:
//!   Prometheus scrapers are not browsers);
//! - gzip is used when `Accept-Encoding` allows `gzip` (or `*`) with a non-zero `q`.
//!
//! Prometheus 2.x sends `application/openmetrics-text;version=1.0.0,…;q=0.75,
//! text/plain;version=0.0.4;q=0.5,*/*;q=0.1` and `Accept-Encoding: gzip`, so it gets
//! OpenMetrics 1.0.0, gzipped.

use http::HeaderMap;
use http::header::{ACCEPT, ACCEPT_ENCODING};

use super::text::Format;

/// The format and whether to gzip, for a request's headers.
pub fn negotiate(headers: &HeaderMap) -> (Format, bool) {
    let accept = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let encoding = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    (format(&accept), gzip(&encoding))
}

/// One `Accept` clause.
struct Clause<'a> {
    typ: &'a str,
    subtype: &'a str,
    q: f32,
    version: Option<&'a str>,
}

fn clauses(header: &str) -> Vec<Clause<'_>> {
    let mut out: Vec<Clause<'_>> = header
        .split(',')
        .filter_map(|part| {
            let mut params = part.split(';');
            let range = params.next()?.trim();
            let (typ, subtype) = range.split_once('/')?;
            let mut clause = Clause {
                typ: typ.trim(),
                subtype: subtype.trim(),
                q: 1.0,
                version: None,
            };
            for p in params {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = v.trim().trim_matches('"');
                match k.trim() {
                    // goautoneg reads an unparsable q as 0.
                    "q" => clause.q = v.parse::<f32>().unwrap_or(0.0),
                    "version" => clause.version = Some(v),
                    _ => {}
                }
            }
            Some(clause)
        })
        .collect();
    // goautoneg's order: higher q first, then concrete types before `*`.
    out.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then_with(|| (a.typ == "*").cmp(&(b.typ == "*")))
            .then_with(|| (a.subtype == "*").cmp(&(b.subtype == "*")))
    });
    out
}

/// The format an `Accept` header (clauses joined with commas) asks for.
pub fn format(accept: &str) -> Format {
    for c in clauses(accept) {
        if c.q <= 0.0 {
            break;
        }
        let media = (c.typ.to_ascii_lowercase(), c.subtype.to_ascii_lowercase());
        match (media.0.as_str(), media.1.as_str()) {
            ("text", "plain") if matches!(c.version, None | Some("0.0.4")) => {
                return Format::Text;
            }
            ("application", "openmetrics-text") => match c.version {
                Some("1.0.0") => return Format::OpenMetrics { v1: true },
                None | Some("0.0.1") => return Format::OpenMetrics { v1: false },
                Some(_) => {}
            },
            _ => {}
        }
    }
    Format::Text
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn gzip(accept_encoding: &str) -> bool {
    let mut gzip_q = None;
    let mut any_q = None;
    for part in accept_encoding.split(',') {
        let mut params = part.split(';');
        let coding = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim() == "q")
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip_q = Some(q),
            "*" => any_q = Some(q),
            _ => {}
        }
    }
    gzip_q.or(any_q).is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM1: Format = Format::OpenMetrics { v1: true };
    const OM0: Format = Format::OpenMetrics { v1: false };

    #[test]
    fn prometheus_gets_openmetrics_and_others_text() {
        // Prometheus 2.42's scrape Accept header.
        assert_eq!(
            format(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            OM1
        );
        // With OpenMetrics disabled in the scrape config (or an older Prometheus).
        assert_eq!(
            format("text/plain;version=0.0.4;q=1,*/*;q=0.1"),
            Format::Text
        );
        assert_eq!(format(""), Format::Text);
        assert_eq!(format("*/*"), Format::Text);
        assert_eq!(format("application/json"), Format::Text);
        assert_eq!(format("application/openmetrics-text"), OM0);
        assert_eq!(format("application/openmetrics-text; version=0.0.1"), OM0);
        assert_eq!(
            format("Application/OpenMetrics-Text; version=\"1.0.0\""),
            OM1
        );
    }

    #[test]
    fn q_values_decide() {
        assert_eq!(
            format("application/openmetrics-text;version=1.0.0;q=0.4,text/plain;q=0.5"),
            Format::Text
        );
        assert_eq!(
            format("text/plain;q=0.2, application/openmetrics-text;version=1.0.0;q=0.9"),
            OM1
        );
        // q=0 means not acceptable, whatever its position.
        assert_eq!(
            format("application/openmetrics-text;version=1.0.0;q=0,text/plain;q=0.1"),
            Format::Text
        );
        // An unknown version is skipped, not a reason to pick it.
        assert_eq!(
            format("application/openmetrics-text;version=2.0.0,text/plain;q=0.5"),
            Format::Text
        );
        // A text/plain version we do not write is skipped too.
        assert_eq!(
            format("text/plain;version=1.0.0,application/openmetrics-text;q=0.5"),
            OM0
        );
        // Ties keep header order; concrete types go before wildcards.
        assert_eq!(
            format("*/*,application/openmetrics-text;version=1.0.0"),
            OM1
        );
    }

    #[test]
    fn gzip_when_accepted() {
        assert!(gzip("gzip"));
        assert!(gzip("deflate, gzip;q=0.5"));
        assert!(gzip("x-gzip"));
        assert!(gzip("*"));
        assert!(gzip("br;q=1, *;q=0.1"));
        assert!(!gzip(""));
        assert!(!gzip("identity"));
        assert!(!gzip("gzip;q=0"));
        assert!(!gzip("gzip;q=0, *"), "an explicit gzip;q=0 beats *");
        assert!(!gzip("*;q=0"));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let mut h = HeaderMap::new();
        h.append(ACCEPT, "text/plain;q=0.5".parse().unwrap());
        h.append(
            ACCEPT,
            "application/openmetrics-text;version=1.0.0"
                .parse()
                .unwrap(),
        );
        h.append(ACCEPT_ENCODING, "gzip".parse().unwrap());
        assert_eq!(negotiate(&h), (OM1, true));
        assert_eq!(negotiate(&HeaderMap::new()), (Format::Text, false));
    }
}
