//! Seed paper 001's API as the paper means it: installation, jobinfo and relocation objects
//! checked strictly (a misspelled key is refused, not ignored), errors in the paper's terms, any
//! node of a control plane answering as the proxy for jobs on every node, jobinfo describing
//! the job as it is, and the paper's own case — a sum-aggregation job moved edge ↔ core over
//! RabbitMQ — counting every event once.

mod common;

use std::time::{Duration, Instant};

use common::openapi::Document;
use common::*;
use futures::StreamExt as _;
use lapin::options::BasicPublishOptions;
use serde_json::{json, Value};
use weir_node::NodeConfig;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A control plane (`core-1`, runtime core) and an edge node (`edge-1`) that joined it.
async fn core_and_edge(test: &str) -> Pair {
    Pair::start(test, ("core-1", "core"), ("edge-1", "edge")).await
}

/// An installation of `job_type` reading and writing RabbitMQ exchanges.
fn installation(runtime: &str, job_type: &str, exchange: &str, props: Value) -> Value {
    json!({
        "headers": {"runtime": runtime, "jobType": job_type},
        "jobConfig": {"connectors": {
            "inputEndpoint": AMQP, "inputExchange": format!("{exchange}_in"),
            "inputQueue": format!("{exchange}_q"), "inputRoutingKey": "sensors",
            "outputEndpoint": AMQP, "outputExchange": format!("{exchange}_out"),
            "outputRoutingKey": "sums"
        }},
        "jobProps": props
    })
}

fn error(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installation_objects_are_checked_strictly_and_errors_speak_of_the_jobs_fields() {
    let dir = data_dir("paper-strict");
    let node = TestNode::with(NodeConfig {
        name: Some("edge-1".into()),
        ..config(&dir)
    })
    .await;
    let filter = json!({"condition": ">", "threshold": 30, "fieldName": "temp"});
    let good = installation("edge", "single-filter", &unique("strict"), filter.clone());
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a misspelled connector field",
            with(&|v| {
                let c = v["jobConfig"]["connectors"].as_object_mut().unwrap();
                let url = c.remove("inputEndpoint").unwrap();
                c.insert("inputEndpiont".into(), url);
            }),
            "jobConfig.connectors.inputEndpiont is not a connector field",
        ),
        (
            "a misspelled top-level key",
            with(&|v| {
                let p = v.as_object_mut().unwrap().remove("jobProps").unwrap();
                v["jobProp"] = p;
            }),
            "unknown field `jobProp`",
        ),
        (
            "a misspelled header",
            with(&|v| v["headers"]["targetResorce"] = json!("edge-1")),
            "unknown field `targetResorce`",
        ),
        (
            "a misspelled key in jobConfig",
            with(&|v| v["jobConfig"]["conectors"] = json!({})),
            "unknown field `conectors`",
        ),
        (
            "a second input for a filter",
            with(&|v| v["jobConfig"]["connectors"]["joinInputTopic"] = json!("other")),
            "a single-filter job has no joinInput",
        ),
        (
            "a single-join without its second input",
            with(&|v| {
                v["headers"]["jobType"] = json!("single-join");
                v["jobProps"] = json!({"key": "id", "window": "1 minute"});
            }),
            "the job's joinInput has no broker",
        ),
        (
            "an input without a broker",
            with(&|v| {
                let c = v["jobConfig"]["connectors"].as_object_mut().unwrap();
                c.retain(|k, _| !k.starts_with("input"));
            }),
            "the job's input has no broker",
        ),
        (
            "streams in jobProps",
            with(&|v| v["jobProps"]["input"] = json!("x")),
            "jobProps.input",
        ),
        (
            "a runtime no node serves",
            with(&|v| v["headers"]["runtime"] = json!("flink")),
            "no node serves runtime 'flink'; the runtimes of this control plane are edge",
        ),
        (
            "an unknown job type",
            with(&|v| v["headers"]["jobType"] = json!("single-filtre")),
            "headers.jobType 'single-filtre' is not a job type",
        ),
        (
            "a bad template parameter",
            with(&|v| v["jobProps"]["condition"] = json!("~")),
            "jobProps: condition '~'",
        ),
        (
            "an MQTT input without a topic",
            with(&|v| {
                let c = v["jobConfig"]["connectors"].as_object_mut().unwrap();
                c.retain(|k, _| !k.starts_with("input"));
                c.insert("inputEndpoint".into(), json!("mqtt://127.0.0.1:1883"));
            }),
            "jobConfig.connectors.inputTopic is required",
        ),
        (
            "an MQTT input with a bad port",
            with(&|v| {
                let c = v["jobConfig"]["connectors"].as_object_mut().unwrap();
                c.retain(|k, _| !k.starts_with("input"));
                c.insert("inputEndpoint".into(), json!("mqtt://127.0.0.1:99999"));
                c.insert("inputTopic".into(), json!("t"));
            }),
            "jobConfig.connectors.inputEndpoint",
        ),
    ];
    for (what, body, expected) in cases {
        let (s, v) = node.post("/api/install", body).await;
        let message = error(&v);
        eprintln!("{what}: {message}");
        assert_eq!(s, 400, "{what}: {v}");
        assert!(message.contains(expected), "{what}: {message}");
        // Generated stream names and rule text mean nothing to the client.
        assert!(
            !message.contains("_filter_") && !message.contains("CREATE STREAM"),
            "{what}: {message}"
        );
    }

    // The paper's prose spelling of jobConfig is taken as it.
    let mut prose = good.clone();
    let config = prose.as_object_mut().unwrap().remove("jobConfig").unwrap();
    prose["jobConfigs"] = config;
    let (s, info) = node.post("/api/install", prose).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["jobStatus"], "INSTALLED", "never started: {info}");
    assert_eq!(info["node"], "edge-1");
    assert_eq!(info["targetResource"], node.base.as_str());
    // A jobinfo with a misspelled key is refused too; one sent back as answered is taken.
    let mut typo = info.clone();
    typo["jobStatuss"] = json!("RUNNING");
    let (s, v) = node.post("/api/start", typo).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = node.post("/api/uninstall", info).await;
    assert_eq!(
        (s, v["jobStatus"].as_str()),
        (200, Some("UNINSTALLED")),
        "{v}"
    );
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_is_the_proxy_for_jobs_on_every_node() {
    let pair = core_and_edge("paper-proxy").await;
    let (core, edge) = (&pair.plane, &pair.joined);
    let props = json!({"fieldName": "v", "window": "1 second"});
    // Installed through the control plane on the edge node, named by its URL.
    let mut body = installation("edge", "sum-aggregation", &unique("proxy"), props);
    body["headers"]["targetResource"] = json!(edge.base);
    // Every answer of the paper's API is checked against the OpenAPI document.
    let doc = Document::load();
    let post = reqwest::Method::POST;
    let (s, info) = doc
        .check(
            core,
            post.clone(),
            "/api/install",
            "/api/install",
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(
        (
            info["jobStatus"].as_str(),
            info["node"].as_str(),
            info["runtime"].as_str()
        ),
        (Some("INSTALLED"), Some("edge-1"), Some("edge")),
        "{info}"
    );
    assert_eq!(info["targetResource"], edge.base.as_str());
    let id = info["jobId"].as_str().unwrap().to_owned();

    // Start, stop and status sent to the control plane reach the edge node.
    let (s, v) = core.post("/api/start", info.clone()).await;
    assert_eq!((s, v["jobStatus"].as_str()), (200, Some("RUNNING")), "{v}");
    let (s, status) = core.get(&format!("/v1/rules/{id}/status")).await;
    assert_eq!(
        (s, status["state"].as_str()),
        (200, Some("RUNNING")),
        "{status}"
    );
    let (s, v) = doc
        .check(
            core,
            post.clone(),
            "/api/stop",
            "/api/stop",
            Some(info.clone()),
        )
        .await;
    assert_eq!((s, v["jobStatus"].as_str()), (200, Some("STOPPED")), "{v}");
    let (_, rule) = edge.get(&format!("/v1/rules/{id}")).await;
    assert_eq!(rule["state"], "STOPPED", "it stopped where it runs");
    let (s, v) = core.post("/api/start", info.clone()).await;
    assert_eq!((s, v["jobStatus"].as_str()), (200, Some("RUNNING")), "{v}");

    // A move answers with the job as the target holds it, whatever the client sent.
    let mut stale = info.clone();
    stale["jobStatus"] = json!("STOPPED");
    stale["runtime"] = json!("edge");
    let (s, moved) = doc
        .check(
            core,
            post.clone(),
            "/api/move",
            "/api/move",
            Some(json!({"target_runtime": "core", "targetResource": "core-1", "jobInfo": stale})),
        )
        .await;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(
        (
            moved["jobStatus"].as_str(),
            moved["node"].as_str(),
            moved["runtime"].as_str(),
            moved["jobType"].as_str()
        ),
        (
            Some("RUNNING"),
            Some("core-1"),
            Some("core"),
            Some("sum-aggregation")
        ),
        "{moved}"
    );
    assert_eq!(moved["configFileName"], info["configFileName"]);
    // Back to the edge node, named by URL, asked at the edge node itself.
    let (s, back) = edge
        .post(
            "/api/move",
            json!({"targetRuntime": "edge", "targetResource": format!("{}/", edge.base), "jobInfo": moved}),
        )
        .await;
    assert_eq!((s, back["node"].as_str()), (200, Some("edge-1")), "{back}");
    let (s, v) = core
        .post(
            "/api/move",
            json!({"target_runtime": "flink", "jobInfo": back}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        error(&v).contains("runtimes of this control plane are core, edge"),
        "{v}"
    );
    let (s, v) = core
        .post(
            "/api/move",
            json!({"target_runtime": "edge", "targetResource": "core-1", "jobInfo": back}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(error(&v).contains("of the 'core' runtime"), "{v}");
    let (s, v) = core.post("/api/uninstall", back.clone()).await;
    assert_eq!(
        (s, v["jobStatus"].as_str()),
        (200, Some("UNINSTALLED")),
        "{v}"
    );
    let (s, v) = core.post("/api/start", back).await;
    assert_eq!(s, 404, "{v}");

    // A never-started job moves and stays INSTALLED.
    let props = json!({"fieldName": "v", "window": "1 second"});
    let body = installation("edge", "sum-aggregation", &unique("idle"), props);
    let (s, idle) = core.post("/api/install", body).await;
    assert_eq!((s, idle["node"].as_str()), (200, Some("edge-1")), "{idle}");
    let (s, moved) = core
        .post(
            "/api/move",
            json!({"target_runtime": "core", "jobInfo": idle}),
        )
        .await;
    assert_eq!(
        (s, moved["jobStatus"].as_str(), moved["node"].as_str()),
        (200, Some("INSTALLED"), Some("core-1")),
        "{moved}"
    );

    // A running job whose input cannot be reached says so.
    let broken = json!({
        "headers": {"runtime": "edge", "jobType": "single-filter"},
        "jobConfig": {"connectors": {
            "inputEndpoint": "mqtt://127.0.0.1:1", "inputTopic": "t",
            "outputTopic": "out"
        }},
        "jobProps": {"condition": ">", "threshold": 1, "fieldName": "v"}
    });
    let (s, info) = core.post("/api/install", broken).await;
    assert_eq!(s, 200, "{info}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let detail = loop {
        let (_, v) = core.post("/api/start", info.clone()).await;
        assert_eq!(v["jobStatus"], "RUNNING", "{v}");
        if let Some(d) = v["statusDetail"].as_str() {
            break d.to_owned();
        }
        assert!(Instant::now() < deadline, "no status detail: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        detail.contains("the job's input") && detail.contains("retrying"),
        "{detail}"
    );
    pair.stop().await;
}

/// The seed paper's case: a sum-aggregation job over RabbitMQ moved edge → core → edge 20
/// times while events flow, some moves right before a window closes; every event is counted
/// once and no window is emitted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sum_aggregation_job_moved_between_edge_and_core_counts_every_event_once() {
    const EVENTS: u64 = 2000;
    const MOVES: usize = 20;
    let pair = core_and_edge("paper-moves").await;
    let (core, edge) = (&pair.plane, &pair.joined);
    let exchange = unique("paper_moves");
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    let mut results = amqp_results(&ch, &format!("{exchange}_out"), "sums").await;
    let props = json!({"fieldName": "v", "window": "1 second"});
    let (s, info) = core
        .post(
            "/api/install",
            installation("edge", "sum-aggregation", &exchange, props),
        )
        .await;
    assert_eq!(s, 200, "{info}");
    let (s, mut info) = core.post("/api/start", info).await;
    assert_eq!(s, 200, "{info}");
    let id = info["jobId"].as_str().unwrap().to_owned();
    edge.wait_status(&id, "RabbitMQ connected", |s| {
        s["operators"]
            .as_array()
            .is_some_and(|o| o.iter().filter(|o| o["health"]["state"] == "up").count() == 2)
    })
    .await;

    let publisher = {
        let ch = conn.create_channel().await.unwrap();
        let ex = format!("{exchange}_in");
        tokio::spawn(async move {
            for v in 1..=EVENTS {
                let body = json!({"v": v}).to_string();
                ch.basic_publish(
                    ex.as_str().into(),
                    "sensors".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    Default::default(),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    for m in 0..MOVES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if m % 2 == 1 {
            // Right before a (processing-time) window closes.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            tokio::time::sleep(Duration::from_millis((2950 - now % 1000) % 1000)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(seed % 200)).await;
        }
        let (runtime, to) = if m % 2 == 0 {
            ("core", "core-1")
        } else {
            ("edge", edge.base.as_str())
        };
        let (s, moved) = core
            .post(
                "/api/move",
                json!({"target_runtime": runtime, "targetResource": to, "jobInfo": info}),
            )
            .await;
        assert_eq!(
            (s, moved["jobStatus"].as_str()),
            (200, Some("RUNNING")),
            "move {m}: {moved}"
        );
        info = moved;
    }
    publisher.await.unwrap();

    let mut windows = std::collections::BTreeMap::new();
    let (mut counted, mut summed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted < EVENTS && Instant::now() < deadline {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), results.next()).await
        else {
            continue;
        };
        let row: Value = serde_json::from_slice(&d.data).unwrap();
        let start = row["window_start"].as_i64().unwrap();
        assert!(
            windows.insert(start, row.clone()).is_none(),
            "window {start} emitted twice: {row} and {}",
            windows[&start]
        );
        counted += row["count"].as_u64().unwrap();
        summed += row["sum"].as_u64().unwrap();
    }
    assert_eq!(
        (counted, summed),
        (EVENTS, EVENTS * (EVENTS + 1) / 2),
        "every event counted once across {MOVES} moves"
    );
    pair.stop().await;
}
