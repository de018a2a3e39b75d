//! The rule host: starting a rule's tasks outside the node's lock, tracking what runs, and
//! keeping a durable rule's logs filling while it is stopped. Operations on one rule take turns.

use super::*;

impl Node {
    /// Waits for the operation under way on rule `id`, if any. Operations on one rule take
    /// turns here, and hold the node's lock only for short reads and writes of the catalogue:
    /// a rule slow to start or stop (its changelog server away, its sink slow) holds up the
    /// calls about itself alone.
    pub(super) async fn rule_turn(&self, id: &str) -> Turn<'_> {
        let turn = self
            .rule_turns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone();
        Turn {
            turns: &self.rule_turns,
            id: id.to_owned(),
            guard: Some(turn.lock_owned().await),
        }
    }

    /// Keeps the logs of a durable rule filling (see [`rule::journals`]); releases them for
    /// an at-most-once rule.
    pub(super) fn hold_journals(&self, st: &State, id: &str) {
        let mut held = self.journals.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(id);
        let Some(rec) = st.registry.catalog.rules.get(id) else {
            return;
        };
        if !rec.options.delivery.durable() {
            return;
        }
        let Ok(program) = self.compile_rule(st, id, &rec.sql) else {
            return;
        };
        let mut subs = Vec::new();
        let store = self.hub.store();
        for spec in rule::journals(id, &program) {
            let log = match store.log(&spec.log) {
                Ok(log) => log,
                Err(e) => {
                    tracing::error!(rule = %id, log = %spec.log, error = %e, "log not opened");
                    continue;
                }
            };
            // Until its first checkpoint, the rule reads from where the log was when it
            // began to be kept for it.
            let key = rule::start_key(id, &spec.log);
            if spec.input && store.meta(&key).ok().flatten().is_none() {
                if let Err(e) = store.set_meta(&key, &log.end().to_be_bytes()) {
                    tracing::error!(rule = %id, error = %e, "start position not stored");
                }
            }
            subs.push(self.hub.journal(&spec.filter, log));
        }
        held.insert(id.to_owned(), subs);
    }

    /// Forgets a rule's durable traces: journals, its private logs, its unsent results and its
    /// checkpoints.
    pub(super) fn forget_state(&self, st: &State, id: &str) {
        self.journals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(rec) = st.registry.catalog.rules.get(id) {
            if let Ok(program) = self.compile_rule(st, id, &rec.sql) {
                for spec in rule::journals(id, &program) {
                    let _ = self
                        .hub
                        .store()
                        .remove_meta(&rule::start_key(id, &spec.log));
                    if let Some(log) = self
                        .hub
                        .store()
                        .log(&spec.log)
                        .ok()
                        .filter(|_| spec.private)
                    {
                        let _ = log.truncate_before(log.end());
                    }
                }
                for out in rule::boundary(&program).1 {
                    if let Err(e) = self.outbox(id, &out, rec).and_then(|o| Ok(o.clear()?)) {
                        tracing::warn!(rule = %id, error = %e, "outbox not cleared");
                    }
                }
            }
        }
        if let Err(e) = self.checkpoints.remove(id) {
            tracing::warn!(rule = %id, error = %e, "checkpoints not removed");
        }
    }

    /// Starts rule `id` (`fresh`: with empty state, its checkpoints dropped first). Its
    /// settings are read under the node's lock; its state is recovered and its tasks wired
    /// without it, the rule shown as STARTING meanwhile.
    pub(super) async fn launch(&self, id: &str, fresh: bool) -> Result<Runner, NodeError> {
        let (launch, group) = {
            let mut st = self.state.lock().await;
            let planned = self.plan(&st, id, fresh)?;
            st.starting.insert(id.to_owned());
            planned
        };
        let started = match group {
            true => GroupRule::start(launch).map(Runner::Group),
            false => RunningRule::start(launch)
                .await
                .map(|r| Runner::One(Box::new(r))),
        };
        self.state.lock().await.starting.remove(id);
        started.map_err(NodeError::Start)
    }

    /// What rule `id` starts with, and whether it runs as a group.
    pub(super) fn plan(
        &self,
        st: &State,
        id: &str,
        fresh: bool,
    ) -> Result<(Launch, bool), NodeError> {
        let rec = Self::record(st, id)?;
        if fresh && rec.options.group {
            return Err(NodeError::Unsupported(format!(
                "rule '{id}' runs as a core group: its state is in its changelog, which reset_state does not clear; delete and install it again"
            )));
        }
        if fresh {
            self.checkpoints.remove(id)?;
        }
        let program = self.compile_rule(st, id, &rec.sql)?;
        let engine = EngineConfig {
            workers: rec.options.workers.unwrap_or(self.config.workers),
            state_ttl_ms: rec.options.ttl_ms().map_err(NodeError::invalid)?,
            ..EngineConfig::default()
        };
        let interval = rec.options.interval_ms().map_err(NodeError::invalid)?;
        let launch = Launch {
            id: id.to_owned(),
            program: Arc::unwrap_or_clone(program),
            engine,
            hub: self.hub.clone(),
            max_payload: self.config.max_payload,
            delivery: rec.options.delivery,
            interval: std::time::Duration::from_millis(interval),
            max_state_bytes: rec.options.max_state_bytes,
            checkpoints: self.checkpoints.clone(),
            retention: self.config.log_retention,
            outbox: (self.config.outbox_capacity, rec.options.outbox_full),
            changelog: rec.options.changelog.clone(),
            fed: None,
            fresh,
        };
        Ok((launch, rec.options.group))
    }

    pub(super) fn set_running(&self, st: &mut State, id: &str, rule: Runner) {
        self.metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), rule.metrics().clone());
        st.failed.remove(id);
        st.running.insert(
            id.to_owned(),
            Live {
                rule,
                since: Instant::now(),
            },
        );
    }

    /// Takes rule `id` out of the running rules; it is stopped once the node's lock is let go.
    pub(super) fn take_running(&self, st: &mut State, id: &str) -> Option<Runner> {
        self.metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        st.running.remove(id).map(|live| live.rule)
    }

    /// Stops rule `id` if it runs; its last checkpoint is taken without the node's lock.
    pub(super) async fn halt(&self, id: &str) {
        let rule = self.take_running(&mut *self.state.lock().await, id);
        if let Some(rule) = rule {
            rule.stop().await;
        }
    }

    /// Figures of every running rule.
    pub fn rule_metrics(&self) -> Vec<(String, Arc<RuleMetrics>)> {
        self.metrics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    // ---- streams ----

    pub(super) fn persist_state(
        &self,
        st: &mut State,
        id: &str,
        state: RuleState,
    ) -> Result<(), NodeError> {
        if let Some(r) = st.registry.catalog.rules.get_mut(id) {
            r.state = state;
        }
        st.registry.save_rule(id)?;
        Ok(())
    }
}
