//! A `weir serve` process tried as an attacker on its network would: names that would become
//! paths outside the data directory, rule packages that name files anywhere, rule text that
//! nests deeper than a stack or holds names longer than storage keys, texts that would hold the
//! node's lock, and listings that would show broker passwords. Each is refused with a clear
//! error, and the node keeps serving with its data intact.

mod common;
use common::Served;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const RULE: &str = "CREATE STREAM a WITH (topic = 'a'); INSERT INTO b SELECT * FROM a;";

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_would_be_paths_are_refused_and_the_data_directory_stays() {
    let node = Served::start(&[], "ids").await;
    let (s, v) = node
        .post("/v1/rules", json!({"id": "keep", "sql": RULE}))
        .await;
    assert_eq!(s, 201, "{v}");
    let registry = node.data().join("registry").join("rules").join("keep.json");
    for id in [
        "..", ".", "../x", "/tmp/x", "a/b", ".hidden", "-x", "a\u{0}b", "x\ny",
    ] {
        let (s, v) = node.post("/v1/rules", json!({"id": id, "sql": RULE})).await;
        assert_eq!(s, 400, "{id:?}: {v}");
        assert!(message(&v).contains("rule id"), "{id:?}: {v}");
        assert!(registry.exists(), "{id:?} left the registry in place");
    }
    let (s, rule) = node.get("/v1/rules/keep").await;
    assert_eq!(
        (s, rule["state"].as_str()),
        (200, Some("RUNNING")),
        "{rule}"
    );
}

/// The bytes of a rule package (see weir-node's node/transfer.rs) holding `record`.
fn package(record: Value) -> Vec<u8> {
    let header = json!({
        "record": record, "streams": [], "job_file": "{}", "checkpoint": null,
        "inputs": [], "outboxes": []
    })
    .to_string();
    let mut out = b"WEIRMOVE".to_vec();
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_naming_files_outside_the_data_directory_is_refused() {
    let node = Served::start(&[], "attach").await;
    let outside = node.dir.join("outside");
    let cases = [
        (
            "evil",
            json!({"id": "evil", "sql": RULE, "state": "STOPPED",
                   "job": {"runtime": "edge", "job_type": "single-filter",
                           "config_file_name": outside.join("planted.json")}}),
            "job file name",
        ),
        (
            "evil2",
            json!({"id": "evil2", "sql": RULE, "state": "STOPPED",
                   "job": {"runtime": "edge", "job_type": "single-filter",
                           "config_file_name": "../../planted.json"}}),
            "job file name",
        ),
        (
            "%2Ftmp",
            json!({"id": outside.display().to_string(), "sql": RULE, "state": "STOPPED"}),
            "the package holds rule",
        ),
    ];
    for (path_id, record, expected) in cases {
        let reply = reqwest::Client::new()
            .post(format!("{}/v1/rules/{path_id}/attach", node.base))
            .header("content-type", "application/octet-stream")
            .body(package(record))
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let v: Value = reply.json().await.unwrap_or_default();
        assert_eq!(status, 400, "{v}");
        assert!(message(&v).contains(expected), "{v}");
    }
    // An id that is a path, sent where the path and the package agree.
    let id = outside.display().to_string();
    let reply = reqwest::Client::new()
        .post(format!("{}/v1/rules/{}/attach", node.base, urlencode(&id)))
        .body(package(json!({"id": id, "sql": RULE, "state": "STOPPED"})))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 400);
    assert!(
        !outside.exists(),
        "nothing written outside the data directory"
    );
    assert!(!node.dir.join("planted.json").exists());
    assert!(node.alive().await);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_text_too_deep_or_too_long_is_refused_before_it_can_crash_the_node() {
    let node = Served::start(&[], "deep").await;
    let chain = vec!["x"; 3000].join(" + ");
    let ands = vec!["x > 1"; 3000].join(" AND ");
    let nested = format!("{}A{}", "(".repeat(2000), ")".repeat(2000));
    let long_name = "s".repeat(70_000);
    let cases = [
        (
            format!("CREATE STREAM a (x BIGINT) WITH (topic = 'a'); INSERT INTO b SELECT {chain} AS y FROM a;"),
            "more than 1000 operators",
        ),
        (
            format!("CREATE STREAM a (x BIGINT) WITH (topic = 'a'); INSERT INTO b SELECT x FROM a WHERE {ands};"),
            "more than 1000 operators",
        ),
        (
            format!("CREATE STREAM a (k STRING, x BIGINT, ts BIGINT) WITH (topic = 'a', timestamp = 'ts'); INSERT INTO b SELECT * FROM a MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts MEASURES A.x AS ax ONE ROW PER MATCH PATTERN {nested} DEFINE A AS A.x > 0);"),
            "parentheses nest deeper than 64",
        ),
        (
            format!("CREATE STREAM {long_name} WITH (topic = 'a'); INSERT INTO b SELECT * FROM {long_name};"),
            "a name longer than 128 bytes",
        ),
    ];
    for (sql, expected) in &cases {
        for (path, body) in [
            ("/v1/rules/validate", json!({"sql": sql})),
            ("/v1/rules", json!({"id": "deep", "sql": sql})),
        ] {
            let (s, v) = node.post(path, body).await;
            assert_eq!(s, 400, "{path}: {}", message(&v));
            assert!(message(&v).contains(expected), "{path}: {}", message(&v));
        }
    }
    let (s, v) = node
        .post(
            "/v1/streams",
            json!({"sql": format!("CREATE STREAM {long_name} WITH (topic = 'a');")}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(node.alive().await, "the node survives");
    let (_, rules) = node.get("/v1/rules").await;
    assert_eq!(rules, json!([]), "nothing half-installed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_a_huge_text_never_holds_up_ingest() {
    let node = Served::start(&[], "lock").await;
    let (s, v) = node
        .post(
            "/v1/streams",
            json!({"sql": "CREATE STREAM readings WITH (topic = 'readings');"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let huge = format!("CREATE STREAM {} WITH (topic = 'a');", "i".repeat(4 << 20));
    let checks: Vec<_> = (0..4)
        .map(|_| {
            let (base, sql) = (node.base.clone(), huge.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{base}/v1/rules/validate"))
                    .json(&json!({"sql": sql}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let (s, v) = node
            .post("/v1/streams/readings/events", json!({"v": 1}))
            .await;
        assert_eq!(s, 200, "{v}");
        slowest = slowest.max(started.elapsed());
    }
    for c in checks {
        let status = c.await.unwrap().unwrap();
        assert!((400..500).contains(&status), "{status}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "ingest waited {slowest:?} behind the checks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_status_and_errors_never_show_a_password() {
    let node = Served::start(&[], "secrets").await;
    let sql = "CREATE STREAM alerts WITH (connector = 'amqp', url = 'amqp://guest:s3cret-pw@127.0.0.1:1/%2f', exchange = 'x');";
    let (s, v) = node.post("/v1/streams", json!({"sql": sql})).await;
    assert_eq!(s, 201, "{v}");
    let rule = "CREATE STREAM src WITH (connector = 'mqtt', url = 'mqtt://dev:s3cret-pw@127.0.0.1:1', topic = 't');
                INSERT INTO alerts SELECT * FROM src;";
    let (s, v) = node
        .post("/v1/rules", json!({"id": "r", "sql": rule}))
        .await;
    assert_eq!(s, 201, "{v}");
    // The brokers are unreachable: the connectors fail and say so, with their URLs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut shown = String::new();
    for path in [
        "/v1/streams",
        "/v1/streams/alerts",
        "/v1/rules",
        "/v1/rules/r",
        "/v1/rules/r/status",
        "/metrics",
    ] {
        let text = reqwest::get(format!("{}{path}", node.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains("s3cret-pw"), "{path}: {text}");
        shown.push_str(&text);
    }
    assert!(shown.contains("guest:***@"), "{shown}");
    // An error that quotes the text quotes it without the password.
    let (s, v) = node
        .post("/v1/rules", json!({"id": "r", "sql": rule}))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = node
        .post("/v1/rules/validate", json!({"sql": format!("{rule} oops")}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(!v.to_string().contains("s3cret-pw"), "{v}");
    let log = std::fs::read_to_string(node.dir.join("node.log")).unwrap();
    assert!(!log.contains("s3cret-pw"), "the log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_cannot_make_the_node_open_files() {
    let node = Served::start(&[], "files").await;
    let planted = node.dir.join("planted.jsonl");
    for sql in [
        "CREATE STREAM s WITH (connector = 'file', path = '/etc/passwd'); INSERT INTO b SELECT * FROM s;".to_owned(),
        format!(
            "CREATE STREAM a (n BIGINT); CREATE STREAM out WITH (connector = 'file', path = '{}'); INSERT INTO out SELECT * FROM a;",
            planted.display()
        ),
    ] {
        for (path, body) in [
            ("/v1/rules", json!({"id": "f", "sql": sql})),
            ("/v1/rules/validate", json!({ "sql": sql })),
        ] {
            let (s, v) = node.post(path, body).await;
            assert_eq!(s, 400, "{path}: {v}");
            assert!(message(&v).contains("does not open files"), "{v}");
        }
        let stream = sql.split(';').find(|s| s.contains("'file'")).unwrap();
        let (s, v) = node.post("/v1/streams", json!({ "sql": stream })).await;
        assert_eq!(s, 400, "{v}");
    }
    assert!(!planted.exists());
    assert!(node.alive().await);
}
