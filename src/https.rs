//! HTTPS serving: the TLS accept loop shared by metrics-bridge's secure port and by kube-sim's
//! API server and kubelets.
//!
//! What it promises:
//! - every request carries a [`ConnInfo`] extension with the peer address and the client
//!   certificate chain that the TLS handshake verified, so that authentication can trust it,
//!   and the connection's slot for authentication's verdict on that chain, shared by all of
//!   the connection's requests;
//! - the TLS configuration is fetched per connection from a [`TlsConfigSource`], so a reloaded
//!   certificate applies to new connections while existing ones keep going;
//! - a slow or failed handshake costs only its own connection;
//! - HTTP/2 and HTTP/1.1 are both served (chosen by ALPN), or HTTP/1.1 only.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::auth::x509::VerdictMemo;

/// What the transport knows about the client, attached to every request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote_addr: SocketAddr,
    pub local_addr: SocketAddr,
    /// The client's certificate chain, leaf first, as verified by the handshake. `None` when
    /// the client presented none.
    pub peer_certificates: Option<Arc<[CertificateDer<'static>]>>,
    /// The SNI name the client asked for, if any.
    pub server_name: Option<Arc<str>>,
    /// Authentication's verdict on `peer_certificates`, kept for the connection's later
    /// requests; every clone of this `ConnInfo` shares it.
    pub cert_verdict: Arc<VerdictMemo>,
}

/// Where each new connection gets its TLS configuration.
pub trait TlsConfigSource: Send + Sync + 'static {
    fn current(&self) -> Arc<ServerConfig>;
}

impl TlsConfigSource for Arc<ServerConfig> {
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(self)
    }
}

/// Protocol and limit settings for [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Serve HTTP/2 as well as HTTP/1.1. The TLS config's ALPN list must agree; see [`alpn`].
    pub http2: bool,
    /// How long a client may take to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a client may take to send request headers.
    pub header_read_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            http2: true,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// The ALPN protocols to advertise for the chosen HTTP versions.
pub fn alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, then stops accepting and
/// waits for in-flight connections to finish their current requests.
pub async fn serve<S, F>(
    listener: TcpListener,
    tls: S,
    app: Router,
    opts: ServeOptions,
    shutdown: F,
) -> std::io::Result<()>
where
    S: TlsConfigSource,
    F: Future<Output = ()> + Send,
{
    let local_addr = listener.local_addr()?;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    if !opts.http2 {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, %local_addr, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let app = app.clone();
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let handshake_timeout = opts.handshake_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote_addr, %local_addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote_addr, %local_addr, "TLS handshake timed out");
                    return;
                }
            };
            let (_, session) = stream.get_ref();
            let info = ConnInfo {
                remote_addr,
                local_addr,
                peer_certificates: session
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect()),
                server_name: session.server_name().map(Arc::from),
                cert_verdict: Arc::default(),
            };
            let svc = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                req
            });
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(svc),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote_addr, %local_addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
