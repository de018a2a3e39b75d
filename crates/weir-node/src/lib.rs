//! A weir node: hosts rules and lets people and programs manage them.
//!
//! [`config`] says how it starts; [`node`] keeps the catalogue ([`registry`]) and the running
//! rules ([`rule`]); [`api`] is the REST control plane; [`hub`] carries embedded topics, which
//! [`mqtt_endpoint`] serves to MQTT clients; [`metrics`] renders Prometheus text.

pub mod api;
pub mod auth;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub use weir_connectors::delivery;
pub mod group;
pub mod hub;
pub mod metrics;
pub mod mqtt_acl;
pub mod mqtt_endpoint;
pub mod node;
pub mod outbox;
pub mod placement;
pub mod registry;
pub mod relocation;
pub mod rule;
pub mod start_error;
pub mod tls;

use std::sync::Arc;

pub use config::NodeConfig;
pub use node::Node;

/// A started node: its addresses and a handle to stop it.
pub struct Running {
    /// The node.
    pub node: Arc<Node>,
    /// Where its REST API listens.
    pub http: std::net::SocketAddr,
    /// Where its MQTT endpoint listens, if it has one.
    pub mqtt: Option<std::net::SocketAddr>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    mqtt_task: Option<tokio::task::JoinHandle<()>>,
    heartbeats: tokio::task::JoinHandle<()>,
    /// The placement policies, on a node that serves as its own control plane.
    placement: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
/// Why a node did not start.
pub enum StartError {
    #[error(transparent)]
    /// Its registry or store could not be opened.
    Node(#[from] node::NodeError),
    #[error("cannot listen on {addr}: {source}")]
    /// An address could not be listened on.
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens the registry, restores rules and starts listening. Port 0 picks a free port (tests).
pub async fn start(config: NodeConfig) -> Result<Running, StartError> {
    let listen = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })
    };
    let http = listen(config.listen).await?;
    let mqtt = match config.mqtt_listen {
        Some(a) => Some(listen(a).await?),
        None => None,
    };
    let store = weir_state::Store::open(
        &config.data_dir.join("logs"),
        config.sync_writes,
        config.min_free_bytes,
    )
    .map_err(node::NodeError::Store)?;
    let hub = hub::Hub::new(store);
    let node = Node::open(config, hub.clone())?;
    node.restore().await;
    let http_addr = http.local_addr().map_err(|source| StartError::Listen {
        addr: node.config.listen,
        source,
    })?;
    let mqtt_addr = mqtt.as_ref().and_then(|l| l.local_addr().ok());
    // One certificate for both listeners, read again when its files change.
    let tls = match (&node.config.tls_cert_file, &node.config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let cert = tls::Reloading::open(cert, key).map_err(node::NodeError::invalid)?;
            Some(tls::acceptor(cert).map_err(node::NodeError::invalid)?)
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mqtt_task = mqtt.map(|l| tokio::spawn(mqtt_endpoint::serve(l, node.clone(), tls.clone())));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = api::router(node.clone());
    let stopped = async {
        let _ = rx.await;
    };
    let server = match tls {
        Some(acceptor) => {
            let listener =
                tls::TlsListener::new(http, acceptor).map_err(|source| StartError::Listen {
                    addr: node.config.listen,
                    source,
                })?;
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
            })
        }
        None => tokio::spawn(async move {
            let _ = axum::serve(http, app).with_graceful_shutdown(stopped).await;
        }),
    };
    let name = node
        .config
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", node.config.runtime, http_addr.port()));
    let address = node
        .config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{http_addr}"));
    let _ = node.name.set(name.clone());
    let _ = node.address.set(address.clone());
    let heartbeats = cluster::heartbeats(node.clone(), name.clone(), address);
    let placement = node
        .config
        .join
        .is_none()
        .then(|| placement::spawn(node.clone()));
    tracing::info!(http = %http_addr, mqtt = ?mqtt_addr, node = %name, "weir node started");
    Ok(Running {
        node,
        http: http_addr,
        mqtt: mqtt_addr,
        shutdown: tx,
        server,
        mqtt_task,
        heartbeats,
        placement,
    })
}

impl Running {
    /// Stops serving and stops every rule; the registry keeps their states for the next start.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.heartbeats.abort();
        if let Some(p) = self.placement {
            p.abort();
        }
        if let Some(t) = self.mqtt_task {
            t.abort();
        }
        self.node.shutdown().await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.server).await;
    }
}
