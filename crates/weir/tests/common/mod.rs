//! Helpers shared by the `weir` binary's process tests.

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
