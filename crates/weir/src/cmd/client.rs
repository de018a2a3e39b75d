//! `weir rule ...` and `weir stream ...`: drive a node's REST API from the shell.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};

/// Where the node is.
#[derive(Args)]
pub struct NodeArg {
    /// The node's REST address.
    #[arg(
        long,
        env = "WEIR_NODE",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub node: String,
    /// The bearer token to send, for a node with an auth_token_file (its role decides what
    /// the commands may do: viewer, operator, admin).
    #[arg(long, env = "WEIR_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificates to trust for an https:// node (its CA, or its self-signed certificate).
    #[arg(long, env = "WEIR_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
}

impl NodeArg {
    /// A client that sends the token, if one is given.
    pub fn http(&self) -> Result<reqwest::Client, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .map_err(|_| "the token must be printable ASCII".to_owned())?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        // No overall timeout: a tail streams for as long as it is watched.
        let mut client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .default_headers(headers);
        if let Some(p) = &self.ca {
            let pem = std::fs::read(p).map_err(|e| format!("--ca {}: {e}", p.display()))?;
            for root in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("--ca {}: {e}", p.display()))?
            {
                client = client.add_root_certificate(root);
            }
        }
        client.build().map_err(|e| e.to_string())
    }
}

/// Manage a node's rules.
///
///   weir rule install examples/serve/hot.sql        (the id is the file name: hot)
///   weir rule list
///   weir rule status hot
///   weir rule stop hot ; weir rule start hot ; weir rule delete hot
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct RuleArgs {
    #[command(subcommand)]
    command: RuleCommand,
    #[command(flatten)]
    node: NodeArg,
}

#[derive(Subcommand)]
enum RuleCommand {
    /// Install (or with --update, replace) a rule from a file of SQL.
    Install {
        file: String,
        /// Rule id [default: the file name without extension].
        #[arg(long)]
        id: Option<String>,
        /// Install without starting.
        #[arg(long)]
        stopped: bool,
        /// Replace the rule of that id in place (it keeps running if the new text is bad). The
        /// rule keeps its state unless its windows, keys, aggregates, joins or patterns
        /// changed; then the update is refused, unless --reset-state.
        #[arg(long)]
        update: bool,
        /// With --update: start the new version with empty state.
        #[arg(long, requires = "update")]
        reset_state: bool,
        /// Delivery guarantee: at_most_once, at_least_once or exactly_once.
        #[arg(long)]
        delivery: Option<String>,
        /// Time between checkpoints, as 500ms, 1s, 1m [default: 1s].
        #[arg(long)]
        checkpoint_interval: Option<String>,
    },
    /// Check rule text without installing it.
    Validate {
        file: String,
    },
    /// List rules and their states.
    List,
    /// The rule's text and state.
    Show {
        id: String,
    },
    /// Live figures: state, last error, per-operator counters, connector health.
    Status {
        id: String,
    },
    /// Start a stopped rule (from its newest checkpoint).
    Start {
        id: String,
        /// Drop the rule's saved state and start with empty state (for a rule whose state
        /// no longer fits it, after an upgrade or a change).
        #[arg(long)]
        reset_state: bool,
    },
    Stop {
        id: String,
    },
    Restart {
        id: String,
        /// Drop the rule's saved state and start with empty state.
        #[arg(long)]
        reset_state: bool,
    },
    Delete {
        id: String,
    },
    /// Move the rule, with its state, to another node of the control plane (ask any node):
    /// it stops at a checkpoint and resumes there from exactly where it stopped; prints how
    /// long it processed nothing. The nodes are listed at /v1/nodes of the control plane.
    Move {
        id: String,
        /// The target node's name.
        to: String,
    },
    /// Follow the rule's dead letters.
    DeadLetters {
        id: String,
    },
    /// Save the rule's newest checkpoint (state, source positions) to a file.
    Export {
        id: String,
        file: String,
    },
    /// Make a saved checkpoint the rule's newest; the rule must be stopped, and resumes from
    /// it when started.
    Import {
        id: String,
        file: String,
    },
}

/// Manage a node's streams, send events and watch them.
///
///   weir stream create "CREATE STREAM readings WITH (topic = 'readings')"
///   weir stream send readings '{"sensor":"s1","temp":31.5}'
///   weir stream tail hot
#[derive(Args)]
#[command(verbatim_doc_comment)]
pub struct StreamArgs {
    #[command(subcommand)]
    command: StreamCommand,
    #[command(flatten)]
    node: NodeArg,
}

#[derive(Subcommand)]
enum StreamCommand {
    /// Create a stream from CREATE STREAM text, or a file holding it.
    Create {
        sql_or_file: String,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Send one JSON event (or an array of events).
    Send {
        name: String,
        json: String,
    },
    /// Follow the stream's events as they happen.
    Tail {
        name: String,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(node: &NodeArg) -> Result<Client, String> {
        Ok(Client {
            base: node.node.trim_end_matches('/').to_owned(),
            http: node.http()?,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the node at {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(value)
        } else {
            let msg = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            Err(format!("{status}: {msg}"))
        }
    }

    /// A request with a binary body and answer (checkpoints).
    async fn bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/octet-stream")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the node at {}: {e}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let msg = value["error"]["message"].as_str().unwrap_or("no message");
        Err(format!("{status}: {msg}"))
    }

    /// Prints server-sent events' data lines until the stream ends or `count` are seen.
    async fn follow(&self, path: &str, count: Option<usize>) -> Result<(), String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| format!("cannot reach the node at {}: {e}", self.base))?;
        if !resp.status().is_success() {
            return Err(format!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            ));
        }
        let mut body = resp.bytes_stream();
        let mut pending = String::new();
        let mut seen = 0;
        while let Some(chunk) = body.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk.map_err(|e| e.to_string())?));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                if let Some(data) = line.trim_end().strip_prefix("data:") {
                    println!("{}", data.trim_start());
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Prints an answer; a reader that went away (`| head`) is no error.
fn print(v: &Value) {
    use std::io::Write;
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

pub fn rule(args: RuleArgs) -> Result<ExitCode, String> {
    use reqwest::Method as M;
    let c = Client::new(&args.node)?;
    runtime()?.block_on(async {
        let out = match args.command {
            RuleCommand::Install {
                file,
                id,
                stopped,
                update,
                reset_state,
                delivery,
                checkpoint_interval,
            } => {
                let sql = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                let id = id.unwrap_or_else(|| {
                    std::path::Path::new(&file)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                let mut options = json!({});
                if stopped {
                    options["stopped"] = json!(true);
                }
                if let Some(d) = delivery {
                    options["delivery"] = json!(d);
                }
                if let Some(i) = checkpoint_interval {
                    options["checkpoint_interval"] = json!(i);
                }
                let mut body = json!({"id": id, "sql": sql, "options": options});
                if reset_state {
                    body["state"] = json!("reset");
                }
                if update {
                    c.call(M::PUT, &format!("/v1/rules/{id}"), Some(body))
                        .await?
                } else {
                    c.call(M::POST, "/v1/rules", Some(body)).await?
                }
            }
            RuleCommand::Validate { file } => {
                let sql = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                c.call(M::POST, "/v1/rules/validate", Some(json!({"sql": sql})))
                    .await?
            }
            RuleCommand::List => c.call(M::GET, "/v1/rules", None).await?,
            RuleCommand::Export { id, file } => {
                let bytes = c
                    .bytes(M::GET, &format!("/v1/rules/{id}/checkpoint"), None)
                    .await?;
                std::fs::write(&file, &bytes).map_err(|e| format!("{file}: {e}"))?;
                json!({"rule": id, "file": file, "bytes": bytes.len()})
            }
            RuleCommand::Import { id, file } => {
                let body = std::fs::read(&file).map_err(|e| format!("{file}: {e}"))?;
                let reply = c
                    .bytes(M::PUT, &format!("/v1/rules/{id}/checkpoint"), Some(body))
                    .await?;
                serde_json::from_slice(&reply).map_err(|e| e.to_string())?
            }
            RuleCommand::Show { id } => c.call(M::GET, &format!("/v1/rules/{id}"), None).await?,
            RuleCommand::Status { id } => {
                c.call(M::GET, &format!("/v1/rules/{id}/status"), None)
                    .await?
            }
            RuleCommand::Start { id, reset_state } => {
                let q = if reset_state { "?reset_state=true" } else { "" };
                c.call(M::POST, &format!("/v1/rules/{id}/start{q}"), None)
                    .await?
            }
            RuleCommand::Stop { id } => {
                c.call(M::POST, &format!("/v1/rules/{id}/stop"), None)
                    .await?
            }
            RuleCommand::Restart { id, reset_state } => {
                let q = if reset_state { "?reset_state=true" } else { "" };
                c.call(M::POST, &format!("/v1/rules/{id}/restart{q}"), None)
                    .await?
            }
            RuleCommand::Delete { id } => {
                c.call(M::DELETE, &format!("/v1/rules/{id}"), None).await?
            }
            RuleCommand::Move { id, to } => {
                let body = json!({ "node": to });
                c.call(M::POST, &format!("/v1/rules/{id}/move"), Some(body))
                    .await?
            }
            RuleCommand::DeadLetters { id } => {
                c.follow(&format!("/v1/rules/{id}/dead_letters"), None)
                    .await?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        print(&out);
        Ok(ExitCode::SUCCESS)
    })
}

pub fn stream(args: StreamArgs) -> Result<ExitCode, String> {
    use reqwest::Method as M;
    let c = Client::new(&args.node)?;
    runtime()?.block_on(async {
        let out = match args.command {
            StreamCommand::Create { sql_or_file } => {
                let sql = match std::fs::read_to_string(&sql_or_file) {
                    Ok(text) => text,
                    Err(_) => sql_or_file,
                };
                c.call(M::POST, "/v1/streams", Some(json!({"sql": sql})))
                    .await?
            }
            StreamCommand::List => c.call(M::GET, "/v1/streams", None).await?,
            StreamCommand::Show { name } => {
                c.call(M::GET, &format!("/v1/streams/{name}"), None).await?
            }
            StreamCommand::Delete { name } => {
                c.call(M::DELETE, &format!("/v1/streams/{name}"), None)
                    .await?
            }
            StreamCommand::Send { name, json } => {
                let v: Value = serde_json::from_str(&json)
                    .map_err(|e| format!("the event is not JSON: {e}"))?;
                c.call(M::POST, &format!("/v1/streams/{name}/events"), Some(v))
                    .await?
            }
            StreamCommand::Tail { name, count } => {
                c.follow(&format!("/v1/streams/{name}/tail"), count).await?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        print(&out);
        Ok(ExitCode::SUCCESS)
    })
}
