//! The webhook sink against a server that is busy: an answer 429 (with Retry-After) or 408
//! sends the same event again, so none is lost, while another 4xx refuses that one event for
//! good and the rule goes on.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// What the webhook saw: each body, with the answer it gave.
type Seen = Arc<Mutex<Vec<(Value, u16)>>>;

/// A webhook that answers the first attempt at each event 429 (Retry-After: 1), the second
/// 408, and then 200; an event with `"bad": true` gets 400.
async fn busy_webhook() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| async move {
            let mut log = log.lock().unwrap();
            let attempts = log.iter().filter(|(b, _)| *b == body.0).count();
            let status = match (body.0["bad"] == true, attempts) {
                (true, _) => StatusCode::BAD_REQUEST,
                (false, 0) => StatusCode::TOO_MANY_REQUESTS,
                (false, 1) => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::OK,
            };
            log.push((body.0, status.as_u16()));
            (status, [("retry-after", "1")], "")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_answers_are_retried_and_refusals_are_not() {
    let (hook, seen) = busy_webhook().await;
    let dir = data_dir("webhook");
    let node = TestNode::start(&dir).await;
    let sql = format!(
        "CREATE STREAM feed (n BIGINT, bad BOOLEAN);
         CREATE STREAM hook WITH (connector = 'http', url = '{hook}');
         INSERT INTO hook SELECT n, bad FROM feed;"
    );
    let (s, v) = node
        .post("/v1/rules", json!({"id": "hook", "sql": sql}))
        .await;
    assert_eq!(s, 201, "{v}");
    let started = Instant::now();
    let events = [
        json!({"n": 1, "bad": false}),
        json!({"n": 2, "bad": true}),
        json!({"n": 3, "bad": false}),
    ];
    let texts: Vec<String> = events.iter().map(Value::to_string).collect();
    mqtt_publish(node.mqtt_port(), "feed", &texts).await;
    let delivered = |seen: &Seen| -> Vec<i64> {
        (seen.lock().unwrap().iter())
            .filter(|(_, status)| *status == 200)
            .map(|(b, _)| b["n"].as_i64().unwrap())
            .collect()
    };
    for _ in 0..150 {
        if delivered(&seen).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered(&seen), [1, 3], "{:?}", seen.lock().unwrap());
    // Each good event waited out the 429's Retry-After once.
    assert!(started.elapsed() >= Duration::from_secs(2));
    let answers: Vec<u16> = seen.lock().unwrap().iter().map(|(_, s)| *s).collect();
    assert_eq!(answers, [429, 408, 200, 400, 429, 408, 200]);
    let status = node
        .wait_status("hook", "the refusal counted", |s| {
            s["operators"].as_array().is_some_and(|ops| {
                ops.iter()
                    .any(|o| o["health"]["errors"].as_u64() >= Some(1))
            })
        })
        .await;
    assert_eq!(status["state"], "RUNNING", "{status:#}");
    node.stop().await;
}
