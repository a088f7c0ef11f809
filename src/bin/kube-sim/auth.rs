//! Authentication and authorization, shared by the API server, the kubelets and the
//! aggregator, with kube-apiserver's semantics:
//!
//! - **Authentication** is a union, as kube-apiserver's: a client certificate that verifies
//!   against the client CA (user = CN, groups = O), else a known bearer token; a credential
//!   that fails makes the request 401, and a request with no credential at all is
//!   `system:anonymous` (group `system:unauthenticated`) when anonymous auth is on, as it is by
//!   default in kube-apiserver. Authenticated users always get `system:authenticated`.
//! - **Authorization** is RBAC over one fixed table, [`POLICY`]: bindings of roles to subjects,
//!   matched with RBAC's rules (verbs, API groups, `resource/subresource`, resource names,
//!   non-resource URLs with a trailing `*`). The allow reason names the binding exactly as the
//!   RBAC authorizer does, and a denial has no reason, so 403 messages and
//!   `SubjectAccessReview` answers read like a real cluster's.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use http::HeaderMap;
use metrics_bridge::https::ConnInfo;
use serde::{Deserialize, Serialize};

use crate::pki::Pki;

/// An authenticated user, as `user.Info` in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn new(username: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: username.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    /// The anonymous user kube-apiserver assigns to requests without credentials.
    pub fn anonymous() -> UserInfo {
        UserInfo::new("system:anonymous", &["system:unauthenticated"])
    }

    /// A service account's identity with the groups kube-apiserver gives it.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> UserInfo {
        let mut u = UserInfo::new(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{namespace}"),
                "system:authenticated",
            ],
        );
        u.uid = uid.to_string();
        u
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The outcome of authenticating one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    /// A credential verified.
    User(UserInfo),
    /// No credential was presented, and anonymous requests are allowed.
    Anonymous(UserInfo),
    /// A credential was presented and did not verify, or none was presented and anonymous
    /// requests are not allowed: 401.
    Failed,
}

impl Authn {
    /// The user to authorize, if any.
    pub fn user(&self) -> Option<&UserInfo> {
        match self {
            Authn::User(u) | Authn::Anonymous(u) => Some(u),
            Authn::Failed => None,
        }
    }
}

/// Authenticates client certificates and bearer tokens.
pub struct Authenticator {
    pki: Arc<Pki>,
    tokens: HashMap<String, UserInfo>,
    anonymous: bool,
}

impl Authenticator {
    /// Knows the tokens of `pki` (metrics-bridge, viewer, HPA).
    pub fn new(pki: Arc<Pki>, anonymous: bool) -> Authenticator {
        let mut tokens = HashMap::new();
        let mut mb = UserInfo::service_account(
            "kube-system",
            "metrics-bridge",
            "6f1c2b1e-8d4a-4f5e-9c1a-5b7e2d3c4a01",
        );
        mb.extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec!["JTI=0d6e5c1b-3f0a-4d8e-b7c2-9a1e4f6d2b01".into()],
        );
        tokens.insert(pki.tokens.metrics_bridge.clone(), mb);
        tokens.insert(
            pki.tokens.viewer.clone(),
            UserInfo::new("viewer", &["system:authenticated"]),
        );
        let mut hpa = UserInfo::service_account(
            "kube-system",
            "horizontal-pod-autoscaler",
            "3a9d8e7f-1b2c-4d5e-8f90-a1b2c3d4e5f6",
        );
        hpa.extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec!["JTI=7b4a3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d".into()],
        );
        tokens.insert(pki.tokens.hpa.clone(), hpa);
        tokens.insert(
            pki.tokens.admin.clone(),
            UserInfo::new(
                "kubernetes-admin",
                &["system:masters", "system:authenticated"],
            ),
        );
        let mut external = UserInfo::service_account(
            "kube-system",
            "kube-sim",
            "1c7e9a44-5d3b-4f0e-a2c8-9e6b1d4f7a02",
        );
        external.extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec!["JTI=5e2d8c1a-7b4f-4a6e-9d3c-2f1e8b7a6c05".into()],
        );
        tokens.insert(pki.tokens.external.clone(), external);
        Authenticator {
            pki,
            tokens,
            anonymous,
        }
    }

    /// The user a bearer token belongs to, for `TokenReview`.
    pub fn token(&self, token: &str) -> Option<&UserInfo> {
        self.tokens.get(token)
    }

    /// The user a verified client certificate chain names: CN and O, plus
    /// `system:authenticated`. `Err` when the chain does not verify against the client CA.
    pub fn certificate(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<UserInfo, String> {
        certificate_user(&self.pki.current().client_bundle, chain)
    }

    /// Authenticates a request by its connection's client certificate and its
    /// `Authorization: Bearer` header, in kube-apiserver's order.
    pub fn authenticate(&self, conn: Option<&ConnInfo>, headers: &HeaderMap) -> Authn {
        let mut failed = false;
        if let Some(chain) = conn.and_then(|c| c.peer_certificates.as_deref()) {
            match self.certificate(chain) {
                Ok(user) => return Authn::User(user),
                Err(e) => {
                    tracing::debug!(error = %e, "client certificate rejected");
                    failed = true;
                }
            }
        }
        // kube-apiserver ignores other schemes (basic auth is gone): such a request goes on
        // as if it had no token.
        if let Some(token) = headers.get(http::header::AUTHORIZATION).and_then(bearer) {
            match self.tokens.get(token) {
                Some(user) => return Authn::User(user.clone()),
                None => failed = true,
            }
        }
        if failed || !self.anonymous {
            Authn::Failed
        } else {
            Authn::Anonymous(UserInfo::anonymous())
        }
    }
}

/// The user a client certificate chain names, as kube-apiserver's x509 authenticator: the
/// chain must verify against `bundle`; user = CN, groups = O plus `system:authenticated`.
pub fn certificate_user(
    bundle: &crate::pki::ClientCaBundle,
    chain: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<UserInfo, String> {
    bundle.verify(chain)?;
    let leaf = chain.first().ok_or("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if username.is_empty() {
        return Err("the certificate has no common name".into());
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Ok(UserInfo {
        username,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, as
/// k8s.io/apiserver's bearer-token authenticator).
pub fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?.trim();
    let (scheme, token) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// What a request wants to do, as `authorizer.Attributes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAttributes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// A non-resource request: a path and a verb.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonResourceAttributes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
}

/// A request to authorize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource(ResourceAttributes),
    NonResource(NonResourceAttributes),
}

/// The outcome of authorizing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// For an allow, the binding that allowed it, in RBAC's words. For a denial, what went
    /// wrong while evaluating (with `--rbac`: a binding whose role does not exist), which
    /// kube-apiserver appends to its 403 message; usually empty.
    pub reason: String,
}

/// One RBAC rule.
#[derive(Debug)]
pub struct Rule {
    pub verbs: &'static [&'static str],
    pub api_groups: &'static [&'static str],
    pub resources: &'static [&'static str],
    pub resource_names: &'static [&'static str],
    pub non_resource_urls: &'static [&'static str],
}

/// Who a binding grants its role to.
#[derive(Debug)]
pub enum Subject {
    User(&'static str),
    Group(&'static str),
    ServiceAccount {
        namespace: &'static str,
        name: &'static str,
    },
}

/// A ClusterRoleBinding (namespace `None`) or RoleBinding of a role with its rules.
#[derive(Debug)]
pub struct Binding {
    pub name: &'static str,
    pub namespace: Option<&'static str>,
    /// `ClusterRole` or `Role`.
    pub role_kind: &'static str,
    pub role: &'static str,
    pub subjects: &'static [Subject],
    pub rules: &'static [Rule],
}

const NONE: &[&str] = &[];

const fn rule(
    verbs: &'static [&'static str],
    api_groups: &'static [&'static str],
    resources: &'static [&'static str],
) -> Rule {
    Rule {
        verbs,
        api_groups,
        resources,
        resource_names: NONE,
        non_resource_urls: NONE,
    }
}

const fn urls(verbs: &'static [&'static str], non_resource_urls: &'static [&'static str]) -> Rule {
    Rule {
        verbs,
        api_groups: NONE,
        resources: NONE,
        resource_names: NONE,
        non_resource_urls,
    }
}

const METRICS_BRIDGE: Subject = Subject::ServiceAccount {
    namespace: "kube-system",
    name: "metrics-bridge",
};

/// The Role `extension-apiserver-authentication-reader` of kube-system.
const AUTH_READER: &[Rule] = &[Rule {
    verbs: &["get", "list", "watch"],
    api_groups: &[""],
    resources: &["configmaps"],
    resource_names: &["extension-apiserver-authentication"],
    non_resource_urls: NONE,
}];

const KUBE_SIM: Subject = Subject::ServiceAccount {
    namespace: "kube-system",
    name: "kube-sim",
};

/// What a kube-sim with `--external-apiserver` does to a cluster: its kubelets register and
/// heartbeat nodes, it creates, binds, updates and deletes its pods (and the namespaces it
/// lacks), and its kubelets review tokens and requests. This is the ClusterRole
/// `kube-sim:external` of `docs/kube-sim.md`.
pub const EXTERNAL_RULES: &[Rule] = &[
    rule(
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        &[""],
        &["nodes", "pods"],
    ),
    rule(
        &["patch", "update"],
        &[""],
        &["nodes/status", "pods/status"],
    ),
    rule(&["create"], &[""], &["pods/binding"]),
    // patch: a namespace another kube-sim still uses is handed over to it, not deleted.
    rule(
        &["create", "delete", "get", "list", "patch"],
        &[""],
        &["namespaces"],
    ),
    rule(
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "update",
            "watch",
        ],
        &["coordination.k8s.io"],
        &["leases"],
    ),
    rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
    rule(
        &["create"],
        &["authorization.k8s.io"],
        &["subjectaccessreviews"],
    ),
];

/// kube-sim's whole authorization policy. The first eleven bindings reproduce a kubeadm
/// cluster's bootstrap policy and what metrics-server's `components.yaml` installs (with the
/// service account `metrics-bridge`); `kube-sim:external` binds [`EXTERNAL_RULES`] to the
/// identity another kube-sim uses to put its nodes here; `kube-sim:viewer` is the test user.
pub const POLICY: &[Binding] = &[
    Binding {
        name: "cluster-admin",
        namespace: None,
        role_kind: "ClusterRole",
        role: "cluster-admin",
        subjects: &[Subject::Group("system:masters")],
        rules: &[rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
    },
    Binding {
        name: "system:discovery",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:discovery",
        subjects: &[Subject::Group("system:authenticated")],
        rules: &[urls(
            &["get"],
            &[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ],
        )],
    },
    Binding {
        name: "system:basic-user",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:basic-user",
        subjects: &[Subject::Group("system:authenticated")],
        rules: &[
            rule(
                &["create"],
                &["authentication.k8s.io"],
                &["selfsubjectreviews"],
            ),
            rule(
                &["create"],
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            ),
        ],
    },
    Binding {
        name: "system:public-info-viewer",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:public-info-viewer",
        subjects: &[
            Subject::Group("system:authenticated"),
            Subject::Group("system:unauthenticated"),
        ],
        rules: &[urls(
            &["get"],
            &["/healthz", "/livez", "/readyz", "/version", "/version/"],
        )],
    },
    Binding {
        name: "system:metrics-server",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:metrics-server",
        subjects: &[METRICS_BRIDGE],
        rules: &[
            rule(&["get"], &[""], &["nodes/metrics"]),
            rule(&["get", "list", "watch"], &[""], &["pods", "nodes"]),
        ],
    },
    Binding {
        name: "metrics-server:system:auth-delegator",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:auth-delegator",
        subjects: &[METRICS_BRIDGE],
        rules: &[
            rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
            rule(
                &["create"],
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
            ),
        ],
    },
    Binding {
        name: "metrics-server-auth-reader",
        namespace: Some("kube-system"),
        role_kind: "Role",
        role: "extension-apiserver-authentication-reader",
        subjects: &[METRICS_BRIDGE],
        rules: AUTH_READER,
    },
    Binding {
        name: "system:controller:horizontal-pod-autoscaler",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:controller:horizontal-pod-autoscaler",
        subjects: &[Subject::ServiceAccount {
            namespace: "kube-system",
            name: "horizontal-pod-autoscaler",
        }],
        rules: &[
            rule(&["list"], &[""], &["pods"]),
            rule(&["get", "list"], &["metrics.k8s.io"], &["pods"]),
            rule(&["list"], &["custom.metrics.k8s.io"], &["*"]),
            rule(&["list"], &["external.metrics.k8s.io"], &["*"]),
        ],
    },
    Binding {
        name: "system:kube-aggregator",
        namespace: None,
        role_kind: "ClusterRole",
        role: "system:kube-aggregator",
        subjects: &[Subject::User("system:kube-aggregator")],
        rules: &[rule(
            &["get", "list", "watch"],
            &[""],
            &["endpoints", "services"],
        )],
    },
    Binding {
        name: "kube-sim:external",
        namespace: None,
        role_kind: "ClusterRole",
        role: "kube-sim:external",
        subjects: &[KUBE_SIM],
        rules: EXTERNAL_RULES,
    },
    Binding {
        name: "kube-sim:external:auth-reader",
        namespace: Some("kube-system"),
        role_kind: "Role",
        role: "extension-apiserver-authentication-reader",
        subjects: &[KUBE_SIM],
        rules: AUTH_READER,
    },
    Binding {
        name: "kube-sim:viewer",
        namespace: None,
        role_kind: "ClusterRole",
        role: "kube-sim:pod-metrics-viewer",
        subjects: &[Subject::User("viewer")],
        rules: &[rule(&["get", "list"], &["metrics.k8s.io"], &["pods"])],
    },
];

impl Subject {
    fn matches(&self, user: &UserInfo) -> bool {
        match self {
            Subject::User(name) => user.username == *name,
            Subject::Group(g) => user.in_group(g),
            Subject::ServiceAccount { namespace, name } => {
                service_account_matches(&user.username, namespace, name)
            }
        }
    }

    /// RBAC's `describeSubject`: `User "viewer"`, `ServiceAccount "name/namespace"`.
    fn describe(&self) -> String {
        match self {
            Subject::User(n) => format!("User {n:?}"),
            Subject::Group(n) => format!("Group {n:?}"),
            Subject::ServiceAccount { namespace, name } => {
                format!("ServiceAccount \"{name}/{namespace}\"")
            }
        }
    }
}

/// Whether `username` is the service account `namespace/name`.
pub fn service_account_matches(username: &str, namespace: &str, name: &str) -> bool {
    username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(ns, n)| ns == namespace && n == name)
}

fn has<S: AsRef<str>>(list: &[S], item: &str) -> bool {
    list.iter().any(|x| x.as_ref() == "*" || x.as_ref() == item)
}

/// Whether one RBAC rule allows `attrs`, with the RBAC authorizer's `RuleAllows`: verbs, API
/// groups, `resource` or `resource/subresource` (`*` matches every resource and
/// subresource, `*/sub` one subresource of every resource), resource names (a named rule
/// never matches a request without a name), and non-resource URLs (`*`, exact, or a prefix
/// ending in `*`). Shared by the fixed policy and `--rbac` objects.
pub fn rule_allows<S: AsRef<str>>(
    verbs: &[S],
    api_groups: &[S],
    resources: &[S],
    resource_names: &[S],
    non_resource_urls: &[S],
    attrs: &Attributes,
) -> bool {
    match attrs {
        Attributes::Resource(r) => {
            if resources.is_empty() || !has(verbs, &r.verb) || !has(api_groups, &r.group) {
                return false;
            }
            let resource_ok = resources.iter().map(AsRef::as_ref).any(|x: &str| {
                if x == "*" {
                    return true;
                }
                if r.subresource.is_empty() {
                    return x == r.resource;
                }
                match x.split_once('/') {
                    Some((res, sub)) => sub == r.subresource && (res == r.resource || res == "*"),
                    None => false,
                }
            });
            resource_ok
                && (resource_names.is_empty()
                    || (!r.name.is_empty() && resource_names.iter().any(|n| n.as_ref() == r.name)))
        }
        Attributes::NonResource(n) => {
            has(verbs, &n.verb)
                && non_resource_urls.iter().map(AsRef::as_ref).any(|u: &str| {
                    u == "*"
                        || u == n.path
                        || u.strip_suffix('*').is_some_and(|p| n.path.starts_with(p))
                })
        }
    }
}

impl Rule {
    fn allows(&self, attrs: &Attributes) -> bool {
        rule_allows(
            self.verbs,
            self.api_groups,
            self.resources,
            self.resource_names,
            self.non_resource_urls,
            attrs,
        )
    }
}

/// The `--rbac` policy, when kube-sim was started with one; it replaces [`POLICY`].
static RBAC: std::sync::OnceLock<crate::rbac::Rbac> = std::sync::OnceLock::new();

/// Makes every later [`authorize`] use `rbac` instead of [`POLICY`]. kube-sim calls it once,
/// at start, before serving; a second policy would be ignored.
pub fn install_rbac(rbac: crate::rbac::Rbac) {
    let _ = RBAC.set(rbac);
}

/// Decides `attrs` for `user` with the `--rbac` policy if there is one, else [`POLICY`].
pub fn authorize(user: &UserInfo, attrs: &Attributes) -> Decision {
    if let Some(rbac) = RBAC.get() {
        return rbac.authorize(user, attrs);
    }
    authorize_fixed(user, attrs)
}

/// Decides `attrs` for `user` with [`POLICY`].
fn authorize_fixed(user: &UserInfo, attrs: &Attributes) -> Decision {
    for b in POLICY {
        if let Some(ns) = b.namespace {
            // A RoleBinding grants only inside its namespace, and never non-resource URLs.
            match attrs {
                Attributes::Resource(r) if r.namespace == ns => {}
                _ => continue,
            }
        }
        let Some(subject) = b.subjects.iter().find(|s| s.matches(user)) else {
            continue;
        };
        if b.rules.iter().any(|r| r.allows(attrs)) {
            let what = match b.namespace {
                Some(ns) => format!("RoleBinding \"{}/{ns}\"", b.name),
                None => format!("ClusterRoleBinding {:?}", b.name),
            };
            return Decision {
                allowed: true,
                reason: format!(
                    "RBAC: allowed by {what} of {} {:?} to {}",
                    b.role_kind,
                    b.role,
                    subject.describe()
                ),
            };
        }
    }
    Decision {
        allowed: false,
        reason: String::new(),
    }
}

/// The policy as a Markdown table, for `kube-sim --print-policy` and `docs/kube-sim.md`.
pub fn policy_markdown() -> String {
    let mut out = String::from(
        "| binding | role | subjects | verbs | API groups | resources / URLs | names |\n|---|---|---|---|---|---|---|\n",
    );
    for b in POLICY {
        let binding = match b.namespace {
            Some(ns) => format!("RoleBinding `{}` (ns `{ns}`)", b.name),
            None => format!("ClusterRoleBinding `{}`", b.name),
        };
        let subjects = b
            .subjects
            .iter()
            .map(Subject::describe)
            .collect::<Vec<_>>()
            .join(", ");
        for r in b.rules {
            let list = |l: &[&str]| {
                l.iter()
                    .map(|x| {
                        if x.is_empty() {
                            "\"\"".to_string()
                        } else {
                            format!("`{x}`")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let targets = if r.non_resource_urls.is_empty() {
                list(r.resources)
            } else {
                list(r.non_resource_urls)
            };
            let _ = writeln!(
                out,
                "| {binding} | {} `{}` | {} | {} | {} | {} | {} |",
                b.role_kind,
                b.role,
                subjects.replace('"', "`"),
                list(r.verbs),
                list(r.api_groups),
                targets,
                list(r.resource_names),
            );
        }
    }
    out
}

/// The verb of an HTTP method for a non-resource request or a kubelet request, as the
/// kubelet's and kube-apiserver's request-info code map them.
pub fn method_verb(method: &http::Method) -> &'static str {
    match *method {
        http::Method::POST => "create",
        http::Method::GET | http::Method::HEAD => "get",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "",
    }
}

/// Request attributes in one line, for the tests of this module and of `rbac`.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// A resource request: verb, API group, resource, subresource, namespace, name.
    pub fn res(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> Attributes {
        Attributes::Resource(ResourceAttributes {
            namespace: ns.into(),
            verb: verb.into(),
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
        })
    }

    /// A non-resource request.
    pub fn path(verb: &str, p: &str) -> Attributes {
        Attributes::NonResource(NonResourceAttributes {
            path: p.into(),
            verb: verb.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{path, res};
    use super::*;

    #[test]
    fn decisions_for_each_identity() {
        let admin = UserInfo::new(
            "kubernetes-admin",
            &["system:masters", "system:authenticated"],
        );
        let viewer = UserInfo::new("viewer", &["system:authenticated"]);
        let mb = UserInfo::service_account("kube-system", "metrics-bridge", "");
        let hpa = UserInfo::service_account("kube-system", "horizontal-pod-autoscaler", "");
        let agg = UserInfo::new("system:kube-aggregator", &["system:authenticated"]);
        let anon = UserInfo::anonymous();
        let other_sa = UserInfo::service_account("default", "metrics-bridge", "");
        let sim = UserInfo::service_account("kube-system", "kube-sim", "");
        let cases: &[(&UserInfo, Attributes, bool)] = &[
            (
                &sim,
                res("create", "", "pods", "binding", "team-a", "p"),
                true,
            ),
            (&sim, res("patch", "", "nodes", "status", "", "n1"), true),
            (
                &sim,
                res("deletecollection", "", "pods", "", "team-a", ""),
                true,
            ),
            (
                &sim,
                res(
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "",
                    "kube-node-lease",
                    "n1",
                ),
                true,
            ),
            (&sim, res("create", "", "namespaces", "", "", ""), true),
            (&sim, res("get", "", "nodes", "metrics", "", "n1"), false),
            (
                &sim,
                res("create", "", "configmaps", "", "kube-system", ""),
                false,
            ),
            (
                &sim,
                res(
                    "get",
                    "",
                    "configmaps",
                    "",
                    "kube-system",
                    "extension-apiserver-authentication",
                ),
                true,
            ),
            (&admin, res("delete", "", "nodes", "", "", "n1"), true),
            (&admin, path("post", "/sim/pods"), true),
            (
                &viewer,
                res("list", "metrics.k8s.io", "pods", "", "default", ""),
                true,
            ),
            (
                &viewer,
                res("get", "metrics.k8s.io", "pods", "", "default", "p"),
                true,
            ),
            (
                &viewer,
                res("list", "metrics.k8s.io", "nodes", "", "", ""),
                false,
            ),
            (&viewer, res("list", "", "nodes", "", "", ""), false),
            (
                &viewer,
                res("watch", "metrics.k8s.io", "pods", "", "", ""),
                false,
            ),
            (&viewer, path("get", "/apis/metrics.k8s.io/v1beta1"), true),
            (&viewer, path("get", "/metrics"), false),
            (&mb, res("get", "", "nodes", "metrics", "", "node-1"), true),
            (&mb, res("get", "", "nodes", "proxy", "", "node-1"), false),
            (&mb, res("get", "", "nodes", "stats", "", "node-1"), false),
            (&mb, res("watch", "", "pods", "", "", ""), true),
            (&mb, res("list", "", "nodes", "", "", ""), true),
            (&mb, res("delete", "", "pods", "", "ns", "p"), false),
            (
                &mb,
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
                &mb,
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
                &mb,
                res(
                    "watch",
                    "",
                    "configmaps",
                    "",
                    "kube-system",
                    "extension-apiserver-authentication",
                ),
                true,
            ),
            (
                &mb,
                res(
                    "get",
                    "",
                    "configmaps",
                    "",
                    "default",
                    "extension-apiserver-authentication",
                ),
                false,
            ),
            (
                &mb,
                res("list", "", "configmaps", "", "kube-system", ""),
                false,
            ),
            (
                &mb,
                res("get", "", "configmaps", "", "kube-system", "other"),
                false,
            ),
            (&other_sa, res("list", "", "nodes", "", "", ""), false),
            (
                &hpa,
                res("list", "metrics.k8s.io", "pods", "", "default", ""),
                true,
            ),
            (
                &hpa,
                res("list", "metrics.k8s.io", "nodes", "", "", ""),
                false,
            ),
            (&agg, res("list", "", "services", "", "", ""), true),
            (
                &agg,
                res("list", "metrics.k8s.io", "pods", "", "", ""),
                false,
            ),
            (&anon, path("get", "/healthz"), true),
            (&anon, path("get", "/version"), true),
            (&anon, path("get", "/api"), false),
            (&anon, res("list", "", "nodes", "", "", ""), false),
        ];
        for (user, attrs, want) in cases {
            let d = authorize(user, attrs);
            assert_eq!(d.allowed, *want, "{} {attrs:?}: {d:?}", user.username);
            assert_eq!(d.reason.is_empty(), !want);
        }
    }

    #[test]
    fn allow_reasons_read_like_rbac() {
        let mb = UserInfo::service_account("kube-system", "metrics-bridge", "");
        let d = authorize(&mb, &res("get", "", "nodes", "metrics", "", "n"));
        assert_eq!(
            d.reason,
            r#"RBAC: allowed by ClusterRoleBinding "system:metrics-server" of ClusterRole "system:metrics-server" to ServiceAccount "metrics-bridge/kube-system""#
        );
        let d = authorize(
            &mb,
            &res(
                "get",
                "",
                "configmaps",
                "",
                "kube-system",
                "extension-apiserver-authentication",
            ),
        );
        assert_eq!(
            d.reason,
            r#"RBAC: allowed by RoleBinding "metrics-server-auth-reader/kube-system" of Role "extension-apiserver-authentication-reader" to ServiceAccount "metrics-bridge/kube-system""#
        );
    }

    #[test]
    fn bearer_parsing() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&v("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer ")), None);
    }

    #[test]
    fn the_docs_print_the_policy_in_force() {
        let docs = include_str!("../../../docs/kube-sim.md");
        assert!(
            docs.contains(&policy_markdown()),
            "docs/kube-sim.md is out of date: paste `kube-sim --print-policy` into it"
        );
    }

    #[test]
    fn policy_table_lists_every_rule() {
        let md = policy_markdown();
        let rules: usize = POLICY.iter().map(|b| b.rules.len()).sum();
        assert_eq!(md.lines().count(), rules + 2);
        assert!(md.contains("`nodes/metrics`"));
    }
}
