//! Group rules: one rule run by several core nodes as members of its input's consumer group
//! (Kafka Streams' model), on a Kafka topic or a partitioned JetStream stream. The log's own
//! group protocol decides which node reads which partition; each node runs one task per
//! partition it reads — the rule's program with its own state — and every task checkpoints to
//! the rule's changelog together with its partition's next position. When a partition moves (a
//! node joins, leaves or dies), its new owner rebuilds the task from the changelog, skips what
//! that state already holds and reads what the log handed the previous owner beyond it. Kafka
//! offsets are committed (JetStream messages acknowledged) only once the changelog holds the
//! state that covers them, so the group never starts a partition past its state. Results are
//! at least once: what a task emitted after its last checkpoint is emitted again by the
//! partition's next owner.

use crate::start_error::StartError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use weir_connectors::group::{GroupEvent, GroupLog, GroupMember};

use crate::checkpoint::CheckpointStatus;
use crate::rule::{Fed, Launch, RuleMetrics, RunningRule, Stage, BROKER_POSITION};

/// A running group rule on this node.
pub struct GroupRule {
    /// Figures of the rule's tasks on this node.
    pub metrics: Arc<RuleMetrics>,
    stop: oneshot::Sender<()>,
    member: tokio::task::JoinHandle<()>,
}

/// One partition's task.
struct Task {
    rule: RunningRule,
    tx: mpsc::Sender<(Bytes, Option<u64>)>,
    /// The next position the task takes: those below are in its state or already given to it.
    next: u64,
    /// Whether what the log handed a previous owner beyond the task's state was read.
    filled: bool,
}

impl GroupRule {
    /// Joins the consumer group of the rule's input; `launch` is the rule as one task runs it
    /// (its id and changelog are made per partition).
    pub fn start(launch: Launch) -> Result<GroupRule, StartError> {
        let (inputs, _) = crate::rule::boundary(&launch.program);
        let eps = crate::rule::endpoints(&launch.program).map_err(|bad| {
            let bad: Vec<String> = bad.into_iter().map(|(_, e)| e).collect();
            StartError::user(bad.join("; "))
        })?;
        let [input] = inputs.as_slice() else {
            return Err(StartError::user(format!(
                "a group rule reads one partitioned stream; rule {} reads {}",
                launch.id,
                inputs.join(", ")
            )));
        };
        let (def, endpoint) = eps
            .into_iter()
            .find(|(d, _)| d.name.eq_ignore_ascii_case(input))
            .ok_or(StartError::internal("input not found"))?;
        let endpoint = endpoint.for_rule(&launch.id, &def.name);
        let log = GroupLog::of(&def.name, &endpoint).map_err(StartError::user)?;
        if launch.changelog.is_none() {
            return Err(StartError::user("a group rule needs a changelog (\"changelog\": \"nats://host:4222\"): it is where a partition's state goes when the partition moves to another node"));
        }
        let stage = Stage::new("source", &def.name, &endpoint);
        let status = Arc::new(Mutex::new(CheckpointStatus {
            delivery: "at_least_once",
            ..CheckpointStatus::default()
        }));
        let metrics = Arc::new(RuleMetrics::new(
            vec![stage.clone()],
            status,
            Arc::new(Mutex::new(None)),
        ));
        let (stop, stopped) = oneshot::channel();
        let member = Member {
            launch,
            log,
            stream: def.name.clone(),
            stage,
            metrics: metrics.clone(),
            tasks: BTreeMap::new(),
            owned: Default::default(),
        };
        Ok(GroupRule {
            metrics,
            stop,
            member: tokio::spawn(member.run(stopped)),
        })
    }

    /// Leaves the group: every task takes a last checkpoint into the changelog first.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.member.await;
    }
}

struct Member {
    launch: Launch,
    log: GroupLog,
    stream: String,
    stage: Arc<Stage>,
    metrics: Arc<RuleMetrics>,
    tasks: BTreeMap<i32, Task>,
    /// The partitions the group gave this member; messages of others (fetched before a
    /// revocation) belong to their new owner and are dropped.
    owned: std::collections::BTreeSet<i32>,
}

impl Member {
    /// A partition's task: its checkpoints and changelog go by this id.
    fn task_id(&self, partition: i32) -> String {
        format!("{}.p{partition}", self.launch.id)
    }

    fn position(&self, partition: i32) -> String {
        format!("{BROKER_POSITION}{}", self.log.position(partition))
    }

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut group = loop {
            match self.log.join().await {
                Ok(g) => break g,
                Err(e) => self.stage.health.down(e),
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        self.stage.health.up();
        let mut commits = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = commits.tick() => {
                    if let Err(e) = group.commit(&self.covered()).await {
                        tracing::warn!(rule = %self.launch.id, error = %e, "offsets not committed");
                    }
                }
                event = group.next() => match event {
                    Ok(GroupEvent::Message { partition, offset, payload }) => {
                        self.stage.health.count();
                        self.deliver(&group, partition, offset, payload).await;
                    }
                    Ok(GroupEvent::Assigned(parts)) => {
                        for p in parts {
                            self.owned.insert(p);
                            self.ensure_task(p).await;
                        }
                    }
                    Ok(GroupEvent::Revoked(parts)) => {
                        // Their last positions too, while the group may still take them.
                        let mut last = self.leave_all(parts.clone()).await;
                        last.extend(self.covered());
                        let _ = group.commit(&last).await;
                        group.released(&parts).await;
                    }
                    Ok(GroupEvent::Lost(parts)) => {
                        for p in parts {
                            self.owned.remove(&p);
                            self.drop_task(p, false).await;
                        }
                    }
                    Err(e) => {
                        self.stage.health.down(e);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            }
        }
        let parts: Vec<i32> = self.tasks.keys().copied().collect();
        let last = self.leave_all(parts).await;
        let _ = group.commit(&last).await;
        group.leave().await;
    }

    /// Starts a partition's task unless it runs; false if it cannot start.
    async fn ensure_task(&mut self, partition: i32) -> bool {
        if self.tasks.contains_key(&partition) {
            return true;
        }
        match self.start_task(partition).await {
            Ok(t) => {
                self.tasks.insert(partition, t);
                true
            }
            Err(e) => {
                tracing::error!(rule = %self.launch.id, partition, error = %e, "partition task not started");
                *self
                    .metrics
                    .failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("partition {partition}: {e}"));
                false
            }
        }
    }

    /// Hands a message to its partition's task, after what the log handed a previous owner
    /// beyond the task's state.
    async fn deliver(&mut self, group: &GroupMember, partition: i32, offset: u64, payload: Bytes) {
        if !self.owned.contains(&partition) || !self.ensure_task(partition).await {
            return;
        }
        let Some(task) = self.tasks.get_mut(&partition) else {
            return;
        };
        if offset < task.next {
            return;
        }
        let mut batch = Vec::new();
        if !task.filled {
            match group.backfill(partition, task.next, offset).await {
                Ok(missed) => batch = missed,
                Err(e) => {
                    // Read again with the partition's next message, which is dropped here.
                    tracing::warn!(rule = %self.launch.id, partition, error = %e, "what the previous owner was handed not read");
                    return;
                }
            }
            task.filled = true;
        }
        if batch.last().is_none_or(|(last, _)| *last < offset) {
            batch.push((offset, payload));
        }
        for (offset, payload) in batch {
            if offset < task.next {
                continue;
            }
            self.stage
                .events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = task.tx.send((payload, Some(offset))).await;
            task.next = offset + 1;
        }
    }

    async fn start_task(&self, partition: i32) -> Result<Task, StartError> {
        let (tx, rx) = mpsc::channel(1024);
        let position = self.position(partition);
        let l = &self.launch;
        let rule = RunningRule::start(Launch {
            id: self.task_id(partition),
            program: l.program.clone(),
            engine: l.engine.clone(),
            hub: l.hub.clone(),
            max_payload: l.max_payload,
            delivery: l.delivery,
            interval: l.interval,
            max_state_bytes: l.max_state_bytes,
            checkpoints: l.checkpoints.clone(),
            retention: l.retention,
            outbox: l.outbox,
            changelog: l.changelog.clone(),
            fed: Some(Fed {
                stream: self.stream.clone(),
                position: position.clone(),
                rx,
                tx: tx.downgrade(),
            }),
            fresh: false,
        })
        .await?;
        let next = rule.restored.get(&position).copied().unwrap_or(0);
        tracing::info!(rule = %l.id, partition, next, "partition task started");
        Ok(Task {
            rule,
            tx,
            next,
            filled: false,
        })
    }

    /// Gives up partitions: their tasks stop; the next offset each one's state covers.
    async fn leave_all(&mut self, parts: Vec<i32>) -> Vec<(i32, u64)> {
        let mut last = Vec::new();
        for p in parts {
            self.owned.remove(&p);
            last.extend(self.leave(p).await.map(|next| (p, next)));
        }
        last
    }

    /// Stops a partition's task (a last checkpoint into the changelog); the next offset the
    /// changelog's state covers.
    async fn leave(&mut self, partition: i32) -> Option<u64> {
        let position = self.position(partition);
        let status = self.drop_task(partition, true).await?;
        let s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.changelog_positions.get(&position).copied()
    }

    /// Stops a partition's task, with a last checkpoint or (a partition lost) without, and
    /// removes its local checkpoints; the task's checkpoint status.
    async fn drop_task(
        &mut self,
        partition: i32,
        checkpoint: bool,
    ) -> Option<Arc<Mutex<CheckpointStatus>>> {
        let task = self.tasks.remove(&partition)?;
        let status = task.rule.metrics.checkpoint.clone();
        // Stopped before its input closes: a closed input would end the stream and flush the
        // open windows, which belong to the partition's next owner.
        match checkpoint {
            true => task.rule.stop().await,
            false => task.rule.abandon().await,
        }
        drop(task.tx);
        // The changelog holds the state now (a lost partition's, from its new owner); a copy
        // here would only go stale.
        let task_id = self.task_id(partition);
        if let Err(e) = self.launch.checkpoints.remove(&task_id) {
            tracing::warn!(rule = %task_id, error = %e, "checkpoints not removed");
        }
        tracing::info!(rule = %self.launch.id, partition, checkpoint, "partition task stopped");
        Some(status)
    }

    /// Per partition, the next offset of the newest state the changelog holds.
    fn covered(&self) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let mut summary = BTreeMap::new();
        for (p, task) in &self.tasks {
            let s = task
                .rule
                .metrics
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let position = self.position(*p);
            if let Some(next) = s.changelog_positions.get(&position).copied() {
                out.push((*p, next));
                summary.insert(position, next);
            }
        }
        self.metrics
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .positions = summary;
        out
    }
}
