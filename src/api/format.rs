//! The other renderings of a JSON body: indented JSON (`?pretty=true`, and what apiserver
//! gives curl and browsers) and YAML (`Accept: application/yaml`).

use serde_json::Value;

use super::wire::json_str;

/// Re-indents compact JSON as Go's `json.MarshalIndent(v, "", "  ")`: keys keep their order,
/// empty objects and arrays stay `{}` and `[]`, no trailing newline.
pub fn pretty_json(compact: &[u8]) -> Vec<u8> {
    let body = compact.strip_suffix(b"\n").unwrap_or(compact);
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                out.push(c);
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                if body.get(i + 1) == Some(&close) {
                    out.extend_from_slice(&[c, close]);
                    i += 2;
                    continue;
                }
                out.push(c);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Converts a JSON body to YAML the way sigs.k8s.io/yaml does (through a generic map, so
/// keys come out sorted), with block style throughout. Strings are written double-quoted,
/// which YAML reads exactly as JSON does.
pub fn json_to_yaml(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let value: Value = serde_json::from_slice(json)?;
    let mut out = Vec::with_capacity(json.len() * 2);
    match &value {
        Value::Object(m) if !m.is_empty() => yaml_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => yaml_seq(&mut out, a, 0),
        scalar => {
            yaml_scalar(&mut out, scalar);
            out.push(b'\n');
        }
    }
    Ok(out)
}

fn indent(out: &mut Vec<u8>, n: usize) {
    out.extend(std::iter::repeat_n(b' ', n));
}

fn yaml_scalar(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => json_str(out, s),
        Value::Object(_) => out.extend_from_slice(b"{}"),
        Value::Array(_) => out.extend_from_slice(b"[]"),
    }
}

fn yaml_key(out: &mut Vec<u8>, k: &str) {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if plain {
        out.extend_from_slice(k.as_bytes());
    } else {
        json_str(out, k);
    }
    out.push(b':');
}

/// A value after `key:` (the key at column `col`): scalars inline, a map indented below it,
/// and, like go-yaml, a sequence at the key's own column.
fn yaml_value(out: &mut Vec<u8>, v: &Value, col: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push(b'\n');
            yaml_map(out, m, col + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push(b'\n');
            yaml_seq(out, a, col);
        }
        scalar => {
            out.push(b' ');
            yaml_scalar(out, scalar);
            out.push(b'\n');
        }
    }
}

fn sorted(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn yaml_map(out: &mut Vec<u8>, m: &serde_json::Map<String, Value>, level: usize) {
    for (k, v) in sorted(m) {
        indent(out, level);
        yaml_key(out, k);
        yaml_value(out, v, level);
    }
}

fn yaml_seq(out: &mut Vec<u8>, a: &[Value], level: usize) {
    for v in a {
        indent(out, level);
        out.extend_from_slice(b"-");
        match v {
            Value::Object(m) if !m.is_empty() => {
                // The first key shares the dash's line; the rest align under it.
                for (i, (k, val)) in sorted(m).into_iter().enumerate() {
                    if i == 0 {
                        out.push(b' ');
                    } else {
                        indent(out, level + 2);
                    }
                    yaml_key(out, k);
                    yaml_value(out, val, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(b'\n');
                yaml_seq(out, inner, level + 2);
            }
            scalar => {
                out.push(b' ');
                yaml_scalar(out, scalar);
                out.push(b'\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_matches_go_marshal_indent() {
        let compact =
            br#"{"kind":"X","metadata":{},"items":[{"a":"x,y:{z}","b":[]},{"c":"q\"}"}]}"#;
        let want = "{\n  \"kind\": \"X\",\n  \"metadata\": {},\n  \"items\": [\n    {\n      \"a\": \"x,y:{z}\",\n      \"b\": []\n    },\n    {\n      \"c\": \"q\\\"}\"\n    }\n  ]\n}";
        assert_eq!(String::from_utf8(pretty_json(compact)).unwrap(), want);
        let back: Value = serde_json::from_slice(&pretty_json(compact)).unwrap();
        let orig: Value = serde_json::from_slice(compact).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn yaml_shape() {
        let json = br#"{"kind":"PodMetricsList","metadata":{},"items":[{"metadata":{"name":"p","labels":{"app.kubernetes.io/name":"web"}},"containers":[{"name":"c","usage":{"cpu":"250m","memory":"1Ki"}}]}],"n":1,"z":null,"e":[]}"#;
        let yaml = String::from_utf8(json_to_yaml(json).unwrap()).unwrap();
        let want = r#"e: []
items:
- containers:
  - name: "c"
    usage:
      cpu: "250m"
      memory: "1Ki"
  metadata:
    labels:
      app.kubernetes.io/name: "web"
    name: "p"
kind: "PodMetricsList"
metadata: {}
n: 1
z: null
"#;
        assert_eq!(yaml, want);
    }
}
