//! Kubernetes label and field selectors.
//!
//! The grammar, matching rules and validation follow `k8s.io/apimachinery/pkg/labels` and
//! `.../pkg/fields`, because the HPA controller, `kubectl top -l` and dashboards send
//! selectors written for a real API server. The metrics API and kube-sim share this module.

use std::fmt;

/// Why a selector string was rejected. The text is what a Kubernetes API server says, so it
/// can go straight into a 400 `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// A source of labels to match against.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl<K: AsRef<str>, V: AsRef<str>> Labels for [(K, V)] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Labels for Vec<(K, V)> {
    fn get(&self, key: &str) -> Option<&str> {
        Labels::get(self.as_slice(), key)
    }
}

impl Labels for std::collections::BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::BTreeMap::get(self, key).map(String::as_str)
    }
}

impl Labels for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        std::collections::HashMap::get(self, key).map(String::as_str)
    }
}

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement of a label selector, such as `app in (web,api)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and de-duplicated, as apimachinery keeps them.
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement, with apimachinery's semantics: `!=` and
    /// `notin` also match objects that do not have the label at all.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, values),
            Operator::DoubleEquals => write!(f, "{}=={}", self.key, values),
            Operator::NotEquals => write!(f, "{}!={}", self.key, values),
            Operator::In => write!(f, "{} in ({})", self.key, values),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, values),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, values),
            Operator::LessThan => write!(f, "{}<{}", self.key, values),
        }
    }
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key, as apimachinery sorts them.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the full selector syntax: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, and the
    /// integer comparisons `>` and `<`, separated by commas.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input)?;
        let mut p = LabelParser {
            tokens: &tokens,
            pos: 0,
        };
        let mut requirements = Vec::new();
        loop {
            match p.peek() {
                Token::End => break,
                Token::Comma => {
                    return Err(SelectorError(
                        "found ',', expected: !, identifier, or 'end of string'".into(),
                    ));
                }
                Token::Ident(_) | Token::Bang => {
                    requirements.push(p.requirement()?);
                    match p.next() {
                        Token::End => break,
                        Token::Comma => {
                            if matches!(p.peek(), Token::End | Token::Comma) {
                                return Err(SelectorError(format!(
                                    "found '{}', expected: identifier after ','",
                                    p.peek()
                                )));
                            }
                        }
                        t => {
                            return Err(SelectorError(format!(
                                "found '{t}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                t => {
                    return Err(SelectorError(format!(
                        "found '{t}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The value every match must have for `key`, if the selector pins one (`key=v`,
    /// `key==v` or `key in (v)`). Lets callers use an index instead of a scan.
    pub fn required_value(&self, key: &str) -> Option<&str> {
        self.requirements.iter().find_map(|r| match r.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In
                if r.key == key && r.values.len() == 1 =>
            {
                Some(r.values[0].as_str())
            }
            _ => None,
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Token::Ident(s) => s.as_str(),
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Gt => ">",
            Token::Lt => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::Comma => ",",
            Token::End => "",
        };
        f.write_str(s)
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Result<Vec<Token>, SelectorError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next = chars.peek().map(|&(_, n)| n);
            let tok = match (c, next) {
                ('=', Some('=')) => {
                    chars.next();
                    Token::DoubleEquals
                }
                ('!', Some('=')) => {
                    chars.next();
                    Token::NotEquals
                }
                ('=', _) => Token::Equals,
                ('!', _) => Token::Bang,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                (',', _) => Token::Comma,
                ('>', _) => Token::Gt,
                ('<', _) => Token::Lt,
                _ => unreachable!("is_special covers every arm"),
            };
            tokens.push(tok);
            continue;
        }
        let start = i;
        let mut end = input.len();
        while let Some(&(j, c)) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                end = j;
                break;
            }
            chars.next();
        }
        let word = &input[start..end];
        tokens.push(match word {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word.to_string()),
        });
    }
    tokens.push(Token::End);
    Ok(tokens)
}

struct LabelParser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

impl LabelParser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = if *self.peek() == Token::Bang {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Token::Ident(k) => k,
            t => return Err(SelectorError(format!("found '{t}', expected: identifier"))),
        };
        validate_key(&key)?;
        if negated {
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: Vec::new(),
            });
        }
        let operator = match self.peek() {
            Token::End | Token::Comma => {
                return Ok(Requirement {
                    key,
                    operator: Operator::Exists,
                    values: Vec::new(),
                });
            }
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            t => {
                return Err(SelectorError(format!(
                    "found '{t}', expected: in, notin, =, ==, !=, gt, lt"
                )));
            }
        };
        self.next();
        let mut values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            let v = &values[0];
            if v.parse::<i64>().is_err() {
                return Err(SelectorError(format!(
                    "unable to parse requirement: values[0]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                )));
            }
        }
        for (i, v) in values.iter().enumerate() {
            validate_value(&key, i, v)?;
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek() {
            // `key=` selects the empty value.
            Token::End | Token::Comma => Ok(String::new()),
            Token::Ident(_) => match self.next() {
                Token::Ident(v) => Ok(v),
                _ => unreachable!("peeked an identifier"),
            },
            // Keywords are ordinary values after an operator (`tier=in` is valid).
            Token::In | Token::NotIn => Ok(self.next().to_string()),
            t => Err(SelectorError(format!("found '{t}', expected: identifier"))),
        }
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            t => return Err(SelectorError(format!("found '{t}', expected: '('"))),
        }
        let mut values = Vec::new();
        loop {
            match self.peek().clone() {
                Token::Close => {
                    // `in ()` and a trailing empty value after ',' both mean "".
                    self.next();
                    values.push(String::new());
                    return Ok(values);
                }
                Token::Comma => {
                    self.next();
                    values.push(String::new());
                    continue;
                }
                Token::Ident(v) => {
                    self.next();
                    values.push(v);
                }
                Token::In | Token::NotIn => {
                    values.push(self.next().to_string());
                }
                t => {
                    return Err(SelectorError(format!(
                        "found '{t}', expected: ',', ')' or identifier"
                    )));
                }
            }
            match self.next() {
                Token::Comma => continue,
                Token::Close => return Ok(values),
                t => return Err(SelectorError(format!("found '{t}', expected: ',' or ')'"))),
            }
        }
    }
}

const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain: lower-case labels separated by dots, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let err = |why: &str| {
        Err(SelectorError(format!(
            "unable to parse requirement: key: Invalid value: \"{key}\": {why}"
        )))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return err(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    if name.len() > 63 {
        return err("name part must be no more than 63 characters");
    }
    if !is_label_name(name) {
        return err(NAME_MSG);
    }
    Ok(())
}

fn validate_value(key: &str, index: usize, value: &str) -> Result<(), SelectorError> {
    if value.len() > 63 {
        return Err(SelectorError(format!(
            "unable to parse requirement: values[{index}][{key}]: Invalid value: \"{value}\": must be no more than 63 characters"
        )));
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(SelectorError(format!(
            "unable to parse requirement: values[{index}][{key}]: Invalid value: \"{value}\": {VALUE_MSG}"
        )));
    }
    Ok(())
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    /// True for `!=`, false for `=` and `==`.
    pub negated: bool,
    pub value: String,
}

/// A parsed field selector (`metadata.name=x,status.phase!=Failed`). Every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the syntax of `fields.ParseSelector`, including `\,`, `\=` and `\\` escapes.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if input.is_empty() {
            return Ok(Self { requirements });
        }
        for term in split_unescaped(input, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, negated, raw_value) = split_term(term).ok_or_else(|| {
                SelectorError(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                ))
            })?;
            let value = unescape_field_value(raw_value)
                .map_err(|e| SelectorError(format!("invalid field selector value: {e}")))?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value,
            });
        }
        requirements.sort_by(|a, b| a.field.cmp(&b.field));
        Ok(Self { requirements })
    }

    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Checks that every field is one of `allowed`, with kube-apiserver's message otherwise
    /// (`"spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace"`).
    pub fn check_fields(&self, allowed: &[&str]) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if !allowed.contains(&r.field.as_str()) {
                let only = allowed
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(SelectorError(format!(
                    "{:?} is not a known field selector: only {only}",
                    r.field
                )));
            }
        }
        Ok(())
    }

    /// Whether every term holds. `field` returns an object's value for a field; a field the
    /// object does not have counts as the empty string, as in `fields.Set`.
    pub fn matches<'a>(&self, field: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let v = field(&r.field).unwrap_or("");
            (v == r.value) != r.negated
        })
    }

    /// The value every match must have for `field`, if the selector pins one.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Splits `a!=b`, `a==b` or `a=b` at the first unescaped operator.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let b = term.as_bytes();
    let mut escaped = false;
    for i in 0..b.len() {
        if escaped {
            escaped = false;
            continue;
        }
        match b[i] {
            b'\\' => escaped = true,
            b'!' if b.get(i + 1) == Some(&b'=') => return Some((&term[..i], true, &term[i + 2..])),
            b'=' if b.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]));
            }
            b'=' => return Some((&term[..i], false, &term[i + 1..])),
            _ => {}
        }
    }
    None
}

fn unescape_field_value(s: &str) -> Result<String, String> {
    if !s.contains('\\') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=')) => out.push(e),
            Some(e) => return Err(format!("invalid escape sequence: \\{e}")),
            None => return Err("unterminated escape sequence".to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_every_operator_like_apimachinery() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("replicas", "3")]);
        let none = labels(&[]);
        let cases: &[(&str, bool, bool)] = &[
            // selector, matches web, matches an unlabelled object
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app!=api", true, true),
            ("app in (web,api)", true, false),
            ("app notin (web,api)", false, true),
            ("app notin (api)", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("replicas>2", true, false),
            ("replicas<3", false, false),
            ("app=web, !missing", true, false),
            ("app in (web), tier notin (back)", true, false),
        ];
        for (sel, want_web, want_none) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&web), *want_web, "{sel} on web");
            assert_eq!(s.matches(&none), *want_none, "{sel} on unlabelled");
        }
    }

    #[test]
    fn rejects_malformed_selectors() {
        for sel in [
            "app=(web)",
            "app in web",
            "app in (web",
            ",app",
            "app,",
            "app=web=x",
            "!app=web",
            "-bad=web",
            "app=-bad",
            "app>x",
            "Bad_Prefix/app=x",
        ] {
            assert!(
                LabelSelector::parse(sel).is_err(),
                "{sel:?} should be rejected"
            );
        }
        let long = format!("app={}", "a".repeat(64));
        assert!(LabelSelector::parse(&long).is_err());
    }

    #[test]
    fn accepts_prefixed_keys_and_empty_values() {
        let s = LabelSelector::parse("topology.kubernetes.io/zone=z1,app=").unwrap();
        assert!(s.matches(&labels(&[
            ("topology.kubernetes.io/zone", "z1"),
            ("app", "")
        ])));
        assert_eq!(s.to_string(), "app=,topology.kubernetes.io/zone=z1");
        assert_eq!(s.required_value("topology.kubernetes.io/zone"), Some("z1"));
    }

    #[test]
    fn field_selectors() {
        let f =
            FieldSelector::parse("metadata.name=a\\,b,metadata.namespace!=kube-system").unwrap();
        assert_eq!(f.requirements.len(), 2);
        let get = |k: &str| match k {
            "metadata.name" => Some("a,b"),
            "metadata.namespace" => Some("default"),
            _ => None,
        };
        assert!(f.matches(get));
        assert_eq!(f.required_value("metadata.name"), Some("a,b"));
        assert!(
            f.check_fields(&["metadata.name", "metadata.namespace"])
                .is_ok()
        );
        let err = FieldSelector::parse("spec.nodeName=x")
            .unwrap()
            .check_fields(&["metadata.name", "metadata.namespace"])
            .unwrap_err();
        assert_eq!(
            err.0,
            r#""spec.nodeName" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(FieldSelector::parse("a=b\\x").is_err());
        // A field the object lacks reads as "".
        assert!(
            FieldSelector::parse("metadata.namespace=")
                .unwrap()
                .matches(|_| None)
        );
    }
}
