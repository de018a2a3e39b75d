//! A rule's state changelog on NATS JetStream, the Kafka Streams model of seed paper 000: each
//! state partition (an operator chain of the rule) is one key, compacted to its newest value by
//! a stream that keeps one message per subject. Another node rebuilds the state by reading the
//! newest value of every key.
//!
//! JetStream refuses messages over its size limit (1 MiB by default), so a value goes out in
//! parts, subjects `weir.changelog.<rule>.<partition>.<part>`, each with the epoch and the part
//! count in its headers. Part 0 is written last: a reader that finds parts of different epochs
//! has met a write in progress and says so.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;

const STREAM: &str = "WEIR_CHANGELOG";
const PART: usize = 512 * 1024;

/// A rule's changelog: one compacted JetStream stream, a key per state partition.
pub struct Changelog {
    js: jetstream::Context,
    prefix: String,
}

/// A rule id as one subject token: characters NATS gives a meaning (like `.`) are escaped.
fn token(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c.to_string(),
            other => format!("~{:x}", other as u32),
        })
        .collect()
}

fn header(m: &HeaderMap, name: &str) -> Option<u64> {
    m.get(name)?.as_str().parse().ok()
}

impl Changelog {
    /// Connects and makes sure the compacted changelog stream exists.
    pub async fn open(url: &str, rule: &str) -> Result<Changelog, String> {
        let client = async_nats::ConnectOptions::new()
            .connect(url)
            .await
            .map_err(|e| format!("changelog at {url}: {e}"))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["weir.changelog.>".to_owned()],
            max_messages_per_subject: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("changelog stream {STREAM}: {e}"))?;
        Ok(Changelog {
            js,
            prefix: format!("weir.changelog.{}", token(rule)),
        })
    }

    /// Writes the newest state of one partition.
    pub async fn put(&self, partition: usize, epoch: u64, state: &[u8]) -> Result<(), String> {
        self.put_key(&partition.to_string(), epoch, state).await
    }

    /// The newest state of one partition and its epoch, if it was ever written.
    pub async fn get(&self, partition: usize) -> Result<Option<(u64, Vec<u8>)>, String> {
        self.get_key(&partition.to_string()).await
    }

    /// Writes the source positions that go with the states of `epoch` (written after them).
    pub async fn put_positions(&self, epoch: u64, positions: &[u8]) -> Result<(), String> {
        self.put_key("positions", epoch, positions).await
    }

    /// The newest source positions and their epoch.
    pub async fn get_positions(&self) -> Result<Option<(u64, Vec<u8>)>, String> {
        self.get_key("positions").await
    }

    async fn put_key(&self, partition: &str, epoch: u64, state: &[u8]) -> Result<(), String> {
        let parts: Vec<&[u8]> = match state.is_empty() {
            true => vec![state],
            false => state.chunks(PART).collect(),
        };
        for (i, part) in parts.iter().enumerate().rev() {
            let mut headers = HeaderMap::new();
            headers.insert("Weir-Epoch", epoch.to_string().as_str());
            headers.insert("Weir-Parts", parts.len().to_string().as_str());
            self.js
                .publish_with_headers(
                    format!("{}.{partition}.{i}", self.prefix),
                    headers,
                    Bytes::copy_from_slice(part),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn get_key(&self, partition: &str) -> Result<Option<(u64, Vec<u8>)>, String> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let last = |i: usize| {
            let subject = format!("{}.{partition}.{i}", self.prefix);
            let stream = &stream;
            async move {
                match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(m) => Ok(Some(m)),
                    Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                        Ok(None)
                    }
                    Err(e) => Err(format!("{subject}: {e}")),
                }
            }
        };
        let Some(first) = last(0).await? else {
            return Ok(None);
        };
        let epoch = header(&first.headers, "Weir-Epoch").ok_or("part 0 has no epoch")?;
        let parts = header(&first.headers, "Weir-Parts").ok_or("part 0 has no count")?;
        let mut state = first.payload.to_vec();
        for i in 1..parts as usize {
            let part = last(i)
                .await?
                .ok_or(format!("part {i} of {parts} is missing"))?;
            if header(&part.headers, "Weir-Epoch") != Some(epoch) {
                return Err(format!(
                    "part {i} is not from epoch {epoch}: a write was in progress"
                ));
            }
            state.extend_from_slice(&part.payload);
        }
        Ok(Some((epoch, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_become_single_subject_tokens() {
        assert_eq!(token("hot-readings_2"), "hot-readings_2");
        assert_eq!(token("a.b"), "a~2eb");
    }

    #[tokio::test]
    async fn large_states_round_trip_in_parts() {
        let rule = format!("changelog-test-{}", std::process::id());
        let log = Changelog::open("nats://127.0.0.1:4222", &rule)
            .await
            .unwrap();
        assert_eq!(log.get(0).await.unwrap(), None);
        let big: Vec<u8> = (0..PART * 2 + 10).map(|i| (i % 251) as u8).collect();
        log.put(0, 3, &big).await.unwrap();
        log.put(1, 3, b"{}").await.unwrap();
        assert_eq!(log.get(0).await.unwrap(), Some((3, big)));
        log.put(1, 4, b"[1]").await.unwrap();
        assert_eq!(log.get(1).await.unwrap(), Some((4, b"[1]".to_vec())));
    }
}
