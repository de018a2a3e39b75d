//! The embedded MQTT endpoint: an MQTT 3.1.1 server on the node's hub, so standard clients
//! (mosquitto_pub, mosquitto_sub, any library) publish into streams and subscribe to rule
//! outputs with nothing else installed. It keeps no sessions or retained messages: messages
//! are delivered at QoS 0, and a client that cannot keep up loses messages (counted), as with
//! a broker's queue limit.
//!
//! On a node with tokens (see [`crate::auth`]) a client logs in with a token as its password
//! (any user name), and its role decides: a viewer subscribes (dead letters excepted), an
//! operator also publishes and reads dead letters. Nobody publishes to a topic a rule writes
//! (its output, a tap) or to the node's own `weir/` topics: a device cannot forge a result.
//! With an ACL file ([`crate::mqtt_acl`]) each client publishes and reads only the topics it
//! is granted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    self, ConnAck, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Publish, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{valid_filter, valid_topic, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::auth::{Caller, Role};
use crate::hub::{Message, Subscription};
use crate::node::Node;
use crate::tls::{AbortOnDrop, TlsListener};

/// The topics no client publishes to, kept fresh from the node's rules.
#[derive(Default)]
struct Reserved {
    outputs: std::sync::RwLock<HashSet<String>>,
}

impl Reserved {
    fn holds(&self, topic: &str) -> bool {
        topic.starts_with("weir/")
            || topic.starts_with("$weir/tap/")
            || self
                .outputs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(topic)
    }

    /// Reads the rules' output topics again every second.
    async fn refresh(self: Arc<Self>, node: Arc<Node>) {
        let mut cache = HashMap::new();
        loop {
            let topics = node.output_topics(&mut cache).await;
            *self.outputs.write().unwrap_or_else(|e| e.into_inner()) = topics;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Serves MQTT clients on `listener` (over TLS with `tls`) until the task is aborted.
pub async fn serve(listener: TcpListener, node: Arc<Node>, tls: Option<TlsAcceptor>) {
    let reserved = Arc::new(Reserved::default());
    let _refresher = node
        .guard
        .enabled()
        .then(|| AbortOnDrop(tokio::spawn(reserved.clone().refresh(node.clone()))));
    let spawn = |socket, peer: SocketAddr| {
        let (node, reserved) = (node.clone(), reserved.clone());
        tokio::spawn(async move {
            if let Err(e) = client(socket, Some(peer), node, reserved).await {
                tracing::debug!(%peer, error = %e, "MQTT client gone");
            }
        });
    };
    match tls {
        Some(acceptor) => {
            let Ok(mut secure) = TlsListener::new(listener, acceptor) else {
                return tracing::error!("MQTT endpoint: no address to accept TLS on");
            };
            while let Some((stream, peer)) = secure.next().await {
                spawn(Box::new(stream) as Box<dyn Stream>, peer);
            }
        }
        None => loop {
            match listener.accept().await {
                Ok((socket, peer)) => {
                    // A publish goes out at once: with Nagle's algorithm it would wait while the
                    // one before it is unacknowledged, up to the client's delayed ACK (40 ms).
                    let _ = socket.set_nodelay(true);
                    spawn(Box::new(socket) as Box<dyn Stream>, peer)
                }
                Err(e) => tracing::warn!(error = %e, "MQTT accept failed"),
            }
        },
    }
}

/// A client connection, plain or over TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

#[derive(Debug, thiserror::Error)]
enum ClientError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0:?}")]
    Protocol(rumqttc::mqttbytes::Error),
    #[error("{0}")]
    Closed(&'static str),
}

async fn client(
    socket: Box<dyn Stream>,
    peer: Option<SocketAddr>,
    node: Arc<Node>,
    reserved: Arc<Reserved>,
) -> Result<(), ClientError> {
    let (hub, max_payload) = (node.hub.clone(), node.config.max_payload);
    let guarded = node.guard.enabled();
    // Who the client is; known at CONNECT.
    let caller: Arc<OnceLock<Caller>> = Arc::default();
    let (mut rd, mut wr) = tokio::io::split(socket);
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(1024);
    // Packets this connection answers with, written by the same task as forwarded messages.
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Packet>(64);
    let (reader, reader_node) = (caller.clone(), node.clone());
    // Dead letters hold rejected payloads: only operators read them. An ACL file narrows the
    // rest per client.
    let shown = move |m: &Message| {
        let Some(c) = reader.get().filter(|_| guarded) else {
            return !guarded;
        };
        (c.role >= Role::Operator || !m.topic.starts_with("weir/dead_letters/"))
            && (reader_node.mqtt_acl.as_ref()).is_none_or(|acl| acl.allows(c, &m.topic, false))
    };
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            tokio::select! {
                biased;
                p = ctl_rx.recv() => match p {
                    Some(p) => write_packet(&p, &mut buf),
                    None => break,
                },
                m = out_rx.recv() => match m {
                    Some(m) => {
                        if shown(&m) {
                            write_packet(&Packet::Publish(Publish::from_bytes(m.topic.to_string(), QoS::AtMostOnce, m.payload)), &mut buf);
                        }
                        // Batch whatever else is ready into one write.
                        while buf.len() < 64 * 1024 {
                            match out_rx.try_recv() {
                                Ok(m) if shown(&m) => write_packet(&Packet::Publish(Publish::from_bytes(m.topic.to_string(), QoS::AtMostOnce, m.payload)), &mut buf),
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        if buf.is_empty() {
                            continue;
                        }
                    }
                    None => break,
                },
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
            buf.clear();
        }
    });

    let mut subs: Vec<(String, Subscription)> = Vec::new();
    let mut buf = BytesMut::with_capacity(8192);
    let mut connected = false;
    let result = loop {
        let packet = match Packet::read(&mut buf, max_payload + 1024) {
            Ok(p) => p,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                if rd.read_buf(&mut buf).await? == 0 {
                    break Ok(());
                }
                continue;
            }
            Err(rumqttc::mqttbytes::Error::InvalidProtocolLevel(_)) if !connected => {
                // An MQTT 5 client: refuse the version so it can fall back to 3.1.1.
                let _ = ctl_tx
                    .send(Packet::ConnAck(ConnAck::new(
                        ConnectReturnCode::RefusedProtocolVersion,
                        false,
                    )))
                    .await;
                break Err(ClientError::Closed("unsupported protocol version"));
            }
            Err(e) => break Err(ClientError::Protocol(e)),
        };
        let reply = match packet {
            Packet::Connect(_) if connected => break Err(ClientError::Closed("second CONNECT")),
            Packet::Connect(c) => {
                let password = c.login.as_ref().map(|l| l.password.as_str());
                match node.guard.caller(password, Role::Viewer) {
                    Ok(who) => {
                        let _ = caller.set(who);
                    }
                    Err(_) => {
                        let code = match password {
                            None => ConnectReturnCode::NotAuthorized,
                            Some(_) => ConnectReturnCode::BadUserNamePassword,
                        };
                        let _ = ctl_tx
                            .send(Packet::ConnAck(ConnAck::new(code, false)))
                            .await;
                        break Err(ClientError::Closed("not authorised"));
                    }
                }
                connected = true;
                tracing::debug!(?peer, "MQTT client connected");
                Some(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    false,
                )))
            }
            _ if !connected => break Err(ClientError::Closed("packet before CONNECT")),
            Packet::Publish(p) => {
                if !valid_topic(&p.topic) {
                    break Err(ClientError::Closed("invalid topic"));
                }
                if guarded && !may_publish(&node, caller.get(), &reserved, &p.topic) {
                    // MQTT 3.1.1 cannot refuse a publish: the client is disconnected.
                    tracing::warn!(?peer, topic = %p.topic, "MQTT publish refused: role too small, a rule's topic or not granted");
                    break Err(ClientError::Closed("publish not allowed"));
                }
                if let Err(e) = hub.publish(&p.topic, p.payload.clone()).await {
                    // Not acknowledged: a QoS 1 client sends it again.
                    tracing::error!(topic = %p.topic, error = %e, "message not stored");
                    continue;
                }
                match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => Some(Packet::PubAck(PubAck::new(p.pkid))),
                    QoS::ExactlyOnce => Some(Packet::PubRec(PubRec::new(p.pkid))),
                }
            }
            Packet::PubRel(r) => Some(Packet::PubComp(PubComp::new(r.pkid))),
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for f in &s.filters {
                    if valid_filter(&f.path) {
                        subs.retain(|(p, _)| p != &f.path);
                        let sub = hub.subscribe(&f.path, out_tx.clone());
                        subs.push((f.path.clone(), sub));
                        codes.push(SubscribeReasonCode::Success(QoS::AtMostOnce));
                    } else {
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                Some(Packet::SubAck(SubAck::new(s.pkid, codes)))
            }
            Packet::Unsubscribe(u) => {
                subs.retain(|(p, _)| !u.topics.contains(p));
                Some(Packet::UnsubAck(UnsubAck::new(u.pkid)))
            }
            Packet::PingReq => Some(Packet::PingResp),
            Packet::Disconnect => break Ok(()),
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => None,
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                break Err(ClientError::Closed("a server packet from a client"))
            }
        };
        if let Some(reply) = reply {
            if ctl_tx.send(reply).await.is_err() {
                break Err(ClientError::Closed("writer ended"));
            }
        }
    };
    drop(subs);
    drop(out_tx);
    drop(ctl_tx);
    let _ = writer.await;
    result
}

/// Whether a client of a node with tokens may publish to `topic`: an operator, to a topic no
/// rule writes, and one the ACL file grants it if the node has one.
fn may_publish(node: &Node, caller: Option<&Caller>, reserved: &Reserved, topic: &str) -> bool {
    caller.is_some_and(|c| {
        c.role >= Role::Operator
            && !reserved.holds(topic)
            && (node.mqtt_acl.as_ref()).is_none_or(|acl| acl.allows(c, topic, true))
    })
}

fn write_packet(p: &Packet, buf: &mut BytesMut) {
    let written = match p {
        Packet::ConnAck(x) => x.write(buf),
        Packet::Publish(x) => x.write(buf),
        Packet::PubAck(x) => x.write(buf),
        Packet::PubRec(x) => x.write(buf),
        Packet::PubComp(x) => x.write(buf),
        Packet::SubAck(x) => x.write(buf),
        Packet::UnsubAck(x) => x.write(buf),
        Packet::PingResp => v4::PingResp.write(buf),
        _ => Ok(0),
    };
    if let Err(e) = written {
        tracing::warn!(error = ?e, "MQTT packet not encoded");
    }
}
