//! HTTP: events arrive by the node's ingest endpoint (`POST /v1/streams/{name}/events`); as a
//! sink, each event is POSTed (or PUT) as JSON to a webhook, retried with backoff while the
//! server fails or is away.

use std::sync::Arc;

use crate::endpoint::Opts;
use crate::live::{Backoff, Health, Outgoing, PayloadRx};
use crate::tls::TlsOptions;

/// Settings of an HTTP stream.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The webhook a sink calls; sources need none.
    pub url: Option<String>,
    pub method: reqwest::Method,
    /// TLS of `https://` webhooks: the CA to trust, a client certificate.
    pub tls: TlsOptions,
}

impl HttpConfig {
    pub(crate) fn from_opts(o: &mut Opts) -> HttpConfig {
        let url = o.get("url").map(str::to_owned);
        if let Some(u) = &url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                o.fault(
                    "url",
                    format!("url '{u}' must start with http:// or https://"),
                );
            }
        }
        let method = match o.get("method").map(str::to_ascii_uppercase).as_deref() {
            None | Some("POST") => reqwest::Method::POST,
            Some("PUT") => reqwest::Method::PUT,
            Some(other) => {
                o.fault(
                    "method",
                    format!("option 'method' = '{other}': use POST or PUT"),
                );
                reqwest::Method::POST
            }
        };
        let secure = url.as_deref().is_some_and(|u| u.starts_with("https://"));
        let tls = TlsOptions::from_opts(o, secure, "https://");
        HttpConfig { url, method, tls }
    }

    /// The webhook client; `Err` when the TLS files cannot be read.
    fn client(&self) -> Result<reqwest::Client, String> {
        let builder = reqwest::Client::builder();
        let builder = match self.tls.enabled {
            true => builder.use_preconfigured_tls(self.tls.client_config()?),
            false => builder,
        };
        builder.build().map_err(|e| e.to_string())
    }

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
                    .await
                    .and_then(|r| r.error_for_status());
                match sent {
                    Ok(_) => {
                        health.up();
                        health.count();
                        backoff.reset();
                        break;
                    }
                    // The server refuses this event: retrying cannot help, so count it and go on.
                    Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                        health.refused(format!("webhook refused an event: {e}"));
                        break;
                    }
                    Err(e) => {
                        health.down(crate::live::with_causes(&e));
                        backoff.wait().await;
                    }
                }
            }
        }
    }
}
