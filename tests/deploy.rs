//! `deploy/`: the kustomize base, its overlays and the rendered `deploy/components.yaml`.
//!
//! - Every entry point renders with real kubectl (1.27, this machine's, and 1.33), and all of
//!   them render it byte for byte the same; `deploy/components.yaml` is the base's rendering.
//! - Every object of every rendering validates for Kubernetes 1.27 to 1.34 with
//!   kubernetes-validate's strict schemas; the CRD kinds (ServiceMonitor, cert-manager's Issuer
//!   and Certificate) against models of their CRD schemas (`tests/deploy/validate.py`). The
//!   validators are shown to reject broken objects, so a pass means something.
//! - What the manifests say is checked value by value: the objects each entry point holds,
//!   the Deployment's args (parsed by metrics-bridge's own option loader), probes, security
//!   context and sizing, the RBAC rules and who they are bound to, and that the names one
//!   object uses to refer to another (Service, Secret, Certificate, ports, labels) agree.
//! - The Dockerfile runs the binary as the user the Deployment declares.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_bridge::cluster::NodeAddressType;
use metrics_bridge::options::{Invocation, Options};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every kustomization a user can apply, relative to `deploy/`.
const ENTRY_POINTS: &[&str] = &[
    "base",
    "overlays/high-availability",
    "overlays/prometheus",
    "overlays/cert-manager",
    "overlays/full",
];

/// The kubectl the tests render with, and two others whose embedded kustomize differs
/// (v5.0.1 in 1.27, v5.6.0 in 1.33).
const KUBECTL: &str = "/usr/bin/kubectl";
const OTHER_KUBECTLS: &[&str] = &[
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
];

/// The Kubernetes versions every manifest must be valid for.
const KUBERNETES: &[&str] = &[
    "1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33", "1.34",
];

const NAMESPACE: &str = "kube-system";
const APP_LABEL: (&str, &str) = ("k8s-app", "metrics-bridge");

fn deploy_dir() -> PathBuf {
    Path::new(ROOT).join("deploy")
}

/// `kubectl kustomize deploy/<entry>` with `kubectl`; panics with kubectl's stderr.
fn kustomize(kubectl: &str, entry: &str) -> String {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy_dir().join(entry))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {kubectl}: {e}"));
    assert!(
        out.status.success(),
        "{kubectl} kustomize deploy/{entry} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// One result line of `validate.py`.
#[derive(Debug, serde::Deserialize)]
struct Check {
    file: String,
    index: usize,
    kind: Option<String>,
    name: Option<String>,
    validator: String,
    ok: bool,
    error: Option<String>,
}

/// What `validate.py` reports about a set of files: their documents, and every check.
#[derive(Debug)]
struct Validation {
    /// (file, documents in order)
    files: Vec<(String, Vec<Value>)>,
    checks: Vec<Check>,
}

impl Validation {
    fn documents(&self, file: &str) -> &[Value] {
        self.files
            .iter()
            .find(|(f, _)| f == file)
            .map(|(_, docs)| docs.as_slice())
            .unwrap_or_else(|| panic!("validate.py reported nothing for {file}"))
    }
}

/// Runs `tests/deploy/validate.py` over `files` for every version in [`KUBERNETES`].
fn validate(files: &[PathBuf]) -> Validation {
    let script = Path::new(ROOT).join("tests/deploy/validate.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    for v in KUBERNETES {
        cmd.arg("--kubernetes").arg(v);
    }
    cmd.args(files);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (are tests/requirements.txt installed?): {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("validate.py prints JSON");
    let mut files_docs: Vec<(String, Vec<Value>)> = Vec::new();
    for entry in report["documents"].as_array().expect("documents") {
        let file = entry[0].as_str().expect("file").to_string();
        let index = entry[1].as_u64().expect("index") as usize;
        let doc = entry[2].clone();
        match files_docs.iter_mut().find(|(f, _)| *f == file) {
            Some((_, docs)) => {
                assert_eq!(docs.len(), index, "documents of {file} out of order");
                docs.push(doc);
            }
            None => files_docs.push((file, vec![doc])),
        }
    }
    let checks = serde_json::from_value(report["results"].clone()).expect("results");
    Validation {
        files: files_docs,
        checks,
    }
}

/// Every entry point rendered once with [`KUBECTL`], written to a temp dir, plus
/// `deploy/components.yaml`, validated in one run (the validators take seconds to load).
struct Rendered {
    _dir: tempfile::TempDir,
    /// (entry point, rendered YAML, path of the rendering)
    entries: Vec<(&'static str, String, PathBuf)>,
    components_yaml: PathBuf,
    validation: Validation,
}

fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut entries = Vec::new();
        for entry in ENTRY_POINTS {
            let yaml = kustomize(KUBECTL, entry);
            let path = dir.path().join(format!("{}.yaml", entry.replace('/', "-")));
            std::fs::write(&path, &yaml).expect("write rendering");
            entries.push((*entry, yaml, path));
        }
        let components_yaml = deploy_dir().join("components.yaml");
        let mut files: Vec<PathBuf> = entries.iter().map(|(_, _, p)| p.clone()).collect();
        files.push(components_yaml.clone());
        let validation = validate(&files);
        Rendered {
            _dir: dir,
            entries,
            components_yaml,
            validation,
        }
    })
}

/// The objects of one entry point's rendering.
fn objects(entry: &str) -> &'static [Value] {
    let r = rendered();
    let (_, _, path) = r
        .entries
        .iter()
        .find(|(e, _, _)| *e == entry)
        .unwrap_or_else(|| panic!("no entry point {entry}"));
    r.validation.documents(&path.to_string_lossy())
}

fn kind_name(obj: &Value) -> (String, String) {
    (
        obj["kind"].as_str().unwrap_or_default().to_string(),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The one object of `kind` named `name`.
fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objs
        .iter()
        .filter(|o| kind_name(o) == (kind.to_string(), name.to_string()))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{kind}/{name} in {:?}",
        objs.iter().map(kind_name).collect::<Vec<_>>()
    );
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")))
        .collect()
}

fn container(objs: &[Value]) -> &Value {
    let containers =
        &find(objs, "Deployment", "metrics-bridge")["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "{containers}");
    &containers[0]
}

/// The objects every entry point holds: the base.
const BASE_OBJECTS: &[(&str, &str)] = &[
    ("APIService", "v1.metrics.k8s.io"),
    ("APIService", "v1beta1.metrics.k8s.io"),
    ("ClusterRole", "system:aggregated-metrics-reader"),
    ("ClusterRole", "system:metrics-bridge"),
    ("ClusterRoleBinding", "metrics-bridge:system:auth-delegator"),
    ("ClusterRoleBinding", "system:metrics-bridge"),
    ("Deployment", "metrics-bridge"),
    ("RoleBinding", "metrics-bridge-auth-reader"),
    ("Service", "metrics-bridge"),
    ("ServiceAccount", "metrics-bridge"),
];
const HA_OBJECTS: &[(&str, &str)] = &[("PodDisruptionBudget", "metrics-bridge")];
const PROMETHEUS_OBJECTS: &[(&str, &str)] = &[
    ("ClusterRole", "metrics-bridge:metrics-reader"),
    ("ClusterRoleBinding", "metrics-bridge:prometheus"),
    ("Role", "metrics-bridge:prometheus-discovery"),
    ("RoleBinding", "metrics-bridge:prometheus-discovery"),
    ("ServiceMonitor", "metrics-bridge"),
];
const CERT_MANAGER_OBJECTS: &[(&str, &str)] = &[
    ("Certificate", "metrics-bridge-ca"),
    ("Certificate", "metrics-bridge-serving"),
    ("Issuer", "metrics-bridge-ca"),
    ("Issuer", "metrics-bridge-selfsigned"),
];

fn expected_objects(entry: &str) -> BTreeSet<(String, String)> {
    let extra: &[&[(&str, &str)]] = match entry {
        "base" => &[],
        "overlays/high-availability" => &[HA_OBJECTS],
        "overlays/prometheus" => &[PROMETHEUS_OBJECTS],
        "overlays/cert-manager" => &[CERT_MANAGER_OBJECTS],
        "overlays/full" => &[HA_OBJECTS, PROMETHEUS_OBJECTS, CERT_MANAGER_OBJECTS],
        other => panic!("unknown entry point {other}"),
    };
    std::iter::once(BASE_OBJECTS)
        .chain(extra.iter().copied())
        .flatten()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Rendering

#[test]
fn every_entry_point_renders_identically_with_kubectl_1_27_to_1_33() {
    for (entry, yaml, _) in &rendered().entries {
        for kubectl in OTHER_KUBECTLS {
            let other = kustomize(kubectl, entry);
            assert!(
                other == *yaml,
                "{kubectl} renders deploy/{entry} differently from {KUBECTL}"
            );
        }
    }
}

#[test]
fn components_yaml_is_the_rendered_base() {
    let r = rendered();
    let on_disk = std::fs::read_to_string(&r.components_yaml).expect("deploy/components.yaml");
    let (_, base, _) = &r.entries[0];
    assert!(
        on_disk == *base,
        "deploy/components.yaml is out of date with deploy/base; regenerate it with \
         `kubectl kustomize deploy/base > deploy/components.yaml`"
    );
}

#[test]
fn each_entry_point_holds_exactly_its_objects() {
    for entry in ENTRY_POINTS {
        let objs = objects(entry);
        let got: Vec<(String, String)> = objs.iter().map(kind_name).collect();
        let unique: BTreeSet<(String, String)> = got.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "{entry}: duplicate objects {got:?}"
        );
        assert_eq!(unique, expected_objects(entry), "{entry}");
        for obj in objs {
            let (kind, name) = kind_name(obj);
            assert_eq!(
                obj["metadata"]["labels"][APP_LABEL.0], APP_LABEL.1,
                "{entry}: {kind}/{name} lacks the {}={} label every object carries",
                APP_LABEL.0, APP_LABEL.1
            );
            let cluster_scoped = matches!(
                kind.as_str(),
                "APIService" | "ClusterRole" | "ClusterRoleBinding"
            );
            let namespace = &obj["metadata"]["namespace"];
            if cluster_scoped {
                assert!(
                    namespace.is_null(),
                    "{entry}: {kind}/{name} has a namespace"
                );
            } else {
                assert_eq!(namespace, NAMESPACE, "{entry}: {kind}/{name}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

#[test]
fn every_manifest_validates_for_kubernetes_1_27_to_1_34() {
    let r = rendered();
    let v = &r.validation;
    let failures: Vec<String> = v
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{} #{} {:?}/{:?} [{}]: {}",
                c.file,
                c.index,
                c.kind,
                c.name,
                c.validator,
                c.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "invalid manifests:\n{}",
        failures.join("\n")
    );

    // Every document was checked, by the right validator and as often as it should be: once
    // per Kubernetes version for built-in kinds, once against its CRD otherwise.
    let crd_kinds = ["ServiceMonitor", "Certificate", "Issuer"];
    let mut expected = 0;
    for (file, docs) in &v.files {
        for (index, doc) in docs.iter().enumerate() {
            let kind = doc["kind"].as_str().unwrap_or_default();
            let validators: Vec<&str> = v
                .checks
                .iter()
                .filter(|c| c.file == *file && c.index == index)
                .map(|c| c.validator.as_str())
                .collect();
            let want: Vec<String> = if crd_kinds.contains(&kind) {
                vec![format!(
                    "crd {} {kind}",
                    doc["apiVersion"].as_str().unwrap_or("")
                )]
            } else {
                KUBERNETES
                    .iter()
                    .map(|k| format!("kubernetes {k}.0 strict"))
                    .collect()
            };
            assert_eq!(validators, want, "{file} #{index} ({kind})");
            expected += want.len();
        }
    }
    assert_eq!(v.checks.len(), expected);
    // All renderings and components.yaml were read, with every object.
    assert_eq!(v.files.len(), ENTRY_POINTS.len() + 1);
    for (entry, _, path) in &r.entries {
        assert_eq!(
            v.documents(&path.to_string_lossy()).len(),
            expected_objects(entry).len(),
            "{entry}"
        );
    }
    assert_eq!(
        v.documents(&r.components_yaml.to_string_lossy()).len(),
        BASE_OBJECTS.len()
    );
}

#[test]
fn the_validators_reject_what_a_cluster_would() {
    // One valid object, then one mistake per validator, so a pass above is not a validator
    // that accepts everything.
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: ok, namespace: kube-system}
spec: {ports: [{name: https, port: 443, targetPort: https}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: typo}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
---
apiVersion: v1
kind: Service
metadata: {name: wrong-type}
spec: {ports: [{port: "443"}]}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: unknown-field}
spec:
  selector: {}
  endpoints: [{port: https, bearerTokenFil: /token}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: bad-enum}
spec:
  selector: {}
  endpoints: [{port: https, scheme: httpx}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: missing-issuer}
spec: {secretName: s, dnsNames: [a]}
---
apiVersion: example.com/v1
kind: Unknown
metadata: {name: no-schema}
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, yaml).expect("write");
    let v = validate(std::slice::from_ref(&path));
    let mut verdicts: Vec<(String, bool, usize)> = Vec::new();
    for c in &v.checks {
        let name = c.name.clone().unwrap_or_default();
        match verdicts.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, ok, count)) => {
                assert_eq!(*ok, c.ok, "{name}: verdicts differ between versions");
                *count += 1;
            }
            None => verdicts.push((name, c.ok, 1)),
        }
    }
    let n = KUBERNETES.len();
    assert_eq!(
        verdicts,
        vec![
            ("ok".to_string(), true, n),
            ("typo".to_string(), false, n),
            ("wrong-type".to_string(), false, n),
            ("unknown-field".to_string(), false, 1),
            ("bad-enum".to_string(), false, 1),
            ("missing-issuer".to_string(), false, 1),
            ("no-schema".to_string(), false, n),
        ]
    );
    let error = |name: &str| {
        v.checks
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .and_then(|c| c.error.clone())
            .unwrap_or_default()
    };
    assert!(
        error("typo").contains("'replica' was unexpected"),
        "{}",
        error("typo")
    );
    assert!(
        error("unknown-field").contains("bearerTokenFil: not a field of the CRD schema"),
        "{}",
        error("unknown-field")
    );
    assert!(
        error("missing-issuer").contains("issuerRef"),
        "{}",
        error("missing-issuer")
    );
}

// ---------------------------------------------------------------------------------------------
// The base, value by value

#[test]
fn the_deployment_args_are_metrics_servers_and_metrics_bridge_accepts_them() {
    for entry in ENTRY_POINTS {
        let objs = objects(entry);
        let c = container(objs);
        let args = strings(&c["args"]);
        let base_args = [
            "--cert-dir=/tmp",
            "--secure-port=10250",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s",
        ];
        assert_eq!(&args[..base_args.len()], base_args, "{entry}");

        let argv = std::iter::once("metrics-bridge").chain(args.iter().copied());
        let options = match Options::load(argv, |_| None) {
            Ok(Invocation::Run { options, .. }) => options,
            Ok(other) => panic!("{entry}: args {args:?} do not run the server: {other:?}"),
            Err(e) => panic!("{entry}: metrics-bridge rejects args {args:?}: {e}"),
        };
        assert_eq!(
            options.metric_resolution,
            Duration::from_secs(15),
            "{entry}"
        );
        assert!(options.kubelet.use_node_status_port, "{entry}");
        assert_eq!(
            options.kubelet.preferred_address_types,
            [
                NodeAddressType::InternalIP,
                NodeAddressType::ExternalIP,
                NodeAddressType::Hostname
            ],
            "{entry}"
        );
        // The port serves what the container declares, the probes and the Service use.
        assert_eq!(
            c["ports"],
            json!([{"name": "https", "containerPort": options.serving.secure_port, "protocol": "TCP"}]),
            "{entry}"
        );
        // --cert-dir is the writable emptyDir.
        let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
        let tmp = mounts
            .iter()
            .find(|m| m["mountPath"] == "/tmp")
            .unwrap_or_else(|| panic!("{entry}: nothing mounted on /tmp"));
        assert_eq!(Path::new("/tmp"), options.serving.cert_dir.as_path());
        let volumes =
            &find(objs, "Deployment", "metrics-bridge")["spec"]["template"]["spec"]["volumes"];
        let tmp_volume = volumes
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == tmp["name"])
            .unwrap_or_else(|| panic!("{entry}: no volume {}", tmp["name"]));
        assert_eq!(tmp_volume["emptyDir"], json!({}), "{entry}");

        let cert_manager = expected_objects(entry).contains(&(
            "Certificate".to_string(),
            "metrics-bridge-serving".to_string(),
        ));
        if cert_manager {
            assert_eq!(args.len(), base_args.len() + 2, "{entry}: {args:?}");
            assert_eq!(
                options.serving.tls_cert_file.as_deref(),
                Some(Path::new("/etc/metrics-bridge/tls/tls.crt"))
            );
            assert_eq!(
                options.serving.tls_private_key_file.as_deref(),
                Some(Path::new("/etc/metrics-bridge/tls/tls.key"))
            );
        } else {
            assert_eq!(args.len(), base_args.len(), "{entry}: {args:?}");
            assert_eq!(options.serving.tls_cert_file, None);
        }
    }
}

#[test]
fn the_deployment_is_hardened_probed_and_sized() {
    for entry in ENTRY_POINTS {
        let objs = objects(entry);
        let deployment = find(objs, "Deployment", "metrics-bridge");
        let pod = &deployment["spec"]["template"]["spec"];
        let c = container(objs);
        assert_eq!(
            c["securityContext"],
            json!({
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "allowPrivilegeEscalation": false,
                "seccompProfile": {"type": "RuntimeDefault"},
                "capabilities": {"drop": ["ALL"]},
            }),
            "{entry}"
        );
        for (probe, path, delay) in [
            ("readinessProbe", "/readyz", Some(20)),
            ("livenessProbe", "/livez", None),
        ] {
            let mut want = json!({
                "httpGet": {"path": path, "port": "https", "scheme": "HTTPS"},
                "periodSeconds": 10,
                "failureThreshold": 3,
            });
            if let Some(d) = delay {
                want["initialDelaySeconds"] = json!(d);
            }
            assert_eq!(c[probe], want, "{entry}: {probe}");
        }
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "50m", "memory": "64Mi"}}),
            "{entry}"
        );
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            pod["priorityClassName"], "system-cluster-critical",
            "{entry}"
        );
        assert_eq!(
            pod["nodeSelector"],
            json!({"kubernetes.io/os": "linux"}),
            "{entry}"
        );
        assert_eq!(pod["serviceAccountName"], "metrics-bridge", "{entry}");
        // The pod carries the label every selector uses, and the Deployment selects it.
        assert_eq!(
            pod.get("hostNetwork"),
            None,
            "{entry}: the pod must not need the host network"
        );
        assert_eq!(
            deployment["spec"]["selector"],
            json!({"matchLabels": {"k8s-app": "metrics-bridge"}})
        );
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"],
            json!({"k8s-app": "metrics-bridge"})
        );
    }
}

#[test]
fn the_image_is_named_once_with_the_crate_version() {
    let want = format!(
        "ghcr.io/metrics-bridge/metrics-bridge:v{}",
        env!("CARGO_PKG_VERSION")
    );
    for entry in ENTRY_POINTS {
        assert_eq!(container(objects(entry))["image"], want.as_str(), "{entry}");
    }
    // Only the base's kustomization sets it; the Deployment names a placeholder.
    let deployment = std::fs::read_to_string(deploy_dir().join("base/deployment.yaml"))
        .expect("deploy/base/deployment.yaml");
    assert!(
        deployment.contains("image: metrics-bridge\n"),
        "{deployment}"
    );
    let mut setters = Vec::new();
    for file in walk(&deploy_dir()) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if file.file_name().is_some_and(|n| n == "kustomization.yaml") && text.contains("images:") {
            setters.push(file);
        }
    }
    assert_eq!(setters, [deploy_dir().join("base/kustomization.yaml")]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_service_and_apiservices_lead_to_the_container() {
    for entry in ENTRY_POINTS {
        let objs = objects(entry);
        let service = find(objs, "Service", "metrics-bridge");
        assert_eq!(
            service["spec"],
            json!({
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"}],
                "selector": {"k8s-app": "metrics-bridge"},
            }),
            "{entry}"
        );
        let names: Vec<&str> = container(objs)["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["https"],
            "{entry}: the Service's targetPort names this port"
        );

        let cert_manager = entry.contains("cert-manager") || *entry == "overlays/full";
        let mut priorities = Vec::new();
        for version in ["v1beta1", "v1"] {
            let api = find(objs, "APIService", &format!("{version}.metrics.k8s.io"));
            let spec = &api["spec"];
            assert_eq!(spec["group"], "metrics.k8s.io");
            assert_eq!(spec["version"], version);
            assert_eq!(
                spec["service"],
                json!({"name": "metrics-bridge", "namespace": NAMESPACE, "port": 443})
            );
            assert_eq!(spec["groupPriorityMinimum"], 100, "as metrics-server");
            priorities.push(spec["versionPriority"].as_i64().expect("versionPriority"));
            let annotations = &api["metadata"]["annotations"];
            if cert_manager {
                assert!(
                    spec.get("insecureSkipTLSVerify").is_none(),
                    "{entry}: {spec}"
                );
                assert!(spec.get("caBundle").is_none(), "cert-manager injects it");
                assert_eq!(
                    annotations,
                    &json!({"cert-manager.io/inject-ca-from": "kube-system/metrics-bridge-serving"}),
                    "{entry}"
                );
            } else {
                assert_eq!(spec["insecureSkipTLSVerify"], true, "{entry}");
                assert!(annotations.is_null(), "{entry}: {annotations}");
            }
        }
        // v1beta1 at metrics-server's 100, above v1: it stays the preferred version.
        assert_eq!(priorities, [100, 50], "{entry}");
    }
}

#[test]
fn rbac_grants_the_service_account_what_metrics_server_has() {
    for entry in ENTRY_POINTS {
        let objs = objects(entry);
        let sa = find(objs, "ServiceAccount", "metrics-bridge");
        assert_eq!(sa["metadata"]["namespace"], NAMESPACE);
        let subject =
            json!([{"kind": "ServiceAccount", "name": "metrics-bridge", "namespace": NAMESPACE}]);

        assert_eq!(
            find(objs, "ClusterRole", "system:metrics-bridge")["rules"],
            json!([
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ])
        );
        let reader = find(objs, "ClusterRole", "system:aggregated-metrics-reader");
        assert_eq!(
            reader["rules"],
            json!([{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}])
        );
        for aggregate in ["view", "edit", "admin"] {
            assert_eq!(
                reader["metadata"]["labels"]
                    [format!("rbac.authorization.k8s.io/aggregate-to-{aggregate}")],
                "true"
            );
        }
        for (kind, name, role_kind, role) in [
            (
                "ClusterRoleBinding",
                "system:metrics-bridge",
                "ClusterRole",
                "system:metrics-bridge",
            ),
            (
                "ClusterRoleBinding",
                "metrics-bridge:system:auth-delegator",
                "ClusterRole",
                "system:auth-delegator",
            ),
            (
                "RoleBinding",
                "metrics-bridge-auth-reader",
                "Role",
                "extension-apiserver-authentication-reader",
            ),
        ] {
            let b = find(objs, kind, name);
            assert_eq!(
                b["roleRef"],
                json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role}),
                "{entry}: {kind}/{name}"
            );
            assert_eq!(b["subjects"], subject, "{entry}: {kind}/{name}");
        }
        // Exactly three bindings name the server's service account.
        let bound = objs
            .iter()
            .filter(|o| {
                o["subjects"]
                    .as_array()
                    .is_some_and(|s| s.contains(&subject[0]))
            })
            .count();
        assert_eq!(bound, 3, "{entry}");
    }
}

// ---------------------------------------------------------------------------------------------
// The components

#[test]
fn high_availability_spreads_two_replicas_and_keeps_one() {
    for entry in ["overlays/high-availability", "overlays/full"] {
        let objs = objects(entry);
        let deployment = find(objs, "Deployment", "metrics-bridge");
        let spec = &deployment["spec"];
        let pod_labels = &spec["template"]["metadata"]["labels"];
        assert_eq!(spec["replicas"], 2, "{entry}");
        assert_eq!(
            spec["strategy"],
            json!({"rollingUpdate": {"maxUnavailable": 1}})
        );
        assert_eq!(
            spec["template"]["spec"]["affinity"],
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": pod_labels},
                "namespaces": [NAMESPACE],
                "topologyKey": "kubernetes.io/hostname",
            }]}}),
            "{entry}"
        );
        let pdb = find(objs, "PodDisruptionBudget", "metrics-bridge");
        assert_eq!(
            pdb["spec"],
            json!({"minAvailable": 1, "selector": {"matchLabels": pod_labels}}),
            "{entry}"
        );
    }
    for entry in ["base", "overlays/prometheus", "overlays/cert-manager"] {
        let deployment = find(objects(entry), "Deployment", "metrics-bridge");
        assert!(deployment["spec"].get("replicas").is_none(), "{entry}");
        assert_eq!(
            deployment["spec"]["strategy"],
            json!({"rollingUpdate": {"maxUnavailable": 0}})
        );
    }
}

#[test]
fn prometheus_scrapes_both_endpoints_with_a_token_it_may_use() {
    for entry in ["overlays/prometheus", "overlays/full"] {
        let objs = objects(entry);
        let monitor = find(objs, "ServiceMonitor", "metrics-bridge");
        let service = find(objs, "Service", "metrics-bridge");
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"],
            "{entry}: the ServiceMonitor selects the Service"
        );
        assert_eq!(
            monitor["spec"]["namespaceSelector"],
            json!({"matchNames": [NAMESPACE]})
        );
        let tls = if entry == "overlays/full" {
            json!({
                "serverName": "metrics-bridge.kube-system.svc",
                "ca": {"secret": {"name": "metrics-bridge-tls", "key": "ca.crt"}},
            })
        } else {
            json!({"insecureSkipVerify": true})
        };
        let token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
        assert_eq!(
            monitor["spec"]["endpoints"],
            json!([
                {"port": "https", "path": "/metrics", "scheme": "https",
                 "bearerTokenFile": token, "tlsConfig": tls},
                {"port": "https", "path": "/metrics/resource", "scheme": "https", "interval": "15s",
                 "honorLabels": true, "honorTimestamps": true,
                 "bearerTokenFile": token, "tlsConfig": tls},
            ]),
            "{entry}"
        );
        // The scraped paths are exactly the ones Prometheus may get.
        let paths: BTreeSet<&str> = monitor["spec"]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| e["path"].as_str())
            .collect();
        let reader = find(objs, "ClusterRole", "metrics-bridge:metrics-reader");
        assert_eq!(reader["rules"].as_array().map(Vec::len), Some(1));
        assert_eq!(strings(&reader["rules"][0]["verbs"]), ["get"]);
        let granted: BTreeSet<&str> = strings(&reader["rules"][0]["nonResourceURLs"])
            .into_iter()
            .collect();
        assert_eq!(granted, paths, "{entry}");

        let prometheus = json!([{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]);
        let binding = find(objs, "ClusterRoleBinding", "metrics-bridge:prometheus");
        assert_eq!(binding["roleRef"]["name"], "metrics-bridge:metrics-reader");
        assert_eq!(binding["subjects"], prometheus);
        let discovery = find(objs, "Role", "metrics-bridge:prometheus-discovery");
        assert_eq!(
            discovery["rules"],
            json!([
                {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            ])
        );
        let discovery_binding = find(objs, "RoleBinding", "metrics-bridge:prometheus-discovery");
        assert_eq!(
            discovery_binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "metrics-bridge:prometheus-discovery"})
        );
        assert_eq!(discovery_binding["subjects"], prometheus);
    }
}

#[test]
fn cert_manager_issues_the_certificate_the_server_and_its_clients_use() {
    for entry in ["overlays/cert-manager", "overlays/full"] {
        let objs = objects(entry);
        let serving = find(objs, "Certificate", "metrics-bridge-serving");
        let service = find(objs, "Service", "metrics-bridge");
        let service_name = format!(
            "{}.{}.svc",
            service["metadata"]["name"].as_str().expect("name"),
            service["metadata"]["namespace"]
                .as_str()
                .expect("namespace")
        );
        let dns = strings(&serving["spec"]["dnsNames"]);
        assert_eq!(
            dns[0], service_name,
            "{entry}: the name kube-apiserver dials"
        );
        assert_eq!(
            serving["spec"]["usages"],
            json!(["server auth", "digital signature"])
        );
        assert_eq!(
            serving["spec"]["issuerRef"],
            json!({"group": "cert-manager.io", "kind": "Issuer", "name": "metrics-bridge-ca"})
        );
        // The chain: a self-signed issuer makes the CA, whose issuer signs the serving cert.
        let ca_issuer = find(objs, "Issuer", "metrics-bridge-ca");
        let ca = find(objs, "Certificate", "metrics-bridge-ca");
        assert_eq!(ca["spec"]["isCA"], true);
        assert_eq!(
            ca_issuer["spec"]["ca"]["secretName"],
            ca["spec"]["secretName"]
        );
        let selfsigned = find(objs, "Issuer", "metrics-bridge-selfsigned");
        assert_eq!(selfsigned["spec"], json!({"selfSigned": {}}));
        assert_eq!(ca["spec"]["issuerRef"]["name"], "metrics-bridge-selfsigned");

        // The Secret the certificate lands in is what the container mounts and reads.
        let pod = &find(objs, "Deployment", "metrics-bridge")["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["secret"]["secretName"] == serving["spec"]["secretName"])
            .unwrap_or_else(|| panic!("{entry}: no volume of the serving Secret"));
        assert_eq!(volume["secret"]["defaultMode"], 0o440);
        assert_eq!(pod["securityContext"], json!({"fsGroup": 1000}));
        let mount = container(objs)["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("{entry}: the serving Secret is not mounted"));
        assert_eq!(
            mount,
            &json!({"name": volume["name"], "mountPath": "/etc/metrics-bridge/tls", "readOnly": true})
        );
        assert!(
            mount.get("subPath").is_none(),
            "a subPath mount never sees renewals"
        );
        // inject-ca-from names this Certificate (checked on the APIServices above).
        assert_eq!(
            format!(
                "{}/{}",
                serving["metadata"]["namespace"].as_str().unwrap_or(""),
                serving["metadata"]["name"].as_str().unwrap_or("")
            ),
            "kube-system/metrics-bridge-serving"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn the_dockerfile_builds_the_binary_and_runs_it_as_the_deployments_user() {
    let dockerfile =
        std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let stages: Vec<&&str> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    let final_stage: Vec<&str> = lines
        .iter()
        .skip_while(|l| **l != *stages[1])
        .copied()
        .collect();
    assert!(
        dockerfile.contains("cargo build --release --locked --bin metrics-bridge"),
        "{dockerfile}"
    );
    assert!(final_stage.contains(&"USER 1000:1000"), "{final_stage:?}");
    assert!(
        final_stage.contains(&r#"ENTRYPOINT ["/usr/local/bin/metrics-bridge"]"#),
        "{final_stage:?}"
    );
    // The user the image runs as is the one the Deployment enforces.
    let sc = &container(objects("base"))["securityContext"];
    assert_eq!(
        (sc["runAsUser"].as_i64(), sc["runAsGroup"].as_i64()),
        (Some(1000), Some(1000))
    );

    let dockerignore =
        std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = dockerignore.lines().map(str::trim).collect();
    for path in ["target", ".git"] {
        assert!(ignored.contains(&path), "{path} is not in .dockerignore");
    }
}
