//! Where the client CA and the requestheader settings come from, and how they follow
//! changes without a restart, as k8s.io/apiserver's delegated authentication has them:
//!
//! - `--client-ca-file` if given, else the `client-ca-file` key of the
//!   `kube-system/extension-apiserver-authentication` ConfigMap (unless
//!   `--authentication-skip-lookup`);
//! - `--requestheader-client-ca-file` with the other `--requestheader-*` flags if given
//!   (an empty `--requestheader-username-headers` turns the front proxy off), else every
//!   `requestheader-*` key of the ConfigMap, whose header lists replace the flags;
//! - the files are re-read every [`RELOAD_INTERVAL`], the ConfigMap is watched; a change is
//!   a new [`CaState`] with a higher generation, which the next request uses. A change that
//!   does not parse is logged and the previous state kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use rustls::crypto::CryptoProvider;

use super::requestheader::{RequestHeader, header_names};
use super::x509::CaBundle;
use crate::options::AuthenticationOptions;

/// Namespace and name of the ConfigMap kube-apiserver publishes its authentication settings in.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// How often the CA files given by flags are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

const CM_CLIENT_CA: &str = "client-ca-file";
const CM_RH_CA: &str = "requestheader-client-ca-file";
const CM_RH_ALLOWED: &str = "requestheader-allowed-names";
const CM_RH_USER: &str = "requestheader-username-headers";
const CM_RH_UID: &str = "requestheader-uid-headers";
const CM_RH_GROUP: &str = "requestheader-group-headers";
const CM_RH_EXTRA: &str = "requestheader-extra-headers-prefix";

/// The CAs and requestheader settings in force, immutable; replaced as a whole on change.
#[derive(Debug, Default)]
pub struct CaState {
    /// Bumped on every change, so cached certificate verdicts from before are not reused.
    pub generation: u64,
    pub client_ca: Option<CaBundle>,
    pub request_header: Option<RequestHeader>,
}

/// Why the sources could not be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot read the ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} (pass \
         --authentication-tolerate-lookup-failure to start without it, or \
         --authentication-skip-lookup with --client-ca-file and \
         --requestheader-client-ca-file): {source}{hint}"
    )]
    Lookup {
        #[source]
        source: kube::Error,
        hint: &'static str,
    },
}

/// The raw inputs a [`CaState`] is built from.
#[derive(Debug, Default, Clone, PartialEq)]
struct Inputs {
    client_ca_file: Option<Vec<u8>>,
    requestheader_file: Option<Vec<u8>>,
    configmap: Option<BTreeMap<String, String>>,
}

/// The authentication sources, kept current.
pub struct Sources {
    opts: AuthenticationOptions,
    provider: Arc<CryptoProvider>,
    state: RwLock<Arc<CaState>>,
    inputs: Mutex<Inputs>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("state", &self.current())
            .finish_non_exhaustive()
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|source| SourceError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// A ConfigMap list value: a JSON array of strings, or empty.
fn json_list(data: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, String> {
    match data.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(Vec::new()),
        Some(raw) => serde_json::from_str(raw).map_err(|e| {
            format!(
                "key {key} of the ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} is not a JSON \
                 list of strings: {e}"
            )
        }),
    }
}

fn configmap_origin(key: &str) -> String {
    format!("{key} of the ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}")
}

impl Sources {
    /// Reads the files the flags name. Errors here are fatal: a CA file that is missing or
    /// not PEM at start is a configuration mistake.
    pub fn load(
        opts: &AuthenticationOptions,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, SourceError> {
        let inputs = Inputs {
            client_ca_file: opts
                .client_ca_file
                .as_deref()
                .map(|p| read("--client-ca-file", p))
                .transpose()?,
            requestheader_file: opts
                .requestheader_client_ca_file
                .as_deref()
                .map(|p| read("--requestheader-client-ca-file", p))
                .transpose()?,
            configmap: None,
        };
        let this = Self {
            opts: opts.clone(),
            provider,
            state: RwLock::default(),
            inputs: Mutex::new(Inputs::default()),
        };
        this.apply(inputs).map_err(SourceError::Invalid)?;
        Ok(this)
    }

    /// The state in force now.
    pub fn current(&self) -> Arc<CaState> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the ConfigMap is consulted at all: lookup is on and a flag leaves something
    /// to it.
    pub fn uses_configmap(&self) -> bool {
        !self.opts.skip_lookup
            && (self.opts.client_ca_file.is_none()
                || self.opts.requestheader_client_ca_file.is_none())
    }

    /// Whether any client certificate can authenticate (so the TLS layer should ask for one).
    pub fn wants_client_certificates(&self) -> bool {
        self.opts.client_ca_file.is_some()
            || self.opts.requestheader_client_ca_file.is_some()
            || self.uses_configmap()
    }

    /// Builds the state `inputs` describe and puts it in force, unless nothing changed.
    /// Returns whether it changed; `Err` (nothing changed) when the inputs do not parse.
    fn apply(&self, inputs: Inputs) -> Result<bool, String> {
        let mut current = self.inputs.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.current().generation;
        if *current == inputs && generation > 0 {
            return Ok(false);
        }
        let state = self.build(&inputs, generation + 1)?;
        describe_change(&state);
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(state);
        *current = inputs;
        Ok(true)
    }

    fn bundle(&self, origin: &str, pem: &[u8]) -> Result<CaBundle, String> {
        CaBundle::from_pem(origin, pem, &self.provider).map_err(|e| e.to_string())
    }

    fn build(&self, inputs: &Inputs, generation: u64) -> Result<CaState, String> {
        let o = &self.opts;
        let cm = inputs.configmap.as_ref().filter(|_| !o.skip_lookup);
        let client_ca = match (&o.client_ca_file, &inputs.client_ca_file) {
            (Some(path), Some(pem)) => {
                Some(self.bundle(&format!("--client-ca-file {}", path.display()), pem)?)
            }
            _ => match cm
                .and_then(|d| d.get(CM_CLIENT_CA))
                .filter(|p| !p.trim().is_empty())
            {
                Some(pem) => Some(self.bundle(&configmap_origin(CM_CLIENT_CA), pem.as_bytes())?),
                None => None,
            },
        };
        let request_header = match (&o.requestheader_client_ca_file, &inputs.requestheader_file) {
            (Some(path), Some(pem)) => {
                let usernames = header_names(
                    "--requestheader-username-headers",
                    &o.requestheader_username_headers,
                )?;
                if usernames.is_empty() {
                    None
                } else {
                    Some(RequestHeader {
                        ca: Some(self.bundle(
                            &format!("--requestheader-client-ca-file {}", path.display()),
                            pem,
                        )?),
                        allowed_names: o.requestheader_allowed_names.clone(),
                        allowed_names_origin: "--requestheader-allowed-names".into(),
                        username_headers: usernames,
                        uid_headers: header_names(
                            "--requestheader-uid-headers",
                            &o.requestheader_uid_headers,
                        )?,
                        group_headers: header_names(
                            "--requestheader-group-headers",
                            &o.requestheader_group_headers,
                        )?,
                        extra_prefixes: lower(&o.requestheader_extra_headers_prefix),
                    })
                }
            }
            _ => match cm {
                Some(d) => Some(RequestHeader {
                    ca: match d.get(CM_RH_CA).filter(|p| !p.trim().is_empty()) {
                        Some(pem) => {
                            Some(self.bundle(&configmap_origin(CM_RH_CA), pem.as_bytes())?)
                        }
                        None => None,
                    },
                    allowed_names: json_list(d, CM_RH_ALLOWED)?,
                    allowed_names_origin: configmap_origin(CM_RH_ALLOWED),
                    username_headers: header_names(
                        &configmap_origin(CM_RH_USER),
                        &json_list(d, CM_RH_USER)?,
                    )?,
                    uid_headers: header_names(
                        &configmap_origin(CM_RH_UID),
                        &json_list(d, CM_RH_UID)?,
                    )?,
                    group_headers: header_names(
                        &configmap_origin(CM_RH_GROUP),
                        &json_list(d, CM_RH_GROUP)?,
                    )?,
                    extra_prefixes: lower(&json_list(d, CM_RH_EXTRA)?),
                }),
                None => None,
            },
        };
        Ok(CaState {
            generation,
            client_ca,
            request_header,
        })
    }

    /// Puts the ConfigMap's data (or its absence) in force.
    pub fn set_configmap(&self, data: Option<BTreeMap<String, String>>) -> Result<bool, String> {
        let mut inputs = self
            .inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        inputs.configmap = data;
        self.apply(inputs)
    }

    /// Re-reads the flag files; puts a changed, valid content in force.
    pub fn reload_files(&self) -> Result<bool, String> {
        let mut inputs = self
            .inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(p) = &self.opts.client_ca_file {
            inputs.client_ca_file = Some(read("--client-ca-file", p).map_err(|e| e.to_string())?);
        }
        if let Some(p) = &self.opts.requestheader_client_ca_file {
            inputs.requestheader_file =
                Some(read("--requestheader-client-ca-file", p).map_err(|e| e.to_string())?);
        }
        self.apply(inputs)
    }

    /// Reads the ConfigMap once, as k8s.io/apiserver does at start (`RunOnce`). A missing
    /// ConfigMap is not an error (there is nothing to use yet).
    pub async fn lookup(&self, client: kube::Client) -> Result<(), SourceError> {
        let api: Api<ConfigMap> = Api::namespaced(client, CONFIGMAP_NAMESPACE);
        match api.get_opt(CONFIGMAP_NAME).await {
            Ok(cm) => self
                .set_configmap(cm.map(|cm| cm.data.unwrap_or_default()))
                .map(|_| ())
                .map_err(SourceError::Invalid),
            Err(source) => {
                let hint = match &source {
                    kube::Error::Api(s) if s.code == 403 => {
                        "; bind the Role kube-system/extension-apiserver-authentication-reader \
                         to metrics-bridge's service account"
                    }
                    _ => "",
                };
                Err(SourceError::Lookup { source, hint })
            }
        }
    }

    /// Follows the ConfigMap until `stop` resolves.
    pub async fn watch_configmap(
        self: Arc<Self>,
        client: kube::Client,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let api: Api<ConfigMap> = Api::namespaced(client, CONFIGMAP_NAMESPACE);
        let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
        let stream = watcher::watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        tokio::pin!(stop);
        // Whether the object appeared during the current (re)list.
        let mut listed = false;
        loop {
            let event = tokio::select! {
                e = stream.next() => e,
                () = &mut stop => return,
            };
            let Some(event) = event else { return };
            let data = match event {
                Ok(Event::Init) => {
                    listed = false;
                    continue;
                }
                Ok(Event::InitApply(cm)) => {
                    listed = true;
                    Some(cm.data.unwrap_or_default())
                }
                Ok(Event::InitDone) if listed => continue,
                Ok(Event::InitDone) | Ok(Event::Delete(_)) => None,
                Ok(Event::Apply(cm)) => Some(cm.data.unwrap_or_default()),
                Err(e) => {
                    tracing::warn!(error = %e, "watching the ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} failed; retrying");
                    continue;
                }
            };
            if let Err(e) = self.set_configmap(data) {
                tracing::error!(error = %e, "the ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} changed but cannot be used; keeping the previous authentication settings");
            }
        }
    }

    /// Re-reads the flag files every `interval` until `stop` resolves.
    pub async fn watch_files(
        self: Arc<Self>,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        if self.opts.client_ca_file.is_none() && self.opts.requestheader_client_ca_file.is_none() {
            return;
        }
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = &mut stop => return,
            }
            let this = Arc::clone(&self);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || this.reload_files()).await {
                tracing::error!(error = %e, "a CA file changed but cannot be used; keeping the previous one");
            }
        }
    }
}

fn lower(prefixes: &[String]) -> Vec<String> {
    prefixes
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| p.to_ascii_lowercase())
        .collect()
}

fn describe_change(state: &CaState) {
    let client = state.client_ca.as_ref().map(|c| c.origin.as_str());
    let front_proxy = state
        .request_header
        .as_ref()
        .and_then(|r| r.ca.as_ref())
        .map(|c| c.origin.as_str());
    tracing::info!(
        generation = state.generation,
        client_ca = client.unwrap_or("none"),
        requestheader_ca = front_proxy.unwrap_or("none"),
        allowed_names = ?state.request_header.as_ref().map(|r| &r.allowed_names),
        "authentication settings in force"
    );
}
