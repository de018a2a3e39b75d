//! End-to-end tests of a node through its REST API, with real clients of the machine's
//! Mosquitto, RabbitMQ and NATS, and of the node's own embedded MQTT endpoint.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use serde_json::json;

fn readings(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| json!({"sensor": format!("s{}", i % 3), "temp": 20 + (i % 20)}).to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mqtt_http_ingest_tail_and_dead_letters() {
    let dir = data_dir("embedded");
    let node = TestNode::start(&dir).await;
    let (s, v) = node
        .post(
            "/v1/streams",
            json!({"sql": "CREATE STREAM readings WITH (topic = 'plant/+/readings')"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let sql = "INSERT INTO hot SELECT sensor, temp FROM readings WHERE temp >= 35;";
    let (s, v) = node
        .post("/v1/rules", json!({"id": "hot", "sql": sql}))
        .await;
    assert_eq!((s, v["state"].as_str()), (201, Some("RUNNING")), "{v}");

    // A standard MQTT client on the embedded endpoint: subscribe to the output, publish input.
    let mut out = mqtt_subscribe(node.mqtt_port(), "hot").await;
    mqtt_publish(node.mqtt_port(), "plant/a/readings", &readings(20)).await;
    let got = take_json(&mut out, 5).await;
    assert!(
        got.iter().all(|e| e["temp"].as_i64().unwrap() >= 35),
        "{got:?}"
    );
    expect_quiet(&mut out, 300).await;

    // The command-line clients of Mosquitto work too.
    let pub_status = std::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &node.mqtt_port().to_string(),
            "-t",
            "plant/b/readings",
            "-q",
            "1",
        ])
        .args(["-m", r#"{"sensor":"cli","temp":99}"#])
        .status();
    // 20 published above, 2 by HTTP and 2 more (one bad) below, plus this one when the client exists.
    let taken = if pub_status.is_ok() { 25 } else { 24 };
    if let Ok(st) = pub_status {
        assert!(st.success());
        assert_eq!(take_json(&mut out, 1).await[0]["sensor"], "cli");
    }

    // HTTP ingest and a live tail of the output stream (which only the rule names).
    let tail = reqwest::get(format!("{}/v1/streams/nowhere/tail", node.base)).await;
    assert_eq!(tail.unwrap().status().as_u16(), 404);
    let resp = reqwest::get(format!("{}/v1/streams/hot/tail", node.base))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.bytes_stream();
    let (s, v) = node
        .post(
            "/v1/streams/readings/events",
            json!([{"sensor": "h1", "temp": 40}, {"sensor": "h2", "temp": 1}]),
        )
        .await;
    assert_eq!((s, v["accepted"].as_u64()), (200, Some(2)), "{v}");
    let mut text = String::new();
    while !text.contains("\"h1\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("tail delivers")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.contains("data: {\"sensor\":\"h1\",\"temp\":40}"),
        "{text}"
    );
    assert_eq!(take_json(&mut out, 1).await[0]["sensor"], "h1");

    // Malformed payloads become dead letters with the reason; the rule goes on.
    mqtt_publish(
        node.mqtt_port(),
        "plant/c/readings",
        &["{not json".into(), r#"{"sensor":"ok","temp":50}"#.into()],
    )
    .await;
    assert_eq!(take_json(&mut out, 1).await[0]["sensor"], "ok");
    let status = node
        .wait_status("hot", "a dead letter", |s| s["dead_letters"] == 1)
        .await;
    assert_eq!(status["state"], "RUNNING");
    assert!(
        status["last_dead_letter"]
            .as_str()
            .unwrap()
            .contains("JSON"),
        "{status}"
    );
    let source = &status["operators"][0];
    assert_eq!(
        (source["name"].as_str(), source["events_in"].as_u64()),
        (Some("source:readings"), Some(taken))
    );
    let (s, v) = node
        .post(
            "/v1/streams/readings/events",
            json!({"a": 1}).to_string().into(),
        )
        .await;
    assert_eq!(s, 400, "a JSON string body is not an event: {v}");

    // Figures in Prometheus text.
    let metrics = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"weir_rule_dead_letters_total{rule="hot"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_rule_output_lag_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"weir_operator_events_in_total{{rule="hot",operator="source:readings"}} {taken}"#
        )),
        "{metrics}"
    );
    // Everything sent was read: nothing waits for the source.
    assert!(
        metrics.contains(r#"weir_source_backlog{rule="hot",operator="source:readings"} 0"#),
        "{metrics}"
    );
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_source_and_sink_in_both_protocol_versions() {
    let dir = data_dir("mosquitto");
    let node = TestNode::start(&dir).await;
    let (input, output) = (unique("in"), unique("out"));
    let sql = format!(
        "CREATE STREAM m_in WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = '{input}/#', qos = '1', version = '5');
         CREATE STREAM m_out WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = '{output}', qos = '1');
         INSERT INTO m_out SELECT sensor, temp * 2 AS doubled FROM m_in WHERE sensor = 's1';"
    );
    let (s, v) = node
        .post("/v1/rules", json!({"id": "mq", "sql": sql}))
        .await;
    assert_eq!(s, 201, "{v}");
    node.wait_status("mq", "both connectors up", |s| {
        s["operators"]
            .as_array()
            .is_some_and(|ops| ops.iter().filter(|o| o["health"]["state"] == "up").count() == 2)
    })
    .await;
    let mut out = mqtt_subscribe(1883, &output).await;
    mqtt_publish(1883, &format!("{input}/line1"), &readings(30)).await;
    let got = take_json(&mut out, 10).await;
    assert!(got.iter().all(|e| e["sensor"] == "s1"), "{got:?}");
    assert_eq!(got[0]["doubled"], 42);
    expect_quiet(&mut out, 300).await;
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_through_the_seed_paper_api() {
    use lapin::options::*;
    let dir = data_dir("paper");
    let node = TestNode::with(weir_node::NodeConfig {
        name: Some("edge-1".into()),
        ..config(&dir)
    })
    .await;
    let (ex_in, ex_out) = (unique("weir_in"), unique("weir_out"));
    let install = json!({
        "headers": {"runtime": "edge", "targetResource": "edge-1", "jobType": "single-filter"},
        "jobConfig": {"connectors": {
            "inputEndpoint": "amqp://guest:guest@127.0.0.1:5672/%2f",
            "inputExchange": ex_in, "inputQueue": format!("{ex_in}_q"), "inputRoutingKey": "sensors",
            "outputEndpoint": "amqp://guest:guest@127.0.0.1:5672/%2f",
            "outputExchange": ex_out, "outputRoutingKey": "alerts"
        }},
        "jobProps": {"condition": ">", "threshold": 30, "fieldName": "temp", "fieldJsonPath": "$.payload.temp"}
    });
    let (s, info) = node.post("/api/install", install).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["jobStatus"], "INSTALLED");
    assert_eq!(info["runtime"], "edge");
    assert_eq!(info["jobType"], "single-filter");
    let file = dir.join(info["configFileName"].as_str().unwrap());
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("$.payload.temp"));

    // A consumer of the output exchange, declared before the job starts publishing.
    let conn =
        lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = amqp_results(&ch, &ex_out, "alerts").await;

    let (s, started) = node.post("/api/start", info.clone()).await;
    assert_eq!(
        (s, started["jobStatus"].as_str()),
        (200, Some("RUNNING")),
        "{started}"
    );
    let id = info["jobId"].as_str().unwrap();
    node.wait_status(id, "AMQP connected", |s| {
        s["operators"]
            .as_array()
            .is_some_and(|o| o.iter().filter(|o| o["health"]["state"] == "up").count() == 2)
    })
    .await;
    for t in [10, 31, 25, 45] {
        let payload = json!({"device": "d1", "payload": {"temp": t}}).to_string();
        ch.basic_publish(
            ex_in.as_str().into(),
            "sensors".into(),
            BasicPublishOptions::default(),
            payload.as_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    let mut temps = Vec::new();
    while temps.len() < 2 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("filtered events arrive")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        temps.push(v["payload"]["temp"].as_i64().unwrap());
    }
    assert_eq!(temps, [31, 45]);

    let (s, moved) = node
        .post(
            "/api/move",
            json!({"target_runtime": "core", "targetResource": "core-1", "jobInfo": started}),
        )
        .await;
    // No node core-1 is known to this single node's control plane: refused, the job runs on.
    assert_eq!(s, 404, "{moved}");
    assert!(
        moved["error"]["message"]
            .as_str()
            .unwrap()
            .contains("core-1"),
        "{moved}"
    );
    let (_, status) = node
        .get(&format!(
            "/v1/rules/{}/status",
            started["jobId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status["state"], "RUNNING", "{status}");
    let (s, stopped) = node.post("/api/stop", info.clone()).await;
    assert_eq!((s, stopped["jobStatus"].as_str()), (200, Some("STOPPED")));
    let (s, gone) = node.post("/api/uninstall", info.clone()).await;
    assert_eq!((s, gone["jobStatus"].as_str()), (200, Some("UNINSTALLED")));
    assert!(!file.exists(), "the job file goes with the job");
    let (s, _) = node.post("/api/start", info).await;
    assert_eq!(s, 404);
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_core_in_jetstream_out() {
    let dir = data_dir("nats");
    let node = TestNode::start(&dir).await;
    let (subject, out_subject, js) = (unique("weir.in"), unique("weir.out"), unique("WEIR"));
    let sql = format!(
        "CREATE STREAM n_in WITH (connector = 'nats', topic = '{subject}');
         CREATE STREAM n_out WITH (connector = 'nats', topic = '{out_subject}', stream = '{js}');
         INSERT INTO n_out SELECT sensor, avg(temp) AS avg_temp, count(*) AS n FROM n_in GROUP BY sensor, COUNT_WINDOW(2);"
    );
    let (s, v) = node
        .post("/v1/rules", json!({"id": "nats", "sql": sql}))
        .await;
    assert_eq!(s, 201, "{v}");
    node.wait_status("nats", "NATS connected", |s| {
        s["operators"]
            .as_array()
            .is_some_and(|o| o.iter().filter(|o| o["health"]["state"] == "up").count() == 2)
    })
    .await;
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    for t in [10, 20, 30, 50] {
        client
            .publish(
                subject.clone(),
                json!({"sensor": "a", "temp": t}).to_string().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    node.wait_status("nats", "two windows out", |s| {
        s["operators"][2]["events_out"] == 2
    })
    .await;
    let ctx = async_nats::jetstream::new(client);
    let mut stream = ctx.get_stream(&js).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    let first = stream.get_raw_message(1).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(
        (v["avg_temp"].as_f64(), v["n"].as_i64()),
        (Some(15.0), Some(2))
    );
    ctx.delete_stream(&js).await.unwrap();
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_its_rules() {
    let dir = data_dir("restart");
    let node = TestNode::start(&dir).await;
    node.post(
        "/v1/streams",
        json!({"sql": "CREATE STREAM r_in WITH (topic = 'r/in')"}),
    )
    .await;
    let (s, _) = node
        .post(
            "/v1/rules",
            json!({"id": "runs", "sql": "INSERT INTO r_out SELECT * FROM r_in WHERE v > 1;"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = node
        .post("/v1/rules", json!({"id": "rests", "sql": "INSERT INTO r_other SELECT * FROM r_in;", "options": {"stopped": true}}))
        .await;
    assert_eq!((s, v["state"].as_str()), (201, Some("INSTALLED")), "{v}");
    node.stop().await;

    let node = TestNode::start(&dir).await;
    let (_, rules) = node.get("/v1/rules").await;
    let states: Vec<(&str, &str)> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("rests", "INSTALLED"), ("runs", "RUNNING")]);
    let mut out = mqtt_subscribe(node.mqtt_port(), "r_out").await;
    mqtt_publish(
        node.mqtt_port(),
        "r/in",
        &[json!({"v": 1}).to_string(), json!({"v": 2}).to_string()],
    )
    .await;
    assert_eq!(take_json(&mut out, 1).await[0]["v"], 2);
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A private Mosquitto on a free port, killed when dropped.
struct Broker(std::process::Child);

impl Broker {
    fn start(port: u16) -> Option<Broker> {
        let child = std::process::Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Broker(child));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_comes_back_is_reconnected() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let broker = Broker::start(port).expect("mosquitto starts on a free port");
    let dir = data_dir("reconnect");
    let node = TestNode::start(&dir).await;
    let sql = format!(
        "CREATE STREAM p_in WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'in', qos = '1');
         INSERT INTO p_out SELECT * FROM p_in;"
    );
    let (s, v) = node
        .post("/v1/rules", json!({"id": "rc", "sql": sql}))
        .await;
    assert_eq!(s, 201, "{v}");
    node.wait_status("rc", "connected", |s| {
        s["operators"][0]["health"]["state"] == "up"
    })
    .await;
    let mut out = mqtt_subscribe(node.mqtt_port(), "p_out").await;
    mqtt_publish(port, "in", &[json!({"n": 1}).to_string()]).await;
    assert_eq!(take_json(&mut out, 1).await[0]["n"], 1);

    drop(broker);
    let down = node
        .wait_status("rc", "connection lost", |s| {
            s["operators"][0]["health"]["state"] == "down"
        })
        .await;
    assert!(down["last_error"].as_str().is_some(), "{down}");
    let _broker = Broker::start(port).expect("mosquitto restarts");
    node.wait_status("rc", "reconnected", |s| {
        s["operators"][0]["health"]["state"] == "up"
    })
    .await;
    mqtt_publish(port, "in", &[json!({"n": 2}).to_string()]).await;
    assert_eq!(take_json(&mut out, 1).await[0]["n"], 2);
    let status = node
        .wait_status("rc", "one reconnect", |s| {
            s["operators"][0]["health"]["reconnects"] == 1
        })
        .await;
    assert_eq!(status["state"], "RUNNING");
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_errors_and_change_nothing() {
    let dir = data_dir("errors");
    let node = TestNode::with(weir_node::NodeConfig {
        max_rules: 2,
        ..config(&dir)
    })
    .await;
    // Rule text errors carry line and column.
    let (s, v) = node
        .post("/v1/rules", json!({"id": "bad", "sql": "CREATE STREAM a WITH (topic = 'a');\nINSERT INTO b SELECT x FROM a WHERE y >;"}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid");
    assert_eq!(v["error"]["problems"][0]["line"], 2, "{v}");
    // Connector values a node refuses are refused at the option, as `weir check` refuses
    // them (one validation: tests/errors/connector_values.sql).
    let (s, v) = node
        .post("/v1/rules", json!({"id": "qos", "sql": "CREATE STREAM a WITH (connector = 'mqtt', topic = 'a/#', qos = '3');\nINSERT INTO b SELECT * FROM a;"}))
        .await;
    assert_eq!(s, 400, "{v}");
    let p = &v["error"]["problems"][0];
    assert_eq!(
        (p["line"].as_u64(), p["column"].as_u64()),
        (Some(1), Some(58)),
        "{v}"
    );
    assert!(
        p["message"].as_str().unwrap().contains("'qos' = '3'"),
        "{v}"
    );
    // at_least_once over MQTT needs a session the broker keeps: with a clean one, a crash
    // loses the messages in flight. The refusal names the options that exist.
    let mqtt_in = "CREATE STREAM mq WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:1883', topic = 'x/in', qos = '1'{extra});\nINSERT INTO mq_out SELECT * FROM mq;";
    let (s, v) = node
        .post("/v1/rules", json!({"id": "alo", "sql": mqtt_in.replace("{extra}", ""), "options": {"delivery": "at_least_once", "stopped": true}}))
        .await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("clean session") && msg.contains("session = 'persistent' and a client_id"),
        "{msg}"
    );
    let (s, v) = node
        .post("/v1/rules", json!({"id": "alo", "sql": mqtt_in.replace("{extra}", ", session = 'persistent', client_id = 'weir-test-alo'"), "options": {"delivery": "at_least_once", "stopped": true}}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = node
        .call(reqwest::Method::DELETE, "/v1/rules/alo", None)
        .await;
    assert_eq!(s, 200);
    // Options that do not belong to the connector.
    let (s, v) = node
        .post("/v1/streams", json!({"sql": "CREATE STREAM a WITH (connector = 'mqtt', topic = 't', exchange = 'x')"}))
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("belongs to connector 'amqp'"),
        "{v}"
    );
    let (s, v) = node
        .post(
            "/v1/streams",
            json!({"sql": "CREATE STREAM a WITH (connector = 'mqtt', topic = 't', qos = '2')"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = node
        .post(
            "/v1/rules",
            json!({"id": "x", "sql": "INSERT INTO b SELECT * FROM a", "colour": 1}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "{v}"
    );
    let (_, rules) = node.get("/v1/rules").await;
    assert_eq!(rules, json!([]), "nothing half-installed");

    // Duplicates, limits, and an update that fails leaves the running version running.
    node.post(
        "/v1/streams",
        json!({"sql": "CREATE STREAM a WITH (topic = 'a')"}),
    )
    .await;
    let (s, _) = node
        .post(
            "/v1/rules",
            json!({"id": "one", "sql": "INSERT INTO b SELECT * FROM a;"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = node
        .post(
            "/v1/rules",
            json!({"id": "one", "sql": "INSERT INTO b SELECT * FROM a;"}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, v) = node
        .call(
            reqwest::Method::PUT,
            "/v1/rules/one",
            Some(json!({"sql": "INSERT INTO b SELECT nope( FROM a;"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, one) = node.get("/v1/rules/one").await;
    assert_eq!(
        (one["state"].as_str(), one["sql"].as_str()),
        (Some("RUNNING"), Some("INSERT INTO b SELECT * FROM a;"))
    );
    let (s, v) = node
        .call(
            reqwest::Method::PUT,
            "/v1/rules/one",
            Some(json!({"sql": "INSERT INTO b SELECT * FROM a WHERE v > 1;"})),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("RUNNING")), "{v}");
    node.post(
        "/v1/rules",
        json!({"id": "two", "sql": "INSERT INTO c SELECT * FROM a;"}),
    )
    .await;
    let (s, v) = node
        .post(
            "/v1/rules",
            json!({"id": "three", "sql": "INSERT INTO d SELECT * FROM a;"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_rules"));
    let (s, v) = node
        .call(reqwest::Method::DELETE, "/v1/streams/a", None)
        .await;
    assert_eq!(s, 409, "a stream in use stays: {v}");

    // Templates: listed, checked, instantiated as ordinary rules.
    let (_, t) = node.get("/v1/templates").await;
    let names: Vec<&str> = t
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "single-filter",
            "sum-aggregation",
            "avg-aggregation",
            "single-join"
        ]
    );
    let (s, v) = node
        .post("/v1/templates/avg-aggregation", json!({"id": "avg", "dry_run": true, "params": {"input": "a", "output": "avg_out", "fieldName": "v", "window": "10 seconds"}}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["sql"].as_str().unwrap().contains("avg(v)"));
    let (s, v) = node
        .post(
            "/v1/templates/avg-aggregation",
            json!({"id": "avg", "params": {"input": "a"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("'window'"),
        "{v}"
    );
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// `curl -d '{...}'` sends JSON as a form; the README's commands rely on it being read as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_sent_as_curl_sends_it_is_read() {
    let dir = data_dir("curl");
    let node = TestNode::start(&dir).await;
    let body = r#"{"sql": "CREATE STREAM a WITH (topic = 'a'); INSERT INTO b SELECT * FROM a;"}"#;
    for content_type in [None, Some("application/x-www-form-urlencoded")] {
        let mut req = reqwest::Client::new()
            .post(format!("{}/v1/rules/validate", node.base))
            .body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let reply = req.send().await.unwrap();
        assert_eq!(
            reply.status(),
            200,
            "{content_type:?}: {}",
            reply.text().await.unwrap()
        );
    }
    // Another declared type is still refused.
    let reply = reqwest::Client::new()
        .post(format!("{}/v1/rules/validate", node.base))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let doc: serde_json::Value = serde_json::from_str(weir_node::api::OPENAPI).unwrap();
    let routes = [
        "/v1/openapi.json",
        "/v1/health",
        "/v1/info",
        "/v1/streams",
        "/v1/streams/{name}",
        "/v1/streams/{name}/events",
        "/v1/streams/{name}/tail",
        "/v1/streams/{name}/log",
        "/v1/rules",
        "/v1/rules/validate",
        "/v1/rules/{id}",
        "/v1/rules/{id}/start",
        "/v1/rules/{id}/stop",
        "/v1/rules/{id}/restart",
        "/v1/rules/{id}/status",
        "/v1/rules/{id}/move",
        "/v1/rules/{id}/attach",
        "/v1/rules/{id}/checkpoint",
        "/v1/rules/{id}/dead_letters",
        "/v1/nodes",
        "/v1/nodes/heartbeat",
        "/v1/placements",
        "/v1/templates",
        "/v1/templates/{name}",
        "/api/install",
        "/api/uninstall",
        "/api/start",
        "/api/stop",
        "/api/move",
        "/metrics",
    ];
    let documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, routes);
    // Each documented route answers something other than "no such route".
    let dir = data_dir("openapi");
    let node = TestNode::start(&dir).await;
    for r in routes {
        let path = r.replace("{name}", "x").replace("{id}", "x");
        let methods = doc["paths"][r]
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters");
        for m in methods {
            let method: reqwest::Method = m.to_uppercase().parse().unwrap();
            let body = (method != reqwest::Method::GET).then(|| json!({}));
            let (s, v) = node.call(method.clone(), &path, body).await;
            let unrouted = s == 405 || (s == 404 && v.is_string());
            assert!(!unrouted, "{m} {path}: {s} {v}");
        }
    }
    node.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}
