//! The resource API: streams, rules, templates, node health and info.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value as Json_};
use tokio::sync::mpsc;

use super::{ApiError, ApiResult};
use crate::node::{Node, NodeError, RuleStatus, RuleView, StreamView};
use crate::registry::RuleOptions;

/// The largest rule package (a move) or checkpoint taken: a rule's state, the input it had
/// read beyond its checkpoint and the results its brokers had not confirmed.
const MAX_PACKAGE: usize = 256 << 20;

/// The OpenAPI 3.1 description of `/v1`, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/health", get(health))
        .route("/v1/info", get(info))
        .route("/v1/streams", get(list_streams).post(create_stream))
        .route("/v1/streams/{name}", get(get_stream).delete(delete_stream))
        .route("/v1/streams/{name}/events", post(ingest))
        .route("/v1/streams/{name}/tail", get(tail_stream))
        .route("/v1/streams/{name}/log", get(read_log))
        .route("/v1/rules", get(list_rules).post(create_rule))
        .route("/v1/rules/validate", post(validate_rule))
        .route(
            "/v1/rules/{id}",
            get(get_rule).put(update_rule).delete(delete_rule),
        )
        .route("/v1/rules/{id}/start", post(start_rule))
        .route("/v1/rules/{id}/stop", post(stop_rule))
        .route("/v1/rules/{id}/restart", post(restart_rule))
        .route("/v1/rules/{id}/status", get(rule_status))
        .route("/v1/rules/{id}/move", post(move_rule))
        .route(
            "/v1/rules/{id}/attach",
            post(attach_rule).layer(axum::extract::DefaultBodyLimit::max(MAX_PACKAGE)),
        )
        .route(
            "/v1/rules/{id}/checkpoint",
            get(export_checkpoint)
                .put(import_checkpoint)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_PACKAGE)),
        )
        .route("/v1/rules/{id}/dead_letters", get(tail_dead_letters))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/heartbeat", post(node_heartbeat))
        .route("/v1/placements", get(list_placements))
        .route("/v1/templates", get(list_templates))
        .route("/v1/templates/{name}", post(instantiate_template))
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn health(State(node): State<Arc<Node>>) -> Json<Json_> {
    Json(json!({"status": "ok", "uptime_ms": node.started.elapsed().as_millis() as u64}))
}

async fn info(State(node): State<Arc<Node>>) -> Json<Json_> {
    let c = &node.config;
    Json(json!({
        "name": "weir",
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": c.runtime,
        "listen": c.listen.to_string(),
        "mqtt_listen": c.mqtt_listen.map(|a| a.to_string()),
        "data_dir": c.data_dir.display().to_string(),
        "workers": c.workers,
        "max_payload": c.max_payload,
        "max_rules": c.max_rules,
        "connectors": weir_connectors::registry::CONNECTORS
            .iter()
            .filter(|c| c.built() && c.not_on_node.is_none())
            .map(|c| c.name)
            .collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamBody {
    sql: String,
}

async fn create_stream(
    State(node): State<Arc<Node>>,
    body: Result<Json<StreamBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<StreamView>), ApiError> {
    let Json(b) = body?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(node.create_stream(&b.sql).await?),
    ))
}

async fn list_streams(State(node): State<Arc<Node>>) -> Json<Vec<StreamView>> {
    Json(node.streams().await)
}

async fn get_stream(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<StreamView> {
    Ok(Json(node.stream(&name).await?))
}

async fn delete_stream(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<Json_> {
    node.delete_stream(&name).await?;
    Ok(Json(json!({"deleted": name})))
}

/// One JSON object, or an array of them, published to the stream's ingest topic.
async fn ingest(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> ApiResult<crate::node::Ingested> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request("the Idempotency-Key header must be printable ASCII")
        })?),
    };
    let value: Json_ = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let events = match value {
        Json_::Array(items) => items,
        one => vec![one],
    };
    if let Some(i) = events.iter().position(|e| !e.is_object()) {
        return Err(ApiError::bad_request(format!(
            "event {i} is not a JSON object; send an object or an array of objects"
        )));
    }
    // One atomic write: a durable topic holds the whole request or none of it.
    Ok(Json(node.ingest(&name, events, key, &body).await?))
}

/// A live view of hub topics as Server-Sent Events; a reader that falls behind loses events
/// rather than slowing the rules.
fn sse(node: &Node, topics: &[String]) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, mut rx) = mpsc::channel(1024);
    let subs: Vec<_> = topics
        .iter()
        .map(|t| node.hub.subscribe(t, tx.clone()))
        .collect();
    let stream = async_stream(move |emit| async move {
        let _keep = subs;
        while let Some(m) = rx.recv().await {
            let data = String::from_utf8_lossy(&m.payload).into_owned();
            if emit
                .send(Ok(Event::default().event(&*m.topic).data(data)))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by an async task, ended when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

async fn tail_stream(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (ingest, tap) = node.stream_topics(&name).await?;
    let topics = if ingest == tap {
        vec![ingest]
    } else {
        vec![ingest, tap]
    };
    Ok(sse(&node, &topics))
}

async fn export_checkpoint(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let bytes = node.export_checkpoint(&id).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    ))
}

async fn import_checkpoint(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json_> {
    let saved = node.import_checkpoint(&id, &body).await?;
    Ok(Json(
        json!({"rule": id, "epoch": saved.epoch, "bytes": saved.bytes}),
    ))
}

#[derive(Deserialize)]
struct LogRange {
    from: Option<u64>,
    limit: Option<usize>,
}

/// The durable log of an embedded topic, from an offset: what at-least-once and exactly-once
/// rules read and write, kept to the node's `log_retention`.
async fn read_log(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    range: Result<axum::extract::Query<LogRange>, QueryRejection>,
) -> ApiResult<Json_> {
    let axum::extract::Query(range) = range?;
    let (topic, tap) = node.stream_topics(&name).await?;
    if topic != tap {
        return Err(ApiError::bad_request(format!(
            "stream {name} has a connector; only embedded topics have logs here"
        )));
    }
    let log = node
        .hub
        .store()
        .log(&crate::rule::topic_log(&topic))
        .map_err(NodeError::Store)?;
    let from = range.from.unwrap_or(0).max(log.first());
    let limit = range.limit.unwrap_or(1000).min(10_000);
    let events: Vec<Json_> = log
        .read(from, limit)
        .map_err(NodeError::Store)?
        .into_iter()
        .map(|(offset, p)| {
            let event = serde_json::from_slice(&p)
                .unwrap_or_else(|_| Json_::String(String::from_utf8_lossy(&p).into_owned()));
            json!({"offset": offset, "event": event})
        })
        .collect();
    Ok(Json(json!({
        "stream": name,
        "first": log.first(),
        "end": log.end(),
        "events": events,
    })))
}

async fn tail_dead_letters(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    node.rule(&id).await?;
    Ok(sse(&node, &[crate::rule::dead_letter_topic(&id)]))
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    id: String,
    sql: String,
    #[serde(default)]
    options: RuleOptions,
    /// The node to install on, by name; the control plane forwards the request to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// Install on every up node of this runtime (`core` for a group rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
}

async fn create_rule(
    State(node): State<Arc<Node>>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Json_>), ApiError> {
    let Json(mut b) = body?;
    if let Some(runtime) = b.runtime.take() {
        return install_on_runtime(&node, &runtime, &b).await;
    }
    if let Some(target) = b.node.take().filter(|t| Some(t) != node.name.get()) {
        return forward_install(&node, &target, &b).await;
    }
    let view = node.install_rule(&b.id, &b.sql, b.options, None).await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(view))))
}

/// Installs a rule on every up node of a runtime; 201 if every one took it, else 502 with
/// each node's answer.
async fn install_on_runtime(
    node: &Node,
    runtime: &str,
    b: &RuleBody,
) -> Result<(axum::http::StatusCode, Json<Json_>), ApiError> {
    if runtime != "edge" && runtime != "core" {
        return Err(ApiError::bad_request(format!(
            "runtime '{runtime}': use edge or core"
        )));
    }
    let of_runtime: Vec<_> = crate::relocation::members(node)
        .await?
        .into_iter()
        .filter(|m| m.report.role == runtime)
        .collect();
    if of_runtime.is_empty() {
        // Nothing to wait for: the cluster has no such node.
        return Err(NodeError::Conflict(format!(
            "the control plane lists no '{runtime}' node; install without runtime, or start one"
        ))
        .into());
    }
    let targets: Vec<_> = of_runtime.into_iter().filter(|m| m.state == "up").collect();
    if targets.is_empty() {
        return Err(ApiError::unavailable(format!("no '{runtime}' node is up")));
    }
    let mut answers = Vec::new();
    let mut all = true;
    for m in &targets {
        let (status, body) = match crate::relocation::send(node, m, "/v1/rules", b).await {
            Ok(r) => (
                r.status().as_u16(),
                r.json::<Json_>().await.unwrap_or_default(),
            ),
            Err(e) => (503, json!({"error": {"message": e.to_string()}})),
        };
        all &= status == 201;
        answers.push(json!({"node": m.report.name, "status": status, "answer": body}));
    }
    let status = match all {
        true => axum::http::StatusCode::CREATED,
        false => axum::http::StatusCode::BAD_GATEWAY,
    };
    Ok((status, Json(json!({"installed": answers}))))
}

/// Installs a rule on another node of this control plane, answering with that node's answer.
async fn forward_install(
    node: &Node,
    target: &str,
    b: &RuleBody,
) -> Result<(axum::http::StatusCode, Json<Json_>), ApiError> {
    let member = crate::relocation::resolve(node, target).await?;
    let reply = crate::relocation::send(node, &member, "/v1/rules", b).await?;
    let status = axum::http::StatusCode::from_u16(reply.status().as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let body: Json_ = reply
        .json()
        .await
        .map_err(|e| ApiError::unavailable(format!("node '{target}' answered: {e}")))?;
    Ok((status, Json(body)))
}

async fn move_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Result<Json<crate::relocation::MoveRequest>, JsonRejection>,
) -> ApiResult<crate::relocation::MoveReport> {
    let Json(req) = body?;
    Ok(Json(crate::relocation::move_rule(&node, &id, req).await?))
}

#[derive(Deserialize)]
struct AttachQuery {
    from: Option<String>,
}

/// Takes a rule another node packed for a move (see [`crate::relocation`]).
async fn attach_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<AttachQuery>, QueryRejection>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<RuleView>), ApiError> {
    let axum::extract::Query(q) = q?;
    let package = crate::node::Package::decode(&body)?;
    if package.header.record.id != id {
        return Err(ApiError::bad_request(format!(
            "the package holds rule '{}', not '{id}'",
            package.header.record.id
        )));
    }
    let from = q.from.unwrap_or_else(|| "(unnamed node)".to_owned());
    let view = node.attach(package, &from).await?;
    Ok((axum::http::StatusCode::CREATED, Json(view)))
}

/// The members with their rules' texts as listings show them: heartbeats carry them whole, for
/// failover.
async fn list_nodes(State(node): State<Arc<Node>>) -> Json<Vec<crate::cluster::Member>> {
    let mut members = node.members.list();
    for h in members.iter_mut().flat_map(|m| m.report.hosted.iter_mut()) {
        h.sql = weir_core::redact::secrets(&h.sql).into_owned();
    }
    Json(members)
}

/// The placement policies' decisions, oldest first (see [`crate::placement`]).
async fn list_placements(State(node): State<Arc<Node>>) -> Json<Vec<crate::placement::Decision>> {
    Json(node.placements.list())
}

async fn node_heartbeat(
    State(node): State<Arc<Node>>,
    body: Result<Json<crate::cluster::NodeReport>, JsonRejection>,
) -> ApiResult<Json_> {
    let Json(report) = body?;
    node.members.heartbeat(report);
    Ok(Json(json!({"ok": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

async fn validate_rule(
    State(node): State<Arc<Node>>,
    body: Result<Json<SqlBody>, JsonRejection>,
) -> ApiResult<Json_> {
    let Json(b) = body?;
    let (inputs, outputs) = node.validate_rule(&b.sql).await?;
    Ok(Json(
        json!({"valid": true, "inputs": inputs, "outputs": outputs}),
    ))
}

async fn list_rules(State(node): State<Arc<Node>>) -> Json<Vec<RuleView>> {
    Json(node.rules().await)
}

async fn get_rule(State(node): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult<RuleView> {
    Ok(Json(node.rule(&id).await?.0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    id: Option<String>,
    sql: String,
    #[serde(default)]
    options: RuleOptions,
    /// What becomes of the rule's saved state: kept (the default; refused when the stateful
    /// operators changed) or reset.
    #[serde(default)]
    state: StateChoice,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
enum StateChoice {
    #[default]
    Keep,
    Reset,
}

/// A rule after an update, and what became of its saved state.
#[derive(serde::Serialize)]
struct Updated {
    #[serde(flatten)]
    rule: RuleView,
    saved_state: crate::node::SavedState,
}

async fn update_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> ApiResult<Updated> {
    let Json(b) = body?;
    if b.id.as_ref().is_some_and(|i| i != &id) {
        return Err(ApiError::bad_request(
            "the body's id differs from the path's; a rule cannot be renamed",
        ));
    }
    let reset = b.state == StateChoice::Reset;
    let (rule, saved_state) = node.update_rule(&id, &b.sql, b.options, reset).await?;
    Ok(Json(Updated { rule, saved_state }))
}

/// `?reset_state=true`: start with empty state.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    #[serde(default)]
    reset_state: bool,
}

async fn delete_rule(State(node): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult<RuleView> {
    Ok(Json(node.delete_rule(&id).await?))
}

async fn start_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<StartQuery>, QueryRejection>,
) -> ApiResult<RuleView> {
    let axum::extract::Query(q) = query?;
    Ok(Json(node.start_rule(&id, q.reset_state).await?))
}

async fn stop_rule(State(node): State<Arc<Node>>, Path(id): Path<String>) -> ApiResult<RuleView> {
    Ok(Json(node.stop_rule(&id).await?))
}

async fn restart_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<StartQuery>, QueryRejection>,
) -> ApiResult<RuleView> {
    let axum::extract::Query(q) = query?;
    Ok(Json(node.restart_rule(&id, q.reset_state).await?))
}

async fn rule_status(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<RuleStatus> {
    Ok(Json(node.status(&id).await?))
}

async fn list_templates() -> Json<&'static [weir_lang::templates::Template]> {
    Json(weir_lang::templates::TEMPLATES)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstantiateBody {
    id: String,
    params: BTreeMap<String, Json_>,
    #[serde(default)]
    options: RuleOptions,
    /// Return the rule text without installing it.
    #[serde(default)]
    dry_run: bool,
}

async fn instantiate_template(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Result<Json<InstantiateBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Json_>), ApiError> {
    let Json(b) = body?;
    let sql = weir_lang::templates::instantiate(&name, &b.params)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if b.dry_run {
        node.validate_rule(&sql).await?;
        return Ok((
            axum::http::StatusCode::OK,
            Json(json!({"id": b.id, "sql": sql})),
        ));
    }
    let view = node.install_rule(&b.id, &sql, b.options, None).await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(view))))
}
