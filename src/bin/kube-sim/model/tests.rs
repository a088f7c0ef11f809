//! Model tests: determinism, page fidelity (two independent parsers plus the kubelet's own
//! expected outputs), numbers against `expected()`, dynamics, objects, scale.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use super::*;

/// 2025-06-15T15:06:40Z.
const T0: i64 = 1_750_000_000_000;

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
}

fn params(nodes: usize, pods: usize, containers: usize, seed: u64) -> SimParams {
    SimParams {
        nodes,
        first_node: 0,
        pods_per_node: pods,
        containers_per_pod: containers,
        seed,
        kubelet_port: 10250,
    }
}

fn model(nodes: usize, pods: usize, containers: usize, seed: u64) -> Model {
    Model::new(params(nodes, pods, containers, seed), at(T0))
}

fn page(m: &Model, id: NodeId, ms: i64) -> String {
    let mut out = Vec::new();
    assert!(
        m.render_resource_metrics(id, at(ms), &mut out),
        "node {id} gone"
    );
    String::from_utf8(out).unwrap()
}

/// One parsed sample: value and millisecond timestamp (None when the line has none).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    value: f64,
    ts: Option<i64>,
}

/// (metric, container, namespace, pod) → point, from the independent `prometheus-parse`.
type Points = HashMap<(String, String, String, String), Point>;

fn parse(text: &str) -> Points {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    // prometheus-parse fills in "now" for samples without a timestamp; tell them apart from
    // the text itself.
    let mut timed = std::collections::HashSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, rest) = match line.rfind('}') {
            Some(i) => line.split_at(i + 1),
            None => line.split_once(' ').unwrap(),
        };
        if rest.split_whitespace().count() == 2 {
            timed.insert(series.to_owned());
        }
    }
    let mut out = HashMap::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("unexpected value {other:?}"),
        };
        let label = |k: &str| s.labels.get(k).unwrap_or("").to_owned();
        let series = if s.labels.is_empty() {
            s.metric.clone()
        } else {
            let mut l: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            l.sort();
            format!("{}{{{}}}", s.metric, l.join(","))
        };
        let ts = timed
            .contains(&series)
            .then(|| s.timestamp.timestamp_millis());
        let key = (
            s.metric.clone(),
            label("container"),
            label("namespace"),
            label("pod"),
        );
        assert!(
            out.insert(key, Point { value, ts }).is_none(),
            "duplicate {series}"
        );
    }
    out
}

fn key(metric: &str, container: &str, ns: &str, pod: &str) -> (String, String, String, String) {
    (
        metric.to_owned(),
        container.to_owned(),
        ns.to_owned(),
        pod.to_owned(),
    )
}

fn node_of(m: &Model, ns: &str, pod: &str) -> NodeId {
    m.registry().lookup(ns, pod).unwrap().1
}

/// One pod's object by namespace and name.
fn pod_object(m: &Model, namespace: &str, name: &str) -> Option<Pod> {
    let (_, id) = m.registry().lookup(namespace, name)?;
    m.pod_objects_on_node(id)?.into_iter().find(|p| {
        p.metadata.name.as_deref() == Some(name)
            && p.metadata.namespace.as_deref() == Some(namespace)
    })
}

fn objects_json(m: &Model) -> String {
    let nodes: Vec<Node> = m
        .node_ids()
        .into_iter()
        .filter_map(|id| m.node_object(id))
        .collect();
    serde_json::to_string(&(m.namespaces(), nodes, m.pod_objects())).unwrap()
}

fn all_pages(m: &Model, ms: i64) -> Vec<String> {
    m.node_ids().into_iter().map(|id| page(m, id, ms)).collect()
}

fn statuses(p: &Pod) -> &[k8s_openapi::api::core::v1::ContainerStatus] {
    p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_deref()
        .unwrap()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().unwrap().phase.as_deref().unwrap()
}

fn running_pod(m: &Model) -> ExpectedPod {
    m.expected(at(T0))
        .pods
        .into_iter()
        .find(|p| !p.name.starts_with("kube-proxy") && p.containers.len() == 2)
        .unwrap()
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
};

#[test]
fn same_seed_same_cluster_different_seed_different_cluster() {
    let a = model(8, 10, 2, 7);
    let b = model(8, 10, 2, 7);
    assert_eq!(all_pages(&a, T0 + 15_000), all_pages(&b, T0 + 15_000));
    assert_eq!(objects_json(&a), objects_json(&b));
    assert_eq!(a.expected(at(T0)), b.expected(at(T0)));

    let c = model(8, 10, 2, 8);
    assert_ne!(all_pages(&a, T0 + 15_000), all_pages(&c, T0 + 15_000));
    let names = |m: &Model| -> Vec<String> {
        m.pod_objects()
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let (na, nc) = (names(&a), names(&c));
    assert!(
        na.iter().all(|n| !nc.contains(n)),
        "pod names repeat across seeds"
    );
    assert_ne!(a.expected(at(T0)), c.expected(at(T0)));

    // Node i does not depend on how many nodes there are.
    let small = model(3, 10, 2, 7);
    for id in 0..3 {
        assert_eq!(page(&small, id, T0 + 1), page(&a, id, T0 + 1));
    }

    // Same operations, same outcome.
    let ops = |m: &Model| {
        let mut changes = m.create_pods(5, at(T0 + 1_000));
        changes.extend(m.delete_pods_at(4, at(T0 + 2_000)));
        changes.extend(m.add_nodes(2, at(T0 + 3_000)));
        format!("{changes:?}")
    };
    assert_eq!(ops(&a), ops(&b));
    assert_eq!(objects_json(&a), objects_json(&b));
    assert_eq!(all_pages(&a, T0 + 20_000), all_pages(&b, T0 + 20_000));
}

/// Δcounter/Δt over two scrapes equals `expected()` for every node and container, memory is
/// exact, every Running container is on its node's page and nothing else is.
#[test]
fn pages_match_expected() {
    let m = model(12, 14, 2, 11);
    let t1 = T0 + 2_000;
    let t2 = t1 + 15_000;
    let exp = m.expected(at(t2));
    let mut checked_containers = 0;
    let mut pods_by_node: HashMap<NodeId, Vec<&ExpectedPod>> = HashMap::new();
    for p in &exp.pods {
        pods_by_node
            .entry(node_of(&m, &p.namespace, &p.name))
            .or_default()
            .push(p);
    }
    for (id, en) in m.node_ids().into_iter().zip(&exp.nodes) {
        assert_eq!(&*m.node_name(id).unwrap(), en.name);
        let (p1, p2) = (parse(&page(&m, id, t1)), parse(&page(&m, id, t2)));

        let rate = |a: Point, b: Point| {
            (b.value - a.value) / ((b.ts.unwrap() - a.ts.unwrap()) as f64 / 1000.0)
        };
        let nk = key("node_cpu_usage_seconds_total", "", "", "");
        let node_rate = rate(p1[&nk], p2[&nk]);
        assert!(
            (node_rate - en.cpu_cores).abs() <= en.cpu_cores * 1e-9,
            "{}: {node_rate} vs {}",
            en.name,
            en.cpu_cores
        );
        let nm = key("node_memory_working_set_bytes", "", "", "");
        assert_eq!(p2[&nm].value, en.memory_bytes as f64);
        assert!(p2[&nk].ts.unwrap() <= t2 && p2[&nk].ts.unwrap() > t2 - 5_000);

        let pods = pods_by_node.remove(&id).unwrap_or_default();
        let mut want_series = 0;
        let mut node_cpu = 0.0;
        let mut node_mem = 0;
        for p in pods {
            for c in &p.containers {
                want_series += 1;
                node_cpu += c.cpu_cores;
                node_mem += c.memory_bytes;
                let ck = key(
                    "container_cpu_usage_seconds_total",
                    &c.name,
                    &p.namespace,
                    &p.name,
                );
                let r = rate(p1[&ck], p2[&ck]);
                assert!(
                    (r - c.cpu_cores).abs() <= c.cpu_cores * 1e-9,
                    "{}/{}: {r} vs {}",
                    p.name,
                    c.name,
                    c.cpu_cores
                );
                let mk = key(
                    "container_memory_working_set_bytes",
                    &c.name,
                    &p.namespace,
                    &p.name,
                );
                assert_eq!(p2[&mk].value, c.memory_bytes as f64);
                assert_eq!(c.memory_bytes % 4096, 0);
                // The counter is exactly rate × (timestamp − start).
                let sk = key(
                    "container_start_time_seconds",
                    &c.name,
                    &p.namespace,
                    &p.name,
                );
                let start_ms = (p2[&sk].value * 1000.0).round() as i64;
                assert_eq!(p2[&sk].ts, None);
                let rate_uc = (c.cpu_cores * 1e6).round() as i64;
                let want_ns = (rate_uc * (p2[&ck].ts.unwrap() - start_ms)) as f64;
                assert!(
                    (p2[&ck].value * 1e9 - want_ns).abs() <= want_ns * 1e-15,
                    "{}: {} vs {want_ns}",
                    p.name,
                    p2[&ck].value
                );
                // Lag below 5 s; memory and swap share the CPU sample's timestamp.
                let ts = p2[&ck].ts.unwrap();
                assert!(ts <= t2 && ts > t2 - 5_000);
                assert_eq!(p2[&mk].ts, Some(ts));
                let wk = key("container_swap_usage_bytes", &c.name, &p.namespace, &p.name);
                assert_eq!(
                    p2[&wk],
                    Point {
                        value: 0.0,
                        ts: Some(ts)
                    }
                );
                checked_containers += 1;
            }
            let pm = key("pod_memory_working_set_bytes", "", &p.namespace, &p.name);
            let sum: u64 = p.containers.iter().map(|c| c.memory_bytes).sum();
            assert_eq!(p2[&pm].value, sum as f64);
            let pc = key("pod_cpu_usage_seconds_total", "", &p.namespace, &p.name);
            let want: f64 = p.containers.iter().map(|c| c.cpu_cores).sum();
            let r = rate(p1[&pc], p2[&pc]);
            assert!((r - want).abs() <= want * 1e-9);
        }
        let count = |metric: &str| p2.keys().filter(|k| k.0 == metric).count();
        assert_eq!(
            count("container_cpu_usage_seconds_total"),
            want_series,
            "{}",
            en.name
        );
        assert_eq!(count("container_start_time_seconds"), want_series);
        // Node = its containers + overhead.
        assert!(en.cpu_cores > node_cpu && en.memory_bytes > node_mem);
    }
    assert!(pods_by_node.is_empty());
    assert!(checked_containers > 300, "{checked_containers}");
}

fn families(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            let ty = lines.next().unwrap().strip_prefix("# TYPE ").unwrap();
            let (tname, kind) = ty.split_once(' ').unwrap();
            assert_eq!(name, tname);
            out.push((name.to_owned(), help.to_owned(), kind.to_owned()));
        }
    }
    out
}

/// HELP and TYPE lines as in the kubelet's own test expectations, families sorted by name,
/// series sorted by label values, timestamps only where the kubelet puts them, and the
/// deprecated `scrape_error` exactly on 1.29 kubelets.
#[test]
fn pages_have_the_kubelet_layout() {
    let fixtures = [
        include_str!(
            "../../../../tests/fixtures/kubelet/kubelet-collector-cases/arbitrary-container-metrics.prom"
        ),
        include_str!(
            "../../../../tests/fixtures/kubelet/kubelet-collector-cases/arbitrary-node-metrics.prom"
        ),
        include_str!(
            "../../../../tests/fixtures/kubelet/kubelet-collector-cases/arbitrary-pod-metrics.prom"
        ),
    ];
    let mut upstream = BTreeMap::new();
    for f in fixtures {
        for (name, help, kind) in families(f) {
            upstream.insert(name, (help, kind));
        }
    }

    let m = model(16, 8, 3, 5);
    let by_node: Vec<Pod> = m
        .node_ids()
        .into_iter()
        .flat_map(|id| m.pod_objects_on_node(id).unwrap())
        .collect();
    assert_eq!(by_node, m.pod_objects());
    let mut saw_old = false;
    let mut saw_new = false;
    for id in m.node_ids() {
        let text = page(&m, id, T0 + 30_000);
        let fams = families(&text);
        let names: Vec<&str> = fams.iter().map(|f| f.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "families sorted and unique");
        for (name, help, kind) in &fams {
            if name == "scrape_error" {
                assert_eq!(
                    help,
                    "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise"
                );
                continue;
            }
            let (uh, uk) = upstream
                .get(name)
                .unwrap_or_else(|| panic!("{name} not in fixtures"));
            assert_eq!((help, kind), (uh, uk), "{name}");
        }
        let version = m
            .node_object(id)
            .unwrap()
            .status
            .unwrap()
            .node_info
            .unwrap()
            .kubelet_version;
        let has_scrape_error = names.contains(&"scrape_error");
        assert_eq!(has_scrape_error, version.starts_with("v1.29."), "{version}");
        saw_old |= has_scrape_error;
        saw_new |= !has_scrape_error;
        assert_eq!(
            names,
            [
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes",
                "container_start_time_seconds",
                "container_swap_usage_bytes",
                "node_cpu_usage_seconds_total",
                "node_memory_working_set_bytes",
                "node_swap_usage_bytes",
                "pod_cpu_usage_seconds_total",
                "pod_memory_working_set_bytes",
                "pod_swap_usage_bytes",
                "resource_scrape_error",
                "scrape_error",
            ][..names.len()]
        );

        // Series order within each family: Go sorts by label values in label-name order.
        let mut last: Option<(String, String)> = None;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, rest) = match line.split_once('}') {
                Some((s, r)) => (format!("{s}}}"), r.trim_start()),
                None => line
                    .split_once(' ')
                    .map(|(s, r)| (s.to_owned(), r))
                    .unwrap(),
            };
            let (metric, labels) = series.split_once('{').unwrap_or((&series, ""));
            let fields = rest.split(' ').count();
            let untimed = matches!(
                metric,
                "container_start_time_seconds" | "resource_scrape_error" | "scrape_error"
            );
            assert_eq!(fields, if untimed { 1 } else { 2 }, "{line}");
            let values: Vec<&str> = labels.split('"').skip(1).step_by(2).collect();
            let sort_key = values.join("\u{0}");
            if let Some((lm, lk)) = &last
                && lm == metric
            {
                assert!(*lk < sort_key, "{metric}: {lk:?} !< {sort_key:?}");
            }
            last = Some((metric.to_owned(), sort_key));
            if labels.starts_with("container=") {
                assert!(labels.contains(",namespace=\"") && labels.contains(",pod=\""));
            }
        }
    }
    assert!(
        saw_old && saw_new,
        "16 nodes should include both kubelet versions"
    );
}

/// A second, independent parser: the Python Prometheus client reads every page and agrees
/// on every value with the model.
#[test]
fn python_prometheus_client_parses_pages() {
    let m = model(4, 10, 2, 3);
    let text: String = m
        .node_ids()
        .into_iter()
        .map(|id| page(&m, id, T0 + 9_000))
        .collect::<Vec<_>>()
        .join("\n# EOF-PAGE\n");
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
pages = sys.stdin.read().split("\n# EOF-PAGE\n")
out = []
for page in pages:
    samples = []
    for fam in text_string_to_metric_families(page):
        for s in fam.samples:
            samples.append([fam.name, fam.type, fam.documentation, s.name, s.labels, repr(s.value), None if s.timestamp is None else str(s.timestamp)])
    out.append(samples)
json.dump(out, sys.stdout)
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client is a test peer (pip install prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    type Row = (
        String,
        String,
        String,
        String,
        BTreeMap<String, String>,
        String,
        Option<String>,
    );
    let pages: Vec<Vec<Row>> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(pages.len(), 4);
    for (id, rows) in m.node_ids().into_iter().zip(pages) {
        let ours = parse(&page(&m, id, T0 + 9_000));
        assert_eq!(rows.len(), ours.len(), "node {id}: sample count");
        for (family, kind, _doc, sample, labels, value, ts) in rows {
            let l = |k: &str| labels.get(k).cloned().unwrap_or_default();
            let p = ours[&(sample.clone(), l("container"), l("namespace"), l("pod"))];
            // Python's repr is the shortest round trip too, so the float is the same bit for bit.
            let v: f64 = value.parse().unwrap();
            assert_eq!(v.to_bits(), p.value.to_bits(), "{sample} {labels:?}");
            match ts {
                None => assert_eq!(p.ts, None),
                Some(t) => {
                    let secs: f64 = t.parse().unwrap();
                    assert_eq!((secs * 1000.0).round() as i64, p.ts.unwrap());
                }
            }
            let want = if sample.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert_eq!(kind, want, "{family}");
        }
    }
}

/// Runs a test peer with `input` on stdin; it must succeed.
fn run_peer(program: &str, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is a test peer and must be installed: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Prometheus's own linter accepts every page (both kubelet versions).
#[test]
fn promtool_accepts_pages() {
    let m = model(10, 6, 2, 13);
    for id in m.node_ids() {
        let out = run_peer("promtool", &["check", "metrics"], &page(&m, id, T0 + 5_000));
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn restart_resets_the_container_only() {
    let m = model(6, 10, 2, 21);
    let target = running_pod(&m);
    let (ns, name) = (target.namespace.clone(), target.name.clone());
    let c0 = target.containers[0].name.clone();
    let c1 = target.containers[1].name.clone();
    let id = node_of(&m, &ns, &name);
    let before = parse(&page(&m, id, T0 + 10_000));
    let obj_before = pod_object(&m, &ns, &name).unwrap();
    let restarts_before = statuses(&obj_before)[0].restart_count;

    let t_restart = T0 + 20_000;
    let changes = m.restart_container(&ns, &name, Some(&c0), at(t_restart));
    let [Change::UpsertPod(obj)] = &changes[..] else {
        panic!("{changes:?}")
    };
    let st = &statuses(obj)[0];
    assert_eq!(st.restart_count, restarts_before + 1);
    assert_eq!(
        st.state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at,
        Some(objects::time(t_restart))
    );
    let last = st.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.finished_at, Some(objects::time(t_restart)));
    let old_id = statuses(&obj_before)[0].container_id.clone();
    assert_eq!(last.container_id, old_id);
    assert_ne!(st.container_id, old_id);
    // The other container is untouched.
    let other = &statuses(obj)[1];
    assert_eq!(other, &statuses(&obj_before)[1]);

    // Immediately after: only the start time, no sample for the new incarnation yet.
    let now = parse(&page(&m, id, t_restart));
    assert!(!now.contains_key(&key("container_cpu_usage_seconds_total", &c0, &ns, &name)));
    assert!(!now.contains_key(&key("container_memory_working_set_bytes", &c0, &ns, &name)));
    assert_eq!(
        now[&key("container_start_time_seconds", &c0, &ns, &name)].value,
        t_restart as f64 / 1000.0
    );
    assert!(now.contains_key(&key("container_cpu_usage_seconds_total", &c1, &ns, &name)));

    // After the lag: the counter counts from 0 at the restart, at the same rate.
    let later = parse(&page(&m, id, t_restart + 6_000));
    let p = later[&key("container_cpu_usage_seconds_total", &c0, &ns, &name)];
    let want = target.containers[0].cpu_cores * (p.ts.unwrap() - t_restart) as f64 / 1000.0;
    assert!(
        (p.value - want).abs() <= want * 1e-12,
        "{} vs {want}",
        p.value
    );
    assert!(p.value < before[&key("container_cpu_usage_seconds_total", &c0, &ns, &name)].value);
    // Pod and node counters carry on.
    let pk = key("pod_cpu_usage_seconds_total", "", &ns, &name);
    assert!(later[&pk].value > before[&pk].value);
    let nk = key("node_cpu_usage_seconds_total", "", "", "");
    assert!(later[&nk].value > before[&nk].value);
    // Rates are unchanged.
    assert_eq!(
        m.expected(at(t_restart + 6_000))
            .pods
            .iter()
            .find(|p| p.name == name),
        Some(&target)
    );

    // Whole pod, unknown pod or container, non-Running pod: as documented.
    let all = m.restart_container(&ns, &name, None, at(t_restart + 7_000));
    let Change::UpsertPod(obj) = &all[0] else {
        panic!()
    };
    let counts: Vec<i32> = statuses(obj).iter().map(|s| s.restart_count).collect();
    assert_eq!(counts[0], restarts_before + 2);
    assert!(
        m.restart_container(&ns, &name, Some("nope"), at(T0 + 30_000))
            .is_empty()
    );
    assert!(
        m.restart_container(&ns, "nope", None, at(T0 + 30_000))
            .is_empty()
    );
    assert!(
        m.restart_container("nope", &name, None, at(T0 + 30_000))
            .is_empty()
    );
    let pending = m
        .pod_objects()
        .into_iter()
        .find(|p| phase(p) != "Running")
        .unwrap();
    assert!(
        m.restart_container(
            pending.metadata.namespace.as_deref().unwrap(),
            pending.metadata.name.as_deref().unwrap(),
            None,
            at(T0 + 30_000)
        )
        .is_empty()
    );
}

#[test]
fn pending_and_succeeded_pods_are_listed_but_never_measured() {
    let m = model(20, 15, 2, 4);
    let pods = m.pod_objects();
    assert_eq!(pods.len(), 300);
    let exp = m.expected(at(T0));
    let measured: std::collections::HashSet<(String, String)> = exp
        .pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    let mut by_phase: HashMap<String, usize> = HashMap::new();
    let mut on_page = std::collections::HashSet::new();
    for id in m.node_ids() {
        for k in parse(&page(&m, id, T0 + 1_000)).into_keys() {
            if !k.3.is_empty() {
                on_page.insert((k.2, k.3));
            }
        }
    }
    for p in &pods {
        let ph = phase(p).to_owned();
        *by_phase.entry(ph.clone()).or_default() += 1;
        let id = (
            p.metadata.namespace.clone().unwrap(),
            p.metadata.name.clone().unwrap(),
        );
        assert_eq!(measured.contains(&id), ph == "Running", "{id:?} {ph}");
        assert_eq!(on_page.contains(&id), ph == "Running", "{id:?} {ph}");
        let statuses = statuses(p);
        match ph.as_str() {
            "Pending" => {
                assert!(
                    statuses
                        .iter()
                        .all(|s| s.state.as_ref().unwrap().waiting.is_some() && !s.ready)
                );
                assert!(p.status.as_ref().unwrap().pod_ip.is_none());
            }
            "Succeeded" => {
                assert!(statuses.iter().all(|s| {
                    s.state
                        .as_ref()
                        .unwrap()
                        .terminated
                        .as_ref()
                        .unwrap()
                        .exit_code
                        == 0
                }));
                assert!(p.metadata.labels.as_ref().unwrap().contains_key("job-name"));
            }
            "Running" => assert!(statuses.iter().all(|s| s.ready)),
            other => panic!("phase {other}"),
        }
    }
    assert!(by_phase["Running"] > 250, "{by_phase:?}");
    assert!(by_phase["Pending"] >= 1, "{by_phase:?}");
    assert!(by_phase["Succeeded"] >= 1, "{by_phase:?}");
    assert_eq!(measured.len(), by_phase["Running"]);
}

#[test]
fn delete_removes_pods_and_keeps_node_counters_monotonic() {
    let m = model(5, 12, 2, 31);
    let target = running_pod(&m);
    let id = node_of(&m, &target.namespace, &target.name);
    let nk = key("node_cpu_usage_seconds_total", "", "", "");
    let before = parse(&page(&m, id, T0 + 10_000))[&nk];
    let rate_before = m.expected(at(T0)).nodes[id].cpu_cores;

    let changes = m.delete_pod_at(&target.namespace, &target.name, at(T0 + 10_000));
    assert!(
        matches!(&changes[..], [Change::DeletePod { namespace, name }] if *namespace == target.namespace && *name == target.name)
    );
    assert!(
        m.delete_pod_at(&target.namespace, &target.name, at(T0 + 10_000))
            .is_empty()
    );
    assert!(pod_object(&m, &target.namespace, &target.name).is_none());
    assert!(
        m.expected(at(T0))
            .pods
            .iter()
            .all(|p| p.name != target.name)
    );
    let text = page(&m, id, T0 + 10_001);
    assert!(!text.contains(&target.name));
    // The node counter never steps back, and its rate drops by exactly the pod's.
    let after = parse(&text)[&nk];
    assert!(after.value >= before.value);
    let rate_after = m.expected(at(T0)).nodes[id].cpu_cores;
    let pod_rate: f64 = target.containers.iter().map(|c| c.cpu_cores).sum();
    assert!((rate_before - rate_after - pod_rate).abs() < 1e-9);
    let (a, b) = (
        parse(&page(&m, id, T0 + 20_000))[&nk],
        parse(&page(&m, id, T0 + 35_000))[&nk],
    );
    let r = (b.value - a.value) / ((b.ts.unwrap() - a.ts.unwrap()) as f64 / 1000.0);
    assert!((r - rate_after).abs() <= rate_after * 1e-9);

    // Bulk deletion: distinct, never DaemonSet pods, deterministic.
    let twin = model(5, 12, 2, 31);
    twin.delete_pod_at(&target.namespace, &target.name, at(T0 + 10_000));
    let d = m.delete_pods_at(7, at(T0 + 40_000));
    assert_eq!(
        format!("{d:?}"),
        format!("{:?}", twin.delete_pods_at(7, at(T0 + 40_000)))
    );
    let names: std::collections::HashSet<String> = d
        .iter()
        .map(|c| match c {
            Change::DeletePod { name, .. } => name.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names.len(), 7);
    assert!(names.iter().all(|n| !n.starts_with("kube-proxy-")));
    assert_eq!(m.pod_objects().len(), 5 * 12 - 8);
    // Asking for more than exist stops at what there is (the DaemonSet pods stay).
    let rest = m.delete_pods_at(1000, at(T0 + 50_000));
    assert_eq!(rest.len(), 5 * 12 - 8 - 5);
    assert_eq!(m.pod_objects().len(), 5);
}

/// The wall-clock variants delete at the current time: the node counter of a model built
/// now stays monotonic across them.
#[test]
fn wall_clock_deletions() {
    let now = millis(SystemTime::now());
    let m = Model::new(params(3, 6, 2, 91), at(now));
    let before: Vec<f64> = m
        .node_ids()
        .into_iter()
        .map(|id| parse(&page(&m, id, now))[&key("node_cpu_usage_seconds_total", "", "", "")].value)
        .collect();
    let target = running_pod(&m);
    assert_eq!(m.delete_pod(&target.namespace, &target.name).len(), 1);
    assert_eq!(m.delete_pods(4).len(), 4);
    let after_ms = millis(SystemTime::now());
    for (id, b) in m.node_ids().into_iter().zip(before) {
        let a =
            parse(&page(&m, id, after_ms))[&key("node_cpu_usage_seconds_total", "", "", "")].value;
        assert!(a >= b, "node {id}: {a} < {b}");
    }
    assert_eq!(m.pod_objects().len(), 3 * 6 - 5);
}

#[test]
fn created_pods_appear_as_scheduled_then_running() {
    let m = model(4, 6, 2, 41);
    let t = T0 + 60_000;
    let changes = m.create_pods(6, at(t));
    assert_eq!(changes.len(), 12);
    for pair in changes.chunks(2) {
        let [Change::UpsertPod(first), Change::UpsertPod(second)] = pair else {
            panic!("{pair:?}")
        };
        assert_eq!(first.metadata.name, second.metadata.name);
        assert_eq!(first.metadata.uid, second.metadata.uid);
        assert_eq!(phase(first), "Pending");
        assert_eq!(phase(second), "Running");
        assert!(first.status.as_ref().unwrap().pod_ip.is_none());
        assert!(second.status.as_ref().unwrap().pod_ip.is_some());
        let ns = second.metadata.namespace.as_deref().unwrap();
        let name = second.metadata.name.as_deref().unwrap();
        assert_eq!(pod_object(&m, ns, name).as_ref(), Some(second));
        assert_eq!(second.metadata.creation_timestamp, Some(objects::time(t)));
        assert!(second.metadata.owner_references.as_ref().unwrap()[0].kind == "ReplicaSet");
        let node = second.spec.as_ref().unwrap().node_name.clone().unwrap();
        let id = m.node_id(&node).unwrap();
        let exp = m.expected(at(t));
        let ep = exp.pods.iter().find(|p| p.name == name).unwrap();
        // On the page within the lag, counting from the creation time.
        let early = parse(&page(&m, id, t));
        assert!(!early.contains_key(&key(
            "container_cpu_usage_seconds_total",
            &ep.containers[0].name,
            ns,
            name
        )));
        let p = parse(&page(&m, id, t + 5_000));
        for c in &ep.containers {
            let s = p[&key("container_cpu_usage_seconds_total", &c.name, ns, name)];
            let want = c.cpu_cores * (s.ts.unwrap() - t) as f64 / 1000.0;
            assert!((s.value - want).abs() <= want * 1e-12);
        }
    }
    assert_eq!(m.pod_objects().len(), 4 * 6 + 6);
}

#[test]
fn nodes_can_be_added_and_removed() {
    let m = model(3, 5, 2, 51);
    let t = T0 + 120_000;
    let changes = m.add_nodes(2, at(t));
    assert_eq!(changes.len(), 2 * (1 + 5));
    let Change::UpsertNode(n) = &changes[0] else {
        panic!()
    };
    assert_eq!(n.metadata.name.as_deref(), Some("node-00004"));
    assert_eq!(n.metadata.creation_timestamp, Some(objects::time(t)));
    let Change::UpsertNode(n5) = &changes[6] else {
        panic!()
    };
    assert_eq!(n5.metadata.name.as_deref(), Some("node-00005"));
    for c in changes[1..6].iter() {
        let Change::UpsertPod(p) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-00004")
        );
        assert!(matches!(phase(p), "Running" | "Pending"));
        assert_eq!(
            p.status.as_ref().unwrap().start_time,
            Some(objects::time(t))
        );
    }
    assert_eq!(m.node_ids(), [0, 1, 2, 3, 4]);
    assert_eq!(m.node_id("node-00005"), Some(4));
    assert_eq!(m.node_ip(4), Some(Ipv4Addr::new(127, 1, 0, 5)));
    let text = page(&m, 4, t + 6_000);
    assert!(text.contains("node_cpu_usage_seconds_total "));
    assert_eq!(m.expected(at(t)).nodes.len(), 5);

    let removed = m.remove_node("node-00002");
    let Change::DeleteNode { name } = &removed[0] else {
        panic!("{removed:?}")
    };
    assert_eq!(name, "node-00002");
    assert_eq!(removed.len(), 1 + 5);
    assert!(
        removed[1..]
            .iter()
            .all(|c| matches!(c, Change::DeletePod { .. }))
    );
    assert!(m.remove_node("node-00002").is_empty());
    assert!(m.remove_node("bogus").is_empty());
    assert_eq!(m.node_ids(), [0, 2, 3, 4]);
    assert_eq!(m.node_id("node-00002"), None);
    assert_eq!(m.node_name(1), None);
    assert!(m.node_object(1).is_none());
    assert!(m.pod_objects_on_node(1).is_none());
    assert!(!m.render_resource_metrics(1, at(t), &mut Vec::new()));
    let exp = m.expected(at(t));
    assert_eq!(
        exp.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["node-00001", "node-00003", "node-00004", "node-00005"]
    );
    assert_eq!(m.pod_objects().len(), 4 * 5);
    for p in m.pod_objects() {
        assert_ne!(p.spec.unwrap().node_name.as_deref(), Some("node-00002"));
    }
    // New ids never reuse a hole.
    let more = m.add_nodes(1, at(t + 1_000));
    let Change::UpsertNode(n6) = &more[0] else {
        panic!()
    };
    assert_eq!(n6.metadata.name.as_deref(), Some("node-00006"));
}

#[test]
fn objects_carry_what_clients_need() {
    let m = model(3, 6, 2, 61);
    let node = m.node_object(1).unwrap();
    let meta = &node.metadata;
    assert_eq!(meta.name.as_deref(), Some("node-00002"));
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "node-00002");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(matches!(
        labels["kubernetes.io/arch"].as_str(),
        "amd64" | "arm64"
    ));
    assert!(labels["topology.kubernetes.io/zone"].starts_with("sim-central1-"));
    let status = node.status.as_ref().unwrap();
    let addrs: Vec<(&str, &str)> = status
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    assert_eq!(
        addrs,
        [("InternalIP", "127.1.0.2"), ("Hostname", "node-00002")]
    );
    assert_eq!(
        status
            .daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port,
        10250
    );
    let cap = status.capacity.as_ref().unwrap();
    let alloc = status.allocatable.as_ref().unwrap();
    for r in ["cpu", "memory", "pods"] {
        assert!(cap.contains_key(r) && alloc.contains_key(r), "{r}");
    }
    // Usage fits the allocatable the scheduler saw.
    let cores: f64 = cap["cpu"].0.parse().unwrap();
    let en = &m.expected(at(T0)).nodes[1];
    assert!(en.cpu_cores < cores, "{} of {cores}", en.cpu_cores);
    let mem_kib: u64 = cap["memory"].0.trim_end_matches("Ki").parse().unwrap();
    assert!(en.memory_bytes < mem_kib * 1024);
    let ready = status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert!(
        status
            .node_info
            .as_ref()
            .unwrap()
            .kubelet_version
            .starts_with("v1.")
    );

    for p in m.pod_objects_on_node(1).unwrap() {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-00002"));
        assert_eq!(spec.containers.len(), 2);
        for c in &spec.containers {
            let req = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
            assert!(req["cpu"].0.ends_with('m') && req["memory"].0.ends_with("Mi"));
        }
        let labels = p.metadata.labels.as_ref().unwrap();
        assert!(
            labels.contains_key("app")
                && labels.contains_key("team")
                && labels.contains_key("tier")
        );
        assert!(labels.len() >= 4);
        // Round-trips through JSON unchanged (times are whole seconds).
        let back: Pod = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let name = p.metadata.name.as_deref().unwrap();
        if name.starts_with("kube-proxy-") {
            assert_eq!(
                p.status.as_ref().unwrap().pod_ip.as_deref(),
                Some("127.1.0.2")
            );
            assert_eq!(spec.host_network, Some(true));
        }
    }
    let ns: Vec<String> = m
        .namespaces()
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(ns.contains(&"default".to_owned()) && ns.contains(&"kube-system".to_owned()));
    assert!(ns.iter().any(|n| n.starts_with("team-")));
    // Deployment-style names.
    let web = m
        .pod_objects()
        .into_iter()
        .find(|p| {
            p.metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("pod-template-hash")
        })
        .unwrap();
    let name = web.metadata.name.unwrap();
    let hash = &web.metadata.labels.as_ref().unwrap()["pod-template-hash"];
    let app = &web.metadata.labels.as_ref().unwrap()["app"];
    assert!(
        name.starts_with(&format!("{app}-{hash}-")) && name.len() == app.len() + hash.len() + 7,
        "{name}"
    );
}

/// Deployments are many and small, as in a real cluster (an HPA's selector matches tens of
/// pods), whatever the cluster's size; each one's pods share app, hash and owner, and no two
/// share a selector.
#[test]
fn deployments_are_many_and_small() {
    for (nodes, pods) in [(256, 30), (96, 110)] {
        let m = model(nodes, pods, 1, 11);
        // (namespace, app) → (ReplicaSet, pod-template-hash, owner uid, pods).
        let mut sets: BTreeMap<(String, String), (String, String, String, usize)> = BTreeMap::new();
        for p in m.pod_objects() {
            let labels = p.metadata.labels.as_ref().unwrap();
            let Some(hash) = labels.get("pod-template-hash") else {
                continue;
            };
            let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.kind, "ReplicaSet");
            let app = &labels["app"];
            assert_eq!(owner.name, format!("{app}-{hash}"));
            let name = p.metadata.name.as_deref().unwrap();
            assert!(name.starts_with(&format!("{}-", owner.name)), "{name}");
            let ns = p.metadata.namespace.clone().unwrap();
            let e = sets
                .entry((ns, app.clone()))
                .or_insert_with(|| (owner.name.clone(), hash.clone(), owner.uid.clone(), 0));
            assert_eq!(
                (&e.0, &e.1, &e.2),
                (&owner.name, hash, &owner.uid),
                "{name}"
            );
            e.3 += 1;
        }
        let sizes: Vec<usize> = sets.values().map(|s| s.3).collect();
        let total: usize = sizes.iter().sum();
        let mean = total / sizes.len();
        let max = *sizes.iter().max().unwrap();
        assert!((25..=60).contains(&mean), "{nodes}x{pods}: mean {mean}");
        assert!(max <= 200, "{nodes}x{pods}: largest {max}");
        // Sizes vary: the largest is at least twice the median.
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        assert!(max >= 2 * sorted[sorted.len() / 2], "{sorted:?}");
        // Distinct ReplicaSets, hashes and owners.
        let distinct = |f: fn(&(String, String, String, usize)) -> &String| {
            sets.values()
                .map(f)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        assert_eq!(distinct(|s| &s.0), sets.len());
        assert_eq!(distinct(|s| &s.2), sets.len());
        assert!(distinct(|s| &s.1) * 10 >= sets.len() * 9);
    }
}

/// A model starting at node 32 (`--first-node 32`) holds exactly nodes 32.. of one model
/// holding them all: same names, addresses, pods and pages; runtime-created pods get names
/// of their own.
#[test]
fn first_node_offsets_the_range() {
    let all = model(34, 8, 2, 4);
    let tail = Model::new(
        SimParams {
            first_node: 32,
            ..params(2, 8, 2, 4)
        },
        at(T0),
    );
    assert_eq!(tail.node_ids(), vec![32, 33]);
    for id in [32, 33] {
        assert_eq!(tail.node_name(id), all.node_name(id));
        assert_eq!(page(&tail, id, T0 + 15_000), page(&all, id, T0 + 15_000));
        assert_eq!(
            serde_json::to_string(&tail.pod_objects_on_node(id)).unwrap(),
            serde_json::to_string(&all.pod_objects_on_node(id)).unwrap()
        );
    }
    assert_eq!(tail.node_name(0), None);
    let created = |m: &Model| -> Vec<String> {
        m.create_pods(3, at(T0 + 1_000))
            .into_iter()
            .filter_map(|c| match c {
                Change::UpsertPod(p) => p.metadata.name,
                _ => None,
            })
            .collect()
    };
    let (a, b) = (created(&all), created(&tail));
    assert!(!a.is_empty() && !b.is_empty());
    assert!(a.iter().all(|n| !b.contains(n)), "{a:?} {b:?}");
}

#[test]
fn degenerate_sizes_work() {
    // No nodes: nothing to list, measure or pick; nodes can still be added.
    let empty = model(0, 30, 2, 1);
    assert!(empty.node_ids().is_empty());
    assert!(empty.pod_objects().is_empty());
    assert!(empty.create_pods(3, at(T0)).is_empty());
    assert!(empty.delete_pods_at(3, at(T0)).is_empty());
    let e = empty.expected(at(T0));
    assert!(e.nodes.is_empty() && e.pods.is_empty());
    assert_eq!(empty.add_nodes(1, at(T0)).len(), 1 + 30);
    assert_eq!(empty.node_id("node-00001"), Some(0));

    // Nodes without pods still report their own usage.
    let bare = model(2, 0, 2, 1);
    let p = parse(&page(&bare, 0, T0 + 20_000));
    assert_eq!(
        p.keys()
            .filter(|k| k.0.starts_with("container_") || k.0.starts_with("pod_"))
            .count(),
        0
    );
    assert!(p[&key("node_cpu_usage_seconds_total", "", "", "")].value > 0.0);
    assert_eq!(
        p[&key("node_memory_working_set_bytes", "", "", "")].value,
        bare.expected(at(T0)).nodes[0].memory_bytes as f64
    );

    // Zero containers per pod means one: a pod without containers is not valid.
    let one = model(2, 3, 0, 1);
    assert!(
        one.pod_objects()
            .iter()
            .all(|p| p.spec.as_ref().unwrap().containers.len() == 1)
    );

    // Packed nodes advertise room for their pods.
    let packed = model(1, 150, 1, 1);
    let cap = packed
        .node_object(0)
        .unwrap()
        .status
        .unwrap()
        .capacity
        .unwrap();
    assert_eq!(cap["pods"].0, "150");
    assert_eq!(
        model(1, 3, 1, 1)
            .node_object(0)
            .unwrap()
            .status
            .unwrap()
            .capacity
            .unwrap()["pods"]
            .0,
        "110"
    );
}

#[test]
fn expected_is_sorted_and_serialises() {
    let m = model(4, 8, 2, 71);
    let e = m.expected(at(T0 + 123));
    assert_eq!(e.time, "2025-06-15T15:06:40.123Z");
    let nodes: Vec<&str> = e.nodes.iter().map(|n| n.name.as_str()).collect();
    let mut sorted = nodes.clone();
    sorted.sort_unstable();
    assert_eq!(nodes, sorted);
    let pods: Vec<(&str, &str)> = e
        .pods
        .iter()
        .map(|p| (p.namespace.as_str(), p.name.as_str()))
        .collect();
    let mut sorted = pods.clone();
    sorted.sort_unstable();
    assert_eq!(pods, sorted);
    for p in &e.pods {
        for c in &p.containers {
            let nano = c.cpu_cores * 1e9;
            assert_eq!(nano.round() % 1000.0, 0.0, "whole microcores");
            let milli_frac = (c.cpu_cores * 1e6).round() as u64 % 1000;
            assert!(
                (100..=900).contains(&milli_frac),
                "never on a whole millicore"
            );
        }
    }
    let json = serde_json::to_string(&e).unwrap();
    let back: Expected = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
}

/// Renders run concurrently with mutations without blocking each other for long or
/// producing torn pages.
#[test]
fn concurrent_renders_and_mutations() {
    let m = model(6, 10, 2, 81);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..300 {
                    for id in m.node_ids() {
                        let mut out = Vec::new();
                        if m.render_resource_metrics(id, at(T0 + 1_000 + i), &mut out) {
                            let text = String::from_utf8(out).unwrap();
                            assert!(text.ends_with('\n'));
                            parse(&text);
                        }
                    }
                }
            });
        }
        for i in 0..50 {
            m.create_pods(2, at(T0 + 1_000 + i));
            m.delete_pods_at(1, at(T0 + 1_000 + i));
            let p = running_pod(&m);
            m.restart_container(&p.namespace, &p.name, None, at(T0 + 1_000 + i));
        }
        m.add_nodes(1, at(T0 + 2_000));
        m.remove_node("node-00001");
    });
    assert_eq!(m.node_ids().len(), 6);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Size and speed at the issue's scale. Run with
/// `cargo test --release --bin kube-sim -- --ignored --nocapture scale`.
#[test]
#[ignore = "prints figures; run on its own"]
fn scale_figures() {
    // `SIM_SCALE=20000x30x2` runs one size; RSS figures are only meaningful for the first
    // size a process builds (later ones reuse freed memory).
    let sizes: Vec<(usize, usize, usize)> = match std::env::var("SIM_SCALE") {
        Ok(s) => {
            let v: Vec<usize> = s.split('x').map(|n| n.parse().unwrap()).collect();
            vec![(v[0], v[1], v[2])]
        }
        Err(_) => vec![(5_000, 30, 2), (20_000, 30, 2)],
    };
    for (nodes, pods, containers) in sizes {
        let rss0 = rss_kib();
        let t = Instant::now();
        let m = model(nodes, pods, containers, 1);
        let build = t.elapsed();
        let rss1 = rss_kib();

        let t = Instant::now();
        let mut out = Vec::with_capacity(64 * 1024);
        let mut bytes = 0;
        for id in m.node_ids() {
            out.clear();
            m.render_resource_metrics(id, at(T0 + 15_000), &mut out);
            bytes += out.len();
        }
        let render = t.elapsed();

        let t = Instant::now();
        let e = m.expected(at(T0 + 15_000));
        let expected = t.elapsed();
        let t = Instant::now();
        let mut pod_count = 0;
        let mut json = 0;
        for id in m.node_ids() {
            for p in m.pod_objects_on_node(id).unwrap() {
                pod_count += 1;
                json += serde_json::to_vec(&p).map(|v| v.len()).unwrap_or(0);
            }
        }
        let objects = t.elapsed();
        let t = Instant::now();
        let mut built = 0;
        for id in m.node_ids() {
            for p in m.pod_objects_on_node(id).unwrap() {
                built += p.spec.map_or(0, |s| s.containers.len());
            }
        }
        let build_only = t.elapsed();
        assert_eq!(built, pod_count * containers);
        let rss2 = rss_kib();
        let all = m.pod_objects();
        let rss3 = rss_kib();
        assert_eq!(all.len(), pod_count);
        drop(all);
        println!(
            "{nodes} nodes x {pods} pods x {containers} containers: build {build:?}, model RSS +{} MiB; \
             render all pages {render:?} ({:.1} us/page, {} KiB/page); expected() {expected:?} ({} pods); \
             {pod_count} pod objects built {build_only:?}, built+serialised {objects:?} \
             ({} B JSON/pod); pod_objects() all at once +{} MiB",
            rss1.saturating_sub(rss0) / 1024,
            render.as_secs_f64() * 1e6 / nodes as f64,
            bytes / nodes / 1024,
            e.pods.len(),
            json / pod_count.max(1),
            rss3.saturating_sub(rss2) / 1024,
        );
        drop(m);
    }
}

/// Churn replaces Running pods by Running pods: the Running population (what the metrics
/// API serves) stays the same, while the initial draw's Pending and Succeeded pods stay, and
/// every node keeps its number of pods.
#[test]
fn replacing_pods_keeps_the_running_population() {
    let m = model(20, 30, 2, 7);
    let phases = |m: &Model| {
        let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
        for pod in m.pod_objects() {
            let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
            *by_phase.entry(phase).or_default() += 1;
        }
        by_phase
    };
    // Pods per node: a replacement takes its predecessor's node, so no node's count wanders.
    let per_node = |m: &Model| {
        let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
        for pod in m.pod_objects() {
            let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
            *by_node.entry(node).or_default() += 1;
        }
        by_node
    };
    let before = phases(&m);
    let nodes_before = per_node(&m);
    assert!(
        before.iter().any(|(phase, n)| phase != "Running" && *n > 0),
        "the draw has no pods in other phases, so the test cannot tell: {before:?}"
    );
    // Three times the cluster's size in replacements: with deletions of any phase nearly
    // every non-Running pod would have become a Running one.
    // One at a time, as the churn loop replaces them.
    let mut deleted = 0;
    for i in 0..3 * 20 * 30 {
        let changes = m.replace_pods(1, at(T0 + 60_000 + i));
        deleted += changes
            .iter()
            .filter(|c| matches!(c, Change::DeletePod { .. }))
            .count();
    }
    assert_eq!(deleted, 3 * 20 * 30);
    assert_eq!(phases(&m), before);
    assert_eq!(per_node(&m), nodes_before);
}
