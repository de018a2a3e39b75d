//! Topic rules of the embedded MQTT endpoint, per client, from an ACL file in Mosquitto's
//! form (`--mqtt-acl-file`):
//!
//! ```text
//! # device-7 publishes its readings and reads the alerts
//! user device-7
//! topic write plant/7/#
//! topic read alerts/#
//! ```
//!
//! A client is the name its token has in the token file (`TOKEN ROLE NAME`), whatever user name
//! it sends. With an ACL file, a client publishes only to topics a `write` (or `readwrite`)
//! filter of its name covers, and receives only messages on topics a `read` filter covers; an
//! admin token is not limited, and a name the file does not list may do nothing. The rules
//! narrow what the token's role allows, never widen it: publishing still needs an operator, and
//! nobody publishes to a rule's topics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::mqttbytes::{matches, valid_filter};

use crate::auth::{Caller, Role};

/// How often the file is looked at for changes, at most.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    filter: String,
    read: bool,
    write: bool,
}

/// The topic rules of an ACL file, read again when it changes.
pub struct MqttAcl {
    file: PathBuf,
    state: Mutex<State>,
}

struct State {
    users: HashMap<String, Vec<Grant>>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl MqttAcl {
    /// Reads `file`; an error names the line.
    pub fn open(file: &Path) -> Result<MqttAcl, String> {
        let (users, modified) = read(file)?;
        Ok(MqttAcl {
            file: file.to_owned(),
            state: Mutex::new(State {
                users,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// Whether `caller` may publish to `topic` (`write`) or receive messages on it.
    pub fn allows(&self, caller: &Caller, topic: &str, write: bool) -> bool {
        if caller.role >= Role::Admin {
            return true;
        }
        self.reload_if_changed();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(grants) = caller.name.as_ref().and_then(|n| state.users.get(n)) else {
            return false;
        };
        grants
            .iter()
            .any(|g| (if write { g.write } else { g.read }) && matches(topic, &g.filter))
    }

    fn reload_if_changed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() < RECHECK {
            return;
        }
        state.checked = Instant::now();
        let modified = std::fs::metadata(&self.file)
            .and_then(|m| m.modified())
            .ok();
        if modified == state.modified {
            return;
        }
        match read(&self.file) {
            Ok((users, modified)) => {
                tracing::info!(file = %self.file.display(), users = users.len(), "MQTT ACL file read again");
                state.users = users;
                state.modified = modified;
            }
            // The rules read before stay: a half-written file opens nothing up.
            Err(e) => tracing::warn!(error = %e, "MQTT ACL file not read again"),
        }
    }
}

type Users = HashMap<String, Vec<Grant>>;

fn read(file: &Path) -> Result<(Users, Option<SystemTime>), String> {
    let shown = || format!("mqtt_acl_file {}", file.display());
    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let bytes = weir_core::files::read_settings_file(file, "mqtt_acl_file")?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{}: not text", shown()))?;
    Ok((
        parse(&text).map_err(|e| format!("{} {e}", shown()))?,
        modified,
    ))
}

fn parse(text: &str) -> Result<Users, String> {
    let mut users: Users = HashMap::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}", i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["user", name] => {
                users.entry((*name).to_owned()).or_default();
                current = Some((*name).to_owned());
            }
            ["topic", rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
                let (access, filter) = match rest {
                    [filter] => ("readwrite", *filter),
                    [access, filter] => (*access, *filter),
                    _ => unreachable!("one or two words"),
                };
                let (read, write) = match access {
                    "read" => (true, false),
                    "write" => (false, true),
                    "readwrite" => (true, true),
                    other => {
                        return Err(format!(
                            "{}: access '{other}' is not read, write or readwrite",
                            at()
                        ))
                    }
                };
                if !valid_filter(filter) {
                    return Err(format!("{}: '{filter}' is not an MQTT topic filter", at()));
                }
                let Some(user) = &current else {
                    return Err(format!("{}: a topic line needs a user line above it", at()));
                };
                users.entry(user.clone()).or_default().push(Grant {
                    filter: filter.to_owned(),
                    read,
                    write,
                });
            }
            _ => {
                return Err(format!(
                    "{}: write 'user NAME' or 'topic [read|write|readwrite] FILTER'",
                    at()
                ))
            }
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, name: Option<&str>) -> Caller {
        Caller {
            role,
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn grants_narrow_each_named_client() {
        let dir = std::env::temp_dir().join(format!("weir-acl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("acl");
        std::fs::write(
            &file,
            "# devices\nuser device-7\ntopic write plant/7/#\ntopic read alerts/+\n\nuser display\ntopic read #\n",
        )
        .unwrap();
        let acl = MqttAcl::open(&file).unwrap();
        let device = caller(Role::Operator, Some("device-7"));
        assert!(acl.allows(&device, "plant/7/temp", true));
        assert!(!acl.allows(&device, "plant/8/temp", true));
        assert!(!acl.allows(&device, "plant/7/temp", false));
        assert!(acl.allows(&device, "alerts/hot", false));
        assert!(!acl.allows(&device, "alerts/hot", true));
        assert!(acl.allows(&caller(Role::Viewer, Some("display")), "x/y", false));
        assert!(!acl.allows(&caller(Role::Operator, Some("stranger")), "x", false));
        assert!(!acl.allows(&caller(Role::Operator, None), "x", false));
        assert!(acl.allows(&caller(Role::Admin, None), "x", true));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_line_is_named() {
        for (text, expected) in [
            ("topic read a\n", "line 1: a topic line needs a user line"),
            ("user u\ntopic peek a\n", "line 2: access 'peek'"),
            (
                "user u\ntopic read a/#/b\n",
                "line 2: 'a/#/b' is not an MQTT topic filter",
            ),
            ("user\n", "line 1: write 'user NAME'"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
