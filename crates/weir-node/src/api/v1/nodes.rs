//! `/v1/nodes`, `/v1/placements` and moves: the control plane's nodes, its placement decisions, and rules moving between nodes.

use super::*;

pub(super) async fn move_rule(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    body: Result<Json<crate::relocation::MoveRequest>, JsonRejection>,
) -> ApiResult<crate::relocation::MoveReport> {
    let Json(req) = body?;
    Ok(Json(crate::relocation::move_rule(&node, &id, req).await?))
}

#[derive(Deserialize)]
pub(super) struct AttachQuery {
    from: Option<String>,
}

/// Takes a rule another node packed for a move (see [`crate::relocation`]).
pub(super) async fn attach_rule(
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
pub(super) async fn list_nodes(State(node): State<Arc<Node>>) -> Json<Vec<crate::cluster::Member>> {
    let mut members = node.members.list();
    for h in members.iter_mut().flat_map(|m| m.report.hosted.iter_mut()) {
        h.sql = weir_core::redact::secrets(&h.sql).into_owned();
    }
    Json(members)
}

/// The placement policies' decisions, oldest first (see [`crate::placement`]).
pub(super) async fn list_placements(
    State(node): State<Arc<Node>>,
) -> Json<Vec<crate::placement::Decision>> {
    Json(node.placements.list())
}

pub(super) async fn node_heartbeat(
    State(node): State<Arc<Node>>,
    body: Result<Json<crate::cluster::NodeReport>, JsonRejection>,
) -> ApiResult<Json_> {
    let Json(report) = body?;
    node.members.heartbeat(report);
    Ok(Json(json!({"ok": true})))
}
