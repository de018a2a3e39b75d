//! `/v1/streams`: declaring streams, HTTP ingest, live tails and reading a stream's log.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamBody {
    sql: String,
}

pub(super) async fn create_stream(
    State(node): State<Arc<Node>>,
    body: Result<Json<StreamBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<StreamView>), ApiError> {
    let Json(b) = body?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(node.create_stream(&b.sql).await?),
    ))
}

pub(super) async fn list_streams(State(node): State<Arc<Node>>) -> Json<Vec<StreamView>> {
    Json(node.streams().await)
}

pub(super) async fn get_stream(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<StreamView> {
    Ok(Json(node.stream(&name).await?))
}

pub(super) async fn delete_stream(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<Json_> {
    node.delete_stream(&name).await?;
    Ok(Json(json!({"deleted": name})))
}

/// One JSON object, or an array of them, published to the stream's ingest topic.
pub(super) async fn ingest(
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
pub(super) fn sse(
    node: &Node,
    topics: &[String],
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
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
pub(super) fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(f(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

pub(super) async fn tail_stream(
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

#[derive(Deserialize)]
pub(super) struct LogRange {
    from: Option<u64>,
    limit: Option<usize>,
}

/// The durable log of an embedded topic, from an offset: what at-least-once and exactly-once
/// rules read and write, kept to the node's `log_retention`.
pub(super) async fn read_log(
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
