//! The REST control plane: the resource API under `/v1` (described by `/v1/openapi.json`),
//! seed paper 001's API under `/api`, and Prometheus text at `/metrics`.

mod paper;
mod relay;
mod v1;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::node::{Node, NodeError};

pub use v1::OPENAPI;

/// Every route of the node.
pub fn router(node: Arc<Node>) -> axum::Router {
    v1::routes()
        .merge(paper::routes())
        .route("/metrics", axum::routing::get(metrics))
        .layer(axum::middleware::from_fn(to_the_end))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            relay::to_holder,
        ))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            authorize,
        ))
        .layer(axum::middleware::map_request(json_by_default))
        .layer(axum::extract::DefaultBodyLimit::max(
            node.config.max_payload * 16,
        ))
        .with_state(node)
}

/// Runs a request that changes something to its end even if its client goes away meanwhile
/// (the server drops the handler of a closed connection): a change cut short between its steps
/// — a rule in the catalogue but not started, a rule stopped but not updated — would leave the
/// catalogue and the running rules disagreeing.
async fn to_the_end(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method().is_safe() {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => ApiError::internal(&format!("the request did not complete: {e}")).into_response(),
    }
}

/// Lets a request through if its bearer token's role is enough for it (see [`crate::auth`]):
/// 401 without a known token, 403 with a role too small.
async fn authorize(
    axum::extract::State(node): axum::extract::State<Arc<Node>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(needs) = crate::auth::required(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match node.guard.check(bearer, needs) {
        Ok(_) => next.run(req).await,
        Err(crate::auth::Refusal::Unknown) => {
            let mut r = ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "send a known token: Authorization: Bearer TOKEN (weir ... --token, or WEIR_TOKEN)".into(),
                problems: serde_json::Value::Null,
            }
            .into_response();
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            r
        }
        Err(crate::auth::Refusal::TooSmall { needs, has }) => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "{} {} needs the {} role; this token has {}",
                req.method(),
                req.uri().path(),
                needs.name(),
                has.name()
            ),
            problems: serde_json::Value::Null,
        }
        .into_response(),
    }
}

/// Every body this API takes is JSON (or raw events): one sent without a content type, or as
/// `curl -d` sends it (form-encoded), is read as JSON rather than refused for its header.
async fn json_by_default(mut req: axum::extract::Request) -> axum::extract::Request {
    use axum::http::header::{HeaderValue, CONTENT_TYPE};
    let form = req.headers().get(CONTENT_TYPE).is_none_or(|t| {
        t.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    if form {
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    req
}

async fn metrics(axum::extract::State(node): axum::extract::State<Arc<Node>>) -> Response {
    match crate::metrics::render(&node) {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::internal("metrics could not be encoded").into_response(),
    }
}

/// An error answer: `{"error": {"code", "message", "problems": [{line, column, message, hint}]}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    problems: serde_json::Value,
}

impl ApiError {
    /// A 400 answer with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
            problems: serde_json::Value::Null,
        }
    }

    pub(crate) fn unavailable(message: String) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message,
            problems: serde_json::Value::Null,
        }
    }

    fn internal(message: &str) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.to_owned(),
            problems: serde_json::Value::Null,
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        let (status, code) = match &e {
            NodeError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            NodeError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            NodeError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
            NodeError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit"),
            NodeError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            NodeError::Start(s) => match s.blame {
                weir_core::Blame::User => (StatusCode::BAD_REQUEST, "start_failed"),
                weir_core::Blame::External => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                weir_core::Blame::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            NodeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            NodeError::Remote { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                "remote",
            ),
            NodeError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
            NodeError::Store(weir_state::StoreError::Full(_)) => {
                (StatusCode::INSUFFICIENT_STORAGE, "disk_full")
            }
            NodeError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
        };
        let problems = match &e {
            NodeError::Invalid { problems, .. } if !problems.is_empty() => json!(problems),
            _ => serde_json::Value::Null,
        };
        let mut message = weir_core::redact::secrets(&e.to_string()).into_owned();
        if matches!(&e, NodeError::Start(s) if s.blame == weir_core::Blame::External) {
            message.push_str(
                " (something outside weir is away: start the rule again once it is back)",
            );
        }
        ApiError {
            status,
            code,
            message,
            problems,
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> ApiError {
        ApiError::bad_request(format!("query: {}", r.body_text()))
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> ApiError {
        ApiError::bad_request(format!("request body: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if !self.problems.is_null() {
            error["problems"] = self.problems;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// What a handler answers: JSON, or an error with its status.
pub type ApiResult<T> = Result<Json<T>, ApiError>;
