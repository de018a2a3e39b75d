//! The rules' control plane: installing, updating, starting, stopping and deleting rules, with
//! every change validated in full before anything is touched; their views, status and files.

use super::*;

impl Node {
    /// Refuses one more rule on a node holding `max_rules` already.
    pub(super) fn ensure_room(&self, st: &State) -> Result<(), NodeError> {
        if st.registry.catalog.rules.len() >= self.config.max_rules {
            return Err(NodeError::Limit(format!(
                "this node holds at most {} rules (max_rules); delete one first",
                self.config.max_rules
            )));
        }
        Ok(())
    }

    /// Refuses a rule whose connectors cannot give the delivery it asks for, installed
    /// stopped or not.
    pub(super) fn check_delivery(
        program: &Program,
        options: &RuleOptions,
    ) -> Result<(), NodeError> {
        let refusals = rule::delivery_refusals(program, options.delivery);
        if refusals.is_empty() {
            return Ok(());
        }
        Err(NodeError::Invalid {
            message: refusals.join("; "),
            problems: Vec::new(),
        })
    }

    /// Checks rule text without installing it.
    pub async fn validate_rule(&self, sql: &str) -> Result<(Vec<String>, Vec<String>), NodeError> {
        let texts = Self::catalog_texts(&*self.state.lock().await);
        let p = has_rules(
            compile_against(&self.compiled.streams(&texts), "rule (validate)", sql)?,
            "(validate)",
        )?;
        Ok(rule::boundary(&p))
    }

    /// Installs a rule and starts it unless its options say stopped.
    pub async fn install_rule(
        &self,
        id: &str,
        sql: &str,
        options: RuleOptions,
        job: Option<JobRecord>,
    ) -> Result<RuleView, NodeError> {
        if !crate::registry::valid_id(id) {
            return Err(invalid_id(id));
        }
        options.validate().map_err(NodeError::invalid)?;
        let _turn = self.rule_turn(id).await;
        let (program, mut st) = self.compile_new_rule(id, sql).await?;
        if st.registry.catalog.rules.contains_key(id) {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' exists; update it with PUT /v1/rules/{id}"
            )));
        }
        self.ensure_room(&st)?;
        Self::check_delivery(&program, &options)?;
        // A rule installed under a deleted one's id starts from nothing.
        self.forget_state(&st, id);
        let start = !options.stopped;
        st.registry.catalog.rules.insert(
            id.to_owned(),
            RuleRecord {
                id: id.to_owned(),
                sql: sql.to_owned(),
                options,
                state: RuleState::Installed,
                job,
                moves: Vec::new(),
            },
        );
        self.hold_journals(&st, id);
        if start {
            drop(st);
            let started = self.launch(id, false).await;
            st = self.state.lock().await;
            match started {
                Ok(rule) => {
                    self.set_running(&mut st, id, rule);
                    if let Some(rec) = st.registry.catalog.rules.get_mut(id) {
                        rec.state = RuleState::Running;
                    }
                }
                Err(e) => {
                    self.forget_state(&st, id);
                    st.registry.catalog.rules.remove(id);
                    return Err(e);
                }
            }
        }
        if let Err(e) = st.registry.save_rule(id) {
            let rule = self.take_running(&mut st, id);
            self.forget_state(&st, id);
            st.registry.catalog.rules.remove(id);
            drop(st);
            if let Some(rule) = rule {
                rule.stop().await;
            }
            return Err(e.into());
        }
        Ok(self.view(&st, id))
    }

    /// Replaces a rule's text and options. The new version is compiled and checked first; if
    /// it is invalid or cannot start, the running version keeps running. The rule keeps its
    /// state when its stateful operators are unchanged (a new `WHERE`, projection or sink);
    /// when they changed, the update is refused with the reason unless `reset` asks to start
    /// with empty state.
    pub async fn update_rule(
        &self,
        id: &str,
        sql: &str,
        options: RuleOptions,
        reset: bool,
    ) -> Result<(RuleView, SavedState), NodeError> {
        options.validate().map_err(NodeError::invalid)?;
        let _turn = self.rule_turn(id).await;
        let (program, mut st) = self.compile_new_rule(id, sql).await?;
        let old = Self::record(&st, id)?.clone();
        Self::check_delivery(&program, &options)?;
        let was_running = st.running.contains_key(id);
        let newest = self.checkpoints.latest(id)?;
        let saved = match (&newest, was_running) {
            (None, false) => SavedState::None,
            _ if reset => SavedState::Reset,
            _ => {
                // The running version's state, or the newest checkpoint's: sized by the
                // worker count it was saved with.
                let workers = newest
                    .as_ref()
                    .map_or(old.options.workers.unwrap_or(self.config.workers), |r| {
                        r.checkpoint.workers
                    });
                let current = self.compile_rule(&st, id, &old.sql)?;
                weir_engine::check_update(&current, &program, workers).map_err(|e| {
                    NodeError::Conflict(format!(
                        "the update changes what rule '{id}' keeps state for, so its state does not fit the new version: {e}. Keep the windows, keys, aggregates, joins and patterns as they are, or send \"state\": \"reset\" to start it with empty state"
                    ))
                })?;
                SavedState::Kept
            }
        };
        let rec = st
            .registry
            .catalog
            .rules
            .get_mut(id)
            .expect("checked above");
        rec.sql = sql.to_owned();
        rec.options = options;
        let running = self.take_running(&mut st, id);
        drop(st);
        if let Some(rule) = running {
            rule.stop().await;
        }
        // The state as it is now: the old version resumes from it should the new one not
        // start (a stop takes a last checkpoint).
        let kept = self.checkpoints.latest(id)?;
        self.hold_journals(&*self.state.lock().await, id);
        if saved == SavedState::Reset && !was_running {
            self.checkpoints.remove(id)?;
        }
        if was_running {
            let started = self.launch(id, saved == SavedState::Reset).await;
            let mut st = self.state.lock().await;
            match started {
                Ok(rule) => self.set_running(&mut st, id, rule),
                Err(e) => {
                    st.registry.catalog.rules.insert(id.to_owned(), old);
                    if let Some(kept) = kept {
                        let _ = self.checkpoints.remove(id);
                        let _ = self.checkpoints.save(&kept.checkpoint);
                    }
                    self.hold_journals(&st, id);
                    drop(st);
                    if let Ok(rule) = self.launch(id, false).await {
                        self.set_running(&mut *self.state.lock().await, id, rule);
                    }
                    return Err(e);
                }
            }
        }
        let st = self.state.lock().await;
        st.registry.save_rule(id)?;
        Ok((self.view(&st, id), saved))
    }

    /// Stops and deletes a rule.
    pub async fn delete_rule(&self, id: &str) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        let running = {
            let mut st = self.state.lock().await;
            self.ensure_rule(&st, id)?;
            self.take_running(&mut st, id)
        };
        if let Some(rule) = running {
            rule.stop().await;
        }
        let mut st = self.state.lock().await;
        let mut view = self.view(&st, id);
        self.forget_state(&st, id);
        let rec = st.registry.catalog.rules.remove(id).expect("checked above");
        self.compiled.forget(id);
        st.failed.remove(id);
        st.registry.save_rule(id)?;
        if let Some(path) = rec
            .job
            .and_then(|j| st.registry.job_file(&j.config_file_name).ok())
        {
            let _ = std::fs::remove_file(path);
        }
        view.state = "UNINSTALLED";
        Ok(view)
    }

    /// Starts a stopped rule; `reset` drops its saved state first (a rule whose state no
    /// longer fits it does not start otherwise).
    pub async fn start_rule(&self, id: &str, reset: bool) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        let running = {
            let st = self.state.lock().await;
            self.ensure_rule(&st, id)?;
            st.running.contains_key(id)
        };
        if reset && running {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' is running; restart it to reset its state"
            )));
        }
        if !running {
            let rule = self.launch(id, reset).await?;
            self.set_running(&mut *self.state.lock().await, id, rule);
        }
        let mut st = self.state.lock().await;
        self.persist_state(&mut st, id, RuleState::Running)?;
        Ok(self.view(&st, id))
    }

    /// Stops a rule, with a last checkpoint.
    pub async fn stop_rule(&self, id: &str) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        self.ensure_rule(&*self.state.lock().await, id)?;
        self.halt(id).await;
        let mut st = self.state.lock().await;
        st.failed.remove(id);
        self.persist_state(&mut st, id, RuleState::Stopped)?;
        Ok(self.view(&st, id))
    }

    /// Stops and starts a rule again; `reset` starts it with empty state.
    pub async fn restart_rule(&self, id: &str, reset: bool) -> Result<RuleView, NodeError> {
        let _turn = self.rule_turn(id).await;
        self.ensure_rule(&*self.state.lock().await, id)?;
        self.halt(id).await;
        let rule = self.launch(id, reset).await?;
        let mut st = self.state.lock().await;
        self.set_running(&mut st, id, rule);
        self.persist_state(&mut st, id, RuleState::Running)?;
        Ok(self.view(&st, id))
    }

    pub(super) fn record<'a>(st: &'a State, id: &str) -> Result<&'a RuleRecord, NodeError> {
        st.registry
            .catalog
            .rules
            .get(id)
            .ok_or_else(|| NodeError::NotFound {
                kind: "rule",
                name: id.to_owned(),
            })
    }

    pub(super) fn ensure_rule(&self, st: &State, id: &str) -> Result<(), NodeError> {
        Self::record(st, id).map(|_| ())
    }

    pub(super) fn view(&self, st: &State, id: &str) -> RuleView {
        let rec = &st.registry.catalog.rules[id];
        let failed = st.failed.get(id).cloned();
        RuleView {
            id: id.to_owned(),
            node: self.name.get().cloned(),
            sql: weir_core::redact::secrets(&rec.sql).into_owned(),
            options: rec.options.clone(),
            state: match (&failed, st.running.contains_key(id)) {
                _ if st.starting.contains(id) => "STARTING",
                (Some(_), false) => "FAILED",
                _ => state_name(rec.state),
            },
            last_error: failed.map(|e| weir_core::redact::secrets(&e).into_owned()),
            moves: rec.moves.clone(),
            job: rec.job.clone(),
        }
    }

    /// Every rule.
    pub async fn rules(&self) -> Vec<RuleView> {
        let st = self.state.lock().await;
        st.registry
            .catalog
            .rules
            .keys()
            .map(|id| self.view(&st, id))
            .collect()
    }

    /// [`Node::rules`] with each rule's text as written, secrets and all: what a heartbeat
    /// carries to the control plane (only with the cluster secret), which reinstalls the rules
    /// of a lost node elsewhere from it. Never for listings.
    pub async fn rules_as_written(&self) -> Vec<RuleView> {
        let st = self.state.lock().await;
        (st.registry.catalog.rules.iter())
            .map(|(id, rec)| RuleView {
                sql: rec.sql.clone(),
                ..self.view(&st, id)
            })
            .collect()
    }

    /// The rule `id`, with its paper job record if it is one.
    pub async fn rule(&self, id: &str) -> Result<(RuleView, Option<JobRecord>), NodeError> {
        let st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        Ok((
            self.view(&st, id),
            st.registry.catalog.rules[id].job.clone(),
        ))
    }

    /// The live status of rule `id`.
    pub async fn status(&self, id: &str) -> Result<RuleStatus, NodeError> {
        // What the node holds is copied out under its lock; compiling and reading the disk
        // happen after it is let go.
        let (view, rec, texts, live) = {
            let st = self.state.lock().await;
            let rec = Self::record(&st, id)?.clone();
            let live = st
                .running
                .get(id)
                .map(|l| (l.rule.metrics().clone(), l.since));
            (self.view(&st, id), rec, Self::catalog_texts(&st), live)
        };
        let (inputs, outputs) = (self.compiled.rule(&texts, id, &rec.sql))
            .map(|p| rule::boundary(&p))
            .unwrap_or_default();
        let m = live.as_ref().map(|l| &l.0);
        let failure = m.and_then(|m| m.failure.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let checkpoint = match m {
            Some(m) => m
                .checkpoint
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            None => {
                let newest = self.checkpoints.latest(id).ok().flatten();
                CheckpointStatus {
                    delivery: rec.options.delivery.name(),
                    interval_ms: rec.options.interval_ms().unwrap_or(1000),
                    epoch: newest.as_ref().map_or(0, |r| r.checkpoint.epoch),
                    state_bytes: newest.as_ref().map_or(0, |r| r.bytes),
                    max_state_bytes: rec.options.max_state_bytes,
                    ..CheckpointStatus::default()
                }
            }
        };
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Ok(RuleStatus {
            id: id.to_owned(),
            node: self.name.get().cloned(),
            state: if failure.is_some() {
                "FAILED"
            } else {
                view.state
            },
            last_error: failure
                .or(view.last_error)
                .or_else(|| m.and_then(|m| m.connector_error()))
                .map(|e| weir_core::redact::secrets(&e).into_owned()),
            uptime_ms: live
                .as_ref()
                .map_or(0, |l| l.1.elapsed().as_millis() as u64),
            inputs,
            outputs,
            dead_letters: m.map_or(0, |m| load(&m.dead_letters)),
            last_dead_letter: m.and_then(|m| {
                m.last_dead_letter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            }),
            late_events: m.map_or(0, |m| load(&m.late)),
            dead_letter_topic: rule::dead_letter_topic(id),
            operators: m.map(|m| m.operators()).unwrap_or_default(),
            checkpoint,
        })
    }

    /// The rule's newest intact checkpoint in its file form: state, positions and staged
    /// results, for backups and for moving the rule.
    pub async fn export_checkpoint(&self, id: &str) -> Result<Vec<u8>, NodeError> {
        let st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        let newest = self
            .checkpoints
            .latest(id)?
            .ok_or_else(|| NodeError::NotFound {
                kind: "checkpoint of rule",
                name: id.to_owned(),
            })?;
        Ok(newest.checkpoint.encode()?)
    }

    /// Makes an exported checkpoint the rule's newest, so its next start resumes from it. The
    /// rule must be stopped.
    pub async fn import_checkpoint(&self, id: &str, bytes: &[u8]) -> Result<Saved, NodeError> {
        let st = self.state.lock().await;
        self.ensure_rule(&st, id)?;
        if st.running.contains_key(id) {
            return Err(NodeError::Conflict(format!(
                "rule '{id}' is running; stop it before importing a checkpoint"
            )));
        }
        let mut c = Checkpoint::decode(bytes).map_err(|e| NodeError::invalid(e.to_string()))?;
        let newest = self
            .checkpoints
            .latest(id)?
            .map_or(0, |r| r.checkpoint.epoch);
        c.rule = id.to_owned();
        c.epoch = c.epoch.max(newest + 1);
        Ok(self.checkpoints.save(&c)?)
    }

    /// The data directory, where job configuration files are materialised.
    pub async fn write_job_file(&self, name: &str, body: &[u8]) -> Result<(), NodeError> {
        let st = self.state.lock().await;
        crate::registry::write_atomic(&st.registry.job_file(name)?, body)?;
        Ok(())
    }

    /// Removes a job file [`Node::write_job_file`] wrote (an installation that failed).
    pub async fn remove_job_file(&self, name: &str) {
        let st = self.state.lock().await;
        if let Ok(path) = st.registry.job_file(name) {
            let _ = std::fs::remove_file(path);
        }
    }
}
