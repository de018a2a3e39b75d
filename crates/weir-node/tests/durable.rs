//! Broker faults under durable delivery: a private Mosquitto or NATS server is stopped and
//! restarted in the middle of a stream, while a publisher keeps sending; every message
//! reaches the far side of the rule. Messages wait in the brokers' persistent sessions and
//! streams, in the rule's durable input log, and in its sink outbox while the broker is away.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::private::*;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

const MESSAGES: u64 = 300;

/// Half a second into the publisher's stream the broker goes away for 1.5 s; returns once the
/// publisher has had every message stored by the broker.
async fn outage(broker: &mut Private, publisher: tokio::task::JoinHandle<()>) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.restart();
    tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("the broker stores every message the publisher sends")
        .unwrap();
}

/// Publishes `MESSAGES` numbered messages at QoS 1 over a persistent session, paced, riding
/// out broker outages; returns once the broker has acknowledged them all.
async fn publish_through(port: u16, topic: String) {
    let mut o = MqttOptions::new(unique("pub"), "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(o, 1024);
    let sender = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let body = json!({"n": n}).to_string();
            client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client
    });
    let mut acked = 0;
    while acked < MESSAGES {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let _ = sender.await;
}

/// Collects the numbers of every message on `topic` over a persistent session.
fn collect(port: u16, topic: &str) -> tokio::sync::watch::Receiver<BTreeSet<u64>> {
    let mut o = MqttOptions::new(unique("sub"), "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(o, 64);
    let (tx, rx) = tokio::sync::watch::channel(BTreeSet::new());
    let topic = topic.to_owned();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) if !a.session_present => {
                    let _ = client.subscribe(topic.as_str(), QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    tx.send_modify(|s| {
                        s.insert(v["n"].as_u64().unwrap());
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    rx
}

async fn wait_all(seen: &mut tokio::sync::watch::Receiver<BTreeSet<u64>>, what: &str) {
    let all = async {
        while seen.borrow().len() < MESSAGES as usize {
            seen.changed().await.unwrap();
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .is_err()
    {
        let got = seen.borrow();
        let missing: Vec<u64> = (0..MESSAGES).filter(|n| !got.contains(n)).collect();
        panic!(
            "{what}: {} of {MESSAGES} messages lost: {missing:?}",
            missing.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_stopped_and_restarted_mid_stream_loses_nothing() {
    let dir = data_dir("mosquitto-fault");
    let store = scratch(&dir, "mosquitto");
    // Mosquitto started as root drops to its own user, which must be able to save here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let mut broker = Private::configured(
        "mosquitto",
        store.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 10000\n",
            store.display()
        ),
        port,
    );
    let node = TestNode::start(&dir.join("node")).await;
    let sql = format!(
        "CREATE STREAM f_in WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'f/in', qos = '1', session = 'persistent', client_id = '{}');
         CREATE STREAM f_out WITH (connector = 'mqtt', url = 'mqtt://127.0.0.1:{port}', topic = 'f/out', qos = '1');
         INSERT INTO f_out SELECT n FROM f_in;",
        unique("weir")
    );
    let (s, v) = node
        .post(
            "/v1/rules",
            json!({"id": "mf", "sql": sql, "options": {"delivery": "at_least_once"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    node.wait_status("mf", "connected", |s| {
        s["operators"][0]["health"]["state"] == "up"
    })
    .await;
    let mut seen = collect(port, "f/out");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publisher = tokio::spawn(publish_through(port, "f/in".to_owned()));

    outage(&mut broker, publisher).await;
    wait_all(&mut seen, "mosquitto").await;
    let status = node
        .wait_status("mf", "outbox drained", |s| {
            s["operators"][2]["outbox"]["depth"] == 0
        })
        .await;
    assert!(
        status["operators"][0]["health"]["reconnects"].as_u64() >= Some(1),
        "{status:#}"
    );
    node.stop().await;
    // The broker writes into the directory until it is gone.
    broker.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_mid_stream_loses_nothing() {
    let dir = data_dir("nats-fault");
    let store = scratch(&dir, "nats");
    let port = free_port();
    let args = vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-js".into(),
        "-sd".into(),
        store.display().to_string(),
    ];
    let mut broker = Private::start("nats-server", args, port);
    let node = TestNode::start(&dir.join("node")).await;
    let url = format!("nats://127.0.0.1:{port}");
    let sql = format!(
        "CREATE STREAM n_in WITH (connector = 'nats', url = '{url}', subject = 'fault.in', stream = 'FAULT_IN', durable = 'weir');
         CREATE STREAM n_out WITH (connector = 'nats', url = '{url}', subject = 'fault.out', stream = 'FAULT_OUT');
         INSERT INTO n_out SELECT n FROM n_in;"
    );
    let (s, v) = node
        .post(
            "/v1/rules",
            json!({"id": "nf", "sql": sql, "options": {"delivery": "at_least_once"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    node.wait_status("nf", "connected", |s| {
        s["operators"][0]["health"]["state"] == "up" && s["operators"][2]["health"]["state"] == "up"
    })
    .await;

    // A publisher that retries each message until JetStream has stored it.
    let publisher = tokio::spawn({
        let url = url.clone();
        async move {
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(&url)
                .await
                .unwrap();
            let js = async_nats::jetstream::new(client);
            for n in 0..MESSAGES {
                let body = json!({"n": n}).to_string();
                loop {
                    let stored = match js.publish("fault.in", body.clone().into()).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    if stored {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    outage(&mut broker, publisher).await;
    node.wait_status("nf", "outbox drained", |s| {
        s["operators"][2]["outbox"]["depth"] == 0
            && s["operators"][2]["health"]["messages"].as_u64() >= Some(MESSAGES)
    })
    .await;

    // Everything the rule wrote is in the output stream.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("FAULT_OUT").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    use futures::StreamExt;
    while let Some(Ok(m)) = batch.next().await {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        seen.insert(v["n"].as_u64().unwrap());
    }
    let missing: Vec<u64> = (0..MESSAGES).filter(|n| !seen.contains(n)).collect();
    assert!(missing.is_empty(), "{} lost: {missing:?}", missing.len());
    node.stop().await;
    // The broker writes into the directory until it is gone.
    broker.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A rule's state mirrored to its changelog on JetStream is rebuilt by another node that has
/// no checkpoint of it: `changed` there remembers the values the first node saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_checkpoint_rebuilds_state_from_the_changelog() {
    let id = unique("cl");
    let topic = unique("cl_in");
    let sql = format!(
        "CREATE STREAM cl_in (k BIGINT, v BIGINT) WITH (topic = '{topic}');
         INSERT INTO cl_out SELECT k, v FROM cl_in WHERE changed(v) OVER (PARTITION BY k);"
    );
    let body = json!({"id": id, "sql": sql, "options": {"changelog": "nats://127.0.0.1:4222", "checkpoint_interval": "200ms"}});
    let first_dir = data_dir("changelog-a");
    let first = TestNode::start(&first_dir).await;
    let (s, v) = first.post("/v1/rules", body.clone()).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = first
        .post(
            "/v1/streams/cl_in/events",
            json!([{"k": 1, "v": 5}, {"k": 2, "v": 6}]),
        )
        .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, status) = first.get(&format!("/v1/rules/{id}/status")).await;
    let epoch = status["checkpoint"]["epoch"].as_u64().unwrap();
    first
        .wait_status(&id, "state in the changelog", |s| {
            s["checkpoint"]["changelog_epoch"].as_u64() > Some(epoch)
        })
        .await;
    first.stop().await;

    let second_dir = data_dir("changelog-b");
    let second = TestNode::start(&second_dir).await;
    let (s, v) = second.post("/v1/rules", body).await;
    assert_eq!(s, 201, "{v}");
    let (_, status) = second.get(&format!("/v1/rules/{id}/status")).await;
    let c = &status["checkpoint"];
    assert!(c["restored_from"].as_u64() > Some(epoch), "{status:#}");
    assert!(
        c["restore_notes"][0]
            .as_str()
            .unwrap()
            .contains("changelog"),
        "{c}"
    );
    let mut out = mqtt_subscribe(second.mqtt_port(), "cl_out").await;
    let (s, _) = second
        .post(
            "/v1/streams/cl_in/events",
            json!([{"k": 1, "v": 5}, {"k": 2, "v": 6}, {"k": 1, "v": 7}]),
        )
        .await;
    assert_eq!(s, 200);
    let got = take_json(&mut out, 1).await;
    assert_eq!(
        got[0],
        json!({"k": 1, "v": 7}),
        "unchanged values stay quiet"
    );
    expect_quiet(&mut out, 300).await;
    second.stop().await;
    std::fs::remove_dir_all(first_dir).unwrap();
    std::fs::remove_dir_all(second_dir).unwrap();
}

/// A broker that takes only known users: the user and password of the stream's URL log the
/// rule in (and are never shown); without them it is refused, and its status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_credentials_in_the_url_log_in() {
    let dir = data_dir("mosquitto-auth");
    let (store, passwords) = mosquitto_store(&dir, "device", "s3cret-pw");
    let port = free_port();
    let _broker = Private::configured(
        "mosquitto",
        store.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwords.display()
        ),
        port,
    );
    let node = TestNode::start(&dir.join("node")).await;
    for (id, login) in [("with", "device:s3cret-pw@"), ("without", "")] {
        let sql = format!(
            "CREATE STREAM in_{id} WITH (connector = 'mqtt', url = 'mqtt://{login}127.0.0.1:{port}', topic = 'auth/in', qos = '1');
             INSERT INTO out_{id} SELECT * FROM in_{id};"
        );
        let (s, v) = node.post("/v1/rules", json!({"id": id, "sql": sql})).await;
        assert_eq!(s, 201, "{v}");
        assert!(!v.to_string().contains("s3cret-pw"), "{v}");
    }
    node.wait_status("with", "logged in", |s| {
        s["operators"][0]["health"]["state"] == "up"
    })
    .await;
    let refused = node
        .wait_status("without", "refused", |s| {
            s["operators"][0]["health"]["last_error"].is_string()
        })
        .await;
    assert_ne!(
        refused["operators"][0]["health"]["state"], "up",
        "{refused:#}"
    );
    let mut out = mqtt_subscribe(node.mqtt_port(), "out_with").await;
    let mut o = MqttOptions::new(unique("pub"), "127.0.0.1", port);
    o.set_credentials("device", "s3cret-pw");
    let (client, mut events) = AsyncClient::new(o, 16);
    client
        .publish("auth/in", QoS::AtLeastOnce, false, r#"{"n": 1}"#)
        .await
        .unwrap();
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let got = take_json(&mut out, 1).await;
    assert_eq!(got[0]["n"], 1);
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
