//! `weir bench secure`: what authentication and TLS cost. Two nodes in this process, one as a
//! node runs on 127.0.0.1 by default (no tokens, plain) and one as it runs on a network (bearer
//! tokens, TLS on its REST API and MQTT endpoint, a throwaway self-signed certificate), take the
//! same load in alternating runs: HTTP ingest in batches and one event per request, QoS 1
//! publishes to the embedded MQTT endpoint, and new connections (a TCP connect, or a TCP
//! connect and a TLS handshake).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{Event, MqttOptions, Outgoing, Packet, QoS};
use weir_node::NodeConfig;

use super::bench_node::{median, start_with};

const RULE: &str = "CREATE STREAM readings (sensor STRING, temp DOUBLE);
INSERT INTO hot SELECT sensor, temp FROM readings WHERE temp > 30;";

/// One of the two nodes, and how a client reaches it.
struct Target {
    running: weir_node::Running,
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// For MQTT over TLS: the client configuration trusting the node's certificate.
    tls: Option<Arc<rustls::ClientConfig>>,
    ca: Option<reqwest::Certificate>,
}

/// The figures of one run of one node.
#[derive(Default, Clone, Copy)]
struct Figures {
    batched: f64,
    single: f64,
    mqtt: f64,
    connect_ms: f64,
}

pub fn run(events: usize, runs: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let dir = std::env::temp_dir().join(format!("weir-bench-secure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let plain = plain(&dir).await?;
        let secure = secure(&dir).await?;
        let mut all: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
        for run in 1..=runs {
            for (i, target) in [&plain, &secure].into_iter().enumerate() {
                let f = measure(target, events).await?;
                eprintln!(
                    "run {run} {}: ingest {:.0} ev/s batched, {:.0} ev/s one per request; MQTT {:.0} ev/s; connection {:.2} ms",
                    ["plain", "tokens+TLS"][i],
                    f.batched,
                    f.single,
                    f.mqtt,
                    f.connect_ms
                );
                all[i].push(f);
            }
        }
        report(&all);
        plain.running.stop().await;
        secure.running.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
}

/// A line of the report: what was measured, its figure in a run, its unit.
type Row = (&'static str, fn(&Figures) -> f64, &'static str);

fn report(all: &[Vec<Figures>; 2]) {
    let med = |i: usize, f: fn(&Figures) -> f64| median(all[i].iter().map(f).collect());
    let ratios = |f: fn(&Figures) -> f64| -> f64 {
        median(
            all[1]
                .iter()
                .zip(&all[0])
                .map(|(s, p)| f(s) / f(p))
                .collect(),
        )
    };
    println!("| load | plain | tokens + TLS | ratio (median of per-run ratios) |");
    println!("|---|---|---|---|");
    let rows: [Row; 4] = [
        (
            "HTTP ingest, 1,000 events per request",
            |f| f.batched,
            "ev/s",
        ),
        ("HTTP ingest, one event per request", |f| f.single, "ev/s"),
        (
            "embedded MQTT endpoint, QoS 1 publishes",
            |f| f.mqtt,
            "ev/s",
        ),
        (
            "new connection (TCP, + TLS handshake)",
            |f| f.connect_ms,
            "ms",
        ),
    ];
    for (what, f, unit) in rows {
        let digits = if unit == "ms" { 2 } else { 0 };
        println!(
            "| {what} | {:.digits$} {unit} | {:.digits$} {unit} | {:.3} |",
            med(0, f),
            med(1, f),
            ratios(f)
        );
    }
}

async fn plain(dir: &std::path::Path) -> Result<Target, String> {
    let running = start_with(dir, "plain", |c| c).await?;
    let base = format!("http://{}", running.http);
    let target = Target {
        running,
        base,
        http: reqwest::Client::new(),
        token: None,
        tls: None,
        ca: None,
    };
    install(&target).await?;
    Ok(target)
}

async fn secure(dir: &std::path::Path) -> Result<Target, String> {
    let files = dir.join("secure-files");
    std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| e.to_string())?;
    let token = format!("bench-token-{}", unique());
    let (cert_file, key_file, tokens) = (
        files.join("cert.pem"),
        files.join("key.pem"),
        files.join("tokens"),
    );
    for (path, text) in [
        (&cert_file, cert.pem()),
        (&key_file, key.serialize_pem()),
        (&tokens, format!("{token} admin\n")),
    ] {
        std::fs::write(path, text).map_err(|e| e.to_string())?;
    }
    let running = start_with(dir, "secure", |c| NodeConfig {
        auth_token_file: Some(tokens.clone()),
        tls_cert_file: Some(cert_file.clone()),
        tls_key_file: Some(key_file.clone()),
        ..c
    })
    .await?;
    let ca = reqwest::Certificate::from_pem(cert.pem().as_bytes()).map_err(|e| e.to_string())?;
    let tls = weir_connectors::tls::TlsOptions {
        enabled: true,
        ca_file: Some(cert_file),
        identity: None,
    }
    .client_config()?;
    let target = Target {
        base: format!("https://{}", running.http),
        running,
        http: client(Some(&ca), true)?,
        token: Some(token),
        tls: Some(Arc::new(tls)),
        ca: Some(ca),
    };
    install(&target).await?;
    Ok(target)
}

/// An HTTP client trusting `ca`; `pooled = false` opens a connection per request.
fn client(ca: Option<&reqwest::Certificate>, pooled: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = ca {
        b = b.add_root_certificate(ca.clone());
    }
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().map_err(|e| e.to_string())
}

impl Target {
    fn post(&self, path: &str, body: String) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }
}

async fn install(t: &Target) -> Result<(), String> {
    let body = serde_json::json!({"id": "hot", "sql": RULE}).to_string();
    t.post("/v1/rules", body)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map(|_| ())
        .map_err(|e| format!("install: {e}"))
}

/// A number no other run of this process has used (client ids, throwaway tokens).
fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn event(i: usize) -> serde_json::Value {
    serde_json::json!({"sensor": format!("s{}", i % 100), "temp": 20 + i % 30})
}

async fn measure(t: &Target, events: usize) -> Result<Figures, String> {
    Ok(Figures {
        batched: ingest(t, events, 1000).await?,
        single: ingest(t, events / 50, 1).await?,
        mqtt: publish(t, events).await?,
        connect_ms: connect(t, 200).await?,
    })
}

/// Events per second posted to the rule's input in requests of `batch` events, two requests
/// in flight.
async fn ingest(t: &Target, events: usize, batch: usize) -> Result<f64, String> {
    let bodies: Vec<String> = (0..events)
        .step_by(batch)
        .map(|from| {
            let b: Vec<_> = (from..(from + batch).min(events)).map(event).collect();
            serde_json::Value::Array(b).to_string()
        })
        .collect();
    let started = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for body in bodies {
        if inflight.len() >= 2 {
            inflight.next().await.transpose()?;
        }
        let req = t.post("/v1/streams/readings/events", body);
        inflight.push(async move {
            req.send()
                .await
                .and_then(|r| r.error_for_status())
                .map(|_| ())
                .map_err(|e| format!("ingest: {e}"))
        });
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Events per second published at QoS 1 to the embedded endpoint, until the last is
/// acknowledged.
async fn publish(t: &Target, events: usize) -> Result<f64, String> {
    let addr = t.running.mqtt.ok_or("the node has no MQTT endpoint")?;
    let mut o = MqttOptions::new(
        format!("bench-secure-{}", unique()),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(token) = &t.token {
        o.set_credentials("bench", token.clone());
    }
    if let Some(tls) = &t.tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    let (client, mut eventloop) = super::bench::prompt_client(o, 1000);
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        for i in 0..events {
            let payload = event(i).to_string();
            if client
                .publish("readings", QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return client;
            }
        }
        client
    });
    let mut acked = 0;
    while acked < events {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Incoming(Packet::ConnAck(c))))
                if c.code != rumqttc::ConnectReturnCode::Success =>
            {
                return Err(format!("MQTT login refused: {:?}", c.code));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("MQTT: {e}")),
            Err(_) => return Err(format!("MQTT: {acked} of {events} acknowledged")),
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let client = publisher.await.map_err(|e| e.to_string())?;
    let _ = client.disconnect().await;
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await {
        if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
            break;
        }
    }
    Ok(rate)
}

/// The median time of `n` requests to /v1/health, each on a new connection.
async fn connect(t: &Target, n: usize) -> Result<f64, String> {
    let http = client(t.ca.as_ref(), false)?;
    let url = format!("{}/v1/health", t.base);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        http.get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("health: {e}"))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(times))
}
