//! The HTTP connector's spec: its options and their validation, its delivery guarantees.

use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};
#[cfg(feature = "http")]
use {
    super::HttpConfig,
    crate::delivery::{self, Delivery},
    crate::options::Opts,
    crate::tls::TlsOptions,
};

/// What the HTTP connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "http",
    summary: "HTTP: as a source, events arrive by the node's ingest endpoint (`POST \
              /v1/streams/{name}/events`, one event or an array); as a sink, each result is sent \
              as JSON to a webhook, retried with backoff while the server fails, is away, or \
              answers 408 or 429 (after its Retry-After); another 4xx refuses that result for good.",
    feature: Some("http"),
    options: &[
        &[
            OptionSpec {
                name: "url",
                kind: Kind::Url(&["http", "https"]),
                default: None,
                doc: "a sink's webhook (sources need none)",
            },
            OptionSpec {
                name: "method",
                kind: Kind::OneOf(&["POST", "PUT"]),
                default: Some("POST"),
                doc: "how a sink sends each result",
            },
        ],
        crate::tls::OPTIONS,
    ],
    source: "exactly_once: ingested events go into the rule's durable log before the 200, and an `Idempotency-Key` header or the stream's `event_id` drops a batch sent twice",
    sink: "at_least_once (a result is retried until the webhook takes it)",
    moves: Moves::Yes("clients then send the stream's events to the new node's ingest endpoint; a durable rule carries what its log holds"),
    connection_test: "none: a webhook is called only with results",
    not_on_node: None,
};

#[cfg(feature = "http")]
impl HttpConfig {
    pub(crate) fn from_opts(o: &mut Opts) -> HttpConfig {
        let url = o.get("url").map(str::to_owned);
        let method = match o.word("method").as_str() {
            "put" => reqwest::Method::PUT,
            _ => reqwest::Method::POST,
        };
        let secure = url.as_deref().is_some_and(|u| u.starts_with("https://"));
        let tls = TlsOptions::from_opts(o, secure, "https://");
        HttpConfig { url, method, tls }
    }

    /// Why this stream cannot give `d` as a source (`input`) or sink.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        match input {
            true => None,
            false => delivery::no_exactly_once_sink(d, "http"),
        }
    }
}
