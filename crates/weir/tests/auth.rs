//! Who may ask a `weir serve` process what: bearer tokens with roles on the REST API, the CLI
//! sending a token, MQTT clients logging in to the embedded endpoint with one, a node that
//! refuses to listen beyond loopback without tokens, and nodes that take heartbeats and moves
//! only from their cluster.

mod common;
use common::{free_port, Served};

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const VIEWER: &str = "viewer-token-4f1c9a2e77";
const OPERATOR: &str = "operator-token-8b3d01c6";
const ADMIN: &str = "admin-token-19e7c2d4f0aa";

/// A token file beside the node's data, with the three roles.
fn tokens(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(
        &file,
        format!("# weir tokens\n{VIEWER} viewer\n{OPERATOR} operator\n{ADMIN} admin\n"),
    )
    .unwrap();
    file
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("weir-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> u16 {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap().status().as_u16()
}

/// GET `path` with `token`, as JSON.
async fn call_json(base: &str, path: &str, token: &str) -> Value {
    let req = reqwest::Client::new().get(format!("{base}{path}"));
    req.bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_what_it_names_and_no_more() {
    let dir = scratch("roles");
    let file = tokens(&dir);
    let node = Served::start(&["--auth-token-file", file.to_str().unwrap()], "roles").await;
    let b = node.base.as_str();
    use reqwest::Method as M;
    let rule = json!({"id": "hot", "sql": "CREATE STREAM readings WITH (topic = 'readings'); INSERT INTO hot SELECT * FROM readings WHERE temp > 30;"});
    // (what, method, path, token, body, status)
    type Case<'a> = (&'a str, M, &'a str, Option<&'a str>, Option<Value>, u16);
    let cases: Vec<Case> = vec![
        ("health is open", M::GET, "/v1/health", None, None, 200),
        ("no token", M::GET, "/v1/rules", None, None, 401),
        (
            "unknown token",
            M::GET,
            "/v1/rules",
            Some("not-a-known-token-at-all"),
            None,
            401,
        ),
        ("metrics need a token", M::GET, "/metrics", None, None, 401),
        ("viewer reads", M::GET, "/v1/rules", Some(VIEWER), None, 200),
        (
            "viewer reads metrics",
            M::GET,
            "/metrics",
            Some(VIEWER),
            None,
            200,
        ),
        (
            "viewer validates",
            M::POST,
            "/v1/rules/validate",
            Some(VIEWER),
            Some(json!({"sql": rule["sql"]})),
            200,
        ),
        (
            "viewer cannot install",
            M::POST,
            "/v1/rules",
            Some(VIEWER),
            Some(rule.clone()),
            403,
        ),
        (
            "operator cannot install",
            M::POST,
            "/v1/rules",
            Some(OPERATOR),
            Some(rule.clone()),
            403,
        ),
        (
            "admin installs",
            M::POST,
            "/v1/rules",
            Some(ADMIN),
            Some(rule.clone()),
            201,
        ),
        (
            "viewer cannot ingest",
            M::POST,
            "/v1/streams/readings/events",
            Some(VIEWER),
            Some(json!({"temp": 31})),
            403,
        ),
        (
            "operator ingests",
            M::POST,
            "/v1/streams/readings/events",
            Some(OPERATOR),
            Some(json!({"temp": 31})),
            200,
        ),
        (
            "viewer cannot stop",
            M::POST,
            "/v1/rules/hot/stop",
            Some(VIEWER),
            None,
            403,
        ),
        (
            "operator stops",
            M::POST,
            "/v1/rules/hot/stop",
            Some(OPERATOR),
            None,
            200,
        ),
        (
            "operator starts",
            M::POST,
            "/v1/rules/hot/start",
            Some(OPERATOR),
            None,
            200,
        ),
        (
            "operator cannot delete",
            M::DELETE,
            "/v1/rules/hot",
            Some(OPERATOR),
            None,
            403,
        ),
        (
            "operator cannot export state",
            M::GET,
            "/v1/rules/hot/checkpoint",
            Some(OPERATOR),
            None,
            403,
        ),
        (
            "admin cannot attach (nodes only)",
            M::POST,
            "/v1/rules/x/attach",
            Some(ADMIN),
            None,
            403,
        ),
        (
            "admin cannot report as a node",
            M::POST,
            "/v1/nodes/heartbeat",
            Some(ADMIN),
            Some(json!({})),
            403,
        ),
        (
            "admin deletes",
            M::DELETE,
            "/v1/rules/hot",
            Some(ADMIN),
            None,
            200,
        ),
    ];
    for (what, method, path, token, body, status) in cases {
        assert_eq!(call(b, method, path, token, body).await, status, "{what}");
    }
    // A 401 says how to authenticate; a 403 which role is needed.
    let r = reqwest::get(format!("{b}/v1/rules")).await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = reqwest::Client::new()
        .post(format!("{b}/v1/rules"))
        .bearer_auth(VIEWER)
        .json(&rule)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs the admin role; this token has viewer"),
        "{v}"
    );

    // A token added to the file works within a few seconds, without a restart.
    let late = "late-token-5a6b7c8d9e0f";
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("{late} viewer\n"));
    std::fs::write(&file, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(b, M::GET, "/v1/rules", Some(late), None).await != 200 {
        assert!(Instant::now() < deadline, "the token file is read again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Tokens are never written to the log.
    let log = std::fs::read_to_string(node.dir.join("node.log")).unwrap();
    for t in [VIEWER, OPERATOR, ADMIN, late] {
        assert!(!log.contains(t), "{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_cli_sends_its_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = scratch("cli");
    let file = tokens(&dir);
    let node = rt.block_on(Served::start(
        &["--auth-token-file", file.to_str().unwrap()],
        "cli",
    ));
    let weir = |args: &[&str], token: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_weir"));
        c.args(args)
            .env("WEIR_NODE", &node.base)
            .env_remove("WEIR_TOKEN");
        if let Some(t) = token {
            c.env("WEIR_TOKEN", t);
        }
        c.output().unwrap()
    };
    let o = weir(&["rule", "list"], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"), "{o:?}");
    let o = weir(&["rule", "list"], Some(VIEWER));
    assert!(o.status.success(), "{o:?}");
    let o = weir(&["rule", "list", "--token", ADMIN], None);
    assert!(o.status.success(), "{o:?}");
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
}

/// Connects to the embedded MQTT endpoint at `port` with `password` as its password; the
/// ConnAck's code, the client and its event loop.
async fn mqtt(
    port: u16,
    password: Option<&str>,
) -> (
    Option<rumqttc::ConnectReturnCode>,
    AsyncClient,
    rumqttc::EventLoop,
) {
    let mut o = MqttOptions::new(format!("c{}", rand_id()), "127.0.0.1", port);
    if let Some(p) = password {
        o.set_credentials("device", p);
    }
    let (client, mut events) = AsyncClient::new(o, 64);
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => break Some(a.code),
            Ok(Err(rumqttc::ConnectionError::ConnectionRefused(code))) => break Some(code),
            Ok(Err(_)) if Instant::now() > deadline => break None,
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    (code, client, events)
}

fn rand_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Drives a client's event loop on a task of its own (so what it publishes goes out while the
/// test waits on another client): publishes received, then `Err` once the connection ends.
fn drive(
    mut events: rumqttc::EventLoop,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<String, String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(Ok(p.topic)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });
    rx
}

/// What arrives within `ms`: the topics, and whether the connection ended.
async fn within(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>,
    ms: u64,
) -> (Vec<String>, bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    let mut topics = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(t))) => topics.push(t),
            Ok(Some(Err(_))) | Ok(None) => return (topics, true),
            Err(_) => return (topics, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_clients_log_in_with_a_token_and_cannot_forge_results() {
    let dir = scratch("mqtt");
    let file = tokens(&dir);
    let port = free_port();
    let mqtt_at = format!("127.0.0.1:{port}");
    let node = Served::start(
        &[
            "--auth-token-file",
            file.to_str().unwrap(),
            "--mqtt",
            &mqtt_at,
        ],
        "mqtt",
    )
    .await;
    let rule = json!({"id": "hot", "sql": "CREATE STREAM readings (temp DOUBLE) WITH (topic = 'readings'); INSERT INTO hot SELECT * FROM readings WHERE temp > 30;"});
    let (s, v) = node
        .send(reqwest::Method::POST, "/v1/rules", Some(rule))
        .await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(
        call(&node.base, reqwest::Method::POST, "/v1/rules", Some(ADMIN), Some(json!({"id": "hot", "sql": "CREATE STREAM readings (temp DOUBLE) WITH (topic = 'readings'); INSERT INTO hot SELECT * FROM readings WHERE temp > 30;"}))).await,
        201
    );
    use rumqttc::ConnectReturnCode as C;
    let (code, _, _) = mqtt(port, None).await;
    assert_eq!(code, Some(C::NotAuthorized));
    let (code, _, _) = mqtt(port, Some("wrong-token-0000000000")).await;
    assert_eq!(code, Some(C::BadUserNamePassword));

    // A viewer reads the rule's output and not the dead letters.
    let (code, viewer, events) = mqtt(port, Some(VIEWER)).await;
    assert_eq!(code, Some(C::Success));
    let mut viewer_seen = drive(events);
    viewer.subscribe("#", QoS::AtMostOnce).await.unwrap();
    let (code, op, events) = mqtt(port, Some(OPERATOR)).await;
    assert_eq!(code, Some(C::Success));
    let mut op_seen = drive(events);
    op.subscribe("weir/dead_letters/#", QoS::AtMostOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.publish("readings", QoS::AtLeastOnce, false, r#"{"temp": 35}"#)
        .await
        .unwrap();
    op.publish("readings", QoS::AtLeastOnce, false, "not json")
        .await
        .unwrap();
    let (seen, ended) = within(&mut viewer_seen, 1500).await;
    assert!(!ended);
    assert!(seen.contains(&"hot".to_owned()), "{seen:?}");
    assert!(
        !seen.iter().any(|t| t.starts_with("weir/dead_letters")),
        "a viewer reads no dead letters: {seen:?}"
    );
    let (dead, _) = within(&mut op_seen, 1500).await;
    assert_eq!(dead, ["weir/dead_letters/hot"], "an operator reads them");

    // Forging a result, or publishing as a viewer, ends the connection.
    let (_, op2, events) = mqtt(port, Some(OPERATOR)).await;
    let mut op2_seen = drive(events);
    op2.publish("hot", QoS::AtLeastOnce, false, r#"{"temp": 99}"#)
        .await
        .unwrap();
    assert!(
        within(&mut op2_seen, 3000).await.1,
        "publishing to a rule's output is refused"
    );
    viewer
        .publish("readings", QoS::AtLeastOnce, false, r#"{"temp": 40}"#)
        .await
        .unwrap();
    assert!(
        within(&mut viewer_seen, 3000).await.1,
        "a viewer may not publish"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_file_limits_each_device_to_its_topics() {
    const DEVICE: &str = "device-7-token-0c4e91d2";
    const DISPLAY: &str = "display-token-7a2b55e1f0";
    const STRANGER: &str = "stranger-token-93ad01bc";
    let dir = scratch("acl");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("{ADMIN} admin\n{DEVICE} operator device-7\n{DISPLAY} viewer display\n{STRANGER} operator\n"),
    )
    .unwrap();
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "user device-7\ntopic write plant/7/#\ntopic read alerts/7\nuser display\ntopic read alerts/#\n",
    )
    .unwrap();
    let port = free_port();
    let mqtt_at = format!("127.0.0.1:{port}");
    let node = Served::start(
        &[
            "--auth-token-file",
            tokens.to_str().unwrap(),
            "--mqtt-acl-file",
            acl.to_str().unwrap(),
            "--mqtt",
            &mqtt_at,
        ],
        "acl",
    )
    .await;
    let rule = json!({"id": "alerts", "sql": "CREATE STREAM temps (machine BIGINT, temp DOUBLE) WITH (topic = 'plant/+/temp'); INSERT INTO alerts_all SELECT * FROM temps WHERE temp > 30;"});
    assert_eq!(
        call(
            &node.base,
            reqwest::Method::POST,
            "/v1/rules",
            Some(ADMIN),
            Some(rule)
        )
        .await,
        201
    );
    use rumqttc::ConnectReturnCode as C;
    // The display reads every alert topic, the device only its own; a token whose name the file
    // does not list reads nothing.
    let mut seen = Vec::new();
    let mut clients = Vec::new();
    for token in [DISPLAY, DEVICE, STRANGER] {
        let (code, client, events) = mqtt(port, Some(token)).await;
        assert_eq!(code, Some(C::Success));
        client.subscribe("#", QoS::AtMostOnce).await.unwrap();
        seen.push(drive(events));
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, admin, events) = mqtt(port, Some(ADMIN)).await;
    let _admin_seen = drive(events);
    for topic in ["alerts/7", "alerts/8"] {
        admin
            .publish(topic, QoS::AtLeastOnce, false, "{}")
            .await
            .unwrap();
    }
    // The device publishes its own readings...
    clients[1]
        .publish(
            "plant/7/temp",
            QoS::AtLeastOnce,
            false,
            r#"{"machine": 7, "temp": 31}"#,
        )
        .await
        .unwrap();
    let (display, _) = within(&mut seen[0], 1500).await;
    assert_eq!(
        display,
        ["alerts/7", "alerts/8"],
        "the display reads alerts only"
    );
    let (device, ended) = within(&mut seen[1], 500).await;
    assert_eq!((device, ended), (vec!["alerts/7".to_owned()], false));
    let (stranger, _) = within(&mut seen[2], 500).await;
    assert!(stranger.is_empty(), "{stranger:?}");
    // ...and the rule took them (read back through the REST API).
    let mut status = Value::Null;
    for _ in 0..30 {
        status = call_json(&node.base, "/v1/rules/alerts/status", ADMIN).await;
        if status["operators"][0]["events_in"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status["operators"][0]["events_in"], 1, "{status:#}");
    // ...but not another machine's: the connection ends.
    clients[1]
        .publish(
            "plant/8/temp",
            QoS::AtLeastOnce,
            false,
            r#"{"machine": 8, "temp": 31}"#,
        )
        .await
        .unwrap();
    assert!(
        within(&mut seen[1], 3000).await.1,
        "plant/8 is not the device's"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_node_refuses_to_listen_beyond_loopback_without_tokens() {
    let dir = scratch("insecure");
    let serve = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--mqtt", "off", "--listen"])
            .arg(format!("0.0.0.0:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = serve(&[]).wait_with_output().unwrap();
    assert!(!refused.status.success());
    let says = String::from_utf8_lossy(&refused.stderr);
    assert!(
        says.contains("--auth-token-file") && says.contains("--insecure"),
        "{says}"
    );
    // With --insecure it serves (and keeps serving until stopped).
    let mut started = serve(&["--insecure"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(started.try_wait().unwrap().is_none(), "it serves");
    let _ = started.kill();
    let _ = started.wait();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_holding_the_cluster_secret_join_and_moves_go_only_to_them() {
    let dir = scratch("cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let file = tokens(&dir);
    let secret = dir.join("secret");
    std::fs::write(&secret, "cluster-secret-7d8e9f0a1b2c\n").unwrap();
    let plane_port = free_port();
    let plane_args = [
        "--auth-token-file",
        file.to_str().unwrap(),
        "--cluster-secret-file",
        secret.to_str().unwrap(),
        "--role",
        "core",
        "--name",
        "core-a",
    ];
    let plane = Served::start_at(plane_port, &plane_args, "plane").await;
    let join = format!("http://127.0.0.1:{plane_port}");
    let edge = Served::start(
        &[
            "--auth-token-file",
            file.to_str().unwrap(),
            "--cluster-secret-file",
            secret.to_str().unwrap(),
            "--name",
            "edge-1",
            "--join",
            &join,
        ],
        "edge",
    )
    .await;
    // A node without the secret is not taken in; a forged report is refused.
    let stranger = Served::start(&["--name", "stranger", "--join", &join], "stranger").await;
    let forged = json!({"name": "evil", "role": "core", "address": "http://203.0.113.9:7070",
        "load": {"cpu_percent": 0.0, "memory_bytes": 0, "rules": 0, "events_per_s": 0.0, "input_lag": 0},
        "health": "ok"});
    for token in [None, Some(ADMIN)] {
        let status = call(
            &plane.base,
            reqwest::Method::POST,
            "/v1/nodes/heartbeat",
            token,
            Some(forged.clone()),
        )
        .await;
        assert!(status == 401 || status == 403, "{status}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let names = loop {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/nodes", plane.base))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        let nodes: Value = r.json().await.unwrap();
        let names: Vec<String> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        if names.contains(&"edge-1".to_owned()) || Instant::now() > deadline {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(names.contains(&"edge-1".to_owned()), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "stranger" || n == "evil"),
        "{names:?}"
    );

    // Installed through the control plane on edge-1, then moved: only to listed nodes, and
    // never to an address from the request.
    let sql = "CREATE STREAM src WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', topic = 'auth.test.in'); INSERT INTO out SELECT * FROM src;";
    let status = call(
        &plane.base,
        reqwest::Method::POST,
        "/v1/rules",
        Some(ADMIN),
        Some(json!({"id": "r", "sql": sql, "node": "edge-1"})),
    )
    .await;
    assert_eq!(status, 201);
    let status = call(
        &plane.base,
        reqwest::Method::POST,
        "/v1/rules/r/move",
        Some(ADMIN),
        Some(json!({"node": "evil"})),
    )
    .await;
    assert_eq!(status, 404);
    let status = call(
        &plane.base,
        reqwest::Method::POST,
        "/v1/rules/r/move",
        Some(ADMIN),
        Some(json!({"node": "core-a", "address": "http://203.0.113.9:7070"})),
    )
    .await;
    assert_eq!(status, 400, "an address in the body is refused");
    let status = call(
        &plane.base,
        reqwest::Method::POST,
        "/v1/rules/r/move",
        Some(ADMIN),
        Some(json!({"node": "core-a"})),
    )
    .await;
    assert_eq!(
        status, 200,
        "a move between the cluster's nodes works with the secret"
    );
    drop((stranger, edge));
    let _ = std::fs::remove_dir_all(dir);
}
