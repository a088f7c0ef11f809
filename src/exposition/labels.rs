//! `--metric-labels-allowlist`: which Kubernetes labels of pods and nodes become Prometheus
//! labels on `/metrics/resource`, with kube-state-metrics' syntax and label names.
//!
//! The flag's value is kube-state-metrics' `--metric-labels-allowlist` syntax,
//! `pods=[app,team],nodes=[topology.kubernetes.io/zone]`: per resource, a bracketed list of
//! label keys. A key may be `*` (every label) or contain one `*` that matches any run of
//! characters (`app.kubernetes.io/*`). Only `pods` and `nodes` are known here, because those
//! are the objects whose series metrics-bridge exposes; any other resource is an error that
//! says so. The default is none, so no label is added unless asked for.
//!
//! A key becomes a label name exactly as kube-state-metrics names it: `label_`, then the key
//! with every character outside `[a-zA-Z0-9_]` replaced by `_`, then `camelCase` turned into
//! `snake_case` and lower-cased (`topology.kubernetes.io/zone` →
//! `label_topology_kubernetes_io_zone`, `appVersion` → `label_app_version`). When two keys
//! of one object map to the same name, both get kube-state-metrics' `_conflict1`,
//! `_conflict2`, … suffixes in key order.
//!
//! Rendering writes the pairs straight into the exposition buffer; with a warmed-up
//! [`Scratch`] nothing is allocated per object.

use std::fmt;

use crate::cluster::LabelSet;

/// Which keys of one kind of object are allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Allow {
    /// No label (the default).
    #[default]
    Nothing,
    /// `*`: every label of the object.
    Everything,
    /// These keys or patterns.
    Keys(Vec<KeyPattern>),
}

impl Allow {
    pub fn is_nothing(&self) -> bool {
        match self {
            Allow::Nothing => true,
            Allow::Everything => false,
            Allow::Keys(keys) => keys.is_empty(),
        }
    }

    /// Whether `key` is allowed.
    pub fn allows(&self, key: &str) -> bool {
        match self {
            Allow::Nothing => false,
            Allow::Everything => true,
            Allow::Keys(keys) => keys.iter().any(|p| p.matches(key)),
        }
    }
}

/// One allowed key: exact, or with one `*` standing for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    prefix: Box<str>,
    /// `Some` when the key had a `*`: what must follow the wildcard.
    suffix: Option<Box<str>>,
}

impl KeyPattern {
    fn parse(key: &str) -> Result<Self, String> {
        match key.split_once('*') {
            None => Ok(KeyPattern {
                prefix: key.into(),
                suffix: None,
            }),
            Some((_, after)) if after.contains('*') => Err(format!(
                "label {key:?} has more than one '*' (one wildcard per label is allowed)"
            )),
            Some((before, after)) => Ok(KeyPattern {
                prefix: before.into(),
                suffix: Some(after.into()),
            }),
        }
    }

    pub fn matches(&self, key: &str) -> bool {
        match &self.suffix {
            None => key == &*self.prefix,
            Some(suffix) => {
                key.len() >= self.prefix.len() + suffix.len()
                    && key.starts_with(&*self.prefix)
                    && key.ends_with(&**suffix)
            }
        }
    }
}

impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)?;
        if let Some(suffix) = &self.suffix {
            write!(f, "*{suffix}")?;
        }
        Ok(())
    }
}

/// The parsed `--metric-labels-allowlist`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelsAllowlist {
    pub pods: Allow,
    pub nodes: Allow,
}

/// Why a `--metric-labels-allowlist` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    #[error(
        "expected RESOURCE=[label,...] at column {column}, as in pods=[app,team],nodes=[topology.kubernetes.io/zone]"
    )]
    Syntax { column: usize },
    #[error("resource {name:?} has no closing ']'")]
    Unclosed { name: String },
    #[error("resource {name:?}: {problem}")]
    Label { name: String, problem: String },
    #[error(
        "unknown resource {name:?}: metrics-bridge adds the labels of pods and nodes only \
         (pods=[...],nodes=[...])"
    )]
    UnknownResource { name: String },
}

impl LabelsAllowlist {
    /// Parses kube-state-metrics' syntax. Blank text means none.
    pub fn parse(text: &str) -> Result<Self, AllowlistError> {
        let mut list = LabelsAllowlist::default();
        let mut rest = text.trim_start();
        // Column numbers are 1-based character positions in `text`, for the message.
        let column = |rest: &str| text[..text.len() - rest.len()].chars().count() + 1;
        while !rest.is_empty() {
            let Some((name, after)) = rest.split_once('=') else {
                return Err(AllowlistError::Syntax {
                    column: column(rest),
                });
            };
            let name = name.trim();
            if name.is_empty() || name.contains([',', '[', ']']) {
                return Err(AllowlistError::Syntax {
                    column: column(rest),
                });
            }
            let after = after.trim_start();
            let Some(inner) = after.strip_prefix('[') else {
                return Err(AllowlistError::Syntax {
                    column: column(after),
                });
            };
            let Some((items, after)) = inner.split_once(']') else {
                return Err(AllowlistError::Unclosed { name: name.into() });
            };
            let allow = parse_items(items).map_err(|problem| AllowlistError::Label {
                name: name.into(),
                problem,
            })?;
            match name {
                "pods" => list.pods = allow,
                "nodes" => list.nodes = allow,
                other => {
                    return Err(AllowlistError::UnknownResource { name: other.into() });
                }
            }
            let after = after.trim_start();
            rest = match after.strip_prefix(',') {
                Some(next) if !next.trim().is_empty() => next.trim_start(),
                Some(next) => {
                    return Err(AllowlistError::Syntax {
                        column: column(next),
                    });
                }
                None if after.is_empty() => after,
                None => {
                    return Err(AllowlistError::Syntax {
                        column: column(after),
                    });
                }
            };
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_nothing() && self.nodes.is_nothing()
    }
}

fn parse_items(items: &str) -> Result<Allow, String> {
    if items.trim().is_empty() {
        return Ok(Allow::Nothing);
    }
    let mut keys = Vec::new();
    for item in items.split(',') {
        let key = item.trim();
        if key.is_empty() {
            return Err(format!("empty label in [{items}]"));
        }
        if key == "*" {
            return Ok(Allow::Everything);
        }
        keys.push(KeyPattern::parse(key)?);
    }
    Ok(Allow::Keys(keys))
}

/// Appends kube-state-metrics' label name for `key`, without the `label_` prefix:
/// invalid characters become `_`, then `aB` becomes `a_b` (its `([a-z0-9])([A-Z])` rule,
/// applied left to right without overlap) and everything is lower-cased.
pub fn push_sanitized(key: &str, out: &mut Vec<u8>) {
    let mut prev: Option<u8> = None;
    for c in key.chars() {
        let b = if c.is_ascii_alphanumeric() || c == '_' {
            c as u8
        } else {
            b'_'
        };
        if b.is_ascii_uppercase()
            && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push(b'_');
            // The pair is consumed: the upper-case letter cannot start another match.
            prev = None;
        } else {
            prev = Some(b);
        }
        out.push(b.to_ascii_lowercase());
    }
}

/// Appends `value` as an escaped label value (without quotes): `\`, `"` and newline are
/// escaped, as both the text format and OpenMetrics require.
pub fn push_escaped(value: &str, out: &mut Vec<u8>) {
    let bytes = value.as_bytes();
    if !bytes.iter().any(|&b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// Reusable buffers for [`render`].
#[derive(Debug, Default)]
pub struct Scratch {
    names: Vec<u8>,
    /// Per allowed label: the range of its name in `names`, its conflict suffix number (0
    /// for none) and its index in the label set.
    pairs: Vec<(usize, usize, usize, usize)>,
}

/// Appends `,label_key="value"` for every allowed label of `labels` (which are sorted by
/// key), with kube-state-metrics' names and conflict suffixes. Writes nothing when `allow`
/// is [`Allow::Nothing`].
pub fn render(allow: &Allow, labels: &LabelSet, scratch: &mut Scratch, out: &mut Vec<u8>) {
    if allow.is_nothing() {
        return;
    }
    scratch.names.clear();
    scratch.pairs.clear();
    for (i, (key, _)) in labels.iter().enumerate() {
        if !allow.allows(key) {
            continue;
        }
        let start = scratch.names.len();
        push_sanitized(key, &mut scratch.names);
        scratch.pairs.push((start, scratch.names.len(), 0, i));
    }
    // kube-state-metrics: in key order, the second holder of a name makes the first
    // `_conflict1` and itself `_conflict2`, the third `_conflict3`, and so on.
    for i in 1..scratch.pairs.len() {
        let name = |j: usize| {
            let (s, e, _, _) = scratch.pairs[j];
            &scratch.names[s..e]
        };
        let first = (0..i).find(|&j| name(j) == name(i));
        if let Some(first) = first {
            let count = (0..i).filter(|&j| name(j) == name(i)).count();
            if count == 1 {
                scratch.pairs[first].2 = 1;
            }
            scratch.pairs[i].2 = count + 1;
        }
    }
    for &(start, end, conflict, index) in &scratch.pairs {
        let Some((_, value)) = labels.0.get(index) else {
            continue;
        };
        out.extend_from_slice(b",label_");
        out.extend_from_slice(&scratch.names[start..end]);
        if conflict > 0 {
            out.extend_from_slice(b"_conflict");
            super::text::push_u64(out, conflict as u64);
        }
        out.extend_from_slice(b"=\"");
        push_escaped(value, out);
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(key: &str) -> String {
        let mut out = Vec::new();
        push_sanitized(key, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn names_are_kube_state_metrics_names() {
        assert_eq!(name("app"), "app");
        assert_eq!(
            name("topology.kubernetes.io/zone"),
            "topology_kubernetes_io_zone"
        );
        assert_eq!(name("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(name("appVersion"), "app_version");
        // The regexp pairs do not overlap: "aBC" → "a_BC", "a1B2C" → "a1_B2_C".
        assert_eq!(name("aBC"), "a_bc");
        assert_eq!(name("a1B2C"), "a1_b2_c");
        assert_eq!(name("ABC"), "abc");
        // A non-ASCII character is one rune, so one underscore.
        assert_eq!(name("café"), "caf_");
        assert_eq!(name("x-y_z"), "x_y_z");
    }

    #[test]
    fn parses_the_kube_state_metrics_syntax() {
        let l =
            LabelsAllowlist::parse("pods=[app,team],nodes=[topology.kubernetes.io/zone]").unwrap();
        assert!(l.pods.allows("app") && l.pods.allows("team") && !l.pods.allows("tier"));
        assert!(l.nodes.allows("topology.kubernetes.io/zone"));
        assert!(!l.nodes.allows("app"));

        let l = LabelsAllowlist::parse(" pods = [ app , team ] , nodes=[*]").unwrap();
        assert!(l.pods.allows("team"));
        assert_eq!(l.nodes, Allow::Everything);

        let l = LabelsAllowlist::parse("pods=[app.kubernetes.io/*],nodes=[]").unwrap();
        assert!(l.pods.allows("app.kubernetes.io/name"));
        assert!(l.pods.allows("app.kubernetes.io/"));
        assert!(!l.pods.allows("app"));
        assert!(l.nodes.is_nothing());
        assert!(!l.is_empty());

        let l = LabelsAllowlist::parse("pods=[*-zone]").unwrap();
        assert!(l.pods.allows("eu-zone") && !l.pods.allows("zones"));

        assert!(LabelsAllowlist::parse("").unwrap().is_empty());
        assert!(LabelsAllowlist::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let err = |s: &str| LabelsAllowlist::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("deployments=[app]"),
            "unknown resource \"deployments\": metrics-bridge adds the labels of pods and \
             nodes only (pods=[...],nodes=[...])"
        );
        assert!(err("pods").starts_with("expected RESOURCE=[label,...] at column 1"));
        assert!(err("pods=app").starts_with("expected RESOURCE=[label,...] at column 6"));
        assert_eq!(err("pods=[app"), "resource \"pods\" has no closing ']'");
        assert!(
            err("pods=[app],").contains("column 12"),
            "{}",
            err("pods=[app],")
        );
        assert!(err("pods=[app]nodes=[x]").contains("column 11"));
        assert_eq!(
            err("pods=[a,,b]"),
            "resource \"pods\": empty label in [a,,b]"
        );
        assert_eq!(
            err("pods=[a*b*]"),
            "resource \"pods\": label \"a*b*\" has more than one '*' (one wildcard per label \
             is allowed)"
        );
        assert!(err("=[a]").starts_with("expected RESOURCE"));
    }

    fn rendered(allow: &Allow, pairs: &[(&str, &str)]) -> String {
        let labels = LabelSet::from_pairs(pairs.iter().copied());
        let mut out = Vec::new();
        render(allow, &labels, &mut Scratch::default(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn render_writes_allowed_labels_in_key_order_escaped() {
        let l = LabelsAllowlist::parse("pods=[team,app,missing]").unwrap();
        assert_eq!(
            rendered(
                &l.pods,
                &[("tier", "web"), ("team", "a\"b\\c\nd"), ("app", "shop")]
            ),
            ",label_app=\"shop\",label_team=\"a\\\"b\\\\c\\nd\""
        );
        assert_eq!(rendered(&Allow::Nothing, &[("app", "x")]), "");
    }

    #[test]
    fn conflicting_names_get_kube_state_metrics_suffixes() {
        // "a.b", "a/b" and "a_b" all become label_a_b; in key order "a.b" < "a/b" < "a_b".
        assert_eq!(
            rendered(
                &Allow::Everything,
                &[("a_b", "3"), ("a.b", "1"), ("a/b", "2"), ("c", "4")]
            ),
            ",label_a_b_conflict1=\"1\",label_a_b_conflict2=\"2\",label_a_b_conflict3=\"3\",label_c=\"4\""
        );
    }
}
