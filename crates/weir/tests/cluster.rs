//! Several `weir serve` processes on loopback as one control plane: nodes register with
//! heartbeats, are listed with role, address and load, are marked lost when killed, and a rule
//! installed through the control plane runs on the node it names.

mod common;
use common::free_port;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A `weir serve` process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, name: &str, role: &str, port: u16, join: Option<u16>) -> Proc {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(["serve", "--mqtt", "off", "--role", role, "--name", name])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap());
    if let Some(j) = join {
        c.arg("--join").arg(format!("http://127.0.0.1:{j}"));
    }
    Proc(c.spawn().unwrap())
}

/// Polls `GET url` until `ok` holds of the answer.
async fn wait_for(url: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if let Ok(v) = r.json::<Value>().await {
                if ok(&v) {
                    return v;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: gave up waiting on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// POSTs JSON; the status and the answer.
async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn states(nodes: &Value) -> Vec<(String, String, String)> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let s = |k: &str| n[k].as_str().unwrap().to_owned();
            (s("name"), s("role"), s("state"))
        })
        .collect()
}

#[tokio::test]
async fn nodes_join_are_listed_lost_when_killed_and_take_rules_through_the_control_plane() {
    let dir = std::env::temp_dir().join(format!("weir-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p0, p1, p2) = (free_port(), free_port(), free_port());
    let _plane = serve(&dir, "core-a", "core", p0, None);
    let _edge = serve(&dir, "edge-1", "edge", p1, Some(p0));
    let core_b = serve(&dir, "core-b", "core", p2, Some(p0));
    let nodes_url = format!("http://127.0.0.1:{p0}/v1/nodes");

    let nodes = wait_for(&nodes_url, "three nodes up", |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|n| n["state"] == "up"))
    })
    .await;
    let mut got = states(&nodes);
    got.sort();
    assert_eq!(
        got,
        [("core-a", "core"), ("core-b", "core"), ("edge-1", "edge")].map(|(n, r)| (
            n.to_owned(),
            r.to_owned(),
            "up".to_owned()
        ))
    );
    let edge = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "edge-1")
        .unwrap();
    assert_eq!(edge["address"], format!("http://127.0.0.1:{p1}"));
    assert!(
        edge["load"]["memory_bytes"].as_u64().unwrap() > 1 << 20,
        "{edge}"
    );
    assert_eq!(edge["health"], "ok");

    // Installed through the control plane, the rule lands on the node it names.
    let rules = format!("http://127.0.0.1:{p0}/v1/rules");
    let sql = "CREATE STREAM readings (sensor STRING, temp DOUBLE); INSERT INTO hot SELECT * FROM readings WHERE temp > 30;";
    let (status, body) = post(&rules, json!({"id": "hot", "sql": sql, "node": "edge-1"})).await;
    assert_eq!(status, 201, "{body}");
    let edge_rules = format!("http://127.0.0.1:{p1}/v1/rules");
    wait_for(&edge_rules, "the rule on edge-1", |v| v[0]["id"] == "hot").await;
    wait_for(&rules, "no rule on the control plane's node", |v| {
        *v == json!([])
    })
    .await;
    // The edge node's report counts the rule and the events it reads.
    for _ in 0..50 {
        let ingest = format!("http://127.0.0.1:{p1}/v1/streams/readings/events");
        post(&ingest, json!({"sensor": "s1", "temp": 31.5})).await;
    }
    wait_for(&nodes_url, "the edge reports its rule and events", |v| {
        v.as_array().unwrap().iter().any(|n| {
            n["name"] == "edge-1"
                && n["load"]["rules"] == 1
                && n["load"]["events_per_s"].as_f64().unwrap() > 0.0
        })
    })
    .await;

    // An unknown node is a 404 with the reason.
    let (status, _) = post(&rules, json!({"id": "x", "sql": sql, "node": "nowhere"})).await;
    assert_eq!(status, 404);

    // A killed node is marked lost, and installing on it is refused with the reason.
    drop(core_b);
    let nodes = wait_for(&nodes_url, "core-b lost", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "core-b" && n["state"] == "lost")
    })
    .await;
    assert!(states(&nodes).iter().filter(|s| s.2 == "up").count() == 2);
    let (status, body) = post(&rules, json!({"id": "y", "sql": sql, "node": "core-b"})).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("lost"),
        "{body}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
