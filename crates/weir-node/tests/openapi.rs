//! The node's real answers match its OpenAPI document: each answer of a route is validated
//! against the schema the document gives for that route, method and status.

mod common;

use common::openapi::Document;
use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let doc = Document::load();
    let dir = data_dir("openapi-answers");
    let node = TestNode::start(&dir).await;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);

    doc.check(&node, get.clone(), "/v1/health", "/v1/health", None)
        .await;
    doc.check(&node, get.clone(), "/v1/info", "/v1/info", None)
        .await;
    doc.check(
        &node,
        get.clone(),
        "/v1/openapi.json",
        "/v1/openapi.json",
        None,
    )
    .await;

    let stream = json!({"sql": "CREATE STREAM s (v BIGINT, ts BIGINT) WITH (timestamp = 'ts')"});
    let (s, _) = doc
        .check(
            &node,
            post.clone(),
            "/v1/streams",
            "/v1/streams",
            Some(stream.clone()),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = doc
        .check(
            &node,
            post.clone(),
            "/v1/streams",
            "/v1/streams",
            Some(stream),
        )
        .await;
    assert_eq!(s, 400, "a stream declared twice");
    doc.check(&node, get.clone(), "/v1/streams", "/v1/streams", None)
        .await;
    doc.check(
        &node,
        get.clone(),
        "/v1/streams/{name}",
        "/v1/streams/s",
        None,
    )
    .await;
    let (s, _) = doc
        .check(
            &node,
            get.clone(),
            "/v1/streams/{name}",
            "/v1/streams/nope",
            None,
        )
        .await;
    assert_eq!(s, 404);

    let rule = json!({"id": "r", "sql": "INSERT INTO o SELECT v, count(*) AS n FROM s GROUP BY v, TUMBLE(ts, INTERVAL '1' SECOND)",
                      "options": {"delivery": "at_least_once"}});
    let (s, _) = doc
        .check(&node, post.clone(), "/v1/rules", "/v1/rules", Some(rule))
        .await;
    assert_eq!(s, 201);
    let bad = json!({"id": "bad", "sql": "INSERT INTO o SELEC v FROM s"});
    let (s, answer) = doc
        .check(&node, post.clone(), "/v1/rules", "/v1/rules", Some(bad))
        .await;
    assert_eq!(
        (s, answer["error"]["problems"][0]["line"].as_u64()),
        (400, Some(1))
    );
    let events = json!([{"v": 1, "ts": 1000}, {"v": "x", "ts": 1500}, {"v": 1, "ts": 3000}]);
    let (s, answer) = doc
        .check(
            &node,
            post.clone(),
            "/v1/streams/{name}/events",
            "/v1/streams/s/events",
            Some(events),
        )
        .await;
    assert_eq!((s, answer["accepted"].as_u64()), (200, Some(3)));
    let status = || {
        doc.check(
            &node,
            Method::GET,
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
    doc.check(
        &node,
        get.clone(),
        "/v1/streams/{name}/log",
        "/v1/streams/s/log",
        None,
    )
    .await;
    doc.check(&node, get.clone(), "/v1/rules", "/v1/rules", None)
        .await;
    doc.check(&node, get.clone(), "/v1/rules/{id}", "/v1/rules/r", None)
        .await;
    let (s, _) = doc
        .check(&node, get.clone(), "/v1/rules/{id}", "/v1/rules/nope", None)
        .await;
    assert_eq!(s, 404);
    let sql = json!({"sql": "INSERT INTO o2 SELECT v FROM s"});
    doc.check(
        &node,
        post.clone(),
        "/v1/rules/validate",
        "/v1/rules/validate",
        Some(sql),
    )
    .await;
    for action in ["stop", "start", "restart"] {
        let route = format!("/v1/rules/{{id}}/{action}");
        let (s, _) = doc
            .check(
                &node,
                post.clone(),
                &route,
                &format!("/v1/rules/r/{action}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{action}");
    }
    let update = json!({"sql": "INSERT INTO o SELECT v, count(*) AS n FROM s WHERE v > 0 GROUP BY v, TUMBLE(ts, INTERVAL '1' SECOND)",
                        "options": {"delivery": "at_least_once"}});
    let (s, answer) = doc
        .check(
            &node,
            put.clone(),
            "/v1/rules/{id}",
            "/v1/rules/r",
            Some(update),
        )
        .await;
    assert_eq!(s, 200, "{answer}");

    doc.check(&node, get.clone(), "/v1/nodes", "/v1/nodes", None)
        .await;
    doc.check(&node, get.clone(), "/v1/placements", "/v1/placements", None)
        .await;
    doc.check(&node, get.clone(), "/v1/templates", "/v1/templates", None)
        .await;
    let params = json!({"input": "s", "output": "big", "fieldName": "v", "condition": ">", "threshold": "5"});
    let route = "/v1/templates/{name}";
    let path = "/v1/templates/single-filter";
    let (s, _) = doc
        .check(
            &node,
            post.clone(),
            route,
            path,
            Some(json!({"id": "t", "params": params, "dry_run": true})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = doc
        .check(
            &node,
            post.clone(),
            route,
            path,
            Some(json!({"id": "t", "params": params})),
        )
        .await;
    assert_eq!(s, 201);

    let (s, _) = doc
        .check(&node, delete.clone(), "/v1/rules/{id}", "/v1/rules/t", None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = doc
        .check(
            &node,
            delete.clone(),
            "/v1/streams/{name}",
            "/v1/streams/s",
            None,
        )
        .await;
    assert_eq!(s, 409, "a stream a rule reads stays");
    let (s, _) = doc
        .check(&node, delete.clone(), "/v1/rules/{id}", "/v1/rules/r", None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = doc
        .check(
            &node,
            delete.clone(),
            "/v1/streams/{name}",
            "/v1/streams/s",
            None,
        )
        .await;
    assert_eq!(s, 200);

    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
