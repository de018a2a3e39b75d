//! Seed paper 001's API (Bixio et al.): `/api/install`, `uninstall`, `start`, `stop`, `move`,
//! with its installation, jobinfo and relocation objects. An installation becomes an ordinary
//! rule: the `jobType` template gives its query, `jobConfig.connectors` its input and output
//! streams, and the whole request is materialised as `configFileName` in the data directory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ApiError, ApiResult};
use crate::cluster::Member;
use crate::node::{Node, RuleView};
use crate::registry::{JobRecord, RuleOptions};
use crate::relocation;

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/install", post(install))
        .route("/api/uninstall", post(uninstall))
        .route("/api/start", post(start))
        .route("/api/stop", post(stop))
        .route("/api/move", post(relocate))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Headers {
    runtime: String,
    #[serde(default)]
    target_resource: Option<String>,
    job_type: String,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct JobConfig {
    #[serde(default)]
    connectors: Map<String, Value>,
    /// The paper's figure nests jobProps here in one place and beside jobConfig in another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_props: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Installation {
    headers: Headers,
    #[serde(default)]
    job_config: JobConfig,
    #[serde(default)]
    job_props: Option<Map<String, Value>>,
}

/// The paper's jobinfo object.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobInfo {
    #[serde(default)]
    runtime: String,
    job_id: String,
    #[serde(default)]
    job_type: String,
    #[serde(default)]
    job_status: String,
    #[serde(default)]
    config_file_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Relocation {
    #[serde(rename = "target_runtime", alias = "targetRuntime")]
    target_runtime: String,
    #[serde(default)]
    target_resource: Option<String>,
    job_info: JobInfo,
}

fn job_status(view: &RuleView) -> &'static str {
    match view.state {
        "RUNNING" => "RUNNING",
        "INSTALLED" => "INSTALLED",
        "UNINSTALLED" => "UNINSTALLED",
        _ => "STOPPED",
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// `CREATE STREAM` for one side of a job (`input`, `joinInput` or `output`) from the paper's
/// connector fields: the endpoint's URL scheme picks the connector.
fn stream_sql(name: &str, side: &str, c: &Map<String, Value>) -> Result<String, String> {
    let field = |f: &str| -> Result<Option<String>, String> {
        let key = format!("{side}{f}");
        // The paper writes both inputEndpoint and inputEndPoint.
        let alt = format!("{side}{}", f.replace("Endpoint", "EndPoint"));
        match c.get(&key).or_else(|| c.get(&alt)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("connectors.{key} must be a string, not {other}")),
        }
    };
    let mut opts: Vec<(String, String)> = Vec::new();
    let topic = field("Topic")?;
    match field("Endpoint")? {
        None => opts.push(("topic".into(), topic.unwrap_or_else(|| name.to_owned()))),
        Some(url) => {
            let scheme = url
                .split("://")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let connector = match scheme.as_str() {
                "amqp" | "amqps" => "amqp",
                "mqtt" | "tcp" => "mqtt",
                "nats" => "nats",
                "http" | "https" => "http",
                other => {
                    return Err(format!(
                        "connectors.{side}Endpoint '{url}': scheme '{other}' is not amqp, mqtt, nats or http"
                    ))
                }
            };
            opts.push(("connector".into(), connector.into()));
            opts.push(("url".into(), url.clone()));
            if connector == "amqp" {
                for (f, o) in [
                    ("Exchange", "exchange"),
                    ("Queue", "queue"),
                    ("RoutingKey", "routing_key"),
                ] {
                    if let Some(v) = field(f)? {
                        opts.push((o.into(), v));
                    }
                }
            } else if let Some(t) = topic.or_else(|| field("Subject").ok().flatten()) {
                opts.push(("topic".into(), t));
            }
        }
    }
    let with: Vec<String> = opts
        .iter()
        .map(|(k, v)| format!("{k} = {}", quote(v)))
        .collect();
    Ok(format!(
        "CREATE STREAM {name} WITH ({});\n",
        with.join(", ")
    ))
}

fn new_job_id(job_type: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{job_type}-{now:x}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn install(
    State(node): State<Arc<Node>>,
    body: Result<Json<Installation>, JsonRejection>,
) -> ApiResult<JobInfo> {
    let Json(req) = body?;
    let runtime = &req.headers.runtime;
    let me = node.name.get().cloned().unwrap_or_default();
    // targetResource names the node; without it, a node of the runtime asked for is chosen.
    let target = match &req.headers.target_resource {
        Some(t) if *t != me => Some(relocation::resolve(&node, t).await?),
        Some(_) => None,
        None if runtime != &node.config.runtime => {
            Some(relocation::least_loaded(&node, runtime, "").await?)
        }
        None => None,
    };
    if let Some(t) = target {
        return forward(&t, "/api/install", &req).await;
    }
    if runtime != &node.config.runtime {
        return Err(ApiError::bad_request(format!(
            "node '{me}' is the '{}' runtime, not '{runtime}'",
            node.config.runtime
        )));
    }
    let job_type = req.headers.job_type.clone();
    let job_id = new_job_id(&job_type);
    // Stream names are identifiers; the job id may hold '-'.
    let id = job_id.replace('-', "_");
    let props = req
        .job_props
        .clone()
        .or_else(|| req.job_config.job_props.clone())
        .unwrap_or_default();
    let connectors = &req.job_config.connectors;
    let mut args: BTreeMap<String, Value> = props.into_iter().collect();
    let mut sql = String::new();
    let mut problems = Vec::new();
    let mut sides = vec![("input", "in"), ("output", "out")];
    if job_type == "single-join" {
        sides.push(("joinInput", "join"));
    }
    for (side, suffix) in sides {
        let name = format!("{id}_{suffix}");
        match stream_sql(&name, side, connectors) {
            Ok(s) => sql.push_str(&s),
            Err(e) => problems.push(e),
        }
        args.insert(side.to_owned(), Value::String(name));
    }
    if !problems.is_empty() {
        return Err(ApiError::bad_request(problems.join("; ")));
    }
    let query = weir_lang::templates::instantiate(&job_type, &args)
        .map_err(|e| ApiError::bad_request(format!("jobProps: {e}")))?;
    sql.push_str(&query);
    let config_file_name = format!("{job_id}.json");
    let materialised = serde_json::json!({"installation": &req, "jobId": job_id, "sql": sql});
    node.write_job_file(&config_file_name, materialised.to_string().as_bytes())
        .await?;
    let job = JobRecord {
        runtime: runtime.clone(),
        job_type: job_type.clone(),
        config_file_name: config_file_name.clone(),
    };
    let options = RuleOptions {
        stopped: true,
        ..RuleOptions::default()
    };
    let view = node.install_rule(&job_id, &sql, options, Some(job)).await;
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(node.config.data_dir.join(&config_file_name));
            return Err(e.into());
        }
    };
    Ok(Json(JobInfo {
        runtime: runtime.clone(),
        job_id,
        job_type,
        job_status: job_status(&view).to_owned(),
        config_file_name,
    }))
}

#[derive(Clone, Copy)]
enum Op {
    Start,
    Stop,
    Uninstall,
}

/// Runs a lifecycle operation on the rule a jobinfo names and answers with its new jobinfo.
async fn lifecycle(
    node: &Node,
    body: Result<Json<JobInfo>, JsonRejection>,
    op: Op,
) -> ApiResult<JobInfo> {
    let Json(req) = body?;
    let (_, job) = node.rule(&req.job_id).await?;
    let view = match op {
        Op::Start => node.start_rule(&req.job_id, false).await?,
        Op::Stop => node.stop_rule(&req.job_id).await?,
        Op::Uninstall => node.delete_rule(&req.job_id).await?,
    };
    let job = job.unwrap_or(JobRecord {
        runtime: node.config.runtime.clone(),
        job_type: "rule".to_owned(),
        config_file_name: String::new(),
    });
    Ok(Json(JobInfo {
        runtime: job.runtime,
        job_id: req.job_id,
        job_type: job.job_type,
        job_status: job_status(&view).to_owned(),
        config_file_name: job.config_file_name,
    }))
}

async fn uninstall(
    State(node): State<Arc<Node>>,
    body: Result<Json<JobInfo>, JsonRejection>,
) -> ApiResult<JobInfo> {
    lifecycle(&node, body, Op::Uninstall).await
}

async fn start(
    State(node): State<Arc<Node>>,
    body: Result<Json<JobInfo>, JsonRejection>,
) -> ApiResult<JobInfo> {
    lifecycle(&node, body, Op::Start).await
}

async fn stop(
    State(node): State<Arc<Node>>,
    body: Result<Json<JobInfo>, JsonRejection>,
) -> ApiResult<JobInfo> {
    lifecycle(&node, body, Op::Stop).await
}

/// Moves a job to the node `target_resource` names, or to the least loaded node of
/// `target_runtime`, with its state (see [`crate::relocation`]).
async fn relocate(
    State(node): State<Arc<Node>>,
    body: Result<Json<Relocation>, JsonRejection>,
) -> ApiResult<JobInfo> {
    let Json(req) = body?;
    let id = &req.job_info.job_id;
    let target = match &req.target_resource {
        Some(name) => relocation::resolve(&node, name).await?,
        None => {
            let holder = match node.rule(id).await {
                Ok(_) => node.name.get().cloned().unwrap_or_default(),
                Err(_) => relocation::holder(&node, id).await?.report.name,
            };
            relocation::least_loaded(&node, &req.target_runtime, &holder).await?
        }
    };
    if target.report.role != req.target_runtime {
        return Err(ApiError::bad_request(format!(
            "targetResource '{}' is a '{}' node, not '{}'",
            target.report.name, target.report.role, req.target_runtime
        )));
    }
    let to = relocation::MoveRequest {
        node: target.report.name.clone(),
        address: Some(target.report.address.clone()),
    };
    let report = relocation::move_rule(&node, id, to).await?;
    let status = match report.view["state"].as_str() {
        Some("RUNNING") => "RUNNING",
        Some("INSTALLED") => "INSTALLED",
        _ => "STOPPED",
    };
    Ok(Json(JobInfo {
        runtime: req.target_runtime,
        job_id: req.job_info.job_id,
        job_type: req.job_info.job_type,
        job_status: status.to_owned(),
        config_file_name: req.job_info.config_file_name,
    }))
}

/// Hands a paper request to another node and answers with its answer.
async fn forward<T: Serialize>(target: &Member, path: &str, body: &T) -> ApiResult<JobInfo> {
    let reply = relocation::send(target, path, body).await?;
    Ok(Json(relocation::answer(reply, &target.report.name).await?))
}
