use std::collections::HashMap;

use super::*;

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn argv(args: &[&str]) -> Vec<String> {
    std::iter::once("metrics-bridge")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

fn run_with(args: &[&str], vars: &[(&str, &str)]) -> Result<(Options, Vec<String>), String> {
    match Options::load(argv(args), env_of(vars)).map_err(|e| e.to_string())? {
        Invocation::Run { options, warnings } => Ok((*options, warnings)),
        other => Err(format!("not a run: {other:?}")),
    }
}

fn run(args: &[&str]) -> Result<Options, String> {
    run_with(args, &[]).map(|(o, _)| o)
}

fn err(args: &[&str]) -> String {
    match run(args) {
        Ok(o) => panic!("{args:?} was accepted: {o:?}"),
        Err(e) => e,
    }
}

/// A config file in its own temporary directory, which lives as long as the returned guard.
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: String,
}

fn temp_config(ext: &str, text: &str) -> ConfigFile {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let path = dir.path().join(format!("metrics-bridge{ext}"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    ConfigFile {
        _dir: dir,
        path: path.to_string_lossy().into_owned(),
    }
}

#[test]
fn no_arguments_give_metrics_servers_defaults() {
    let (options, warnings) = run_with(&[], &[]).unwrap();
    assert_eq!(options, Options::default());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(options.metric_resolution, Duration::from_secs(60));
    assert_eq!(options.kubelet.request_timeout, Duration::from_secs(10));
    assert_eq!(options.kubelet.port, 10250);
    assert_eq!(options.serving.secure_port, 443);
    assert_eq!(options.kubelet.max_body_bytes, 10 * 1024 * 1024);
}

#[test]
fn metrics_servers_components_yaml_args_parse() {
    // deploy/kubernetes components.yaml of metrics-server v0.7 and v0.8.
    let (o, warnings) = run_with(
        &[
            "--cert-dir=/tmp",
            "--secure-port=10250",
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
            "--kubelet-use-node-status-port",
            "--metric-resolution=15s",
        ],
        &[],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(o.serving.cert_dir, PathBuf::from("/tmp"));
    assert_eq!(o.serving.secure_port, 10250);
    assert_eq!(
        o.kubelet.preferred_address_types,
        [
            NodeAddressType::InternalIP,
            NodeAddressType::ExternalIP,
            NodeAddressType::Hostname
        ]
    );
    assert!(o.kubelet.use_node_status_port);
    assert_eq!(o.metric_resolution, Duration::from_secs(15));
    // Everything else stays at the defaults.
    assert_eq!(o, components_yaml_options(None));
}

/// What metrics-server's components.yaml args set, the rest at defaults.
fn components_yaml_options(config_file: Option<PathBuf>) -> Options {
    let mut expected = Options {
        metric_resolution: Duration::from_secs(15),
        config_file,
        ..Options::default()
    };
    expected.serving.cert_dir = PathBuf::from("/tmp");
    expected.serving.secure_port = 10250;
    expected.kubelet.use_node_status_port = true;
    expected.kubelet.preferred_address_types = vec![
        NodeAddressType::InternalIP,
        NodeAddressType::ExternalIP,
        NodeAddressType::Hostname,
    ];
    expected
}

#[test]
fn every_supported_flag_reaches_its_field() {
    let o = run(&[
        "--kubeconfig=/k",
        "--metric-resolution=30s",
        "--kubelet-certificate-authority=/ca",
        "--kubelet-client-certificate=/c",
        "--kubelet-client-key=/k2",
        "--kubelet-port=10255",
        "--kubelet-request-timeout=5s",
        "-l",
        "role in (worker),!gpu",
        "--kubelet-max-concurrent-scrapes=7",
        "--kubelet-max-body-bytes=512Ki",
        "--bind-address=::1",
        "--secure-port=4443",
        "--tls-cert-file=/s.crt",
        "--tls-private-key-file=/s.key",
        "--tls-min-version=VersionTLS13",
        "--tls-cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "--tls-sni-cert-key=a.crt,a.key:*.foo.com,foo.com",
        "--tls-sni-cert-key",
        "b.crt,b.key",
        "--disable-http2-serving",
        "--authentication-kubeconfig=/ak",
        "--authentication-skip-lookup",
        "--authentication-tolerate-lookup-failure=true",
        "--authentication-token-webhook-cache-ttl=1m",
        "--client-ca-file=/cca",
        "--requestheader-client-ca-file=/rca",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User,X-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--requestheader-uid-headers=X-Remote-Uid",
        "--authorization-kubeconfig=/zk",
        "--authorization-always-allow-paths=healthz,/metrics*",
        "--authorization-webhook-cache-authorized-ttl=5m",
        "--authorization-webhook-cache-unauthorized-ttl=30s",
        "-v=4",
        "--logging-format=json",
    ])
    .unwrap();
    assert_eq!(o.cluster.kubeconfig, Some(PathBuf::from("/k")));
    assert_eq!(
        o.cluster.node_selector.as_ref().map(ToString::to_string),
        Some("!gpu,role in (worker)".to_string())
    );
    assert_eq!(o.metric_resolution, Duration::from_secs(30));
    let k = &o.kubelet;
    assert_eq!(k.certificate_authority, Some(PathBuf::from("/ca")));
    assert_eq!(k.client_certificate, Some(PathBuf::from("/c")));
    assert_eq!(k.client_key, Some(PathBuf::from("/k2")));
    assert_eq!(k.port, 10255);
    assert_eq!(k.request_timeout, Duration::from_secs(5));
    assert_eq!(k.max_concurrent_scrapes, 7);
    assert_eq!(k.max_body_bytes, 512 * 1024);
    let s = &o.serving;
    assert_eq!(s.bind_address, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(s.secure_port, 4443);
    assert_eq!(s.tls_cert_file, Some(PathBuf::from("/s.crt")));
    assert_eq!(s.tls_private_key_file, Some(PathBuf::from("/s.key")));
    assert_eq!(s.tls_min_version, TlsVersion::Tls13);
    assert_eq!(
        s.tls_cipher_suites,
        ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]
    );
    assert_eq!(
        s.tls_sni_cert_keys,
        [
            SniCertKey {
                cert_file: "a.crt".into(),
                key_file: "a.key".into(),
                names: vec!["*.foo.com".into(), "foo.com".into()],
            },
            SniCertKey {
                cert_file: "b.crt".into(),
                key_file: "b.key".into(),
                names: vec![],
            },
        ]
    );
    assert!(s.disable_http2_serving);
    let a = &o.authentication;
    assert_eq!(a.kubeconfig, Some(PathBuf::from("/ak")));
    assert!(a.skip_lookup);
    assert!(a.tolerate_lookup_failure);
    assert_eq!(a.token_webhook_cache_ttl, Duration::from_secs(60));
    assert_eq!(a.client_ca_file, Some(PathBuf::from("/cca")));
    assert_eq!(a.requestheader_client_ca_file, Some(PathBuf::from("/rca")));
    assert_eq!(a.requestheader_allowed_names, ["front-proxy-client"]);
    assert_eq!(
        a.requestheader_username_headers,
        ["X-Remote-User", "X-User"]
    );
    assert_eq!(a.requestheader_group_headers, ["X-Remote-Group"]);
    assert_eq!(a.requestheader_extra_headers_prefix, ["X-Remote-Extra-"]);
    assert_eq!(a.requestheader_uid_headers, ["X-Remote-Uid"]);
    let z = &o.authorization;
    assert_eq!(z.kubeconfig, Some(PathBuf::from("/zk")));
    assert_eq!(z.always_allow_paths, ["/healthz", "/metrics*"]);
    assert_eq!(z.always_allow_groups, ["system:masters"]);
    assert_eq!(z.webhook_cache_authorized_ttl, Duration::from_secs(300));
    assert_eq!(z.webhook_cache_unauthorized_ttl, Duration::from_secs(30));
    assert_eq!(o.logging.verbosity, 4);
    assert_eq!(o.logging.format, LogFormat::Json);
}

#[test]
fn metric_resolution_rules() {
    assert_eq!(
        err(&["--metric-resolution=500ms"]),
        "invalid value \"500ms\" for --metric-resolution: must be at least 1s"
    );
    assert_eq!(
        err(&["--metric-resolution=15"]),
        "invalid value \"15\" for --metric-resolution: missing unit in duration \"15\""
    );
    assert_eq!(
        err(&["--metric-resolution=5x"]),
        "invalid value \"5x\" for --metric-resolution: unknown unit \"x\" in duration \"5x\""
    );
    // Below 10s: accepted with a warning, once the timeout fits.
    let (o, warnings) = run_with(
        &["--metric-resolution=5s", "--kubelet-request-timeout=4s"],
        &[],
    )
    .unwrap();
    assert_eq!(o.metric_resolution, Duration::from_secs(5));
    assert_eq!(
        warnings,
        [
            "--metric-resolution=5s is below 10s: kubelets refresh resource metrics about every \
          10s, so scrapes may return the same samples and CPU rates may be noisy"
        ]
    );
    let (_, warnings) = run_with(
        &["--metric-resolution=10s", "--kubelet-request-timeout=9s"],
        &[],
    )
    .unwrap();
    assert!(warnings.is_empty());
}

#[test]
fn the_timeout_must_fit_in_90_percent_of_the_resolution() {
    // metrics-server's own cases: 10s/9s passes, 10s/10s fails.
    assert!(run(&["--metric-resolution=10s", "--kubelet-request-timeout=9s"]).is_ok());
    assert_eq!(
        err(&["--metric-resolution=10s"]),
        "--kubelet-request-timeout=10s must not exceed 90% of --metric-resolution=10s (9s); \
         lower the timeout or raise the resolution"
    );
    assert_eq!(
        err(&["--metric-resolution=1s", "--kubelet-request-timeout=901ms"]),
        "--kubelet-request-timeout=901ms must not exceed 90% of --metric-resolution=1s \
         (900ms); lower the timeout or raise the resolution"
    );
    assert!(run(&["--metric-resolution=1s", "--kubelet-request-timeout=900ms"]).is_ok());
    assert_eq!(
        err(&["--kubelet-request-timeout=0s"]),
        "invalid value \"0s\" for --kubelet-request-timeout: must be positive"
    );
    assert_eq!(
        err(&["--kubelet-request-timeout=-1s"]),
        "invalid value \"-1s\" for --kubelet-request-timeout: invalid duration \"-1s\": must not \
         be negative"
    );
}

#[test]
fn kubelet_tls_rules() {
    assert_eq!(
        err(&["--kubelet-client-certificate=/c"]),
        "--kubelet-client-certificate and --kubelet-client-key must be given together \
         (--kubelet-client-key is missing)"
    );
    assert_eq!(
        err(&["--kubelet-client-key=/k"]),
        "--kubelet-client-certificate and --kubelet-client-key must be given together \
         (--kubelet-client-certificate is missing)"
    );
    assert_eq!(
        err(&[
            "--kubelet-certificate-authority=/ca",
            "--kubelet-insecure-tls"
        ]),
        "--kubelet-certificate-authority and --kubelet-insecure-tls cannot be used together"
    );
    let (o, warnings) = run_with(&["--kubelet-insecure-tls"], &[]).unwrap();
    assert!(o.kubelet.insecure_tls);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .starts_with("--kubelet-insecure-tls: kubelet serving certificates are not verified")
    );
    // An empty value unsets a path, as in metrics-server.
    assert!(run(&["--kubelet-client-certificate=", "--kubelet-client-key="]).is_ok());
}

#[test]
fn address_types_are_checked() {
    assert_eq!(
        err(&["--kubelet-preferred-address-types=InternalIP,Internal"]),
        "invalid value \"InternalIP,Internal\" for --kubelet-preferred-address-types: unknown \
         address type \"Internal\"; use Hostname, InternalDNS, InternalIP, ExternalDNS or \
         ExternalIP"
    );
    assert_eq!(
        err(&["--kubelet-preferred-address-types="]),
        "--kubelet-preferred-address-types must name at least one address type"
    );
    let o = run(&[
        "--kubelet-preferred-address-types=InternalIP, Hostname",
        "--kubelet-preferred-address-types=ExternalIP",
    ])
    .unwrap();
    assert_eq!(
        o.kubelet.preferred_address_types,
        [
            NodeAddressType::InternalIP,
            NodeAddressType::Hostname,
            NodeAddressType::ExternalIP
        ]
    );
}

#[test]
fn ports_counts_and_sizes_are_checked() {
    assert_eq!(
        err(&["--kubelet-port=0"]),
        "invalid value \"0\" for --kubelet-port: must be a port from 1 to 65535"
    );
    assert_eq!(
        err(&["--kubelet-port=65536"]),
        "invalid value \"65536\" for --kubelet-port: must be a port from 1 to 65535"
    );
    assert_eq!(run(&["--secure-port=0"]).unwrap().serving.secure_port, 0);
    assert_eq!(
        err(&["--secure-port=-1"]),
        "invalid value \"-1\" for --secure-port: must be a port from 0 to 65535"
    );
    assert_eq!(
        err(&["--kubelet-max-concurrent-scrapes=0"]),
        "invalid value \"0\" for --kubelet-max-concurrent-scrapes: must be a positive integer"
    );
    for (text, bytes) in [
        ("1048576", 1 << 20),
        ("16Mi", 16 << 20),
        ("1Gi", 1 << 30),
        ("512Ki", 512 << 10),
        ("2M", 2_000_000),
        ("3k", 3000),
        ("1G", 1_000_000_000),
    ] {
        let o = run(&[&format!("--kubelet-max-body-bytes={text}")]).unwrap();
        assert_eq!(o.kubelet.max_body_bytes, bytes, "{text}");
    }
    for bad in ["0", "10MB", "Mi", "1.5Mi", "-1", "99999999999999999999Gi"] {
        let e = err(&[&format!("--kubelet-max-body-bytes={bad}")]);
        assert!(
            e.starts_with(&format!(
                "invalid value \"{bad}\" for --kubelet-max-body-bytes: "
            )),
            "{e}"
        );
    }
}

#[test]
fn serving_values_are_checked() {
    assert_eq!(
        err(&["--bind-address=localhost"]),
        "invalid value \"localhost\" for --bind-address: not an IP address"
    );
    assert_eq!(
        err(&["--tls-min-version=VersionTLS14"]),
        "invalid value \"VersionTLS14\" for --tls-min-version: use VersionTLS10, VersionTLS11, \
         VersionTLS12 or VersionTLS13"
    );
    let (o, warnings) = run_with(&["--tls-min-version=VersionTLS11"], &[]).unwrap();
    assert_eq!(o.serving.tls_min_version, TlsVersion::Tls11);
    assert_eq!(
        warnings,
        [
            "--tls-min-version=VersionTLS11: rustls implements TLS 1.2 and 1.3 only, so the \
          effective minimum is VersionTLS12"
        ]
    );
    assert_eq!(
        run(&["--tls-min-version="])
            .unwrap()
            .serving
            .tls_min_version,
        TlsVersion::Tls12
    );
    assert_eq!(
        err(&[
            "--tls-cipher-suites=TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_RC4_128_SHA"
        ]),
        "invalid value \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_RC4_128_SHA\" for \
         --tls-cipher-suites: cipher suite TLS_RSA_WITH_RC4_128_SHA is not implemented by \
         metrics-bridge's TLS library (rustls); use ECDHE with AES-GCM or ChaCha20-Poly1305, \
         such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    );
    assert_eq!(
        err(&["--tls-cipher-suites=NOPE"]),
        "invalid value \"NOPE\" for --tls-cipher-suites: unknown cipher suite \"NOPE\""
    );
    assert_eq!(
        err(&["--tls-cert-file=/a.crt"]),
        "--tls-cert-file and --tls-private-key-file must be given together \
         (--tls-private-key-file is missing)"
    );
    let o = run(&["--tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]).unwrap();
    assert_eq!(o.serving.rustls_cipher_suites().map(|s| s.len()), Some(4));
    assert_eq!(o.serving.rustls_provider().cipher_suites.len(), 4);
    assert_eq!(
        Options::default()
            .serving
            .rustls_provider()
            .cipher_suites
            .len(),
        rustls::crypto::ring::default_provider().cipher_suites.len()
    );
    // Only TLS 1.3 names: Go would accept and serve TLS 1.3 alone; say so.
    let (_, warnings) = run_with(&["--tls-cipher-suites=TLS_AES_128_GCM_SHA256"], &[]).unwrap();
    assert_eq!(
        warnings,
        [
            "--tls-cipher-suites names no TLS 1.2 cipher suite, so only TLS 1.3 clients can \
          connect; add a TLS 1.2 suite or set --tls-min-version=VersionTLS13"
        ]
    );
    let (_, warnings) = run_with(
        &[
            "--tls-cipher-suites=TLS_AES_128_GCM_SHA256",
            "--tls-min-version=VersionTLS13",
        ],
        &[],
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(Options::default().serving.rustls_cipher_suites().is_none());
    assert_eq!(o.serving.rustls_protocol_versions().len(), 2);
}

#[test]
fn sni_cert_keys_follow_kubernetes_syntax() {
    let o = run(&["--tls-sni-cert-key= a.crt , a.key : x.com , *.y.com "]).unwrap();
    assert_eq!(
        o.serving.tls_sni_cert_keys,
        [SniCertKey {
            cert_file: "a.crt".into(),
            key_file: "a.key".into(),
            names: vec!["x.com".into(), "*.y.com".into()],
        }]
    );
    for (bad, reason) in [
        ("a.crt", "expected cert,key or cert,key:name1,name2"),
        ("a.crt,b.key,c", "expected cert,key or cert,key:name1,name2"),
        (",a.key", "expected cert,key or cert,key:name1,name2"),
        (
            "a.crt,a.key:",
            "empty names list after ':'; drop the ':' to use the certificate's names",
        ),
        ("a.crt,a.key:x.com,", "empty name in the names list"),
    ] {
        assert_eq!(
            err(&[&format!("--tls-sni-cert-key={bad}")]),
            format!("invalid value {bad:?} for --tls-sni-cert-key: {reason}")
        );
    }
}

#[test]
fn selectors_levels_formats_and_paths_are_checked() {
    assert!(run(&["-l", ""]).unwrap().cluster.node_selector.is_none());
    assert_eq!(
        err(&["-l", "a in (b"]),
        format!(
            "invalid value \"a in (b\" for --node-selector: {}",
            LabelSelector::parse("a in (b").unwrap_err()
        )
    );
    assert_eq!(
        err(&["-v", "x"]),
        "invalid value \"x\" for --v: must be an integer from 0 to 255"
    );
    assert_eq!(
        err(&["-v=-1"]),
        "invalid value \"-1\" for --v: must be an integer from 0 to 255"
    );
    assert_eq!(
        err(&["--logging-format=xml"]),
        "invalid value \"xml\" for --logging-format: use text or json"
    );
    assert_eq!(
        err(&["--authorization-always-allow-paths=/a*b"]),
        "invalid value \"/a*b\" for --authorization-always-allow-paths: only a trailing * is \
         allowed in \"/a*b\""
    );
    assert_eq!(
        err(&["--kubelet-insecure-tls=yes"]),
        "invalid value \"yes\" for --kubelet-insecure-tls: must be true or false"
    );
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        assert!(
            run(&[&format!("--kubelet-insecure-tls={t}")])
                .unwrap()
                .kubelet
                .insecure_tls
        );
    }
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        assert!(
            !run(&[&format!("--kubelet-insecure-tls={f}")])
                .unwrap()
                .kubelet
                .insecure_tls
        );
    }
}

#[test]
fn the_last_flag_wins_and_lists_accumulate() {
    let o = run(&[
        "--metric-resolution=1m",
        "--metric-resolution=20s",
        "--requestheader-allowed-names=a",
        "--requestheader-allowed-names=b,c",
    ])
    .unwrap();
    assert_eq!(o.metric_resolution, Duration::from_secs(20));
    assert_eq!(
        o.authentication.requestheader_allowed_names,
        ["a", "b", "c"]
    );
    // An empty value clears a list's default.
    let o = run(&["--requestheader-username-headers="]).unwrap();
    assert!(o.authentication.requestheader_username_headers.is_empty());
}

#[test]
fn precedence_is_defaults_then_file_then_env_then_flags() {
    let file = temp_config(
        ".yaml",
        "metric-resolution: 30s\nkubelet-port: 1111\nsecure-port: 2222\nv: 1\n\
         requestheader-allowed-names: [a, b]\n",
    );
    let path = file.path.clone();
    let config = format!("--config={path}");
    let (o, _) = run_with(
        &[&config, "--secure-port=4444"],
        &[
            ("METRICS_BRIDGE_KUBELET_PORT", "3333"),
            ("METRICS_BRIDGE_SECURE_PORT", "3333"),
            ("METRICS_BRIDGE_REQUESTHEADER_ALLOWED_NAMES", "c"),
        ],
    )
    .unwrap();
    assert_eq!(
        o.metric_resolution,
        Duration::from_secs(30),
        "file over default"
    );
    assert_eq!(o.logging.verbosity, 1, "file over default");
    assert_eq!(o.kubelet.port, 3333, "env over file");
    assert_eq!(o.serving.secure_port, 4444, "flag over env");
    assert_eq!(
        o.authentication.requestheader_allowed_names,
        ["c"],
        "a later layer replaces a whole list"
    );
    assert_eq!(o.config_file, Some(PathBuf::from(&path)));
    assert_eq!(
        o.kubelet.request_timeout,
        Duration::from_secs(10),
        "default"
    );

    // The file can come from METRICS_BRIDGE_CONFIG, and --config overrides it.
    let (o, _) = run_with(&[], &[("METRICS_BRIDGE_CONFIG", &path)]).unwrap();
    assert_eq!(o.kubelet.port, 1111);
    let e = run_with(
        &[&config],
        &[("METRICS_BRIDGE_CONFIG", "/nonexistent.yaml")],
    );
    assert!(e.is_ok());
    let e = run_with(&[], &[("METRICS_BRIDGE_CONFIG", "/nonexistent.yaml")]).unwrap_err();
    assert!(
        e.starts_with("cannot read config file \"/nonexistent.yaml\": "),
        "{e}"
    );
    // An empty --config reads no file.
    assert!(
        run_with(
            &["--config="],
            &[("METRICS_BRIDGE_CONFIG", "/nonexistent.yaml")]
        )
        .is_ok()
    );
}

#[test]
fn errors_name_the_variable_or_the_key_and_file() {
    let e = run_with(&[], &[("METRICS_BRIDGE_METRIC_RESOLUTION", "soon")]).unwrap_err();
    assert_eq!(
        e,
        "invalid value \"soon\" for METRICS_BRIDGE_METRIC_RESOLUTION: invalid duration \"soon\""
    );
    let file = temp_config(".yaml", "kubelet-port: 99999\n");
    let path = file.path.clone();
    let e = run_with(&[&format!("--config={path}")], &[]).unwrap_err();
    assert_eq!(
        e,
        format!(
            "invalid value \"99999\" for kubelet-port in config file {path:?}: must be a port \
             from 1 to 65535"
        )
    );
    let file = temp_config(".yaml", "kubelet-prot: 1\n");
    let path = file.path.clone();
    let e = run_with(&[&format!("--config={path}")], &[]).unwrap_err();
    assert_eq!(
        e,
        format!("config file {path:?}: unknown key \"kubelet-prot\"")
    );
    let e = run_with(&[], &[("METRICS_BRIDGE_PROFILING", "true")]).unwrap_err();
    assert_eq!(
        e,
        "METRICS_BRIDGE_PROFILING is not supported by metrics-bridge yet (only \
         --profiling=false is accepted)"
    );
    assert!(run_with(&[], &[("METRICS_BRIDGE_PROFILING", "false")]).is_ok());
}

#[test]
fn env_lists_and_sni_entries() {
    let (o, _) = run_with(
        &[],
        &[
            (
                "METRICS_BRIDGE_KUBELET_PREFERRED_ADDRESS_TYPES",
                "InternalIP,Hostname",
            ),
            (
                "METRICS_BRIDGE_TLS_SNI_CERT_KEY",
                "a.crt,a.key:a.com; b.crt,b.key",
            ),
            ("METRICS_BRIDGE_KUBELET_INSECURE_TLS", "true"),
        ],
    )
    .unwrap();
    assert_eq!(
        o.kubelet.preferred_address_types,
        [NodeAddressType::InternalIP, NodeAddressType::Hostname]
    );
    assert_eq!(o.serving.tls_sni_cert_keys.len(), 2);
    assert_eq!(o.serving.tls_sni_cert_keys[0].names, ["a.com"]);
    assert!(o.kubelet.insecure_tls);
    // Variables for command-line-only flags are not read.
    assert!(run_with(&[], &[("METRICS_BRIDGE_VERSION", "true")]).is_ok());
}

#[test]
fn no_effect_flags_are_validated_and_warned_about() {
    let (_, warnings) = run_with(&["--log-flush-frequency=1s"], &[]).unwrap();
    assert_eq!(
        warnings,
        [
            "--log-flush-frequency has no effect: metrics-bridge writes every log line as it \
          happens"
        ]
    );
    assert_eq!(
        err(&["--log-flush-frequency=often"]),
        "invalid value \"often\" for --log-flush-frequency: invalid duration \"often\""
    );
}

#[test]
fn unsupported_value_flags_explain_the_accepted_value() {
    assert_eq!(
        err(&["--vmodule=scrape=4"]),
        "flag --vmodule is not supported by metrics-bridge yet (only an empty --vmodule is \
         accepted)"
    );
    assert_eq!(
        err(&["--http2-max-streams-per-connection=100"]),
        "flag --http2-max-streams-per-connection is not supported by metrics-bridge yet (only \
         --http2-max-streams-per-connection=0 is accepted)"
    );
    assert!(run(&["--http2-max-streams-per-connection=0"]).is_ok());
    assert_eq!(
        err(&["--deprecated-kubelet-completely-insecure"]),
        "flag --deprecated-kubelet-completely-insecure is not supported by metrics-bridge yet \
         (only --deprecated-kubelet-completely-insecure=false is accepted)"
    );
}

#[test]
fn version_and_help_short_circuit() {
    assert_eq!(
        Options::load(argv(&["--version", "--metric-resolution=1ms"]), |_| None).unwrap(),
        Invocation::Version
    );
    match Options::load(argv(&["--help"]), |_| None).unwrap() {
        Invocation::Help(text) => assert!(text.contains("--metric-resolution duration")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Options::from_args(argv(&["--version"]))
            .unwrap_err()
            .to_string(),
        "--version prints information instead of running"
    );
    assert!(VERSION.starts_with('v'));
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_named() {
    use std::os::unix::ffi::OsStringExt;
    let args = vec![
        OsString::from("metrics-bridge"),
        OsString::from_vec(b"--kubeconfig=\xff".to_vec()),
    ];
    let e = Options::load(args, |_| None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "argument 1 is not valid UTF-8: \"--kubeconfig=\u{fffd}\""
    );
}

/// The example config files under `config/` load, agree with each other, and set what their
/// comments say.
#[test]
fn the_example_config_files_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let yaml = root.join("metrics-bridge.yaml");
    let toml = root.join("metrics-bridge.toml");
    let from_yaml = Options::from_args(["mb".into(), format!("--config={}", yaml.display())])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut from_toml = Options::from_args(["mb".into(), format!("--config={}", toml.display())])
        .unwrap_or_else(|e| panic!("{e}"));
    from_toml.config_file = from_yaml.config_file.clone();
    assert_eq!(from_yaml, from_toml);
    // The examples set what components.yaml's args set; the rest is commented out.
    assert_eq!(from_yaml, components_yaml_options(Some(yaml)));
}

/// `docs/flags.md` and `README.md` hold the generated flag tables; regenerate both with
/// `UPDATE_FLAGS_DOC=1 cargo test --lib options::tests::the_flag_reference_is_current`.
#[test]
fn the_flag_reference_is_current() {
    const BEGIN: &str = "<!-- BEGIN GENERATED: flag tables (src/options/spec.rs) -->\n";
    const END: &str = "<!-- END GENERATED -->";
    let generated = spec::markdown();
    for file in ["docs/flags.md", "README.md"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file);
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let (Some(start), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("{file} lacks the generated-section markers");
        };
        let current = &doc[start + BEGIN.len()..end];
        if current == generated {
            continue;
        }
        if std::env::var_os("UPDATE_FLAGS_DOC").is_some() {
            let updated = format!("{}{BEGIN}{generated}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        } else {
            panic!(
                "{file} is out of date; run UPDATE_FLAGS_DOC=1 cargo test --lib \
                 options::tests::the_flag_reference_is_current"
            );
        }
    }
}

/// Uncommenting every commented setting of an example file still gives a valid file, so the
/// examples users copy from are right.
#[test]
fn the_commented_examples_are_valid_settings() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    for (name, sep) in [("metrics-bridge.yaml", ':'), ("metrics-bridge.toml", '=')] {
        let text = std::fs::read_to_string(root.join(name)).unwrap_or_else(|e| panic!("{e}"));
        let mut uncommented = String::new();
        let mut in_list = false;
        let mut count = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let key = rest.split(sep).next().unwrap_or("").trim();
                if rest.contains(sep) && !key.contains(' ') && spec::find(key).is_some() {
                    uncommented.push_str(rest);
                    uncommented.push('\n');
                    in_list = rest.trim_end().ends_with(sep);
                    count += 1;
                    continue;
                }
                if in_list && rest.trim_start().starts_with("- ") {
                    uncommented.push_str(rest);
                    uncommented.push('\n');
                    continue;
                }
            }
            in_list = false;
            uncommented.push_str(line);
            uncommented.push('\n');
        }
        assert!(count >= 10, "{name}: only {count} commented settings found");
        let ext = if sep == ':' { ".yaml" } else { ".toml" };
        let file = temp_config(ext, &uncommented);
        let config = format!("--config={}", file.path);
        if let Err(e) = run(&[&config]) {
            panic!("{name} with every example uncommented: {e}\n{uncommented}");
        }
    }
}
