//! Seed paper 001's API (Bixio et al.): `/api/install`, `uninstall`, `start`, `stop`, `move`,
//! with its installation, jobinfo and relocation objects ([`objects`]). An installation becomes
//! an ordinary rule: the `jobType` template gives its query, `jobConfig.connectors` its input
//! and output streams, and the whole request is materialised as `configFileName` in the data
//! directory. Any node answers as the paper's proxy: a request about a job another node of the
//! control plane holds goes to that node, and every answer describes the job as it is there.

mod objects;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::{ApiError, ApiResult};
use crate::cluster::Member;
use crate::node::{Node, NodeError};
use crate::registry::{JobRecord, RuleOptions};
use crate::relocation::{self, RELAYED};
use objects::{Installation, JobInfo, Relocation};

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/install", post(install))
        .route("/api/uninstall", post(uninstall))
        .route("/api/start", post(start))
        .route("/api/stop", post(stop))
        .route("/api/move", post(relocate))
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

/// Stream names are identifiers; a job id may hold '-'.
fn stream_prefix(job_id: &str) -> String {
    job_id.replace('-', "_")
}

/// The paper's jobStatus for a rule state, and what it leaves unsaid: why a job stopped, or
/// why a running one takes no input.
fn job_status(state: &str, error: Option<String>) -> (&'static str, Option<String>) {
    match state {
        "RUNNING" => (
            "RUNNING",
            error.map(|e| format!("running, but a connector fails (retrying): {e}")),
        ),
        "INSTALLED" => ("INSTALLED", None),
        "UNINSTALLED" => ("UNINSTALLED", None),
        "FAILED" => ("STOPPED", error.map(|e| format!("failed: {e}"))),
        _ => ("STOPPED", error),
    }
}

/// The jobinfo of rule `id` as this node holds it.
async fn job_info(node: &Node, id: &str) -> Result<JobInfo, NodeError> {
    let (_, job) = node.rule(id).await?;
    let status = node.status(id).await?;
    let job = job.unwrap_or_else(|| plain_rule(node));
    let (s, detail) = job_status(status.state, status.last_error);
    Ok(describe(node, id, job, s, detail))
}

/// A rule installed through `/v1`, seen through the paper's API.
fn plain_rule(node: &Node) -> JobRecord {
    JobRecord {
        runtime: node.config.runtime.clone(),
        job_type: "rule".to_owned(),
        config_file_name: String::new(),
    }
}

fn describe(
    node: &Node,
    id: &str,
    job: JobRecord,
    status: &str,
    detail: Option<String>,
) -> JobInfo {
    let streams = objects::job_streams(&stream_prefix(id), &job.job_type);
    JobInfo {
        runtime: job.runtime,
        job_id: id.to_owned(),
        job_type: job.job_type,
        job_status: status.to_owned(),
        config_file_name: job.config_file_name,
        target_resource: node.address.get().cloned(),
        node: node.name.get().cloned(),
        status_detail: detail.map(|d| objects::speak(&d, &streams)),
    }
}

async fn install(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Json<Installation>, JsonRejection>,
) -> ApiResult<JobInfo> {
    let Json(req) = body?;
    let runtime = &req.headers.runtime;
    let me = node.name.get().cloned().unwrap_or_default();
    // targetResource names the node, by name or URL; without it a node of the runtime asked
    // for is chosen. A request another node handed on is for this one.
    let itself = |t: &str| {
        t == me
            || node.address.get().map(|a| a.trim_end_matches('/')) == Some(t.trim_end_matches('/'))
    };
    let target = match &req.headers.target_resource {
        _ if headers.contains_key(RELAYED) => None,
        Some(t) if itself(t) => None,
        Some(t) => {
            let m = relocation::resolve(&node, t).await?;
            if m.report.role != *runtime {
                return Err(ApiError::bad_request(format!(
                    "headers.targetResource '{t}' is node '{}' of the '{}' runtime, not of '{runtime}'",
                    m.report.name, m.report.role
                )));
            }
            (m.report.name != me).then_some(m)
        }
        None if runtime != &node.config.runtime => {
            Some(relocation::least_loaded(&node, runtime, None).await?)
        }
        None => None,
    };
    if let Some(t) = target {
        return forward(&node, &t, "/api/install", &req).await;
    }
    if runtime != &node.config.runtime {
        return Err(ApiError::bad_request(format!(
            "headers.runtime '{runtime}': node '{me}' is the '{}' runtime",
            node.config.runtime
        )));
    }
    let job_type = req.headers.job_type.clone();
    if weir_lang::templates::find(&job_type).is_none() {
        let types: Vec<&str> = weir_lang::templates::TEMPLATES
            .iter()
            .map(|t| t.name)
            .collect();
        return Err(ApiError::bad_request(format!(
            "headers.jobType '{job_type}' is not a job type; job types: {}",
            types.join(", ")
        )));
    }
    let props = match (&req.job_props, &req.job_config.job_props) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "jobProps is given twice, beside jobConfig and inside it; give it once",
            ))
        }
        (Some(p), None) | (None, Some(p)) => p.clone(),
        (None, None) => Default::default(),
    };
    let connectors = &req.job_config.connectors;
    let problems = objects::check(&job_type, connectors, &props);
    if !problems.is_empty() {
        return Err(ApiError::bad_request(problems.join("; ")));
    }
    let job_id = new_job_id(&job_type);
    let streams = objects::job_streams(&stream_prefix(&job_id), &job_type);
    let mut args: BTreeMap<String, Value> = props.into_iter().collect();
    let mut sql = String::new();
    for (name, side) in &streams {
        sql.push_str(&objects::stream_sql(name, side, connectors).map_err(ApiError::bad_request)?);
        args.insert((*side).to_owned(), Value::String(name.clone()));
    }
    let query = weir_lang::templates::instantiate(&job_type, &args).map_err(|e| {
        ApiError::bad_request(format!(
            "jobProps: {}",
            objects::speak(&e.to_string(), &streams)
        ))
    })?;
    sql.push_str(&query);
    let config_file_name = format!("{job_id}.json");
    let materialised = serde_json::json!({"installation": &req, "jobId": job_id, "sql": sql});
    node.write_job_file(&config_file_name, materialised.to_string().as_bytes())
        .await?;
    let job = JobRecord {
        runtime: runtime.clone(),
        job_type,
        config_file_name: config_file_name.clone(),
    };
    let options = RuleOptions {
        stopped: true,
        ..RuleOptions::default()
    };
    if let Err(e) = node.install_rule(&job_id, &sql, options, Some(job)).await {
        node.remove_job_file(&config_file_name).await;
        return Err(objects::in_paper_terms(e, &streams).into());
    }
    Ok(Json(job_info(&node, &job_id).await?))
}

#[derive(Clone, Copy)]
enum Op {
    Start,
    Stop,
    Uninstall,
}

impl Op {
    fn path(self) -> &'static str {
        match self {
            Op::Start => "/api/start",
            Op::Stop => "/api/stop",
            Op::Uninstall => "/api/uninstall",
        }
    }
}

/// Runs a lifecycle operation on the job a jobinfo names, on the node that holds it, and
/// answers with its new jobinfo.
async fn lifecycle(
    node: &Node,
    headers: &HeaderMap,
    body: Result<Json<JobInfo>, JsonRejection>,
    op: Op,
) -> ApiResult<JobInfo> {
    let Json(req) = body?;
    let id = req.job_id.as_str();
    if !headers.contains_key(RELAYED) {
        if let Some(holder) = relocation::elsewhere(node, id).await? {
            return forward(node, &holder, op.path(), &req).await;
        }
    }
    let (_, job) = node.rule(id).await?;
    let job = job.unwrap_or_else(|| plain_rule(node));
    let streams = objects::job_streams(&stream_prefix(id), &job.job_type);
    let done = match op {
        Op::Start => node.start_rule(id, false).await,
        Op::Stop => node.stop_rule(id).await,
        Op::Uninstall => node.delete_rule(id).await,
    };
    let view = done.map_err(|e| objects::in_paper_terms(e, &streams))?;
    match op {
        Op::Uninstall => Ok(Json(describe(node, id, job, "UNINSTALLED", None))),
        _ if view.state == "FAILED" => {
            let (s, detail) = job_status(view.state, view.last_error);
            Ok(Json(describe(node, id, job, s, detail)))
        }
        _ => Ok(Json(job_info(node, id).await?)),
    }
}

async fn uninstall(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Json<JobInfo>, JsonRejection>,
) -> ApiResult<JobInfo> {
    lifecycle(&node, &headers, body, Op::Uninstall).await
}

async fn start(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Json<JobInfo>, JsonRejection>,
) -> ApiResult<JobInfo> {
    lifecycle(&node, &headers, body, Op::Start).await
}

async fn stop(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Result<Json<JobInfo>, JsonRejection>,
) -> ApiResult<JobInfo> {
    lifecycle(&node, &headers, body, Op::Stop).await
}

/// Moves a job to the node `targetResource` names (by name or URL), or to the least loaded
/// node of `target_runtime`, with its state (see [`crate::relocation`]); answers with the
/// jobinfo the target gives.
async fn relocate(
    State(node): State<Arc<Node>>,
    body: Result<Json<Relocation>, JsonRejection>,
) -> ApiResult<JobInfo> {
    let Json(req) = body?;
    let id = &req.job_info.job_id;
    let runtime = &req.target_runtime;
    let target = match &req.target_resource {
        Some(name) => relocation::resolve(&node, name).await?,
        None => {
            let holder = match node.rule(id).await {
                Ok(_) => node.name.get().cloned().unwrap_or_default(),
                Err(_) => relocation::holder(&node, id).await?.report.name,
            };
            relocation::least_loaded(&node, runtime, Some(&holder)).await?
        }
    };
    if target.report.role != *runtime {
        return Err(ApiError::bad_request(format!(
            "targetResource '{}' is node '{}' of the '{}' runtime, not of target_runtime '{runtime}'",
            req.target_resource.as_deref().unwrap_or_default(),
            target.report.name,
            target.report.role
        )));
    }
    let to = relocation::MoveRequest {
        node: target.report.name.clone(),
    };
    let report = relocation::move_rule(&node, id, to).await?;
    // The job as the target holds it.
    let view = &report.view;
    let job: JobRecord = serde_json::from_value(view["job"].clone()).unwrap_or(JobRecord {
        runtime: target.report.role.clone(),
        job_type: "rule".to_owned(),
        config_file_name: String::new(),
    });
    let error = view["last_error"].as_str().map(str::to_owned);
    let (status, detail) = job_status(view["state"].as_str().unwrap_or_default(), error);
    let streams = objects::job_streams(&stream_prefix(id), &job.job_type);
    Ok(Json(JobInfo {
        runtime: job.runtime,
        job_id: id.clone(),
        job_type: job.job_type,
        job_status: status.to_owned(),
        config_file_name: job.config_file_name,
        target_resource: Some(target.report.address),
        node: Some(report.to),
        status_detail: detail.map(|d| objects::speak(&d, &streams)),
    }))
}

/// Hands a paper request to another node and answers with its answer.
async fn forward<T: Serialize>(
    node: &Node,
    target: &Member,
    path: &str,
    body: &T,
) -> ApiResult<JobInfo> {
    let reply = relocation::send(node, target, path, body).await?;
    Ok(Json(relocation::answer(reply, &target.report.name).await?))
}
