//! RBAC from Kubernetes objects, for `kube-sim --rbac FILE`.
//!
//! kube-sim normally authorizes with its fixed table ([`crate::auth::POLICY`]). With `--rbac`,
//! it evaluates real `rbac.authorization.k8s.io/v1` objects instead — a cluster's bootstrap
//! roles plus whatever FILE holds, typically `deploy/components.yaml` — exactly as
//! kube-apiserver's RBAC authorizer does, so a test can show that the permissions a manifest
//! grants are enough (and that removing one is not):
//!
//! - ClusterRoleBindings are visited first, then the RoleBindings of the request's
//!   namespace; the first rule that allows decides, and the reason names the binding, the
//!   role and the subject in the authorizer's words.
//! - A rule matches on verbs, API groups, `resource` or `resource/subresource` (with `*` and
//!   `*/subresource`), resource names, and non-resource URLs (`*`, exact, or a prefix ending
//!   in `*`). RoleBindings never grant non-resource URLs.
//! - Subjects: users, groups, and service accounts (whose namespace defaults to the
//!   RoleBinding's).
//! - ClusterRoles with an `aggregationRule` get the union of the rules of every ClusterRole
//!   their label selectors match, as the clusterrole-aggregation controller maintains them
//!   (transitively: `admin` aggregates `edit`, which aggregates `view`).
//! - A binding whose role does not exist grants nothing, as in a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::rbac::v1 as rbac;
use metrics_bridge::selector::{LabelSelector, Operator, Requirement};
use serde_json::Value;

use crate::auth::{Attributes, Decision, UserInfo};

/// Why RBAC objects could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("reading --rbac file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--rbac file {path}: invalid YAML: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: yaml_rust2::ScanError,
    },
    #[error("--rbac file {path}: document {index}: {reason}")]
    Document {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

/// One RBAC rule with owned strings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    fn from_policy_rule(r: rbac::PolicyRule) -> Rule {
        Rule {
            verbs: r.verbs,
            api_groups: r.api_groups.unwrap_or_default(),
            resources: r.resources.unwrap_or_default(),
            resource_names: r.resource_names.unwrap_or_default(),
            non_resource_urls: r.non_resource_urls.unwrap_or_default(),
        }
    }

    /// Whether this rule allows `attrs`, with the RBAC authorizer's matching.
    pub fn allows(&self, attrs: &Attributes) -> bool {
        crate::auth::rule_allows(
            &self.verbs,
            &self.api_groups,
            &self.resources,
            &self.resource_names,
            &self.non_resource_urls,
            attrs,
        )
    }
}

/// Who a binding grants its role to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    /// For service accounts; in a RoleBinding an empty namespace means the binding's.
    pub namespace: String,
}

/// A ClusterRoleBinding (`namespace` None) or a RoleBinding.
#[derive(Debug, Clone)]
struct Binding {
    name: String,
    namespace: Option<String>,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

#[derive(Debug, Clone)]
struct ClusterRole {
    labels: BTreeMap<String, String>,
    rules: Vec<Rule>,
    /// The aggregation rule's selectors, if any.
    aggregation: Option<Vec<LabelSelector>>,
}

/// A loaded RBAC policy.
#[derive(Debug, Default)]
pub struct Rbac {
    cluster_roles: BTreeMap<String, ClusterRole>,
    /// (namespace, name) → rules.
    roles: BTreeMap<(String, String), Vec<Rule>>,
    cluster_role_bindings: Vec<Binding>,
    role_bindings: Vec<Binding>,
}

/// How many objects of each kind a file contributed, for the start-up log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    pub cluster_roles: usize,
    pub cluster_role_bindings: usize,
    pub roles: usize,
    pub role_bindings: usize,
    /// Documents of other kinds (Deployments, Services, …), which RBAC does not use.
    pub ignored: usize,
}

/// The RBAC objects of a fresh cluster, and kube-sim's test users.
const BOOTSTRAP: &str = include_str!("bootstrap-rbac.yaml");

impl Rbac {
    /// The bootstrap policy ([`BOOTSTRAP`]) plus the objects of `path`: what `--rbac` uses.
    pub fn with_bootstrap(path: &Path) -> Result<(Rbac, Loaded), RbacError> {
        let mut rbac = Rbac::bootstrap()?;
        let loaded = rbac.load_file(path)?;
        Ok((rbac, loaded))
    }

    /// The bootstrap policy alone.
    pub fn bootstrap() -> Result<Rbac, RbacError> {
        let mut rbac = Rbac::default();
        rbac.load_str(BOOTSTRAP, Path::new("(built-in bootstrap-rbac.yaml)"))?;
        Ok(rbac)
    }

    /// Adds every RBAC object of the multi-document YAML file at `path`.
    pub fn load_file(&mut self, path: &Path) -> Result<Loaded, RbacError> {
        let text = std::fs::read_to_string(path).map_err(|source| RbacError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_str(&text, path)
    }

    /// Adds every RBAC object of `text`; `path` names it in errors.
    pub fn load_str(&mut self, text: &str, path: &Path) -> Result<Loaded, RbacError> {
        let docs =
            yaml_rust2::YamlLoader::load_from_str(text).map_err(|source| RbacError::Yaml {
                path: path.to_path_buf(),
                source,
            })?;
        let mut loaded = Loaded::default();
        for (i, doc) in docs.iter().enumerate() {
            let index = i + 1;
            let err = |reason: String| RbacError::Document {
                path: path.to_path_buf(),
                index,
                reason,
            };
            let value = yaml_to_json(doc).map_err(err)?;
            if value.is_null() {
                continue;
            }
            self.add(value, &mut loaded).map_err(err)?;
        }
        self.aggregate();
        Ok(loaded)
    }

    fn add(&mut self, value: Value, loaded: &mut Loaded) -> Result<(), String> {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let rbac_kind = matches!(
            kind,
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        );
        if !rbac_kind {
            loaded.ignored += 1;
            return Ok(());
        }
        let what = format!("{kind} {name:?}");
        if api_version != "rbac.authorization.k8s.io/v1" {
            return Err(format!(
                "{what}: apiVersion {api_version:?} is not rbac.authorization.k8s.io/v1"
            ));
        }
        if name.is_empty() {
            return Err(format!("{kind} without metadata.name"));
        }
        let bad = |e: serde_json::Error| format!("{what}: {e}");
        match kind {
            "ClusterRole" => {
                let role: rbac::ClusterRole = serde_json::from_value(value).map_err(bad)?;
                let aggregation = match role.aggregation_rule {
                    Some(a) => Some(
                        a.cluster_role_selectors
                            .unwrap_or_default()
                            .into_iter()
                            .map(|s| selector(&s).map_err(|e| format!("{what}: {e}")))
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    None => None,
                };
                let labels = role.metadata.labels.unwrap_or_default();
                let rules = rules(role.rules);
                self.cluster_roles.insert(
                    name,
                    ClusterRole {
                        labels,
                        rules,
                        aggregation,
                    },
                );
                loaded.cluster_roles += 1;
            }
            "Role" => {
                let role: rbac::Role = serde_json::from_value(value).map_err(bad)?;
                let namespace = namespace_of(&role.metadata, &what)?;
                self.roles.insert((namespace, name), rules(role.rules));
                loaded.roles += 1;
            }
            "ClusterRoleBinding" => {
                let b: rbac::ClusterRoleBinding = serde_json::from_value(value).map_err(bad)?;
                let binding = binding(name, None, b.role_ref, b.subjects, &what)?;
                if binding.role_kind != "ClusterRole" {
                    return Err(format!(
                        "{what}: roleRef.kind must be ClusterRole, not {:?}",
                        binding.role_kind
                    ));
                }
                self.replace_binding(binding, true);
                loaded.cluster_role_bindings += 1;
            }
            _ => {
                let b: rbac::RoleBinding = serde_json::from_value(value).map_err(bad)?;
                let namespace = namespace_of(&b.metadata, &what)?;
                let binding = binding(name, Some(namespace), b.role_ref, b.subjects, &what)?;
                self.replace_binding(binding, false);
                loaded.role_bindings += 1;
            }
        }
        Ok(())
    }

    /// A later object of the same name replaces an earlier one, as `kubectl apply` would.
    fn replace_binding(&mut self, binding: Binding, cluster: bool) {
        let list = if cluster {
            &mut self.cluster_role_bindings
        } else {
            &mut self.role_bindings
        };
        match list
            .iter_mut()
            .find(|b| b.name == binding.name && b.namespace == binding.namespace)
        {
            Some(existing) => *existing = binding,
            None => list.push(binding),
        }
    }

    /// Fills aggregated ClusterRoles with the rules of the roles their selectors match, until
    /// nothing changes (aggregated roles can select other aggregated roles).
    fn aggregate(&mut self) {
        // Each round can only add rules that exist somewhere, so this ends; the bound is
        // for safety against a mistake, not a case that occurs.
        for _ in 0..=self.cluster_roles.len() {
            let mut changed = false;
            let names: Vec<String> = self
                .cluster_roles
                .iter()
                .filter(|(_, r)| r.aggregation.is_some())
                .map(|(n, _)| n.clone())
                .collect();
            for name in names {
                let Some(selectors) = self
                    .cluster_roles
                    .get(&name)
                    .and_then(|r| r.aggregation.clone())
                else {
                    continue;
                };
                let mut rules: Vec<Rule> = Vec::new();
                // By name, as the controller sorts the roles it aggregates.
                for (other_name, other) in &self.cluster_roles {
                    if *other_name == name || !selectors.iter().any(|s| s.matches(&other.labels)) {
                        continue;
                    }
                    for rule in &other.rules {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
                if let Some(role) = self.cluster_roles.get_mut(&name)
                    && role.rules != rules
                {
                    role.rules = rules;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// The rules of a ClusterRole, if it exists.
    #[cfg(test)]
    pub fn cluster_role_rules(&self, name: &str) -> Option<&[Rule]> {
        self.cluster_roles.get(name).map(|r| r.rules.as_slice())
    }

    /// The rules of the role `binding` grants; `Err` with the RBAC authorizer's wording when
    /// that role does not exist.
    fn bound_rules(&self, binding: &Binding) -> Result<&[Rule], String> {
        let found = match (binding.role_kind.as_str(), &binding.namespace) {
            ("ClusterRole", _) => self
                .cluster_roles
                .get(&binding.role_name)
                .map(|r| r.rules.as_slice()),
            ("Role", Some(ns)) => self
                .roles
                .get(&(ns.clone(), binding.role_name.clone()))
                .map(Vec::as_slice),
            _ => None,
        };
        found.ok_or_else(|| {
            format!(
                "{}.rbac.authorization.k8s.io {:?} not found",
                binding.role_kind.to_ascii_lowercase(),
                binding.role_name
            )
        })
    }

    /// Decides `attrs` for `user`, as kube-apiserver's RBAC authorizer. A denial's reason
    /// lists the bindings of `user` whose roles do not exist (`RBAC: clusterrole... not
    /// found`), as kube-apiserver appends them to its 403 message.
    pub fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let namespace = match attrs {
            Attributes::Resource(r) if !r.namespace.is_empty() => Some(r.namespace.as_str()),
            _ => None,
        };
        let role_bindings = self
            .role_bindings
            .iter()
            .filter(|b| namespace.is_some() && b.namespace.as_deref() == namespace);
        let mut errors: Vec<String> = Vec::new();
        for b in self.cluster_role_bindings.iter().chain(role_bindings) {
            let Some(subject) = b
                .subjects
                .iter()
                .find(|s| subject_matches(s, b.namespace.as_deref(), user))
            else {
                continue;
            };
            let rules = match self.bound_rules(b) {
                Ok(rules) => rules,
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e);
                    }
                    continue;
                }
            };
            if rules.iter().any(|r| r.allows(attrs)) {
                let binding = match &b.namespace {
                    Some(ns) => format!("RoleBinding \"{}/{ns}\"", b.name),
                    None => format!("ClusterRoleBinding {:?}", b.name),
                };
                return Decision {
                    allowed: true,
                    reason: format!(
                        "RBAC: allowed by {binding} of {} {:?} to {}",
                        b.role_kind,
                        b.role_name,
                        describe(subject, b.namespace.as_deref())
                    ),
                };
            }
        }
        // utilerrors.NewAggregate's wording: one error alone, several in brackets.
        let reason = match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        };
        Decision {
            allowed: false,
            reason,
        }
    }

    /// Bindings whose role does not exist: they grant nothing, which is worth a warning.
    pub fn dangling_bindings(&self) -> Vec<String> {
        self.cluster_role_bindings
            .iter()
            .chain(&self.role_bindings)
            .filter_map(|b| {
                let missing = self.bound_rules(b).err()?;
                Some(match &b.namespace {
                    Some(ns) => format!("RoleBinding {ns}/{}: {missing}", b.name),
                    None => format!("ClusterRoleBinding {}: {missing}", b.name),
                })
            })
            .collect()
    }
}

fn rules(rules: Option<Vec<rbac::PolicyRule>>) -> Vec<Rule> {
    rules
        .unwrap_or_default()
        .into_iter()
        .map(Rule::from_policy_rule)
        .collect()
}

fn namespace_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    what: &str,
) -> Result<String, String> {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => Ok(ns.to_string()),
        _ => Err(format!("{what} has no metadata.namespace")),
    }
}

fn binding(
    name: String,
    namespace: Option<String>,
    role_ref: rbac::RoleRef,
    subjects: Option<Vec<rbac::Subject>>,
    what: &str,
) -> Result<Binding, String> {
    if role_ref.api_group != "rbac.authorization.k8s.io" {
        return Err(format!(
            "{what}: roleRef.apiGroup must be rbac.authorization.k8s.io, not {:?}",
            role_ref.api_group
        ));
    }
    if !matches!(role_ref.kind.as_str(), "Role" | "ClusterRole") {
        return Err(format!(
            "{what}: roleRef.kind must be Role or ClusterRole, not {:?}",
            role_ref.kind
        ));
    }
    let subjects = subjects
        .unwrap_or_default()
        .into_iter()
        .map(|s| Subject {
            kind: s.kind,
            name: s.name,
            namespace: s.namespace.unwrap_or_default(),
        })
        .collect();
    Ok(Binding {
        name,
        namespace,
        role_kind: role_ref.kind,
        role_name: role_ref.name,
        subjects,
    })
}

/// `appliesToUser` of the RBAC authorizer.
fn subject_matches(s: &Subject, binding_namespace: Option<&str>, user: &UserInfo) -> bool {
    match s.kind.as_str() {
        "User" => user.username == s.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_namespace.unwrap_or("")
            } else {
                s.namespace.as_str()
            };
            !ns.is_empty() && crate::auth::service_account_matches(&user.username, ns, &s.name)
        }
        _ => false,
    }
}

/// RBAC's `describeSubject`.
fn describe(s: &Subject, binding_namespace: Option<&str>) -> String {
    match s.kind.as_str() {
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_namespace.unwrap_or("")
            } else {
                s.namespace.as_str()
            };
            format!("ServiceAccount \"{}/{ns}\"", s.name)
        }
        kind => format!("{kind} {:?}", s.name),
    }
}

/// A `metav1.LabelSelector` as a [`LabelSelector`] (`LabelSelectorAsSelector`).
fn selector(
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<LabelSelector, String> {
    let mut requirements = Vec::new();
    for (key, value) in s.match_labels.iter().flatten() {
        requirements.push(Requirement {
            key: key.clone(),
            operator: Operator::Equals,
            values: vec![value.clone()],
        });
    }
    for e in s.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        values.dedup();
        let operator = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        let needs_values = matches!(operator, Operator::In | Operator::NotIn);
        if needs_values == values.is_empty() {
            return Err(format!(
                "operator {} on key {:?} {} values",
                e.operator,
                e.key,
                if needs_values { "needs" } else { "takes no" }
            ));
        }
        requirements.push(Requirement {
            key: e.key.clone(),
            operator,
            values,
        });
    }
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(LabelSelector { requirements })
}

/// A YAML document as JSON, the shape the Kubernetes types deserialize from.
fn yaml_to_json(y: &yaml_rust2::Yaml) -> Result<Value, String> {
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .map(yaml_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Yaml::Hash(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported".into()),
        Yaml::BadValue => return Err("invalid YAML value".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{path, res};

    const COMPONENTS: &str = include_str!("../../../deploy/components.yaml");

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn sa(ns: &str, name: &str) -> UserInfo {
        UserInfo::service_account(ns, name, "")
    }

    /// The bootstrap policy plus `extra` files.
    fn policy(extra: &[&str]) -> Rbac {
        let mut rbac = Rbac::bootstrap().expect("bootstrap loads");
        for (i, text) in extra.iter().enumerate() {
            rbac.load_str(text, Path::new(&format!("extra-{i}.yaml")))
                .expect("extra loads");
        }
        rbac
    }

    /// Asserts each decision of `cases` for `who`.
    fn expect(rbac: &Rbac, who: &UserInfo, cases: &[(Attributes, bool)]) {
        for (attrs, want) in cases {
            let d = rbac.authorize(who, attrs);
            assert_eq!(d.allowed, *want, "{} {attrs:?}: {d:?}", who.username);
        }
    }

    #[test]
    fn components_yaml_gives_metrics_bridge_exactly_what_it_needs() {
        let mut rbac = Rbac::bootstrap().expect("bootstrap");
        let loaded = rbac
            .load_str(COMPONENTS, Path::new("deploy/components.yaml"))
            .expect("components.yaml loads");
        assert_eq!(
            loaded,
            Loaded {
                cluster_roles: 2,
                cluster_role_bindings: 2,
                roles: 0,
                role_bindings: 1,
                ignored: 5,
            }
        );
        assert_eq!(rbac.dangling_bindings(), Vec::<String>::new());
        let auth_cm = "extension-apiserver-authentication";
        let mb = sa("kube-system", "metrics-bridge");
        expect(
            &rbac,
            &mb,
            &[
                (res("get", "", "nodes", "metrics", "", "node-1"), true),
                (res("list", "", "nodes", "", "", ""), true),
                (res("watch", "", "nodes", "", "", ""), true),
                (res("list", "", "pods", "", "", ""), true),
                (res("watch", "", "pods", "", "", ""), true),
                (res("get", "", "pods", "", "ns", "p"), true),
                (
                    res(
                        "create",
                        "authentication.k8s.io",
                        "tokenreviews",
                        "",
                        "",
                        "",
                    ),
                    true,
                ),
                (
                    res(
                        "create",
                        "authorization.k8s.io",
                        "subjectaccessreviews",
                        "",
                        "",
                        "",
                    ),
                    true,
                ),
                (
                    res("get", "", "configmaps", "", "kube-system", auth_cm),
                    true,
                ),
                (
                    res("watch", "", "configmaps", "", "kube-system", auth_cm),
                    true,
                ),
                (path("get", "/apis"), true),
                // Anything else is refused.
                (res("get", "", "nodes", "proxy", "", "node-1"), false),
                (res("get", "", "nodes", "stats", "", "node-1"), false),
                (res("delete", "", "pods", "", "ns", "p"), false),
                (res("list", "", "secrets", "", "", ""), false),
                (res("list", "", "configmaps", "", "kube-system", ""), false),
                (
                    res("get", "", "configmaps", "", "kube-system", "other"),
                    false,
                ),
                (res("get", "", "configmaps", "", "default", auth_cm), false),
                (res("list", "metrics.k8s.io", "nodes", "", "", ""), false),
                (path("get", "/metrics"), false),
            ],
        );
        // The same name in another namespace is another service account.
        expect(
            &rbac,
            &sa("default", "metrics-bridge"),
            &[(res("list", "", "nodes", "", "", ""), false)],
        );
        let reason = |a: Attributes| rbac.authorize(&mb, &a).reason;
        assert_eq!(
            reason(res("get", "", "nodes", "metrics", "", "n")),
            r#"RBAC: allowed by ClusterRoleBinding "system:metrics-bridge" of ClusterRole "system:metrics-bridge" to ServiceAccount "metrics-bridge/kube-system""#
        );
        assert_eq!(
            reason(res("get", "", "configmaps", "", "kube-system", auth_cm)),
            r#"RBAC: allowed by RoleBinding "metrics-bridge-auth-reader/kube-system" of Role "extension-apiserver-authentication-reader" to ServiceAccount "metrics-bridge/kube-system""#
        );
    }

    #[test]
    fn removing_a_rule_removes_exactly_that_permission() {
        let rule = "- apiGroups:\n  - \"\"\n  resources:\n  - nodes/metrics\n  verbs:\n  - get\n";
        let without = COMPONENTS.replacen(rule, "", 1);
        assert_ne!(
            without, COMPONENTS,
            "the nodes/metrics rule is in components.yaml"
        );
        expect(
            &policy(&[&without]),
            &sa("kube-system", "metrics-bridge"),
            &[
                (res("get", "", "nodes", "metrics", "", "n"), false),
                (res("list", "", "nodes", "", "", ""), true),
            ],
        );
    }

    #[test]
    fn aggregation_carries_the_metrics_reader_into_view_edit_and_admin() {
        let bindings = ["view", "edit", "admin"]
            .iter()
            .map(|role| {
                format!(
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
                     metadata: {{name: {role}-user}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, \
                     kind: ClusterRole, name: {role}}}\nsubjects: [{{kind: User, name: {role}-user}}]\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n");
        let top_node = res("list", "metrics.k8s.io", "nodes", "", "", "");
        let without = policy(&[&bindings]);
        let with = policy(&[&bindings, COMPONENTS]);
        for role in ["view", "edit", "admin"] {
            let u = user(&format!("{role}-user"), &["system:authenticated"]);
            expect(&without, &u, &[(top_node.clone(), false)]);
            expect(
                &with,
                &u,
                &[
                    (top_node.clone(), true),
                    (res("list", "metrics.k8s.io", "pods", "", "ns", ""), true),
                    // view's own rules reach edit and admin through two aggregations.
                    (res("list", "", "pods", "", "ns", ""), true),
                    (res("delete", "", "pods", "", "ns", "p"), role != "view"),
                    (
                        res(
                            "create",
                            "rbac.authorization.k8s.io",
                            "rolebindings",
                            "",
                            "ns",
                            "",
                        ),
                        role == "admin",
                    ),
                ],
            );
            assert_eq!(
                with.authorize(&u, &top_node).reason,
                format!(
                    "RBAC: allowed by ClusterRoleBinding \"{role}-user\" of ClusterRole \"{role}\" to User \"{role}-user\""
                )
            );
        }
        // The aggregated roles hold each rule once.
        let admin = with.cluster_role_rules("admin").expect("admin");
        for (i, r) in admin.iter().enumerate() {
            assert!(!admin[..i].contains(r), "duplicate rule {r:?}");
        }
    }

    #[test]
    fn aggregation_selectors_use_match_expressions() {
        let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: collector}
aggregationRule:
  clusterRoleSelectors:
    - matchExpressions:
        - {key: team, operator: In, values: [a, b]}
        - {key: deprecated, operator: DoesNotExist}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: a, labels: {team: a}}
rules: [{apiGroups: [""], resources: [services], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: c, labels: {team: c}}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: old, labels: {team: b, deprecated: "yes"}}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: members-collector}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: collector}
subjects: [{kind: Group, name: team-members}]
"#;
        let rbac = policy(&[yaml]);
        expect(
            &rbac,
            &user("someone", &["team-members"]),
            &[
                (res("get", "", "services", "", "ns", "s"), true),
                (res("get", "", "secrets", "", "ns", "s"), false),
                (res("get", "", "configmaps", "", "ns", "s"), false),
            ],
        );
        assert_eq!(
            rbac.cluster_role_rules("collector").map(<[Rule]>::len),
            Some(1)
        );
    }

    #[test]
    fn role_bindings_stay_in_their_namespace() {
        let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: team}
rules:
  - {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list]}
  - {apiGroups: ["apps"], resources: ["*/scale"], verbs: [update]}
  - {apiGroups: [""], resources: [configmaps], resourceNames: [app-config], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ci-reader, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: ci}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-admin, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: alice}]
"#;
        let rbac = policy(&[yaml]);
        let ci = sa("team", "ci");
        expect(
            &rbac,
            &ci,
            &[
                (res("list", "", "pods", "", "team", ""), true),
                (res("get", "", "pods", "log", "team", "p"), true),
                (res("get", "", "pods", "exec", "team", "p"), false),
                (res("list", "", "pods", "", "other", ""), false),
                (res("list", "", "pods", "", "", ""), false),
                (
                    res("update", "apps", "deployments", "scale", "team", "d"),
                    true,
                ),
                (res("update", "apps", "deployments", "", "team", "d"), false),
                (res("get", "", "configmaps", "", "team", "app-config"), true),
                // A list without a name never matches a rule with resourceNames.
                (res("list", "", "configmaps", "", "team", ""), false),
            ],
        );
        // The subject's namespace defaults to the RoleBinding's: ci elsewhere is someone else.
        expect(
            &rbac,
            &sa("other", "ci"),
            &[(res("list", "", "pods", "", "team", ""), false)],
        );
        assert_eq!(
            rbac.authorize(&ci, &res("list", "", "pods", "", "team", ""))
                .reason,
            r#"RBAC: allowed by RoleBinding "ci-reader/team" of Role "reader" to ServiceAccount "ci/team""#
        );
        // A RoleBinding of cluster-admin is admin in its namespace only, and never grants
        // non-resource URLs.
        expect(
            &rbac,
            &user("alice", &["system:authenticated"]),
            &[
                (res("delete", "", "secrets", "", "team", "s"), true),
                (res("delete", "", "secrets", "", "other", "s"), false),
                (path("get", "/metrics"), false),
            ],
        );
    }

    #[test]
    fn bootstrap_matches_a_fresh_cluster() {
        let rbac = policy(&[]);
        let admin = user(
            "kubernetes-admin",
            &["system:masters", "system:authenticated"],
        );
        expect(
            &rbac,
            &admin,
            &[
                (res("delete", "", "nodes", "", "", "n"), true),
                (path("post", "/sim/pods"), true),
            ],
        );
        expect(
            &rbac,
            &UserInfo::anonymous(),
            &[
                (path("get", "/healthz"), true),
                (path("get", "/api"), false),
            ],
        );
        expect(
            &rbac,
            &user("viewer", &["system:authenticated"]),
            &[
                (path("get", "/apis/metrics.k8s.io/v1beta1"), true),
                (res("list", "metrics.k8s.io", "pods", "", "ns", ""), true),
                (res("list", "metrics.k8s.io", "nodes", "", "", ""), false),
            ],
        );
        expect(
            &rbac,
            &sa("kube-system", "horizontal-pod-autoscaler"),
            &[(res("list", "metrics.k8s.io", "pods", "", "ns", ""), true)],
        );
        // Before anything is installed, metrics-bridge may do nothing but discovery.
        expect(
            &rbac,
            &sa("kube-system", "metrics-bridge"),
            &[
                (res("list", "", "nodes", "", "", ""), false),
                (path("get", "/api"), true),
            ],
        );
    }

    #[test]
    fn load_errors_name_the_file_document_and_object() {
        let err = |yaml: &str| {
            let mut rbac = Rbac::default();
            rbac.load_str(yaml, Path::new("bad.yaml"))
                .expect_err("must fail")
                .to_string()
        };
        let cases = [
            (
                "kind: Service\n---\napiVersion: rbac.authorization.k8s.io/v1beta1\nkind: ClusterRole\nmetadata: {name: x}\n",
                r#"--rbac file bad.yaml: document 2: ClusterRole "x": apiVersion "rbac.authorization.k8s.io/v1beta1" is not rbac.authorization.k8s.io/v1"#,
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}\n",
                r#"--rbac file bad.yaml: document 1: ClusterRoleBinding "b": roleRef.kind must be ClusterRole, not "Role""#,
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n",
                r#"--rbac file bad.yaml: document 1: Role "r" has no metadata.namespace"#,
            ),
            (
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: c}\naggregationRule: {clusterRoleSelectors: [{matchExpressions: [{key: k, operator: Near}]}]}\n",
                r#"--rbac file bad.yaml: document 1: ClusterRole "c": "Near" is not a valid label selector operator"#,
            ),
        ];
        for (yaml, want) in cases {
            assert_eq!(err(yaml), want);
        }
        let typed = err(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules: [{verbs: get}]\n",
        );
        assert!(
            typed.starts_with(r#"--rbac file bad.yaml: document 1: ClusterRole "r": invalid type"#),
            "{typed}"
        );
        let yaml = err("kind: [");
        assert!(
            yaml.starts_with("--rbac file bad.yaml: invalid YAML: "),
            "{yaml}"
        );

        // A binding to a role that does not exist loads, grants nothing, is reported, and
        // its user's denials say why, as kube-apiserver's RBAC authorizer does.
        let mut rbac = Rbac::default();
        rbac.load_str(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\n\
             roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: missing}\n\
             subjects: [{kind: User, name: u}]\n",
            Path::new("ok.yaml"),
        )
        .expect("loads");
        assert_eq!(
            rbac.dangling_bindings(),
            [r#"ClusterRoleBinding b: clusterrole.rbac.authorization.k8s.io "missing" not found"#]
        );
        let d = rbac.authorize(&user("u", &[]), &path("get", "/"));
        assert_eq!(
            (d.allowed, d.reason.as_str()),
            (
                false,
                r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#
            )
        );
        // Someone the binding does not name gets no such reason.
        assert_eq!(
            rbac.authorize(&user("v", &[]), &path("get", "/")).reason,
            ""
        );
    }
}
