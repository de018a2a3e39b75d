//! `/v1/rules`: installing (here, on a named node or on a runtime), updating, starting, stopping and deleting rules, their status, dead letters and checkpoints.

use super::*;

pub(super) async fn export_checkpoint(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let bytes = node.export_checkpoint(&id).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    ))
}

pub(super) async fn import_checkpoint(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json_> {
    let saved = node.import_checkpoint(&id, &body).await?;
    Ok(Json(
        json!({"rule": id, "epoch": saved.epoch, "bytes": saved.bytes}),
    ))
}

pub(super) async fn tail_dead_letters(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    node.rule(&id).await?;
    Ok(sse(&node, &[crate::rule::dead_letter_topic(&id)]))
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleBody {
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

pub(super) async fn create_rule(
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
pub(super) async fn install_on_runtime(
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
pub(super) async fn forward_install(
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlBody {
    sql: String,
}

pub(super) async fn validate_rule(
    State(node): State<Arc<Node>>,
    body: Result<Json<SqlBody>, JsonRejection>,
) -> ApiResult<Json_> {
    let Json(b) = body?;
    let (inputs, outputs) = node.validate_rule(&b.sql).await?;
    Ok(Json(
        json!({"valid": true, "inputs": inputs, "outputs": outputs}),
    ))
}

pub(super) async fn list_rules(State(node): State<Arc<Node>>) -> Json<Vec<RuleView>> {
    Json(node.rules().await)
}

pub(super) async fn get_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<RuleView> {
    Ok(Json(node.rule(&id).await?.0))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
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
pub(super) struct Updated {
    #[serde(flatten)]
    rule: RuleView,
    saved_state: crate::node::SavedState,
}

pub(super) async fn update_rule(
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
pub(super) struct StartQuery {
    #[serde(default)]
    reset_state: bool,
}

pub(super) async fn delete_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<RuleView> {
    Ok(Json(node.delete_rule(&id).await?))
}

pub(super) async fn start_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<StartQuery>, QueryRejection>,
) -> ApiResult<RuleView> {
    let axum::extract::Query(q) = query?;
    Ok(Json(node.start_rule(&id, q.reset_state).await?))
}

pub(super) async fn stop_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<RuleView> {
    Ok(Json(node.stop_rule(&id).await?))
}

pub(super) async fn restart_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<StartQuery>, QueryRejection>,
) -> ApiResult<RuleView> {
    let axum::extract::Query(q) = query?;
    Ok(Json(node.restart_rule(&id, q.reset_state).await?))
}

pub(super) async fn rule_status(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<RuleStatus> {
    Ok(Json(node.status(&id).await?))
}
