//! Authorization as k8s.io/apiserver's delegated authorizer decides it, in this order:
//!
//! 1. a user in an always-allowed group (`system:masters`) may do anything;
//! 2. a non-resource request for an `--authorization-always-allow-paths` path is allowed
//!    (exact paths, or prefixes ending in `*`);
//! 3. anything else is a `SubjectAccessReview` to kube-apiserver: resource attributes for
//!    API requests (verb, group, version, resource, subresource, namespace, name, and the
//!    label and field selectors as requirements), non-resource attributes (path, verb)
//!    otherwise. Allowed answers are cached for
//!    `--authorization-webhook-cache-authorized-ttl`, the others for
//!    `--authorization-webhook-cache-unauthorized-ttl`, keyed on the user and all the
//!    attributes. A review that gets no answer is an error (500), never an allow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    FieldSelectorAttributes, LabelSelectorAttributes, NonResourceAttributes, ResourceAttributes,
    SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    FieldSelectorRequirement, LabelSelectorRequirement,
};
use kube::Api;
use kube::api::PostParams;

use super::User;
use super::cache::{KeyBuilder, TtlCache};
use super::webhook::{RetryPolicy, ReviewError, with_retries};
use crate::api::RequestInfo;
use crate::selector::{FieldSelector, LabelSelector, Operator};
use crate::status::Status;

/// Requests whose attributes are longer than this are reviewed every time: k8s.io/apiserver's
/// guard against filling the cache with attacker-chosen keys.
const MAX_CACHED_ATTRIBUTES: usize = 10_000;

/// `--authorization-always-allow-paths`, matched as k8s.io/apiserver's path authorizer does.
#[derive(Debug, Clone, Default)]
pub struct AllowPaths {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AllowPaths {
    /// From paths that start with `/` and may end in `*` (the options check both).
    pub fn new(paths: &[String]) -> Self {
        let mut this = Self::default();
        for p in paths {
            match p.strip_suffix('*') {
                Some(prefix) => this.prefixes.push(prefix.to_owned()),
                None => this.exact.push(p.clone()),
            }
        }
        this
    }

    pub fn matches(&self, path: &str) -> bool {
        self.exact.iter().any(|p| p == path) || self.prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// An answer of the authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The reviewer's reason (appended to a 403 message), if any.
    pub reason: Arc<str>,
}

impl Decision {
    fn allow() -> Self {
        Self {
            allowed: true,
            reason: Arc::from(""),
        }
    }
}

/// Decides requests.
pub struct Authorizer {
    client: kube::Client,
    always_allow_groups: Vec<String>,
    paths: AllowPaths,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    retry: RetryPolicy,
    cache: Arc<TtlCache<Decision, Arc<ReviewError>>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("always_allow_groups", &self.always_allow_groups)
            .field("paths", &self.paths)
            .field("allowed_ttl", &self.allowed_ttl)
            .field("denied_ttl", &self.denied_ttl)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    pub fn new(
        client: kube::Client,
        opts: &crate::options::AuthorizationOptions,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            client,
            always_allow_groups: opts.always_allow_groups.clone(),
            paths: AllowPaths::new(&opts.always_allow_paths),
            allowed_ttl: opts.webhook_cache_authorized_ttl,
            denied_ttl: opts.webhook_cache_unauthorized_ttl,
            retry,
            cache: Arc::new(TtlCache::new(8_192)),
        }
    }

    /// The always-allowed paths (anonymous requests are admitted to them).
    pub fn allow_paths(&self) -> &AllowPaths {
        &self.paths
    }

    /// Whether `user` may do what `info` asks.
    pub async fn authorize(
        &self,
        user: &User,
        info: &RequestInfo,
    ) -> Result<Decision, Arc<ReviewError>> {
        if user
            .groups
            .iter()
            .any(|g| self.always_allow_groups.iter().any(|a| a == g))
        {
            return Ok(Decision::allow());
        }
        if !info.is_resource_request && self.paths.matches(&info.path) {
            return Ok(Decision::allow());
        }
        let retry = self.retry;
        let cacheable = attributes_size(info) < MAX_CACHED_ATTRIBUTES;
        let (allowed_ttl, denied_ttl) = (self.allowed_ttl, self.denied_ttl);
        self.cache
            .get_or_fetch(
                Instant::now(),
                cache_key(user, info),
                || {
                    // Built only on a miss: a cached decision costs the key and a lookup.
                    let client = self.client.clone();
                    let review = review_for(user, info);
                    async move {
                        let api: Api<SubjectAccessReview> = Api::all(client);
                        let params = PostParams::default();
                        let answer = with_retries(retry, "SubjectAccessReview", || {
                            api.create(&params, &review)
                        })
                        .await
                        .map_err(Arc::new)?;
                        let status = answer.status.unwrap_or_default();
                        Ok(Decision {
                            // An answer that both allows and denies is a denial.
                            allowed: status.allowed && status.denied != Some(true),
                            reason: Arc::from(status.reason.unwrap_or_default()),
                        })
                    }
                },
                move |d| cacheable.then_some(if d.allowed { allowed_ttl } else { denied_ttl }),
                |d| d.allowed,
                || {
                    Arc::new(ReviewError::Aborted {
                        what: "SubjectAccessReview",
                    })
                },
            )
            .await
    }
}

/// The length of the attributes a client controls.
fn attributes_size(info: &RequestInfo) -> usize {
    [
        &info.namespace,
        &info.verb,
        &info.api_group,
        &info.api_version,
        &info.resource,
        &info.subresource,
        &info.name,
        &info.path,
    ]
    .iter()
    .map(|s| s.len())
    .sum()
}

/// The cache key: every field of the review that would be sent.
fn cache_key(user: &User, info: &RequestInfo) -> super::cache::Key {
    let mut k = KeyBuilder::new("subjectaccessreview");
    k.str(&user.name).str(&user.uid);
    k.field(&(user.groups.len() as u64).to_le_bytes());
    for g in &user.groups {
        k.str(g);
    }
    k.field(&(user.extra.len() as u64).to_le_bytes());
    for (key, values) in &user.extra {
        k.str(key);
        k.field(&(values.len() as u64).to_le_bytes());
        for v in values {
            k.str(v);
        }
    }
    if info.is_resource_request {
        k.str("resource")
            .str(&info.namespace)
            .str(&info.verb)
            .str(&info.api_group)
            .str(&info.api_version)
            .str(&info.resource)
            .str(&info.subresource)
            .str(&info.name)
            .str(&info.label_selector)
            .str(&info.field_selector);
    } else {
        k.str("non-resource").str(&info.path).str(&info.verb);
    }
    k.finish()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// The label selector as review requirements, as k8s.io/apiserver's webhook authorizer
/// sends them: `=`, `==` and `in` become `In`, `!=` and `notin` `NotIn`; other operators
/// are left out (requirements narrow, so leaving one out only widens the question). An
/// unparsable selector sends none.
fn label_requirements(raw: &str) -> Option<LabelSelectorAttributes> {
    let selector = LabelSelector::parse(raw).ok()?;
    let requirements: Vec<LabelSelectorRequirement> = selector
        .requirements
        .iter()
        .filter_map(|r| {
            let operator = match r.operator {
                Operator::Equals | Operator::DoubleEquals | Operator::In => "In",
                Operator::NotEquals | Operator::NotIn => "NotIn",
                Operator::Exists => "Exists",
                Operator::DoesNotExist => "DoesNotExist",
                Operator::GreaterThan | Operator::LessThan => return None,
            };
            Some(LabelSelectorRequirement {
                key: r.key.clone(),
                operator: operator.to_owned(),
                values: (!r.values.is_empty()).then(|| r.values.clone()),
            })
        })
        .collect();
    (!requirements.is_empty()).then_some(LabelSelectorAttributes {
        raw_selector: None,
        requirements: Some(requirements),
    })
}

/// The field selector as review requirements (`In` / `NotIn`, one value each).
fn field_requirements(raw: &str) -> Option<FieldSelectorAttributes> {
    let selector = FieldSelector::parse(raw).ok()?;
    let requirements: Vec<FieldSelectorRequirement> = selector
        .requirements
        .iter()
        .map(|r| FieldSelectorRequirement {
            key: r.field.clone(),
            operator: if r.negated { "NotIn" } else { "In" }.to_owned(),
            values: Some(vec![r.value.clone()]),
        })
        .collect();
    (!requirements.is_empty()).then_some(FieldSelectorAttributes {
        raw_selector: None,
        requirements: Some(requirements),
    })
}

/// The review k8s.io/apiserver's webhook authorizer sends for this request.
pub fn review_for(user: &User, info: &RequestInfo) -> SubjectAccessReview {
    let mut spec = SubjectAccessReviewSpec {
        user: non_empty(&user.name),
        uid: non_empty(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
        ..SubjectAccessReviewSpec::default()
    };
    if info.is_resource_request {
        spec.resource_attributes = Some(ResourceAttributes {
            namespace: non_empty(&info.namespace),
            verb: non_empty(&info.verb),
            group: non_empty(&info.api_group),
            version: non_empty(&info.api_version),
            resource: non_empty(&info.resource),
            subresource: non_empty(&info.subresource),
            name: non_empty(&info.name),
            field_selector: field_requirements(&info.field_selector),
            label_selector: label_requirements(&info.label_selector),
        });
    } else {
        spec.non_resource_attributes = Some(NonResourceAttributes {
            path: non_empty(&info.path),
            verb: non_empty(&info.verb),
        });
    }
    SubjectAccessReview {
        spec,
        ..SubjectAccessReview::default()
    }
}

/// kube-apiserver's 403 for a denied request, with the reviewer's reason appended.
pub fn forbidden(user: &User, info: &RequestInfo, reason: &str) -> Status {
    let reason = Some(reason);
    if !info.is_resource_request {
        return Status::forbidden_path(&user.name, &info.verb, &info.path, reason);
    }
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Status::forbidden_resource(
        &user.name,
        &info.verb,
        &info.api_group,
        &resource,
        opt(&info.namespace).as_deref(),
        opt(&info.name).as_deref(),
        reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn info(path: &str, query: Option<&str>) -> RequestInfo {
        RequestInfo::new(&Method::GET, path, query).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..User::default()
        }
    }

    #[test]
    fn always_allowed_paths_match_exactly_or_by_prefix() {
        let p = AllowPaths::new(&[
            "/healthz".into(),
            "/livez".into(),
            "/debug/*".into(),
            "/".into(),
        ]);
        assert!(p.matches("/healthz"));
        assert!(
            !p.matches("/healthz/ping"),
            "exact unless the entry ends in *"
        );
        assert!(!p.matches("/healthzx"));
        assert!(p.matches("/debug/pprof"));
        assert!(p.matches("/debug/"));
        assert!(!p.matches("/debug"));
        assert!(p.matches("/"));
        assert!(!p.matches("/metrics"));
    }

    #[test]
    fn reviews_carry_kube_apiservers_attributes() {
        let mut u = user("jane", &["team", "system:authenticated"]);
        u.uid = "u-1".into();
        u.extra.insert("scopes".into(), vec!["a".into()]);
        let r = review_for(
            &u,
            &info(
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods",
                Some("labelSelector=app%3Dweb,tier!%3Dfe,gpu,x>1&fieldSelector=metadata.name%3Dp"),
            ),
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["spec"],
            serde_json::json!({
                "user": "jane",
                "uid": "u-1",
                "groups": ["team", "system:authenticated"],
                "extra": {"scopes": ["a"]},
                "resourceAttributes": {
                    "namespace": "ns",
                    "verb": "list",
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "resource": "pods",
                    "name": "p",
                    "labelSelector": {"requirements": [
                        {"key": "app", "operator": "In", "values": ["web"]},
                        {"key": "gpu", "operator": "Exists"},
                        {"key": "tier", "operator": "NotIn", "values": ["fe"]},
                    ]},
                    "fieldSelector": {"requirements": [
                        {"key": "metadata.name", "operator": "In", "values": ["p"]},
                    ]},
                },
            })
        );
        let r = review_for(&user("system:anonymous", &[]), &info("/metrics", None));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["spec"],
            serde_json::json!({
                "user": "system:anonymous",
                "nonResourceAttributes": {"path": "/metrics", "verb": "get"},
            })
        );
    }

    #[test]
    fn cache_keys_differ_in_every_attribute_and_identity_field() {
        let base = info("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p", None);
        let u = user("jane", &["g"]);
        let k0 = cache_key(&u, &base);
        assert_eq!(k0, cache_key(&u, &base.clone()));
        let mut variants = Vec::new();
        for f in 0..8 {
            let mut i = base.clone();
            match f {
                0 => i.namespace.push('x'),
                1 => i.verb = "list".into(),
                2 => i.api_group.push('x'),
                3 => i.api_version = "v1".into(),
                4 => i.resource = "nodes".into(),
                5 => i.subresource = "x".into(),
                6 => i.name.push('x'),
                _ => i.label_selector = "a=b".into(),
            }
            variants.push(cache_key(&u, &i));
        }
        let mut other = u.clone();
        other.groups.push("system:masters".into());
        variants.push(cache_key(&other, &base));
        let mut other = u.clone();
        other.extra.insert("k".into(), vec!["v".into()]);
        variants.push(cache_key(&other, &base));
        variants.push(cache_key(&user("jane2", &["g"]), &base));
        for (n, v) in variants.iter().enumerate() {
            assert_ne!(*v, k0, "variant {n}");
        }
    }

    #[test]
    fn denials_read_like_kube_apiservers() {
        let viewer = user("viewer", &[]);
        let s = forbidden(
            &viewer,
            &info("/apis/metrics.k8s.io/v1beta1/nodes", None),
            "",
        );
        assert_eq!(s.code, 403);
        assert_eq!(
            s.message,
            r#"nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API group "metrics.k8s.io" at the cluster scope"#
        );
        let s = forbidden(
            &viewer,
            &info("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p", None),
            "no RBAC policy matched",
        );
        assert_eq!(
            s.message,
            r#"pods.metrics.k8s.io "p" is forbidden: User "viewer" cannot get resource "pods" in API group "metrics.k8s.io" in the namespace "ns": no RBAC policy matched"#
        );
        let s = forbidden(&viewer, &info("/api/v1/nodes/n1/proxy", None), "");
        assert_eq!(
            s.message,
            r#"nodes "n1" is forbidden: User "viewer" cannot get resource "nodes/proxy" in API group "" at the cluster scope"#
        );
        let d = s.details.unwrap();
        assert_eq!((d.name.as_str(), d.kind.as_str()), ("n1", "nodes"));
        let s = forbidden(&viewer, &info("/metrics", None), "");
        assert_eq!(
            s.message,
            r#"forbidden: User "viewer" cannot get path "/metrics""#
        );
    }
}
