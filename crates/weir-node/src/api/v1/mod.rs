//! The resource API, a file per resource: [`streams`], [`rules`], [`nodes`] (with moves) and
//! [`templates`]; this file routes them and answers health, info and the OpenAPI document.

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

mod nodes;
mod rules;
mod streams;
mod templates;

use nodes::*;
use rules::*;
use streams::*;
use templates::*;

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
