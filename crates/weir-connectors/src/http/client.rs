//! The HTTP connector's client: its settings, source, sink and connection test.

use std::sync::Arc;
use std::time::Duration;

use crate::live::{Backoff, Health, Outgoing, PayloadRx};
use crate::tls::TlsOptions;

/// How long a webhook has to accept a connection, and to answer a request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest Retry-After a sink honours; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait a 408 or 429 answer asks for in seconds (`Retry-After: 5`), at most a minute.
fn retry_after(answer: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = answer
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Settings of an HTTP stream.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The webhook a sink calls; sources need none.
    pub url: Option<String>,
    /// POST or PUT.
    pub method: reqwest::Method,
    /// TLS of `https://` webhooks: the CA to trust, a client certificate.
    pub tls: TlsOptions,
}

impl HttpConfig {
    /// The webhook client; `Err` when the TLS files cannot be read.
    fn client(&self) -> Result<reqwest::Client, String> {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let builder = match self.tls.enabled {
            true => builder.use_preconfigured_tls(self.tls.client_config()?),
            false => builder,
        };
        builder.build().map_err(|e| e.to_string())
    }

    /// Sends each result on `rx` to the webhook, retrying while the server fails or is away.
    pub async fn run_sink(self, mut rx: PayloadRx, health: Arc<Health>) {
        let Some(url) = self.url.clone() else {
            // No webhook: the stream is only read through the node (tail, other rules).
            while rx.recv().await.is_some() {
                health.count();
            }
            return;
        };
        let mut backoff = Backoff::default();
        let client = loop {
            match self.client() {
                Ok(c) => break c,
                Err(_) if rx.is_closed() => return,
                Err(e) => {
                    health.down(e);
                    backoff.wait().await;
                }
            }
        };
        while let Some(Outgoing { payload, .. }) = rx.recv().await {
            loop {
                let sent = client
                    .request(self.method.clone(), &url)
                    .header("content-type", "application/json")
                    .body(payload.clone())
                    .send()
                    .await;
                let answer = match sent {
                    Ok(r) => r,
                    Err(e) => {
                        health.down(crate::live::with_causes(&e));
                        backoff.wait().await;
                        continue;
                    }
                };
                let status = answer.status();
                if status.is_success() {
                    health.up();
                    health.count();
                    backoff.reset();
                    break;
                }
                // Too early or too many: the same event is sent again, after the server's
                // Retry-After when it gives one.
                if status == 408 || status == 429 {
                    health.down(format!(
                        "webhook answered {status}; sending the event again"
                    ));
                    match retry_after(&answer) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => backoff.wait().await,
                    }
                    continue;
                }
                // The server refuses this event: retrying cannot help, so count it and go on.
                if status.is_client_error() {
                    health.refused(format!("webhook refused an event: {status}"));
                    break;
                }
                health.down(format!("webhook answered {status}"));
                backoff.wait().await;
            }
        }
    }
}
