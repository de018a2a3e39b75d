//! TLS on a node's own listeners: the REST API over https and the embedded MQTT endpoint over
//! TLS with a certificate made here, plain connections refused, a renewed certificate served
//! without a restart, and two nodes of a cluster calling each other over https.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use rumqttc::mqttbytes::v4::{Connect, Packet};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_node::NodeConfig;

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`:
/// (cert file, key file, the certificate's DER).
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Written whole, then moved in place: the node never reads half a file.
    for (path, text) in [(&k, key.serialize_pem()), (&c, cert.pem())] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (c, k, cert.der().to_vec())
}

fn tls_config(dir: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> NodeConfig {
    NodeConfig {
        tls_cert_file: Some(cert.to_path_buf()),
        tls_key_file: Some(key.to_path_buf()),
        tls_ca_file: Some(cert.to_path_buf()),
        ..config(dir)
    }
}

fn https(cert_pem: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(cert_pem).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap()
}

/// GET `url` with `client`, as JSON.
async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The certificate a TLS handshake with `port` presents, trusting `roots`.
async fn handshake(
    port: u16,
    roots: &[Vec<u8>],
) -> Result<(Vec<u8>, impl AsyncReadExt + AsyncWriteExt + Unpin), String> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(CertificateDer::from(r.clone())).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((presented, stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_mqtt_endpoint_serve_tls_and_take_a_renewed_certificate() {
    let dir = data_dir("tls");
    let (cert, key, der) = certificate(&dir.join("tls"));
    let node = TestNode::with(tls_config(&dir, &cert, &key)).await;
    let port = node.running.http.port();
    let base = format!("https://127.0.0.1:{port}");
    let r = https(&cert)
        .get(format!("{base}/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/health"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // MQTT over TLS: CONNECT, CONNACK.
    let (presented, mut stream) = handshake(node.mqtt_port(), std::slice::from_ref(&der))
        .await
        .unwrap();
    assert_eq!(presented, der);
    let mut buf = BytesMut::new();
    Connect::new("tls-client").write(&mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
    let mut read = BytesMut::new();
    let connack = loop {
        match Packet::read(&mut read, 1 << 16) {
            Ok(p) => break p,
            Err(_) => {
                let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(&mut read))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0, "the endpoint answers");
            }
        }
    };
    assert!(matches!(connack, Packet::ConnAck(_)), "{connack:?}");

    // A renewed certificate is served without a restart.
    let (_, _, renewed) = certificate(&dir.join("tls"));
    assert_ne!(renewed, der);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok((presented, _)) = handshake(port, std::slice::from_ref(&renewed)).await {
            assert_eq!(presented, renewed);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is served"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    node.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_a_cluster_call_each_other_over_https() {
    let dir = data_dir("tls-cluster");
    let (cert, key, _) = certificate(&dir.join("tls"));
    let plane = TestNode::with(NodeConfig {
        name: Some("core-a".into()),
        runtime: "core".into(),
        heartbeat_ms: 200,
        ..tls_config(&dir.join("a"), &cert, &key)
    })
    .await;
    let plane_url = format!("https://127.0.0.1:{}", plane.running.http.port());
    let edge = TestNode::with(NodeConfig {
        name: Some("edge-1".into()),
        join: Some(plane_url.clone()),
        heartbeat_ms: 200,
        ..tls_config(&dir.join("b"), &cert, &key)
    })
    .await;
    let client = https(&cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = get_json(&client, &format!("{plane_url}/v1/nodes")).await;
        let listed = nodes.as_array().unwrap();
        if listed.iter().any(|n| n["name"] == "edge-1") {
            assert!(
                listed
                    .iter()
                    .all(|n| n["address"].as_str().unwrap().starts_with("https://")),
                "{nodes}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edge-1 reports over https: {nodes}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Installed through the control plane on edge-1, read through it, moved to it.
    let sql = "CREATE STREAM src WITH (connector = 'nats', url = 'nats://127.0.0.1:4222', topic = 'tls.test.in'); INSERT INTO out SELECT * FROM src;";
    let r = client
        .post(format!("{plane_url}/v1/rules"))
        .json(&serde_json::json!({"id": "r", "sql": sql, "node": "edge-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rule = get_json(&client, &format!("{plane_url}/v1/rules/r")).await;
    assert_eq!(rule["node"], "edge-1", "{rule}");
    let r = client
        .post(format!("{plane_url}/v1/rules/r/move"))
        .json(&serde_json::json!({"node": "core-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    edge.stop().await;
    plane.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
