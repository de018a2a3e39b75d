//! The node's real answers match its OpenAPI document: each answer of a route is validated
//! against the schema the document gives for that route, method and status.

mod common;

use common::openapi::Document;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// One request of the scenario, as (method, route, path, body, the status it must get).
type Step = (Method, &'static str, &'static str, Option<Value>, u16);

/// Runs `steps` in order: each answer must have its status and match the document.
async fn run(doc: &Document, node: &TestNode, steps: Vec<Step>) {
    for (method, route, path, body, expected) in steps {
        let (status, answer) = doc.check(node, method.clone(), route, path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let doc = Document::load();
    let dir = data_dir("openapi-answers");
    let node = TestNode::start(&dir).await;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let stream = json!({"sql": "CREATE STREAM s (v BIGINT, ts BIGINT) WITH (timestamp = 'ts')"});
    let windowed =
        "INSERT INTO o SELECT v, count(*) AS n FROM s GROUP BY v, TUMBLE(ts, INTERVAL '1' SECOND)";
    let durable = json!({"delivery": "at_least_once"});
    let events = json!([{"v": 1, "ts": 1000}, {"v": "x", "ts": 1500}, {"v": 1, "ts": 3000}]);
    run(
        &doc,
        &node,
        vec![
            (get.clone(), "/v1/health", "/v1/health", None, 200),
            (get.clone(), "/v1/info", "/v1/info", None, 200),
            (
                get.clone(),
                "/v1/openapi.json",
                "/v1/openapi.json",
                None,
                200,
            ),
            (
                post.clone(),
                "/v1/streams",
                "/v1/streams",
                Some(stream.clone()),
                201,
            ),
            // The text declares a stream the node has: the user's mistake, at its position.
            (
                post.clone(),
                "/v1/streams",
                "/v1/streams",
                Some(stream),
                400,
            ),
            (get.clone(), "/v1/streams", "/v1/streams", None, 200),
            (
                get.clone(),
                "/v1/streams/{name}",
                "/v1/streams/s",
                None,
                200,
            ),
            (
                get.clone(),
                "/v1/streams/{name}",
                "/v1/streams/nope",
                None,
                404,
            ),
            (
                post.clone(),
                "/v1/rules",
                "/v1/rules",
                Some(json!({"id": "r", "sql": windowed, "options": durable})),
                201,
            ),
            (
                post.clone(),
                "/v1/rules",
                "/v1/rules",
                Some(json!({"id": "bad", "sql": "INSERT INTO o SELEC v FROM s"})),
                400,
            ),
            (
                post.clone(),
                "/v1/streams/{name}/events",
                "/v1/streams/s/events",
                Some(events),
                200,
            ),
        ],
    )
    .await;

    // The bad event reaches the status as a dead letter.
    let status = || {
        doc.check(
            &node,
            get.clone(),
            "/v1/rules/{id}/status",
            "/v1/rules/r/status",
            None,
        )
    };
    for _ in 0..50 {
        if status().await.1["dead_letters"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status().await.1["dead_letters"], 1);

    let updated = "INSERT INTO o SELECT v, count(*) AS n FROM s WHERE v > 0 GROUP BY v, TUMBLE(ts, INTERVAL '1' SECOND)";
    let params = json!({"input": "s", "output": "big", "fieldName": "v", "condition": ">", "threshold": "5"});
    let template = "/v1/templates/{name}";
    run(
        &doc,
        &node,
        vec![
            (
                get.clone(),
                "/v1/streams/{name}/log",
                "/v1/streams/s/log",
                None,
                200,
            ),
            (get.clone(), "/v1/rules", "/v1/rules", None, 200),
            (get.clone(), "/v1/rules/{id}", "/v1/rules/r", None, 200),
            (get.clone(), "/v1/rules/{id}", "/v1/rules/nope", None, 404),
            (
                post.clone(),
                "/v1/rules/validate",
                "/v1/rules/validate",
                Some(json!({"sql": "INSERT INTO o2 SELECT v FROM s"})),
                200,
            ),
            (
                post.clone(),
                "/v1/rules/{id}/stop",
                "/v1/rules/r/stop",
                None,
                200,
            ),
            (
                post.clone(),
                "/v1/rules/{id}/start",
                "/v1/rules/r/start",
                None,
                200,
            ),
            (
                post.clone(),
                "/v1/rules/{id}/restart",
                "/v1/rules/r/restart",
                None,
                200,
            ),
            (
                put.clone(),
                "/v1/rules/{id}",
                "/v1/rules/r",
                Some(json!({"sql": updated, "options": durable})),
                200,
            ),
            (get.clone(), "/v1/nodes", "/v1/nodes", None, 200),
            (get.clone(), "/v1/placements", "/v1/placements", None, 200),
            (get.clone(), "/v1/templates", "/v1/templates", None, 200),
            (
                post.clone(),
                template,
                "/v1/templates/single-filter",
                Some(json!({"id": "t", "params": params, "dry_run": true})),
                200,
            ),
            (
                post.clone(),
                template,
                "/v1/templates/single-filter",
                Some(json!({"id": "t", "params": params})),
                201,
            ),
            (delete.clone(), "/v1/rules/{id}", "/v1/rules/t", None, 200),
            // A stream a rule reads stays until the rule goes.
            (
                delete.clone(),
                "/v1/streams/{name}",
                "/v1/streams/s",
                None,
                409,
            ),
            (delete.clone(), "/v1/rules/{id}", "/v1/rules/r", None, 200),
            (
                delete.clone(),
                "/v1/streams/{name}",
                "/v1/streams/s",
                None,
                200,
            ),
        ],
    )
    .await;

    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
