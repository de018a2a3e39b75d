//! What every live (network) connector shares: the channel types between a connector and a rule,
//! the health a connector reports, and reconnect backoff.
//!
//! Lifecycle of a live connector: `check` (a connection test), then `spawn_source` or
//! `spawn_sink`, which connect, subscribe or declare what they need, run until stopped (the task
//! is aborted, or the sink's channel closes), and reconnect with [`Backoff`] when the far side
//! goes away. Their [`Health`] says which of these states they are in.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

/// Where a source hands its messages (one payload each). A source acknowledges a message to its
/// broker only after [`PayloadTx::send`] has returned: then the message is the rule's.
#[derive(Clone)]
pub enum PayloadTx {
    /// Straight to the rule. A full channel makes the source wait, so a slow rule slows its
    /// broker consumer rather than growing memory. A crash loses what the channel holds.
    Channel(tokio::sync::mpsc::Sender<Bytes>),
    /// Into the rule's durable input log (at-least-once and exactly-once rules): the message
    /// survives a crash from the moment `send` returns.
    Log(DurableInput),
}

/// A durable rule's input log as its sources see it.
#[derive(Clone)]
pub struct DurableInput {
    /// The log the source appends what it takes to, before acknowledging it.
    pub log: weir_state::StreamLog,
    /// Set when the rule stops: sends fail, and the source ends without acknowledging.
    pub closed: Arc<AtomicBool>,
    /// Where a failing disk is reported.
    pub health: Arc<Health>,
}

/// Asks a source to stop taking messages. A source looks at it only between messages: one it
/// has taken is handed over and acknowledged first, so a stop neither loses a message the
/// broker believes delivered nor leaves one handed over to be delivered again. Dropping the
/// sender stops the sources too.
#[derive(Debug, Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// A stop signal: the sender says stop, sources watch the receiver.
    pub fn channel() -> (tokio::sync::watch::Sender<bool>, Stop) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Stop(rx))
    }

    /// Whether the source should stop now (checked by blocking sources between messages).
    pub fn is_set(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }

    /// Resolves once a stop is asked for: a source selects on it while it waits for a message.
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The rule behind a [`PayloadTx`] has stopped.
#[derive(Debug)]
pub struct Closed;

impl PayloadTx {
    /// Appends `payload` to the rule's input log and hands it on; fails once the rule stopped.
    pub async fn send(&self, payload: Bytes) -> Result<(), Closed> {
        self.send_numbered(payload, None).await
    }

    /// Like [`PayloadTx::send`] for a message its broker numbers within a part (a JetStream
    /// stream sequence in part `""`, a Kafka offset in its partition's part): a durable log
    /// takes each number once, so a message redelivered after a crash is not stored twice.
    pub async fn send_numbered(
        &self,
        payload: Bytes,
        seq: Option<(&str, u64)>,
    ) -> Result<(), Closed> {
        match self {
            PayloadTx::Channel(tx) => tx.send(payload).await.map_err(|_| Closed),
            PayloadTx::Log(d) => loop {
                match d.try_append(&payload, seq)? {
                    true => return Ok(()),
                    false => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            },
        }
    }

    /// [`PayloadTx::send`] from a plain thread.
    pub fn blocking_send(&self, payload: Bytes) -> Result<(), Closed> {
        match self {
            PayloadTx::Channel(tx) => tx.blocking_send(payload).map_err(|_| Closed),
            PayloadTx::Log(d) => loop {
                match d.try_append(&payload, None)? {
                    true => return Ok(()),
                    false => std::thread::sleep(Duration::from_millis(500)),
                }
            },
        }
    }

    /// Whether the rule stopped taking input.
    pub fn is_closed(&self) -> bool {
        match self {
            PayloadTx::Channel(tx) => tx.is_closed(),
            PayloadTx::Log(d) => d.closed.load(Ordering::Relaxed),
        }
    }
}

impl DurableInput {
    /// One attempt; `Ok(false)` when the store refused (full disk), which health shows.
    fn try_append(&self, payload: &Bytes, seq: Option<(&str, u64)>) -> Result<bool, Closed> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Closed);
        }
        let stored = match seq {
            Some((part, seq)) => self.log.append_numbered(payload.clone(), part, seq),
            None => self.log.append(std::slice::from_ref(payload)).map(|_| ()),
        };
        match stored {
            Ok(()) => Ok(true),
            Err(e) => {
                self.health
                    .down(format!("incoming message not stored, retrying: {e}"));
                Ok(false)
            }
        }
    }
}
/// What a sink sends out; the sink ends when every sender is gone.
pub type PayloadRx = tokio::sync::mpsc::Receiver<Outgoing>;

/// One result for a sink. `id` stays the same when a stored result is sent again after a
/// crash, so a broker that deduplicates (JetStream's Nats-Msg-Id) keeps it once.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The encoded result.
    pub payload: Bytes,
    /// A stable id for brokers that drop duplicates.
    pub id: Option<String>,
}

/// The value of `field` in a JSON result, as the text a sink keys or partitions it by.
pub fn key_of(payload: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    Some(match v.get(field)? {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// A connector's connection state and counters, shared with the rule that owns it.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
    /// Messages taken or sent.
    pub messages: AtomicU64,
    /// Messages a sink is done with, in order: confirmed by the far side, or refused for good.
    /// Store-and-forward outboxes advance by it.
    pub settled: AtomicU64,
    /// Failures seen (each also kept as the last error).
    pub errors: AtomicU64,
    /// Connections made again after one was lost.
    pub reconnects: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`Health`] for status documents.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    /// connecting, up or down.
    pub state: &'static str,
    /// Messages taken or sent.
    pub messages: u64,
    /// Failures seen.
    pub errors: u64,
    /// Connections made again.
    pub reconnects: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

impl Health {
    /// The connection is up (a reconnect if it had been down).
    pub fn up(&self) {
        self.state.store(UP, Ordering::Relaxed);
    }

    /// The connection is lost or refused; `error` says why.
    pub fn down(&self, error: impl std::fmt::Display) {
        // Connection errors may quote the URL, credentials and all.
        let text = weir_core::redact::secrets(&error.to_string()).into_owned();
        tracing::warn!(error = %text, "connector down");
        // The reason first: whoever sees the state down finds why.
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        self.errors.fetch_add(1, Ordering::Relaxed);
        let was = self.state.swap(DOWN, Ordering::Relaxed);
        if was == UP {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the connection is up.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    /// One message delivered (and, for a sink, confirmed where the protocol confirms).
    pub fn count(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.settled.fetch_add(1, Ordering::Relaxed);
    }

    /// One message the far side refused for good (retrying cannot help).
    pub fn refused(&self, why: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.settled.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %why, "message refused");
    }

    /// A copy for status documents.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            state: match self.state.load(Ordering::Relaxed) {
                CONNECTING => "connecting",
                UP => "up",
                _ => "down",
            },
            messages: self.messages.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Exponential reconnect delay: 100 ms doubling to 10 s, back to 100 ms after a success.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(10);

    /// Sleeps for the current delay, then doubles it (at most 10 s).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// `scheme://host:port/path` split into parts, for connectors whose URL the client library does
/// not parse itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    /// `mqtt`, `amqps`, `nats`, ...
    pub scheme: String,
    /// Host name or address.
    pub host: String,
    /// The port, when the URL gives one.
    pub port: Option<u16>,
    /// What follows the host, without its leading `/`.
    pub path: String,
    /// `user:password@` before the host.
    pub login: Option<Login>,
}

/// A user name and password from a URL; the password never shows in debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name.
    pub user: String,
    /// The password (never shown).
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}:***)", self.user)
    }
}

/// An error with its causes (`a: b: c`): client libraries often say only "error sending
/// request" and keep the reason, such as an untrusted certificate, in their sources.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A secret option value (a token, a key seed); never shown in debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Url {
    /// Splits `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Url, String> {
        // Errors quote the URL without its password.
        let shown = weir_core::redact::secrets(text);
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("'{shown}' is not a URL (scheme://host:port)"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (login, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, h)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let login = Login {
                    user: user.to_owned(),
                    password: password.to_owned(),
                };
                (Some(login), h)
            }
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("'{p}' in '{shown}' is not a port"))?,
                ),
            ),
            None => (hostport, None),
        };
        if host.is_empty() {
            return Err(format!("'{shown}' names no host"));
        }
        Ok(Url {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            login,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("mqtt://127.0.0.1:1883/a/b").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.path.as_str()),
            ("mqtt", "127.0.0.1", Some(1883), "a/b")
        );
        let u = Url::parse("amqp://guest:guest@localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("localhost", None));
        assert!(Url::parse("localhost:1883").is_err());
        assert!(Url::parse("mqtt://h:99999").is_err());
    }

    #[test]
    fn health_counts_reconnects_once_per_outage() {
        let h = Health::default();
        assert_eq!(h.report().state, "connecting");
        h.up();
        h.down("gone");
        h.down("still gone");
        h.up();
        let r = h.report();
        assert_eq!((r.state, r.reconnects, r.errors), ("up", 1, 2));
        assert_eq!(r.last_error.as_deref(), Some("still gone"));
    }
}
