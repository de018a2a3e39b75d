//! TLS for the node's own listeners (REST API and embedded MQTT endpoint), with rustls and ring,
//! the project's one TLS stack. The certificate and key are read from PEM files and read again
//! when they change (looked at every few seconds, and at once on SIGHUP), so a renewed
//! certificate is served without a restart. Handshakes run on tasks of their own: a client that
//! stalls one holds up nobody else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A certificate and key read from files, and read again when they change.
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl Reloading {
    /// Loads the certificate and key, and reads them again when they change.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<Reloading>, String> {
        let loaded = load(cert, key)?;
        let r = Arc::new(Reloading {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((loaded, modified(cert, key))),
        });
        tokio::spawn(r.clone().watch());
        Ok(r)
    }

    /// Reads the files again if they changed (every 5 s), or at once on SIGHUP; stops when
    /// nothing uses the certificate any more.
    async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let forced = match hup.as_mut() {
                Some(h) => tokio::select! {
                    _ = h.recv() => true,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => false,
                },
                None => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    false
                }
            };
            #[cfg(not(unix))]
            let forced = {
                tokio::time::sleep(Duration::from_secs(5)).await;
                false
            };
            if Arc::strong_count(&self) == 1 {
                return;
            }
            self.reload(forced);
        }
    }

    fn reload(&self, forced: bool) {
        let stamp = modified(&self.cert, &self.key);
        if !forced && stamp == self.current.read().unwrap_or_else(|e| e.into_inner()).1 {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(k) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (k, stamp);
                tracing::info!(cert = %self.cert.display(), "TLS certificate read again");
            }
            // The certificate served so far stays: a half-written file breaks nothing.
            Err(e) => tracing::warn!(error = %e, "TLS certificate not read again"),
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(cert).max(m(key))
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs = weir_connectors::tls::certificates(cert, "tls_cert_file")?;
    let key = weir_connectors::tls::private_key(key, "tls_key_file")?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the TLS key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

/// A TLS acceptor serving the reloading certificate.
pub fn acceptor(cert: Arc<Reloading>) -> Result<TlsAcceptor, String> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_cert_resolver(cert);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Connections that completed their handshake.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: AbortOnDrop,
}

impl TlsListener {
    /// Accepts TLS connections on `listener`, each handshake on a task of its own.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small answers and publishes go out at once (see `mqtt_endpoint::serve`).
                let _ = socket.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            _accepting: AbortOnDrop(accepting),
        })
    }

    /// The next connection that completed its handshake (`None` once accepting stopped).
    pub async fn next(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.accepted.recv().await
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.next().await {
            Some(c) => c,
            // Accepting never stops while the listener lives; wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Stops a task when its owner goes.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
