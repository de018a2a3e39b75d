//! Moving rules between nodes, as the control plane runs it.
//!
//! A move (`POST /v1/rules/{id}/move`, or the paper's `/api/move`) may arrive at any node. A
//! node that does not hold the rule finds the one that does among the control plane's nodes and
//! hands the request on with the target's address. The node that holds it stops it at a
//! checkpoint, sends the package (see [`crate::node::Package`]) to the target's
//! `/v1/rules/{id}/attach`, and deletes its own copy once the target runs it — or starts it
//! again where it stopped if the target refused, so a failed move leaves the rule running
//! where it was.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cluster::Member;
use crate::node::{Node, NodeError};

/// Where to move a rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The target node's name (or its address): a node of the control plane, whose address
    /// comes from the control plane's registry, never from a request.
    pub node: String,
}

/// What a move did, and how long the rule processed nothing.
#[derive(Debug, Serialize, Deserialize)]
pub struct MoveReport {
    /// The rule moved.
    pub rule: String,
    /// The node it left.
    pub from: String,
    /// The node it went to.
    pub to: String,
    /// From the stop request to the target's answer that the rule runs: the time no event of
    /// the rule was processed.
    pub paused_ms: f64,
    /// Of which: the last checkpoint and packing.
    pub stop_ms: f64,
    /// The checkpoint the rule resumed from on the target.
    pub epoch: u64,
    /// The size of the package sent.
    pub package_bytes: u64,
    /// Input entries read on the source but not covered by the checkpoint, carried along.
    pub carried_entries: usize,
    /// Results the broker had not confirmed, carried to the target's outboxes.
    pub carried_results: usize,
    /// The rule as the target shows it.
    pub view: serde_json::Value,
}

/// Marks a request one node hands to another on a client's behalf: the receiver answers it
/// from what it holds and never hands it on again, so no request goes round in circles.
pub const RELAYED: &str = "x-weir-relayed";

/// A client for requests to the other nodes: it carries the cluster secret, if there is one.
pub fn http(node: &Node) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = node.guard.secret() {
        let mut bearer = b"Bearer ".to_vec();
        bearer.extend_from_slice(secret);
        if let Ok(mut v) = reqwest::header::HeaderValue::from_bytes(&bearer) {
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    let mut client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .default_headers(headers);
    for root in &node.peer_roots {
        client = client.add_root_certificate(root.clone());
    }
    client.build().unwrap_or_default()
}

/// The control plane's nodes: this node's registry if it serves it, else its control plane's.
pub async fn members(node: &Node) -> Result<Vec<Member>, NodeError> {
    let Some(join) = &node.config.join else {
        return Ok(node.members.list());
    };
    let url = format!("{}/v1/nodes", join.trim_end_matches('/'));
    let reply = http(node)
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status());
    match reply {
        Ok(r) => r
            .json()
            .await
            .map_err(|e| NodeError::Unavailable(format!("control plane at {url}: {e}"))),
        Err(e) => Err(NodeError::Unavailable(format!(
            "control plane at {url} does not answer: {e}"
        ))),
    }
}

/// A node of the control plane by name or by the address it is reached at (the seed paper's
/// `targetResource` may be either); it must be up.
pub async fn resolve(node: &Node, name: &str) -> Result<Member, NodeError> {
    let url = name.trim_end_matches('/');
    let member = members(node)
        .await?
        .into_iter()
        .find(|m| m.report.name == name || m.report.address.trim_end_matches('/') == url)
        .ok_or_else(|| NodeError::NotFound {
            kind: "node",
            name: name.to_owned(),
        })?;
    if member.state != "up" {
        return Err(NodeError::Unavailable(format!(
            "node '{name}' is lost: no report for {} ms",
            member.last_seen_ms_ago
        )));
    }
    Ok(member)
}

/// The up node that has rule `id` installed.
pub async fn holder(node: &Node, id: &str) -> Result<Member, NodeError> {
    let me = node.name.get().cloned().unwrap_or_default();
    for m in members(node).await? {
        if m.state != "up" || m.report.name == me {
            continue;
        }
        let url = format!("{}/v1/rules/{id}", m.report.address);
        if http(node)
            .get(&url)
            .header(RELAYED, "1")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(m);
        }
    }
    Err(NodeError::NotFound {
        kind: "rule",
        name: format!("{id} (on no node of the control plane)"),
    })
}

/// The node holding rule `id` when another node of the control plane does; `None` when it is
/// here, or nowhere (the caller then answers as if alone).
pub async fn elsewhere(node: &Node, id: &str) -> Result<Option<Member>, NodeError> {
    if node.rule(id).await.is_ok() {
        return Ok(None);
    }
    match holder(node, id).await {
        Ok(m) => Ok(Some(m)),
        Err(NodeError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Moves rule `id` to the node `req` names, from wherever it runs.
pub async fn move_rule(node: &Node, id: &str, req: MoveRequest) -> Result<MoveReport, NodeError> {
    let target = resolve(node, &req.node).await?;
    let (address, req) = (
        target.report.address,
        MoveRequest {
            node: target.report.name,
        },
    );
    if node.rule(id).await.is_err() {
        let holder = holder(node, id).await?;
        if holder.report.name == req.node {
            return Err(already_there(id, &req.node));
        }
        let reply = send(node, &holder, &format!("/v1/rules/{id}/move"), &req).await?;
        return answer(reply, &holder.report.name).await;
    }
    let me = node.name.get().cloned().unwrap_or_default();
    if req.node == me {
        return Err(already_there(id, &me));
    }
    let started = Instant::now();
    let package = match node.detach(id).await {
        Ok(p) => p,
        // Refused before the rule stopped.
        Err(
            e
            @ (NodeError::NotFound { .. } | NodeError::Unsupported(_) | NodeError::Invalid { .. }),
        ) => return Err(e),
        Err(e) => return Err(undo(node, id, e).await),
    };
    let encoded = package.encode();
    let stop_ms = started.elapsed().as_secs_f64() * 1e3;
    let h = &package.header;
    let epoch = h.checkpoint.as_ref().map_or(0, |c| c.epoch);
    let carried_entries = h.inputs.iter().map(|i| i.entries).sum();
    let carried_results = h.outboxes.iter().map(|o| o.entries).sum();
    let encoded = match encoded {
        Ok(b) => b,
        Err(e) => return Err(undo(node, id, e).await),
    };
    let package_bytes = encoded.len() as u64;
    let url = format!("{address}/v1/rules/{id}/attach?from={me}");
    let sent = http(node)
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(encoded)
        .send()
        .await;
    let view = match sent {
        Ok(r) => match answer::<serde_json::Value>(r, &req.node).await {
            Ok(v) => v,
            Err(e) => return Err(undo(node, id, e).await),
        },
        Err(e) => {
            // The target may have taken the rule before the answer was lost: it goes there.
            let _ = http(node)
                .delete(format!("{address}/v1/rules/{id}"))
                .header(RELAYED, "1")
                .send()
                .await;
            let e = NodeError::Unavailable(format!("node '{}' at {address}: {e}", req.node));
            return Err(undo(node, id, e).await);
        }
    };
    let paused_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = node.delete_rule(id).await {
        tracing::error!(rule = %id, error = %e, "moved rule not deleted here");
    }
    tracing::info!(rule = %id, to = %req.node, paused_ms, "rule moved");
    Ok(MoveReport {
        rule: id.to_owned(),
        from: me,
        to: req.node,
        paused_ms,
        stop_ms,
        epoch,
        package_bytes,
        carried_entries,
        carried_results,
        view,
    })
}

fn already_there(id: &str, node: &str) -> NodeError {
    NodeError::Conflict(format!("rule '{id}' already runs on node '{node}'"))
}

/// Starts the rule again here after a refused move; the error says where it runs.
async fn undo(node: &Node, id: &str, why: NodeError) -> NodeError {
    let me = node.name.get().cloned().unwrap_or_default();
    match node.resume_after_move(id).await {
        Ok(_) => NodeError::Remote {
            status: status_of(&why),
            message: format!("the move failed and rule '{id}' keeps running on '{me}': {why}"),
        },
        Err(e) => NodeError::Remote {
            status: 500,
            message: format!(
                "the move failed ({why}) and rule '{id}' could not be started again on '{me}': {e}"
            ),
        },
    }
}

fn status_of(e: &NodeError) -> u16 {
    match e {
        NodeError::Remote { status, .. } => *status,
        NodeError::Unavailable(_) => 503,
        NodeError::Conflict(_) => 409,
        NodeError::NotFound { .. } => 404,
        _ => 422,
    }
}

/// POSTs `body` as JSON to `path` on another node.
pub async fn send<T: Serialize>(
    node: &Node,
    target: &Member,
    path: &str,
    body: &T,
) -> Result<reqwest::Response, NodeError> {
    let url = format!("{}{path}", target.report.address);
    http(node)
        .post(&url)
        .header(RELAYED, "1")
        .json(body)
        .send()
        .await
        .map_err(|e| NodeError::Unavailable(format!("node '{}' at {url}: {e}", target.report.name)))
}

/// Another node's answer: its JSON on success, its error message and status otherwise.
pub async fn answer<T: serde::de::DeserializeOwned>(
    reply: reqwest::Response,
    from: &str,
) -> Result<T, NodeError> {
    let status = reply.status().as_u16();
    let body: serde_json::Value = reply
        .json()
        .await
        .map_err(|e| NodeError::Unavailable(format!("node '{from}' answered: {e}")))?;
    if (200..300).contains(&status) {
        return serde_json::from_value(body)
            .map_err(|e| NodeError::Unavailable(format!("node '{from}' answered: {e}")));
    }
    let message = body["error"]["message"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    Err(NodeError::Remote {
        status,
        message: format!("node '{from}': {message}"),
    })
}

/// The up node of `runtime` (`edge` or `core`) with the least CPU load, other than `except`.
/// A runtime no node serves is the client's mistake (the answer names the runtimes there are);
/// one whose nodes are all down or busy elsewhere is the platform's.
pub async fn least_loaded(
    node: &Node,
    runtime: &str,
    except: Option<&str>,
) -> Result<Member, NodeError> {
    let all = members(node).await?;
    if !all.iter().any(|m| m.report.role == runtime) {
        let mut runtimes: Vec<&str> = all.iter().map(|m| m.report.role.as_str()).collect();
        runtimes.sort_unstable();
        runtimes.dedup();
        return Err(NodeError::invalid(format!(
            "no node serves runtime '{runtime}'; the runtimes of this control plane are {}",
            runtimes.join(", ")
        )));
    }
    all.iter()
        .filter(|m| m.state == "up" && m.report.role == runtime)
        .filter(|m| Some(m.report.name.as_str()) != except)
        .min_by(|a, b| {
            a.report
                .load
                .cpu_percent
                .total_cmp(&b.report.load.cpu_percent)
        })
        .cloned()
        .ok_or_else(|| {
            NodeError::Unavailable(match except {
                Some(e) => format!("no '{runtime}' node is up besides '{e}'"),
                None => format!("no '{runtime}' node is up"),
            })
        })
}
