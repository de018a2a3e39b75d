//! A rule's state across updates, upgrades and mistakes: an update that leaves the stateful
//! operators alone keeps the state; one that changes them is refused with the reason unless
//! the user resets the state; a checkpoint another build wrote in another form stops the rule
//! from starting, with the reason, until the user resets it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const STREAM: &str = "CREATE STREAM s (k STRING, ts BIGINT) WITH (timestamp = 'ts');\n";

fn counts(window: &str, extra: &str, filter: &str) -> String {
    format!(
        "{STREAM}INSERT INTO counts SELECT k, window_start, count(*) AS n{extra} FROM s {filter} GROUP BY k, TUMBLE(ts, INTERVAL '{window}' HOUR);"
    )
}

/// Posts events one request each and waits until the rule has taken them all.
async fn send(node: &TestNode, id: &str, events: &[(&str, i64)], total: u64) {
    for (k, ts) in events {
        let (s, v) = node
            .post("/v1/streams/s/events", json!({"k": k, "ts": ts}))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    node.wait_status(id, "the events are in", |s| {
        s["operators"][0]["events_out"].as_u64() == Some(total)
    })
    .await;
}

async fn next_result(rx: &mut mpsc::Receiver<weir_node::hub::Message>) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a result within 10 s")
        .expect("subscribed");
    serde_json::from_slice(&m.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_rule_writes_no_checkpoint_until_its_state_changes() {
    let dir = data_dir("state-idle");
    let node = TestNode::start(&dir).await;
    let body = json!({"id": "idle", "sql": counts("1", "", ""), "options": {"checkpoint_interval": "100ms"}});
    let (s, v) = node.post("/v1/rules", body).await;
    assert_eq!(s, 201, "{v}");
    send(&node, "idle", &[("a", 1_000)], 1).await;
    let completed = |s: &Value| s["checkpoint"]["completed"].as_u64().unwrap_or(0);
    node.wait_status("idle", "a checkpoint", |s| completed(s) >= 1)
        .await;
    // A round in flight may still hold the event; after it, ten idle rounds write nothing.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, before) = node.get("/v1/rules/idle/status").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, after) = node.get("/v1/rules/idle/status").await;
    assert_eq!(completed(&after), completed(&before), "{after}");
    assert_eq!(after["checkpoint"]["failed"], 0, "{after}");
    // New state is written at the next round.
    send(&node, "idle", &[("b", 2_000)], 2).await;
    node.wait_status("idle", "a new checkpoint", |s| {
        completed(s) > completed(&before)
    })
    .await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_rule_whose_state_only_input_changes_takes_no_checkpoint_rounds() {
    let dir = data_dir("state-idle-rounds");
    let node = TestNode::start(&dir).await;
    let sql = "CREATE STREAM r (k STRING, v BIGINT) WITH (topic = 'rounds_in');\n\
               INSERT INTO rounds_out SELECT k FROM r WHERE v > 1;";
    let body = json!({"id": "quiet", "sql": sql, "options": {"checkpoint_interval": "100ms"}});
    let (s, v) = node.post("/v1/rules", body).await;
    assert_eq!(s, 201, "{v}");
    let rounds = |s: &Value| s["checkpoint"]["rounds"].as_u64().unwrap_or(0);
    node.wait_status("quiet", "a first round", |s| rounds(s) >= 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, before) = node.get("/v1/rules/quiet/status").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, after) = node.get("/v1/rules/quiet/status").await;
    assert_eq!(rounds(&after), rounds(&before), "{after}");
    // Input brings the rounds back: the next one takes the new position in.
    let (s, v) = node
        .post("/v1/streams/r/events", json!({"k": "a", "v": 2}))
        .await;
    assert_eq!(s, 200, "{v}");
    node.wait_status("quiet", "a round after input", |s| {
        rounds(s) > rounds(&before)
    })
    .await;
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_the_state_unless_it_changes_what_the_state_is_for() {
    let dir = data_dir("state-update");
    let node = TestNode::start(&dir).await;
    let (_sub, mut rx) = tap(&node.running.node.hub, "counts");
    let (s, v) = node
        .post("/v1/rules", json!({"id": "c", "sql": counts("1", "", "")}))
        .await;
    assert_eq!(s, 201, "{v}");
    send(&node, "c", &[("a", 1_000), ("a", 2_000), ("b", 3_000)], 3).await;

    // A new projection and a new WHERE: the windows and their counts go on.
    let (s, v) = node
        .call(
            reqwest::Method::PUT,
            "/v1/rules/c",
            Some(json!({"sql": counts("1", ", 'v2' AS version", "WHERE k <> 'x'")})),
        )
        .await;
    assert_eq!((s, v["saved_state"].as_str()), (200, Some("kept")), "{v}");
    send(
        &node,
        "c",
        &[("a", 4_000), ("x", 4_500), ("a", 7_200_000)],
        3,
    )
    .await;
    let mut got = [next_result(&mut rx).await, next_result(&mut rx).await];
    got.sort_by_key(|r| r["k"].as_str().unwrap().to_owned());
    assert_eq!(
        got[0],
        json!({"k": "a", "window_start": 0, "n": 3, "version": "v2"})
    );
    assert_eq!(
        got[1],
        json!({"k": "b", "window_start": 0, "n": 1, "version": "v2"})
    );

    // A longer window: the state kept for one-hour windows would not fit. Refused with the
    // reason; the rule runs on as it was.
    let (s, v) = node
        .call(
            reqwest::Method::PUT,
            "/v1/rules/c",
            Some(json!({"sql": counts("2", "", "")})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("tumbling window) is defined differently")
            && msg.contains("\"state\": \"reset\""),
        "{msg}"
    );
    let (_, rule) = node.get("/v1/rules/c").await;
    assert!(
        rule["sql"].as_str().unwrap().contains("'v2' AS version"),
        "{rule}"
    );
    assert_eq!(rule["state"], "RUNNING");

    // Asked to reset: it starts over.
    let (s, v) = node
        .call(
            reqwest::Method::PUT,
            "/v1/rules/c",
            Some(json!({"sql": counts("2", "", ""), "state": "reset"})),
        )
        .await;
    assert_eq!((s, v["saved_state"].as_str()), (200, Some("reset")), "{v}");
    send(&node, "c", &[("a", 7_300_000), ("a", 20_000_000)], 2).await;
    assert_eq!(
        next_result(&mut rx).await,
        json!({"k": "a", "window_start": 7_200_000, "n": 1})
    );
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_in_another_form_stops_the_rule_until_its_state_is_reset() {
    let dir = data_dir("state-version");
    let node = TestNode::start(&dir).await;
    let (s, v) = node
        .post("/v1/rules", json!({"id": "c", "sql": counts("1", "", "")}))
        .await;
    assert_eq!(s, 201, "{v}");
    send(&node, "c", &[("a", 1_000)], 1).await;
    let (s, _) = node.post("/v1/rules/c/stop", json!({})).await;
    assert_eq!(s, 200);

    // The checkpoint as a build with another state format for tumbling windows wrote it.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/rules/c/checkpoint", node.base);
    let bytes = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    let mut c = weir_state::Checkpoint::decode(&bytes).unwrap();
    let text = c.operators[0]
        .get()
        .replace("\"version\":1,", "\"version\":99,");
    assert_ne!(
        text,
        c.operators[0].get(),
        "the snapshot names its format version"
    );
    c.operators[0] = serde_json::value::RawValue::from_string(text).unwrap();
    let put = http
        .put(&url)
        .body(c.encode().unwrap())
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let (s, v) = node.post("/v1/rules/c/start", json!({})).await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("saved in version 99 of its format")
            && msg.contains("/v1/rules/c/start?reset_state=true"),
        "{msg}"
    );
    let (_, rule) = node.get("/v1/rules/c").await;
    assert_ne!(rule["state"], "RUNNING");

    let (s, v) = node
        .post("/v1/rules/c/start?reset_state=true", json!({}))
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("RUNNING")), "{v}");
    let status = node
        .wait_status("c", "running from empty state", |s| s["state"] == "RUNNING")
        .await;
    assert_eq!(
        status["checkpoint"]["restored_from"],
        Value::Null,
        "{status}"
    );
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that resends a request it got no answer for, with the same Idempotency-Key, has
/// its events stored once, across a node restart too; a key reused for other events is
/// refused; events whose id (the stream's event_id) was seen are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_is_stored_once() {
    let dir = data_dir("idempotent");
    let http = reqwest::Client::new();
    let post = |base: String, stream: &'static str, key: Option<&'static str>, body: Value| {
        let http = http.clone();
        async move {
            let mut req = http
                .post(format!("{base}/v1/streams/{stream}/events"))
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let batch = json!([{"n": 1}, {"n": 2}, {"n": 3}]);
    let mut seen_total = 0;
    for round in 0..2 {
        let node = TestNode::start(&dir).await;
        let (_sub, mut rx) = tap(&node.running.node.hub, "seen");
        if round == 0 {
            let sql = "CREATE STREAM orders WITH (topic = 'orders');\n\
                       CREATE STREAM readings WITH (topic = 'readings', event_id = 'id');\n\
                       INSERT INTO seen SELECT * FROM orders;\n\
                       INSERT INTO seen SELECT * FROM readings;";
            let (s, v) = node.post("/v1/rules", json!({"id": "r", "sql": sql})).await;
            assert_eq!(s, 201, "{v}");
        }
        // The first sending (round 0) and a retry after a restart (round 1): stored once.
        let (s, v) = post(
            node.base.clone(),
            "orders",
            Some("order-batch-1"),
            batch.clone(),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["accepted"], 3, "{v}");
        assert_eq!(v["replayed"].as_bool().unwrap_or(false), round == 1, "{v}");
        let (s, v) = post(
            node.base.clone(),
            "orders",
            Some("order-batch-1"),
            batch.clone(),
        )
        .await;
        assert_eq!((s, v["replayed"].as_bool()), (200, Some(true)), "{v}");
        // The same key for other events is a mistake.
        let (s, v) = post(
            node.base.clone(),
            "orders",
            Some("order-batch-1"),
            json!([{"n": 9}]),
        )
        .await;
        assert_eq!(s, 409, "{v}");
        // Events with ids: repeats within a request and across requests are dropped.
        let (s, v) = post(
            node.base.clone(),
            "readings",
            None,
            json!([{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 1}]),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let expect_new = if round == 0 { 2 } else { 0 };
        assert_eq!(
            (
                v["accepted"].as_u64(),
                v["duplicates"].as_u64().unwrap_or(0)
            ),
            (Some(expect_new), 3 - expect_new),
            "{v}"
        );
        let want = if round == 0 { 5 } else { 0 };
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(700), rx.recv()).await {
            got += 1;
        }
        assert_eq!(got, want, "round {round}");
        seen_total += got;
        node.stop().await;
    }
    assert_eq!(seen_total, 5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_whose_changelog_server_is_away_is_unavailable_not_wrong() {
    let dir = data_dir("changelog-away");
    let node = TestNode::start(&dir).await;
    let sql = "CREATE STREAM s (k BIGINT) WITH (topic = 'away_in'); INSERT INTO away_out SELECT * FROM s;";
    let (s, v) = node
        .post(
            "/v1/rules",
            json!({"id": "away", "sql": sql, "options": {"changelog": "nats://127.0.0.1:1"}}),
        )
        .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("changelog"), "{message}");
    assert!(message.contains("once it is back"), "{message}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_slow_to_start_holds_up_no_call_about_the_others() {
    let dir = data_dir("slow-start");
    let node = TestNode::start(&dir).await;
    let quick = "CREATE STREAM q (k BIGINT) WITH (topic = 'quick_in'); INSERT INTO quick_out SELECT * FROM q;";
    let (s, v) = node
        .post("/v1/rules", json!({"id": "quick", "sql": quick}))
        .await;
    assert_eq!(s, 201, "{v}");
    // A changelog server that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let slow = "CREATE STREAM s (k BIGINT) WITH (topic = 'slow_in'); INSERT INTO slow_out SELECT * FROM s;";
    let install = node.post(
        "/v1/rules",
        json!({"id": "slow", "sql": slow, "options": {"changelog": format!("nats://127.0.0.1:{port}")}}),
    );
    let others = async {
        let mut seen_starting = false;
        for _ in 0..20 {
            let began = Instant::now();
            let (s, v) = node.get("/v1/rules").await;
            assert_eq!(s, 200, "{v}");
            let (s, status) = node.get("/v1/rules/quick/status").await;
            assert_eq!(s, 200, "{status}");
            let took = began.elapsed();
            assert!(took < Duration::from_secs(2), "the others waited {took:?}");
            let slow = v.as_array().unwrap().iter().find(|r| r["id"] == "slow");
            if slow.is_some_and(|r| r["state"] == "STARTING") {
                seen_starting = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen_starting,
            "the slow rule is shown as STARTING while it starts"
        );
        let (s, v) = node.post("/v1/rules/quick/stop", json!({})).await;
        assert_eq!((s, v["state"].as_str()), (200, Some("STOPPED")), "{v}");
    };
    let ((s, v), ()) = tokio::join!(install, others);
    assert_eq!(s, 503, "{v}");
    let (s, _) = node.get("/v1/rules/slow").await;
    assert_eq!(s, 404, "a rule that did not start is not installed");
    node.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
