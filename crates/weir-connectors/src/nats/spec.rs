//! The NATS connector's spec: its options and their validation, its delivery guarantees.

use crate::spec::{ConnectorSpec, Kind, Moves, OptionSpec};
#[cfg(feature = "nats")]
use {
    super::{NatsAuth, NatsConfig},
    crate::delivery::{self, Delivery},
    crate::live::{Login, Secret},
    crate::options::Opts,
    crate::tls::TlsOptions,
};

/// What the NATS connector takes and gives.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "nats",
    summary: "A NATS server: core subjects, and JetStream streams with durable consumers. A \
              JetStream source without a `durable` reads through a durable consumer of its rule's \
              own, `weir-<rule>-<stream>`, removed after 24 h unused. `partitions = 'N'` splits \
              the subject into `<subject>.0` … `<subject>.N-1`, and a sink's `key` column picks \
              the partition.",
    feature: Some("nats"),
    options: &[
        &[
            OptionSpec {
                name: "url",
                kind: Kind::Url(&["nats", "tls"]),
                default: Some("nats://127.0.0.1:4222"),
                doc: "the server; `nats://user:password@host:port` to log in, `tls://` for TLS",
            },
            OptionSpec {
                name: "topic",
                kind: Kind::Text,
                default: None,
                doc: "required (or `subject`): the subject, with wildcards for sources",
            },
            OptionSpec {
                name: "subject",
                kind: Kind::Text,
                default: None,
                doc: "the subject, when `topic` is not given",
            },
            OptionSpec {
                name: "queue",
                kind: Kind::Text,
                default: None,
                doc: "a core queue group: its members share the messages",
            },
            OptionSpec {
                name: "stream",
                kind: Kind::Text,
                default: None,
                doc: "a JetStream stream that stores the subject (created when missing): sources read it through a durable consumer",
            },
            OptionSpec {
                name: "durable",
                kind: Kind::Text,
                default: None,
                doc: "the durable consumer's name (needs `stream`; default `weir-<rule>-<stream>`)",
            },
            OptionSpec {
                name: "partitions",
                kind: Kind::Int { min: 1, max: 10_000 },
                default: None,
                doc: "split the subject into this many `<subject>.<p>` subjects",
            },
            OptionSpec {
                name: "group",
                kind: Kind::Text,
                default: None,
                doc: "the name a core group's consumers share (default: one per rule and stream)",
            },
            OptionSpec {
                name: "token",
                kind: Kind::Secret,
                default: None,
                doc: "log in with this token",
            },
            OptionSpec {
                name: "nkey",
                kind: Kind::Secret,
                default: None,
                doc: "log in with this user seed (`SU...`)",
            },
            OptionSpec {
                name: "credentials_file",
                kind: Kind::Path,
                default: None,
                doc: "log in with this `.creds` file (a user JWT and its seed)",
            },
        ],
        crate::tls::OPTIONS,
    ],
    source: "exactly_once through JetStream (`stream = '...'`): the rule's log takes each stream sequence once; core subjects do not redeliver, so at_most_once",
    sink: "exactly_once into a JetStream stream (results carry a stable Nats-Msg-Id the server deduplicates within its window); at_least_once otherwise",
    moves: Moves::Yes(
        "the broker keeps what the rule has not yet read, and a durable rule carries what its log holds",
    ),
    connection_test: "connects, logs in and flushes (3 s)",
    not_on_node: None,
};

#[cfg(feature = "nats")]
impl NatsConfig {
    pub(crate) fn from_opts(stream: &str, o: &mut Opts) -> NatsConfig {
        let url = o.url();
        let subject = match o.get("topic").or(o.get("subject")) {
            Some(s) => s.to_owned(),
            None => {
                o.fault(
                    "topic",
                    format!("option 'topic' is required (the NATS subject of {stream})"),
                );
                String::new()
            }
        };
        let js_stream = o.get("stream").map(str::to_owned);
        let durable = o.get("durable").map(str::to_owned);
        if durable.is_some() && js_stream.is_none() {
            o.fault(
                "durable",
                "a durable consumer needs a JetStream stream: add stream = '<name>'".to_owned(),
            );
        }
        let partitions = o
            .get("partitions")
            .is_some()
            .then(|| o.number("partitions"));
        let key = o.get("key").map(str::to_owned);
        let tls = TlsOptions::from_opts(o, url.scheme == "tls", "tls://");
        let auth = NatsAuth::from_opts(o, url.login.clone());
        NatsConfig {
            url: format!("{}://{}:{}", url.scheme, url.host, url.port.unwrap_or(4222)),
            subject,
            queue: o.get("queue").map(str::to_owned),
            stream: js_stream,
            durable,
            inactive_ms: None,
            partitions,
            key,
            group: o.get("group").map(str::to_owned),
            auth,
            tls,
        }
    }

    /// Why this stream cannot give `d` as a source (`input`) or sink.
    pub(crate) fn cannot_give(&self, d: Delivery, input: bool) -> Option<String> {
        match (input, &self.stream) {
            (true, None) => Some(
                "core NATS does not redeliver; read through JetStream with stream = '...'"
                    .to_owned(),
            ),
            // JetStream numbers its messages: the input log takes each number once.
            (true, Some(_)) => None,
            // Results carry ids JetStream deduplicates by.
            (false, Some(_)) => None,
            (false, None) => delivery::no_exactly_once_sink(d, "nats"),
        }
    }
}

#[cfg(feature = "nats")]
impl NatsAuth {
    fn from_opts(o: &mut Opts, login: Option<Login>) -> NatsAuth {
        let mut chosen: Vec<(&str, NatsAuth)> = Vec::new();
        if let Some(l) = login {
            chosen.push(("url", NatsAuth::Login(l)));
        }
        if let Some(t) = o.get("token") {
            chosen.push(("token", NatsAuth::Token(Secret(t.to_owned()))));
        }
        if let Some(seed) = o.get("nkey").map(str::to_owned) {
            if !seed.starts_with("SU") {
                o.fault(
                    "nkey",
                    "option 'nkey' must be a user seed (it starts with SU)".into(),
                );
            }
            chosen.push(("nkey", NatsAuth::Nkey(Secret(seed))));
        }
        if let Some(file) = o.get("credentials_file").map(str::to_owned) {
            match crate::tls::plain_absolute(&file) {
                Ok(p) => chosen.push(("credentials_file", NatsAuth::Credentials(p))),
                Err(why) => o.fault(
                    "credentials_file",
                    format!("option 'credentials_file' = '{file}': {why}"),
                ),
            }
        }
        if chosen.len() > 1 {
            let names: Vec<&str> = chosen.iter().map(|(n, _)| *n).collect();
            o.fault(
                names[1],
                format!(
                    "give one way to log in to NATS, not {}",
                    names.join(" and ")
                ),
            );
        }
        chosen.pop().map(|(_, a)| a).unwrap_or_default()
    }
}
