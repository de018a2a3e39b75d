//! Requests about one rule that reach a node not holding it. The node finds the node of its
//! control plane that does and hands the request over unchanged, so a client may send every
//! request about a rule to one address — the control plane's — wherever the rule runs or moved.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::cluster::Member;
use crate::node::Node;
use crate::relocation::{self, RELAYED};

/// The largest request body handed on (a rule's text and options, never events).
const MAX_BODY: usize = 4 << 20;

/// Middleware: a request about a rule this node does not hold goes to the node that does.
pub async fn to_holder(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    let Some(id) = rule_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if req.headers().contains_key(RELAYED) {
        return next.run(req).await;
    }
    match relocation::elsewhere(&node, &id).await {
        Ok(None) => next.run(req).await,
        Ok(Some(holder)) => relay(&node, &holder, req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The rule a request is about, for the routes that are answered where the rule is: the
/// rule itself (read, update, delete), its lifecycle and its status.
fn rule_of(method: &Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/rules/")?;
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    let relayed = match action {
        // POST /v1/rules/validate is not about a rule.
        None => *method != Method::POST,
        Some(a) => ["start", "stop", "restart", "status"].contains(&a),
    };
    (relayed && !id.is_empty()).then(|| id.to_owned())
}

/// Sends `req` to `holder` and answers with its answer, status and body as they are.
async fn relay(node: &Node, holder: &Member, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::bad_request(format!("the request body exceeds {MAX_BODY} bytes")))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", holder.report.address);
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|_| ApiError::bad_request("unknown method"))?;
    let mut out = relocation::http(node)
        .request(method, &url)
        .timeout(Duration::from_secs(120))
        .header(RELAYED, "1")
        .body(body);
    if let Some(t) = parts.headers.get(header::CONTENT_TYPE) {
        out = out.header(header::CONTENT_TYPE, t.as_bytes());
    }
    let name = &holder.report.name;
    let reply = out
        .send()
        .await
        .map_err(|e| ApiError::unavailable(format!("node '{name}' at {url}: {e}")))?;
    let status = reply.status().as_u16();
    let kind = reply.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = reply
        .bytes()
        .await
        .map_err(|e| ApiError::unavailable(format!("node '{name}' answered: {e}")))?;
    let mut answer = Response::new(Body::from(bytes));
    *answer.status_mut() =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    if let Some(k) = kind.and_then(|k| header::HeaderValue::from_bytes(k.as_bytes()).ok()) {
        answer.headers_mut().insert(header::CONTENT_TYPE, k);
    }
    Ok(answer)
}
