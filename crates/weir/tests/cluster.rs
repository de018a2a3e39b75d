//! Several `weir serve` processes on loopback as one control plane: nodes register with
//! heartbeats, are listed with role, address and load, are marked lost when killed, and a rule
//! installed through the control plane runs on the node it names.

mod common;
use common::free_port;

use std::collections::BTreeMap;
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
    serve_with(dir, name, role, port, join, "")
}

/// [`serve`] with node settings in TOML. The node logs at `WEIR_TEST_LOG` (a RUST_LOG filter;
/// warn by default) into `<dir>/<name>.log`.
fn serve_with(
    dir: &std::path::Path,
    name: &str,
    role: &str,
    port: u16,
    join: Option<u16>,
    settings: &str,
) -> Proc {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.args(["serve", "--mqtt", "off", "--role", role, "--name", name]);
    if !settings.is_empty() {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, settings).unwrap();
        c.arg("--config").arg(file);
    }
    c.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join(name))
        .env(
            "RUST_LOG",
            std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
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

/// Waits until the control plane at `nodes_url` lists `n` nodes, all up; the list.
async fn all_up(nodes_url: &str, n: usize) -> Value {
    wait_for(nodes_url, &format!("{n} nodes up"), |v| {
        v.as_array()
            .is_some_and(|a| a.len() == n && a.iter().all(|m| m["state"] == "up"))
    })
    .await
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

    let nodes = all_up(&nodes_url, 3).await;
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
    assert!(edge["load"]["input_lag"].is_u64(), "{edge}");

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

    // A rule reading an embedded topic of its node cannot move (no other node receives it);
    // refused with the reason, it keeps running where it is.
    let (status, body) = post(&format!("{rules}/hot/move"), json!({"node": "core-b"})).await;
    assert_eq!(status, 501, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedded topic"),
        "{body}"
    );
    wait_for(&edge_rules, "hot still runs on edge-1", |v| {
        v[0]["id"] == "hot" && v[0]["state"] == "RUNNING"
    })
    .await;

    // An unknown node is a 404 with the reason.
    let (status, _) = post(&rules, json!({"id": "x", "sql": sql, "node": "nowhere"})).await;
    assert_eq!(status, 404);

    // With a runtime instead of a node, the rule goes on every up node of that runtime.
    let (status, body) = post(&rules, json!({"id": "all", "sql": sql, "runtime": "core"})).await;
    assert_eq!(status, 201, "{body}");
    let mut on: Vec<&str> = body["installed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["node"].as_str().unwrap())
        .collect();
    on.sort();
    assert_eq!(on, ["core-a", "core-b"]);

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

/// Events of the move test: five machines, 10 ms apart in event time, values that rise and
/// fall so that V shapes match; then one late-enough event per machine to close every window.
fn machine_events() -> Vec<Value> {
    let base = 1_700_000_000_000i64;
    let mut events: Vec<Value> = (0..6000i64)
        .map(|i| json!({"machine": i % 5, "ts": base + i * 10, "v": (i * 7919) % 13}))
        .collect();
    events.extend((0..5).map(|m| json!({"machine": m, "ts": base + 120_000, "v": 0})));
    events
}

/// A tumbling window and a pattern per machine, JetStream in and out, exactly once.
fn roaming_rule(subject_in: &str, input: &str, out: &str, output: &str) -> String {
    format!(
        "CREATE STREAM src (machine BIGINT, ts BIGINT, v BIGINT) WITH (connector = 'nats', subject = '{subject_in}', stream = '{input}', timestamp = 'ts');
         CREATE STREAM windows WITH (connector = 'nats', subject = '{out}.w', stream = '{output}');
         CREATE STREAM shapes WITH (connector = 'nats', subject = '{out}.v', stream = '{output}');
         INSERT INTO windows SELECT machine, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY machine, TUMBLE(ts, INTERVAL '1' SECOND);
         INSERT INTO shapes SELECT machine, start_v, bottom_v, end_v, start_ts, end_ts FROM src
         MATCH_RECOGNIZE (
           PARTITION BY machine ORDER BY ts
           MEASURES FIRST(S.v) AS start_v, LAST(D.v) AS bottom_v, LAST(U.v) AS end_v, S.ts AS start_ts, LAST(U.ts) AS end_ts
           ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW
           PATTERN (S D+ U+) WITHIN INTERVAL '10' SECOND
           DEFINE D AS D.v < PREV(D.v), U AS U.v > PREV(U.v)
         );"
    )
}

/// A stateful rule moves edge → core → edge while its input arrives (once through a control
/// plane that does not hold it, once through one that does, and once to a node that does not
/// answer, which leaves it running where it was); its results equal those of the same rule
/// left in place: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateful_rule_moves_edge_core_edge_mid_stream_and_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("weir-move-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p0, p1) = (free_port(), free_port());
    let _core = serve(&dir, "core-a", "core", p0, None);
    let _edge = serve(&dir, "edge-1", "edge", p1, Some(p0));
    let plane = format!("http://127.0.0.1:{p0}");
    let edge = format!("http://127.0.0.1:{p1}");
    all_up(&format!("{plane}/v1/nodes"), 2).await;

    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    let tag = format!("{}_{}", std::process::id(), p0);
    let (input, output) = (format!("MVIN_{tag}"), format!("MVOUT_{tag}"));
    let subject_in = format!("mv.{tag}.in");
    common::jetstream_stream(&js, &input, &subject_in).await;
    common::jetstream_stream(&js, &output, &format!("mv.{tag}.out.>")).await;
    let options = json!({"delivery": "exactly_once", "checkpoint_interval": "200ms"});
    for (id, on) in [("fixed", "core-a"), ("roams", "edge-1")] {
        let sql = roaming_rule(&subject_in, &input, &format!("mv.{tag}.out.{id}"), &output);
        let body = json!({"id": id, "sql": sql, "options": options, "node": on});
        let (status, body) = post(&format!("{plane}/v1/rules"), body).await;
        assert_eq!(status, 201, "{body}");
    }

    let events = machine_events();
    let publisher = tokio::spawn({
        let (js, subject) = (js.clone(), subject_in.clone());
        async move {
            for (i, e) in events.iter().enumerate() {
                let ack = js.publish(subject.clone(), e.to_string().into()).await;
                ack.unwrap().await.unwrap();
                if i % 25 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    let moved = |to: &str, at: &str| {
        let url = format!("{at}/v1/rules/roams/move");
        let body = json!({"node": to});
        async move { post(&url, body).await }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Through the control plane, which does not hold the rule: it hands the move to edge-1.
    let (status, report) = moved("core-a", &plane).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("edge-1"), Some("core-a"))
    );
    assert!(report["paused_ms"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["view"]["state"], "RUNNING", "{report}");
    wait_for(
        &format!("{edge}/v1/rules"),
        "the rule gone from edge-1",
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().all(|r| r["id"] != "roams"))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A target that does not answer (listed, but killed a moment ago): the rule goes on where
    // it was, from where it stopped.
    let ghost = serve(&dir, "ghost", "edge", free_port(), Some(p0));
    all_up(&format!("{plane}/v1/nodes"), 3).await;
    drop(ghost);
    let (status, refused) = post(
        &format!("{plane}/v1/rules/roams/move"),
        json!({"node": "ghost"}),
    )
    .await;
    assert_eq!(status, 503, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("keeps running on 'core-a'"), "{message}");
    let status = wait_for(
        &format!("{plane}/v1/rules/roams/status"),
        "running again",
        |v| v["state"] == "RUNNING",
    )
    .await;
    assert!(
        status["checkpoint"]["restored_from"].as_u64().is_some(),
        "{status}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Through the control plane that holds it, back to the edge.
    // With the command line this time: `weir rule move`.
    let out = tokio::task::spawn_blocking({
        let plane = plane.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(["rule", "move", "roams", "edge-1"])
                .env("WEIR_NODE", plane)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("core-a"), Some("edge-1")),
        "{report}"
    );
    assert!(
        !publisher.is_finished(),
        "the moves happen while events arrive"
    );
    publisher.await.unwrap();
    let rule = wait_for(
        &format!("{edge}/v1/rules/roams"),
        "the rule on edge-1",
        |v| v["state"] == "RUNNING",
    )
    .await;
    let hops: Vec<(&str, &str)> = rule["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_str().unwrap(), m["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        hops,
        [("edge-1", "core-a"), ("core-a", "edge-1")],
        "the history stays"
    );

    // Settled: both rules' results stopped growing after the input ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (usize::MAX, 0);
    let results = loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let all = common::jetstream_messages(&js, &output).await;
        let n = all.len();
        let of = |id: &str| {
            all.iter()
                .filter(|m| m.0.contains(&format!(".{id}.")))
                .count()
        };
        if (n, of("fixed")) == last && of("fixed") == of("roams") {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "the rules did not settle: {n} results"
        );
        last = (n, of("fixed"));
    };
    let sorted = |id: &str, kind: &str| {
        let mut v: Vec<&str> = results
            .iter()
            .filter(|m| m.0.ends_with(&format!(".{id}.{kind}")))
            .map(|m| m.1.as_str())
            .collect();
        v.sort();
        v
    };
    for kind in ["w", "v"] {
        let (fixed, roams) = (sorted("fixed", kind), sorted("roams", kind));
        assert!(fixed.len() > 100, "{} '{kind}' results", fixed.len());
        assert_eq!(
            roams.len(),
            fixed.len(),
            "as many '{kind}' results as in place"
        );
        assert_eq!(roams, fixed);
    }
    let _ = js.delete_stream(&input).await;
    let _ = js.delete_stream(&output).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[path = "../../weir-node/tests/common/tansu.rs"]
mod tansu;

const GROUP_BASE: i64 = 1_700_000_000_000;

/// The group tests' readings: 8 sensors, 100 per second of event time.
fn group_events() -> Vec<Value> {
    (0..8000i64)
        .map(|i| json!({"sensor": i % 8, "ts": GROUP_BASE + (i / 8) * 10, "v": (i * 7919) % 13}))
        .collect()
}

/// One reading per sensor far ahead, closing every window.
fn group_closing() -> Vec<Value> {
    (0..8)
        .map(|s| json!({"sensor": s, "ts": GROUP_BASE + 100_000_000, "v": 0}))
        .collect()
}

/// Installs group rule `id` through the control plane at `plane` on core-a, then on core-b
/// (REST ports `ports`), each time waiting until the node checkpoints partitions of its own.
async fn start_group(plane: &str, id: &str, sql: &str, options: &Value, ports: [u16; 2]) {
    for (node, port) in ["core-a", "core-b"].into_iter().zip(ports) {
        let body = json!({"id": id, "sql": sql, "options": options, "node": node});
        let (status, body) = post(&format!("{plane}/v1/rules"), body).await;
        assert_eq!(status, 201, "{body}");
        let status = format!("http://127.0.0.1:{port}/v1/rules/{id}/status");
        wait_for(&status, &format!("{node} reads partitions"), |v| {
            partitions(v) > 0
        })
        .await;
    }
}

/// How many partitions a group rule's status says the node checkpoints.
fn partitions(status: &Value) -> usize {
    status["checkpoint"]["positions"]
        .as_object()
        .map_or(0, |p| p.len())
}

/// Adds a result row of the group tests' rule to `got`; a window that comes out again must
/// come out with the same figures (results are at least once).
fn tally(got: &mut BTreeMap<(i64, i64), (i64, i64)>, r: &Value) {
    let n = |k: &str| r[k].as_i64().unwrap();
    let row = (n("n"), n("total"));
    let before = got.insert((n("sensor"), n("window_start")), row);
    assert!(
        before.is_none() || before == Some(row),
        "window {r} came out twice with different figures: {before:?}"
    );
}

/// A rule on the core runtime runs on both core nodes as members of its input's consumer
/// group, each reading some of the partitions; one node leaves mid-stream (SIGTERM) and the
/// other takes its partitions over from the changelog. Every window's count and sum come out
/// as if nothing had happened (a result may repeat, identical: results are at least once).
///
/// With SIGKILL instead, tansu 0.6 evicts the silent member after the session timeout but
/// gives the survivor back only its own partitions, so the dead member's stay unread; that
/// case waits for a broker that reassigns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_core_group_shares_partitions_and_moves_a_leaving_members_partitions() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let kafka = tansu::Tansu::start().await;
    let b = kafka.brokers.clone();
    let dir = std::env::temp_dir().join(format!("weir-group-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p0, p1) = (free_port(), free_port());
    let _a = serve(&dir, "core-a", "core", p0, None);
    let core_b = serve(&dir, "core-b", "core", p1, Some(p0));
    let plane = format!("http://127.0.0.1:{p0}");
    all_up(&format!("{plane}/v1/nodes"), 2).await;

    let tag = format!("{}_{p0}", std::process::id());
    let (t_in, t_out) = (format!("grp_in_{tag}"), format!("grp_out_{tag}"));
    let sql = format!(
        "CREATE STREAM src (sensor BIGINT, ts BIGINT, v BIGINT) WITH (connector = 'kafka', url = 'kafka://{b}', topic = '{t_in}', partitions = '4', timestamp = 'ts');
         CREATE STREAM counts WITH (connector = 'kafka', url = 'kafka://{b}', topic = '{t_out}', partitions = '1', key = 'sensor');
         INSERT INTO counts SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);"
    );
    let options = json!({"group": true, "changelog": "nats://127.0.0.1:4222", "checkpoint_interval": "200ms"});
    let id = format!("grp{tag}");
    let events = group_events();
    // Paced over about 8 s, so that the kill lands while events arrive.
    let producer = tokio::spawn({
        let (b, t_in, events) = (b.clone(), t_in.clone(), events.clone());
        async move {
            for chunk in events.chunks(100) {
                tansu::produce(&b, &t_in, "sensor", chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    start_group(&plane, &id, &sql, &options, [p0, p1]).await;
    let stopped = Command::new("kill")
        .args(["-TERM", &core_b.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    producer.await.unwrap();
    tansu::produce(&b, &t_in, "sensor", &group_closing()).await;

    let expected = tansu::windows(&events);
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b)
        .set("group.id", format!("reader_{tag}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&t_out]).unwrap();
    let mut got: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while got.len() < expected.len() && Instant::now() < deadline {
        let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await else {
            continue;
        };
        tally(
            &mut got,
            &serde_json::from_slice(m.payload().unwrap()).unwrap(),
        );
    }
    assert_eq!(got.len(), expected.len(), "every window came out");
    assert_eq!(got, expected, "no event lost, none counted twice");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rule on the core runtime over a JetStream stream split into four partitioned subjects:
/// both core nodes pull every partition, JetStream pins each partition to one of them, and the
/// first node releases half of its partitions when the second comes. The second node is then
/// SIGKILLed mid-stream: once its pins time out, the first takes its partitions over from the
/// changelog and reads what the dead node had been handed beyond its last checkpoint. Every
/// window's count and sum come out as if nothing had happened (a result may repeat, identical).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_core_group_balances_partitions_and_survives_a_sigkilled_member() {
    use async_nats::jetstream;
    let nats = common::NatsServer::start().await;
    let js = jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let dir = std::env::temp_dir().join(format!("weir-jsgroup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p0, p1) = (free_port(), free_port());
    let _a = serve(&dir, "core-a", "core", p0, None);
    let mut core_b = serve(&dir, "core-b", "core", p1, Some(p0));
    let plane = format!("http://127.0.0.1:{p0}");
    all_up(&format!("{plane}/v1/nodes"), 2).await;

    let tag = format!("{}_{p0}", std::process::id());
    let (s_in, s_out) = (format!("jg_in_{tag}"), format!("jg_out_{tag}"));
    common::jetstream_stream(&js, &s_in.to_uppercase(), &format!("{s_in}.*")).await;
    common::jetstream_stream(&js, &s_out.to_uppercase(), &s_out).await;
    let url = &nats.url;
    let (stream_in, stream_out) = (s_in.to_uppercase(), s_out.to_uppercase());
    let sql = format!(
        "CREATE STREAM src (sensor BIGINT, ts BIGINT, v BIGINT) WITH (connector = 'nats', url = '{url}', topic = '{s_in}', stream = '{stream_in}', partitions = '4', timestamp = 'ts');
         CREATE STREAM counts WITH (connector = 'nats', url = '{url}', topic = '{s_out}', stream = '{stream_out}');
         INSERT INTO counts SELECT sensor, window_start, count(*) AS n, sum(v) AS total FROM src GROUP BY sensor, TUMBLE(ts, INTERVAL '1' SECOND);"
    );
    let options = json!({"group": true, "changelog": url, "checkpoint_interval": "200ms"});
    let id = format!("jg{tag}");
    let status_of = |port: u16| format!("http://127.0.0.1:{port}/v1/rules/{id}/status");
    let events = group_events();
    // A sensor's events all go to one partition (sensor % 4). Paced over about 16 s, so that
    // the balancing and the kill land while events arrive.
    let producer = tokio::spawn({
        let (js, s_in, events) = (js.clone(), s_in.clone(), events.clone());
        async move {
            for chunk in events.chunks(50) {
                publish(&js, &s_in, chunk).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    start_group(&plane, &id, &sql, &options, [p0, p1]).await;
    // Long enough for core-b to emit windows of its own, which core-a may emit again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    core_b.0.kill().unwrap();
    let killed = Instant::now();
    wait_for(
        &status_of(p0),
        "core-a takes the dead node's partitions",
        |v| partitions(v) == 4,
    )
    .await;
    let resumed = killed.elapsed();
    producer.await.unwrap();
    publish(&js, &s_in, &group_closing()).await;

    let expected = tansu::windows(&events);
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let mut got: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
        for (_, text) in common::jetstream_messages(&js, &stream_out).await {
            tally(&mut got, &serde_json::from_str(&text).unwrap());
        }
        if got.len() >= expected.len() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(got.len(), expected.len(), "every window came out");
    assert_eq!(got, expected, "no event lost, none counted twice");
    eprintln!("core-a read every partition {resumed:?} after core-b was killed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishes events to JetStream, each on its sensor's partition subject, every ack awaited.
async fn publish(js: &async_nats::jetstream::Context, subject: &str, events: &[Value]) {
    let mut acks = Vec::new();
    for e in events {
        let p = e["sensor"].as_i64().unwrap() % 4;
        let ack = js
            .publish(format!("{subject}.{p}"), e.to_string().into())
            .await
            .unwrap();
        acks.push(ack);
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// Where rule `id` runs among the nodes at `ports`, by name.
async fn runs_on(id: &str, nodes: &[(&str, u16)]) -> Option<String> {
    for (name, port) in nodes {
        let url = format!("http://127.0.0.1:{port}/v1/rules/{id}");
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                let v: Value = r.json().await.unwrap_or_default();
                // Any node answers for a rule; the answer names the node that holds it.
                if v["state"] == "RUNNING" && v["node"] == *name {
                    return Some((*name).to_owned());
                }
            }
        }
    }
    None
}

/// The control plane's policies: a busy edge node hands its adaptive rule to the core, the
/// rule comes back when the edge is quiet again, and when the edge node is SIGKILLed the rule
/// restarts on the core from its changelog. Every decision is listed with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_offloads_a_busy_edge_brings_the_rule_back_and_fails_over_a_lost_edge() {
    let dir = std::env::temp_dir().join(format!("weir-place-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p0, p1) = (free_port(), free_port());
    let plane_settings = "heartbeat_ms = 300\nlost_after_ms = 1500\noffload_above = 150.0\nreturn_below = 60.0\nload_metric = 'events_per_s'\n";
    let _core = serve_with(&dir, "core-a", "core", p0, None, plane_settings);
    let edge = serve_with(&dir, "edge-1", "edge", p1, Some(p0), "heartbeat_ms = 300\n");
    let plane = format!("http://127.0.0.1:{p0}");
    all_up(&format!("{plane}/v1/nodes"), 2).await;

    let js = async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
    let tag = format!("{}_{p0}", std::process::id());
    let (input, subject) = (format!("PLIN_{tag}"), format!("pl.{tag}.in"));
    common::jetstream_stream(&js, &input, &subject).await;
    let sql = format!(
        "CREATE STREAM src (machine BIGINT, ts BIGINT) WITH (connector = 'nats', url = 'nats://weir:pl-s3cret@127.0.0.1:4222', subject = '{subject}', stream = '{input}', durable = 'pl{tag}', timestamp = 'ts');
         INSERT INTO per_second SELECT machine, window_start, count(*) AS n FROM src GROUP BY machine, TUMBLE(ts, INTERVAL '1' SECOND);"
    );
    let options = json!({"changelog": "nats://127.0.0.1:4222", "adaptive": true, "failover": "core", "checkpoint_interval": "200ms"});
    let id = format!("pl{tag}");
    let (status, body) = post(
        &format!("{plane}/v1/rules"),
        json!({"id": id, "sql": sql, "options": options, "node": "edge-1"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let nodes = [("core-a", p0), ("edge-1", p1)];
    let decided = |action: &'static str| {
        let url = format!("{plane}/v1/placements");
        async move {
            wait_for(&url, action, |v| {
                v.as_array()
                    .is_some_and(|a| a.iter().any(|d| d["action"] == action))
            })
            .await
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["action"] == action)
            .unwrap()
            .clone()
        }
    };

    // Busy: about 500 events a second reach the edge's rule, over offload_above (150/s).
    let busy = tokio::spawn({
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            for i in 0..20_000i64 {
                let e = json!({"machine": i % 4, "ts": 1_700_000_000_000i64 + i * 2});
                js.publish(subject.clone(), e.to_string().into())
                    .await
                    .unwrap();
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let offload = decided("offload").await;
    busy.abort();
    assert_eq!(
        (offload["from"].as_str(), offload["to"].as_str()),
        (Some("edge-1"), Some("core-a")),
        "{offload}"
    );
    assert_eq!(offload["outcome"], "done", "{offload}");
    assert!(
        offload["reason"].as_str().unwrap().contains("events_per_s"),
        "{offload}"
    );
    // Quiet again: the rule comes home.
    let back = decided("return").await;
    assert_eq!(
        (back["to"].as_str(), back["outcome"].as_str()),
        (Some("edge-1"), Some("done")),
        "{back}"
    );
    assert_eq!(runs_on(&id, &nodes).await.as_deref(), Some("edge-1"));

    // The edge node dies (once it has reported the rule back): the rule restarts on the core
    // from its changelog.
    wait_for(
        &format!("{plane}/v1/nodes"),
        "edge-1 reports the rule",
        |v| {
            v.as_array().unwrap().iter().any(|n| {
                n["name"] == "edge-1"
                    && n["hosted"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|r| r["id"] == *id && r["running"] == true))
            })
        },
    )
    .await;
    drop(edge);
    let failover = decided("failover").await;
    assert_eq!(
        (failover["to"].as_str(), failover["outcome"].as_str()),
        (Some("core-a"), Some("done")),
        "{failover}"
    );
    let status = wait_for(
        &format!("{plane}/v1/rules/{id}/status"),
        "running on core-a",
        |v| v["state"] == "RUNNING",
    )
    .await;
    let notes = status["checkpoint"]["restore_notes"].to_string();
    assert!(
        notes.contains("changelog"),
        "state from the changelog: {status}"
    );
    // The failed-over rule logs in as the original did (heartbeats carry its text whole), and
    // listings show its password as ***.
    let rule_file = format!("registry/rules/{id}.json");
    let registry = std::fs::read_to_string(dir.join("core-a").join(rule_file)).unwrap();
    assert!(registry.contains("weir:pl-s3cret@"), "{registry}");
    let listed = reqwest::get(format!("{plane}/v1/nodes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("pl-s3cret"), "{listed}");
    let _ = js.delete_stream(&input).await;
    let _ = std::fs::remove_dir_all(&dir);
}
