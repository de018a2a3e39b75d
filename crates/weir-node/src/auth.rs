//! Who may do what: bearer tokens from a file, each with a role, and the secret the nodes of a
//! cluster share.
//!
//! Roles grow: `viewer` reads (rules, streams, status, metrics, tails), `operator` also starts
//! and stops rules and ingests events, `admin` also installs, updates, deletes and moves rules
//! and streams. The cluster secret (`cluster_secret_file`, the same file on every node) is the
//! role `node`: all of that, plus what only nodes do to each other — heartbeats and attaching a
//! moved rule — and every node sends it on its requests to the others. A node with neither a
//! token file nor a cluster secret asks nothing (the default on loopback).
//!
//! The token file holds one `TOKEN ROLE [NAME]` per line (`#` starts a comment); it is read
//! again when it changes. The name, when given, is who the token is to the embedded MQTT
//! endpoint's topic rules ([`crate::mqtt_acl`]). Tokens are compared in constant time and never
//! printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use axum::http::Method;
use subtle::ConstantTimeEq;

/// What a request may need, in growing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: listings, status, stream tails, metrics; validates rules.
    Viewer,
    /// Also starts, stops and restarts rules, posts events and reads dead letters.
    Operator,
    /// Also everything else: installs, updates, deletes and moves rules, creates streams,
    /// exports checkpoints.
    Admin,
    /// Another node of the cluster.
    Node,
}

impl Role {
    /// The role as the token file and answers spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Node => "node (the cluster secret)",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The shortest token taken: shorter ones are guessed.
pub const MIN_TOKEN: usize = 16;

/// How often the token file is looked at for changes, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// The role a request needs; `None` for what anyone may ask (`/v1/health`).
pub fn required(method: &Method, path: &str) -> Option<Role> {
    if path == "/v1/health" {
        return None;
    }
    let rule_action = path
        .strip_prefix("/v1/rules/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, action)| action);
    let role = match (method, path, rule_action) {
        (_, "/v1/nodes/heartbeat", _) | (_, _, Some("attach")) => Role::Node,
        (&Method::GET, _, Some("checkpoint")) => Role::Admin,
        (&Method::GET, _, Some("dead_letters")) => Role::Operator,
        (&Method::GET | &Method::HEAD, _, _) => Role::Viewer,
        (&Method::POST, "/v1/rules/validate", _) => Role::Viewer,
        (&Method::POST, _, Some("start" | "stop" | "restart")) => Role::Operator,
        (&Method::POST, "/api/start" | "/api/stop", _) => Role::Operator,
        (&Method::POST, p, _) if p.starts_with("/v1/streams/") && p.ends_with("/events") => {
            Role::Operator
        }
        _ => Role::Admin,
    };
    Some(role)
}

/// Why a request was not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is not known (401).
    Unknown,
    /// A known token whose role is too small (403).
    TooSmall {
        /// The role the request needs.
        needs: Role,
        /// The token's role.
        has: Role,
    },
}

/// Who a token is: its role, and the name the token file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// What the token may do.
    pub role: Role,
    /// The name the token file gives it, for topic rules and logs.
    pub name: Option<String>,
}

/// The tokens a node takes, and the secret of its cluster.
pub struct Guard {
    file: Option<PathBuf>,
    secret: Option<Vec<u8>>,
    tokens: Mutex<Tokens>,
}

struct Tokens {
    by_token: Known,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl Guard {
    /// Reads the token file and the cluster secret; an error names the file and the line,
    /// never a token.
    pub fn open(file: Option<&Path>, secret_file: Option<&Path>) -> Result<Guard, String> {
        let secret = match secret_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cluster_secret_file {}: {e}", p.display()))?;
                let secret = text.trim().as_bytes().to_vec();
                if secret.len() < MIN_TOKEN {
                    return Err(format!(
                        "cluster_secret_file {}: the secret must be at least {MIN_TOKEN} characters",
                        p.display()
                    ));
                }
                Some(secret)
            }
        };
        let (by_token, modified) = match file {
            None => (Vec::new(), None),
            Some(p) => read_tokens(p)?,
        };
        Ok(Guard {
            file: file.map(Path::to_path_buf),
            secret,
            tokens: Mutex::new(Tokens {
                by_token,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether requests must carry a token at all.
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.secret.is_some()
    }

    /// The secret this node sends to the others, if its cluster has one.
    pub fn secret(&self) -> Option<&[u8]> {
        self.secret.as_deref()
    }

    /// Lets a request that needs `needs` through with the bearer token it carries, or says why
    /// not.
    pub fn check(&self, bearer: Option<&str>, needs: Role) -> Result<Role, Refusal> {
        self.caller(bearer, needs).map(|c| c.role)
    }

    /// Like [`Guard::check`], with the name the token file gives the token.
    pub fn caller(&self, bearer: Option<&str>, needs: Role) -> Result<Caller, Refusal> {
        if !self.enabled() {
            return Ok(Caller {
                role: Role::Node,
                name: None,
            });
        }
        let token = bearer.map(str::as_bytes).ok_or(Refusal::Unknown)?;
        let mut has: Option<Caller> = None;
        if let Some(s) = &self.secret {
            if bool::from(s.as_slice().ct_eq(token)) {
                has = Some(Caller {
                    role: Role::Node,
                    name: None,
                });
            }
        }
        self.reload_if_changed();
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Every token is compared, so the time taken does not tell which one matched.
        for known in &tokens.by_token {
            if bool::from(known.token.as_slice().ct_eq(token))
                && has.as_ref().is_none_or(|h| h.role < known.role)
            {
                has = Some(Caller {
                    role: known.role,
                    name: known.name.clone(),
                });
            }
        }
        match has {
            None => Err(Refusal::Unknown),
            Some(c) if c.role < needs => Err(Refusal::TooSmall { needs, has: c.role }),
            Some(c) => Ok(c),
        }
    }

    fn reload_if_changed(&self) {
        let Some(file) = &self.file else { return };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.checked.elapsed() < RECHECK {
            return;
        }
        tokens.checked = Instant::now();
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        if modified == tokens.modified {
            return;
        }
        match read_tokens(file) {
            Ok((by_token, modified)) => {
                tracing::info!(file = %file.display(), tokens = by_token.len(), "token file read again");
                tokens.by_token = by_token;
                tokens.modified = modified;
            }
            // The tokens read before stay: a half-written file locks nobody out.
            Err(e) => tracing::warn!(error = %e, "token file not read again"),
        }
    }
}

/// A token of the token file.
struct KnownToken {
    token: Vec<u8>,
    role: Role,
    name: Option<String>,
}

type Known = Vec<KnownToken>;

/// The tokens of a token file, and when it was written.
fn read_tokens(path: &Path) -> Result<(Known, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("auth_token_file {}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("auth_token_file {} line {}", path.display(), i + 1);
        let mut parts = line.split_whitespace();
        let (Some(token), Some(role), name, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{at}: write TOKEN ROLE, or TOKEN ROLE NAME"));
        };
        let role = Role::parse(role)
            .ok_or_else(|| format!("{at}: role '{role}' is not viewer, operator or admin"))?;
        if token.len() < MIN_TOKEN {
            return Err(format!(
                "{at}: the token is shorter than {MIN_TOKEN} characters"
            ));
        }
        if let Some(n) = name.filter(|n| !crate::registry::valid_id(n)) {
            let shown: String = n.chars().take(40).collect();
            return Err(format!(
                "{at}: name '{shown}' must be letters, digits, '_', '-' or '.'"
            ));
        }
        out.insert(token.as_bytes().to_vec(), (role, name.map(str::to_owned)));
    }
    let known = out
        .into_iter()
        .map(|(token, (role, name))| KnownToken { token, role, name })
        .collect();
    Ok((known, modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_role() {
        let cases = [
            (Method::GET, "/v1/health", None),
            (Method::GET, "/v1/rules", Some(Role::Viewer)),
            (Method::GET, "/metrics", Some(Role::Viewer)),
            (Method::POST, "/v1/rules/validate", Some(Role::Viewer)),
            (
                Method::GET,
                "/v1/rules/r/dead_letters",
                Some(Role::Operator),
            ),
            (Method::POST, "/v1/streams/s/events", Some(Role::Operator)),
            (Method::POST, "/v1/rules/r/stop", Some(Role::Operator)),
            (Method::POST, "/api/start", Some(Role::Operator)),
            (Method::POST, "/v1/rules", Some(Role::Admin)),
            (Method::PUT, "/v1/rules/r", Some(Role::Admin)),
            (Method::DELETE, "/v1/streams/s", Some(Role::Admin)),
            (Method::POST, "/v1/rules/r/move", Some(Role::Admin)),
            (Method::GET, "/v1/rules/r/checkpoint", Some(Role::Admin)),
            (Method::POST, "/api/install", Some(Role::Admin)),
            (Method::POST, "/v1/nodes/heartbeat", Some(Role::Node)),
            (Method::POST, "/v1/rules/r/attach", Some(Role::Node)),
        ];
        for (m, p, role) in cases {
            assert_eq!(required(&m, p), role, "{m} {p}");
        }
    }

    #[test]
    fn tokens_give_their_role_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            "# who may do what\nviewer-token-0123456789 viewer\nadmin-token-0123456789 admin\n",
        )
        .unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "cluster-secret-0123456789\n").unwrap();
        let g = Guard::open(Some(&file), Some(&secret)).unwrap();
        assert_eq!(g.check(None, Role::Viewer), Err(Refusal::Unknown));
        assert_eq!(g.check(Some("nope"), Role::Viewer), Err(Refusal::Unknown));
        assert_eq!(
            g.check(Some("viewer-token-0123456789"), Role::Viewer),
            Ok(Role::Viewer)
        );
        assert_eq!(
            g.check(Some("viewer-token-0123456789"), Role::Operator),
            Err(Refusal::TooSmall {
                needs: Role::Operator,
                has: Role::Viewer
            })
        );
        assert_eq!(
            g.check(Some("admin-token-0123456789"), Role::Operator),
            Ok(Role::Admin)
        );
        assert!(g.check(Some("admin-token-0123456789"), Role::Node).is_err());
        assert_eq!(
            g.check(Some("cluster-secret-0123456789"), Role::Node),
            Ok(Role::Node)
        );
        let open = Guard::open(None, None).unwrap();
        assert!(open.check(None, Role::Node).is_ok());
    }

    #[test]
    fn a_bad_token_file_is_refused_without_printing_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        for (text, says) in [
            ("short viewer\n", "shorter than 16"),
            (
                "long-enough-token-0123 root\n",
                "is not viewer, operator or admin",
            ),
            ("long-enough-token-0123\n", "TOKEN ROLE"),
        ] {
            std::fs::write(&file, text).unwrap();
            let e = Guard::open(Some(&file), None).err().unwrap();
            assert!(e.contains(says) && e.contains("line 1"), "{e}");
            assert!(!e.contains("long-enough") && !e.contains("short "), "{e}");
        }
    }
}
