//! Connectors over TLS with credentials, against brokers of the test's own: a Mosquitto with a
//! password file that asks for client certificates (`mqtts://`), a NATS server with TLS, a user
//! with a password and one with an nkey (`tls://`), a RabbitMQ with a TLS listener (`amqps://`) and an HTTPS webhook. Each
//! carries events both ways through a node; a broker whose certificate the stream does not
//! trust, and missing credentials, are refused and shown in the rule's health.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::private::*;
use common::*;
use serde_json::{json, Value};

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate, as PEM
/// files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let signed = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = signed(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client, client_key) = signed(vec!["device".into()]);
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            // Brokers may run as another user than the test.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client),
            client_key: write("client.key", client_key),
        }
    }
}

/// Installs rule `id` from `sql`, which must be accepted.
async fn install(node: &TestNode, id: &str, sql: &str) {
    let (s, v) = node.post("/v1/rules", json!({"id": id, "sql": sql})).await;
    assert_eq!(s, 201, "{v}");
}

async fn wait_up(node: &TestNode, id: &str) {
    node.wait_status(id, "connector up", |s| {
        s["operators"]
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o["health"]["state"] == "up"))
    })
    .await;
}

/// The error a rule's connector reports, once it has one.
async fn refusal(node: &TestNode, id: &str) -> String {
    let s = node
        .wait_status(id, "connector refused", |s| {
            s["operators"]
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["health"]["last_error"].is_string()))
        })
        .await;
    let ops = s["operators"].as_array().unwrap();
    assert!(ops.iter().all(|o| o["health"]["state"] != "up"), "{s:#}");
    ops.iter()
        .find_map(|o| o["health"]["last_error"].as_str())
        .unwrap()
        .to_owned()
}

/// A source with `options` and no `ca_file` is refused: the system's roots do not vouch for
/// the test CA.
async fn untrusted(node: &TestNode, options: &str) {
    install(
        node,
        "untrusted",
        &format!("CREATE STREAM u WITH ({options}); INSERT INTO u_out SELECT * FROM u;"),
    )
    .await;
    let why = refusal(node, "untrusted").await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");
}

/// Rules `<tag>_out` (embedded `feed_<tag>` → `url`) and `<tag>_in` (`url` → embedded
/// `got_<tag>`) with the connector `options`: what the node's endpoint publishes on the feed
/// goes out through the broker and comes back.
async fn round_trip(node: &TestNode, tag: &str, options: &str) {
    install(
        node,
        &format!("{tag}_in"),
        &format!(
            "CREATE STREAM down_{tag} WITH ({options});
             INSERT INTO got_{tag} SELECT * FROM down_{tag};"
        ),
    )
    .await;
    wait_up(node, &format!("{tag}_in")).await;
    install(
        node,
        &format!("{tag}_out"),
        &format!(
            "CREATE STREAM feed_{tag} (n BIGINT);
             CREATE STREAM up_{tag} WITH ({options});
             INSERT INTO up_{tag} SELECT n FROM feed_{tag};"
        ),
    )
    .await;
    wait_up(node, &format!("{tag}_out")).await;
    let mut got = mqtt_subscribe(node.mqtt_port(), &format!("got_{tag}")).await;
    let events: Vec<String> = (1..=3).map(|n| json!({ "n": n }).to_string()).collect();
    mqtt_publish(node.mqtt_port(), &format!("feed_{tag}"), &events).await;
    let mut ns: Vec<i64> = take_json(&mut got, 3)
        .await
        .iter()
        .map(|v| v["n"].as_i64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtts_with_a_password_and_a_client_certificate() {
    let dir = data_dir("mqtts");
    let (store, passwords) = mosquitto_store(&dir, "device", "tls-s3cret");
    let pki = Pki::make(&store);
    let port = free_port();
    let _broker = Private::configured(
        "mosquitto",
        store.join("mosquitto.conf"),
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            passwords.display(),
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display(),
        ),
        port,
    );
    let node = TestNode::start(&dir.join("node")).await;
    let url = format!("mqtts://device:tls-s3cret@127.0.0.1:{port}");
    let tls = format!(
        "ca_file = '{}', cert_file = '{}', key_file = '{}'",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    round_trip(
        &node,
        "mq",
        &format!("connector = 'mqtt', url = '{url}', topic = 'tls/t', qos = '1', {tls}"),
    )
    .await;

    untrusted(
        &node,
        &format!("connector = 'mqtt', url = '{url}', topic = 'tls/u'"),
    )
    .await;
    // Without a client certificate the broker ends the handshake.
    install(
        &node,
        "anonymous",
        &format!(
            "CREATE STREAM a WITH (connector = 'mqtt', url = '{url}', topic = 'tls/a', ca_file = '{}');
             INSERT INTO a_out SELECT * FROM a;",
            pki.ca.display()
        ),
    )
    .await;
    refusal(&node, "anonymous").await;
    // The password is in no listing.
    let (_, rules) = node.get("/v1/rules").await;
    let (_, status) = node.get("/v1/rules/mq_in/status").await;
    for shown in [rules.to_string(), status.to_string()] {
        assert!(!shown.contains("tls-s3cret"), "{shown}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_over_tls_with_a_password_or_an_nkey() {
    let dir = data_dir("nats-tls");
    let store = scratch(&dir, "nats");
    let pki = Pki::make(&store);
    let port = free_port();
    let nkey = nkeys::KeyPair::new_user();
    let _broker = Private::configured(
        "nats-server",
        store.join("nats.conf"),
        format!(
            "listen: \"127.0.0.1:{port}\"\n\
             tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n\
             authorization {{ users = [ {{ user: device, password: \"nats-s3cret\" }}, {{ nkey: {} }} ] }}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            nkey.public_key()
        ),
        port,
    );
    let node = TestNode::start(&dir.join("node")).await;
    let ca = format!("ca_file = '{}'", pki.ca.display());
    round_trip(
        &node,
        "na",
        &format!(
            "connector = 'nats', url = 'tls://device:nats-s3cret@127.0.0.1:{port}', topic = 'tls.t', {ca}"
        ),
    )
    .await;
    // The same with a user's nkey seed instead of a password.
    round_trip(
        &node,
        "nk",
        &format!(
            "connector = 'nats', url = 'tls://127.0.0.1:{port}', topic = 'tls.nk', nkey = '{}', {ca}",
            nkey.seed().unwrap()
        ),
    )
    .await;
    let (_, status) = node.get("/v1/rules/nk_in").await;
    assert!(
        !status.to_string().contains(&nkey.seed().unwrap()),
        "{status}"
    );
    // A wrong password.
    install(
        &node,
        "wrong",
        &format!(
            "CREATE STREAM w WITH (connector = 'nats', url = 'tls://device:nope@127.0.0.1:{port}', topic = 'tls.w', {ca});
             INSERT INTO w_out SELECT * FROM w;"
        ),
    )
    .await;
    refusal(&node, "wrong").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqps_is_encrypted_and_verified() {
    let dir = data_dir("amqps");
    let store = scratch(&dir, "rabbitmq");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pki = Pki::make(&store);
    let (plain, port, dist) = (free_port(), free_port(), free_port());
    let conf = store.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.tcp.default = 127.0.0.1:{plain}\n\
             listeners.ssl.default = 127.0.0.1:{port}\n\
             ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
             ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n\
             management.tcp.port = 0\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    )
    .unwrap();
    let plugins = store.join("enabled_plugins");
    std::fs::write(&plugins, "[].\n").unwrap();
    let name = unique("weirtls");
    let env = |k: &str, v: String| (k.to_owned(), v);
    let _broker = Private::start_with_env(
        "rabbitmq-server",
        Vec::new(),
        vec![
            env("RABBITMQ_NODENAME", format!("{name}@localhost")),
            env("RABBITMQ_CONFIG_FILE", conf.display().to_string()),
            env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                plugins.display().to_string(),
            ),
            env(
                "RABBITMQ_MNESIA_BASE",
                store.join("mnesia").display().to_string(),
            ),
            env("RABBITMQ_LOG_BASE", store.join("log").display().to_string()),
            env("RABBITMQ_DIST_PORT", dist.to_string()),
            env("RABBITMQ_NODE_PORT", plain.to_string()),
        ],
        port,
    );
    let node = TestNode::start(&dir.join("node")).await;
    let url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let queue = unique("tlsq");
    round_trip(
        &node,
        "am",
        &format!(
            "connector = 'amqp', url = '{url}', queue = '{queue}', ca_file = '{}'",
            pki.ca.display()
        ),
    )
    .await;
    untrusted(
        &node,
        &format!("connector = 'amqp', url = '{url}', queue = '{queue}_u'"),
    )
    .await;
    node.stop().await;
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["-n", &format!("{name}@localhost"), "stop"])
        .output();
}

#[tokio::test(flavor = "multi_thread")]
async fn https_webhooks_trust_the_named_ca() {
    let dir = data_dir("https-hook");
    let pki = Pki::make(&dir.join("pki"));
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| async move {
            sink.lock().unwrap().push(body.0);
            "ok"
        }),
    );
    let cert = weir_node::tls::Reloading::open(&pki.server_cert, &pki.server_key).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener =
        weir_node::tls::TlsListener::new(tcp, weir_node::tls::acceptor(cert).unwrap()).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let node = TestNode::start(&dir.join("node")).await;
    let hook = format!("https://127.0.0.1:{port}/hook");
    install(
        &node,
        "hook",
        &format!(
            "CREATE STREAM feed_h (n BIGINT);
             CREATE STREAM h WITH (connector = 'http', url = '{hook}', ca_file = '{}');
             INSERT INTO h SELECT n FROM feed_h;",
            pki.ca.display()
        ),
    )
    .await;
    install(
        &node,
        "untrusted",
        &format!(
            "CREATE STREAM feed_h (n BIGINT);
             CREATE STREAM u WITH (connector = 'http', url = '{hook}');
             INSERT INTO u SELECT n FROM feed_h;"
        ),
    )
    .await;
    let events: Vec<String> = (1..=2).map(|n| json!({ "n": n }).to_string()).collect();
    mqtt_publish(node.mqtt_port(), "feed_h", &events).await;
    let why = refusal(&node, "untrusted").await;
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    for _ in 0..100 {
        if received.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got, [json!({"n": 1}), json!({"n": 2})]);
    node.stop().await;
}
