//! `weir serve`: run a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use weir_node::NodeConfig;

/// Run a weir node: the REST control plane, HTTP ingest, an embedded MQTT endpoint and the
/// rules it hosts.
///
/// With nothing configured the node runs on its embedded default: REST on 127.0.0.1:7070,
/// MQTT on 127.0.0.1:1884 (beside any system broker on 1883), data in ./weir-data. Settings
/// come from defaults, then the TOML file given by --config, then environment variables,
/// then flags. Rules that were running when the node stopped start again, each from its
/// newest checkpoint (data_dir/checkpoints); durable logs live in data_dir/logs.
///
/// Try it:
///   weir serve &
///   weir rule install examples/serve/hot.sql          (declares readings, writes hot)
///   mosquitto_sub -p 1884 -t hot &
///   mosquitto_pub -p 1884 -t readings -m '{"sensor":"s1","temp":31.5}'
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// TOML file with any of: listen, mqtt_listen, data_dir, workers, max_payload, max_rules,
    /// runtime, log_retention (entries kept per embedded topic log, default 1000000),
    /// sync_writes (fdatasync durable writes, default false: a killed process loses nothing,
    /// a power cut may), outbox_capacity (results a durable rule's sink keeps while its broker
    /// is away, default 1000000), min_free_bytes (space the durable store leaves free on its
    /// disk, default 67108864), name, join, advertise, heartbeat_ms (default 1000),
    /// lost_after_ms (default 5000), auth_token_file, mqtt_acl_file, cluster_secret_file, insecure,
    /// tls_cert_file, tls_key_file, tls_ca_file; on a
    /// control plane, adaptive placement: offload_above, return_below and load_metric
    /// (cpu_percent or events_per_s).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the REST API, HTTP ingest and /metrics [default: 127.0.0.1:7070].
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the embedded MQTT endpoint, or "off" [default: 127.0.0.1:1884].
    #[arg(long, env = "WEIR_MQTT")]
    mqtt: Option<String>,
    /// Directory of the rule registry and job files [default: weir-data].
    #[arg(long, env = "WEIR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Partitions per keyed rule: operator chains that split its keys, run on the shared worker
    /// pool (one thread per core) [default: the number of cores].
    #[arg(long, env = "WEIR_WORKERS")]
    workers: Option<usize>,
    /// Largest event payload in bytes [default: 1048576].
    #[arg(long, env = "WEIR_MAX_PAYLOAD")]
    max_payload: Option<usize>,
    /// Most rules the node holds [default: 1000].
    #[arg(long, env = "WEIR_MAX_RULES")]
    max_rules: Option<usize>,
    /// This node's role: edge (one small node near the machines) or core.
    #[arg(long, env = "WEIR_ROLE")]
    role: Option<String>,
    /// This node's name among the nodes of its control plane [default: ROLE-PORT].
    #[arg(long, env = "WEIR_NAME")]
    name: Option<String>,
    /// The control plane to join, http://host:port of any node serving it; without it the
    /// node is its own control plane. Nodes appear at /v1/nodes of the control plane, and
    /// `POST /v1/rules` there with "node": NAME installs on that node.
    #[arg(long, env = "WEIR_JOIN")]
    join: Option<String>,
    /// The address other nodes reach this one at [default: http://LISTEN].
    #[arg(long, env = "WEIR_ADVERTISE")]
    advertise: Option<String>,
    /// Bearer tokens and their roles, one `TOKEN ROLE [NAME]` per line (roles: viewer reads,
    /// operator also starts and stops rules and ingests, admin also installs, updates,
    /// deletes and moves); read again when it changes. Needed to listen beyond loopback.
    /// MQTT clients of the endpoint log in with a token as password.
    #[arg(long, env = "WEIR_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// Topics each token NAME may publish to and read on the MQTT endpoint, in Mosquitto's
    /// form: `user NAME`, then lines `topic [read|write|readwrite] FILTER`; anything not
    /// granted is refused (admins excepted). Read again when it changes.
    #[arg(long, env = "WEIR_MQTT_ACL_FILE", requires = "auth_token_file")]
    mqtt_acl_file: Option<PathBuf>,
    /// A file holding the secret every node of the cluster shares (at least 16 characters):
    /// nodes take heartbeats, forwarded requests and moved rules only from nodes sending it.
    #[arg(long, env = "WEIR_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// PEM certificate chain: the REST API and the MQTT endpoint serve TLS (https://,
    /// mqtts://) with it; read again when it changes or on SIGHUP.
    #[arg(long, env = "WEIR_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "WEIR_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// PEM certificates to trust when calling the cluster's other nodes over https.
    #[arg(long, env = "WEIR_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// Listen beyond loopback without tokens (on a network you trust otherwise).
    #[arg(long, env = "WEIR_INSECURE")]
    insecure: bool,
    /// Log lines as JSON objects instead of text.
    #[arg(long, env = "WEIR_LOG_JSON")]
    log_json: bool,
}

impl ServeArgs {
    fn config(&self) -> Result<NodeConfig, String> {
        let mut c = match &self.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                NodeConfig::from_toml(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => NodeConfig::default(),
        };
        if let Some(a) = self.listen {
            c.listen = a;
        }
        if let Some(m) = &self.mqtt {
            c.mqtt_listen = match m.as_str() {
                "off" | "none" => None,
                a => Some(
                    a.parse()
                        .map_err(|_| format!("--mqtt '{a}' is not an address or 'off'"))?,
                ),
            };
        }
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(w) = self.workers {
            c.workers = w;
        }
        if let Some(p) = self.max_payload {
            c.max_payload = p;
        }
        if let Some(r) = self.max_rules {
            c.max_rules = r;
        }
        if let Some(r) = &self.role {
            c.runtime = r.clone();
        }
        for (flag, slot) in [
            (&self.name, &mut c.name),
            (&self.join, &mut c.join),
            (&self.advertise, &mut c.advertise),
        ] {
            if flag.is_some() {
                slot.clone_from(flag);
            }
        }
        for (flag, slot) in [
            (&self.auth_token_file, &mut c.auth_token_file),
            (&self.mqtt_acl_file, &mut c.mqtt_acl_file),
            (&self.cluster_secret_file, &mut c.cluster_secret_file),
            (&self.tls_cert_file, &mut c.tls_cert_file),
            (&self.tls_key_file, &mut c.tls_key_file),
            (&self.tls_ca_file, &mut c.tls_ca_file),
        ] {
            if flag.is_some() {
                slot.clone_from(flag);
            }
        }
        c.insecure |= self.insecure;
        c.validate()?;
        Ok(c)
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    let config = args.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let running = weir_node::start(config).await.map_err(|e| e.to_string())?;
        let tls = running.node.config.tls_cert_file.is_some();
        eprintln!(
            "weir: REST on {}://{} (OpenAPI at /v1/openapi.json, metrics at /metrics){}",
            if tls { "https" } else { "http" },
            running.http,
            running
                .mqtt
                .map(|m| format!(", MQTT on {m}"))
                .unwrap_or_default()
        );
        // Ctrl-C, or SIGTERM from a service manager: rules stop at a checkpoint, group members
        // leave their groups so their partitions move at once.
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("weir: stopping");
        running.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}
