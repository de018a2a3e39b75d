//! The catalogue: declaring, finding and deleting streams, and compiling rule text against
//! the streams declared (each program once per change, see `compiled`).

use super::*;

/// The streams the catalogue's declarations define.
pub(super) fn streams_of(texts: &[String]) -> Vec<StreamDef> {
    texts
        .iter()
        .filter_map(|t| weir_lang::compile(t).ok())
        .flat_map(|p| p.streams)
        .collect()
}

/// Compiles text against `catalog`, with the connector settings of the streams it declares
/// checked as `weir check` checks them.
pub(super) fn compile_against(
    catalog: &[StreamDef],
    what: &str,
    sql: &str,
) -> Result<Program, NodeError> {
    if sql.len() > MAX_TEXT {
        return Err(NodeError::Limit(format!(
            "{what}: the text has {} bytes; rule and stream texts are at most {MAX_TEXT}",
            sql.len()
        )));
    }
    compile_checked(sql, catalog, |p, from| {
        stream_problems(p, from, Target::Node)
    })
    .map_err(|d| NodeError::from_diagnostics(what, sql, d))
}

/// A rule's program must hold at least one `INSERT INTO ... SELECT`.
pub(super) fn has_rules(program: Program, id: &str) -> Result<Program, NodeError> {
    if program.rules.is_empty() {
        return Err(NodeError::invalid(format!(
            "rule {id} has no INSERT INTO ... SELECT statement"
        )));
    }
    Ok(program)
}

impl Node {
    pub(super) fn catalog_streams(&self, st: &State) -> Arc<Vec<StreamDef>> {
        self.compiled.streams(&Self::catalog_texts(st))
    }

    /// The catalogue's stream declarations, as text (cheap to copy out of the lock).
    pub(super) fn catalog_texts(st: &State) -> Vec<String> {
        st.registry
            .catalog
            .streams
            .values()
            .map(|s| s.sql.clone())
            .collect()
    }

    /// Compiles request text against the catalogue without holding the node's lock while it
    /// parses, and returns the program with the lock taken, the catalogue unchanged since. A
    /// catalogue that keeps changing meanwhile is a conflict to retry.
    pub(super) async fn compile_unlocked(
        &self,
        what: &str,
        sql: &str,
    ) -> Result<(Program, tokio::sync::MutexGuard<'_, State>), NodeError> {
        for _ in 0..5 {
            let texts = Self::catalog_texts(&*self.state.lock().await);
            let program = compile_against(&self.compiled.streams(&texts), what, sql)?;
            let st = self.state.lock().await;
            if Self::catalog_texts(&st) == texts {
                return Ok((program, st));
            }
        }
        Err(NodeError::Conflict(
            "the node's streams kept changing while the text was checked; send it again".into(),
        ))
    }

    /// Rule `id`'s program from `sql` against the catalogue, compiled once per change.
    pub(super) fn compile_rule(
        &self,
        st: &State,
        id: &str,
        sql: &str,
    ) -> Result<Arc<Program>, NodeError> {
        self.compiled.rule(&Self::catalog_texts(st), id, sql)
    }

    /// [`Node::compile_rule`] for request text: parsed outside the lock ([`Node::compile_unlocked`]).
    pub(super) async fn compile_new_rule(
        &self,
        id: &str,
        sql: &str,
    ) -> Result<(Program, tokio::sync::MutexGuard<'_, State>), NodeError> {
        let (program, st) = self.compile_unlocked(&format!("rule {id}"), sql).await?;
        Ok((has_rules(program, id)?, st))
    }

    /// Creates a stream from its `CREATE STREAM` text.
    pub async fn create_stream(&self, sql: &str) -> Result<StreamView, NodeError> {
        let (program, mut st) = self.compile_unlocked("stream", sql).await?;
        let known = st.registry.catalog.streams.len();
        let new: Vec<&StreamDef> = program.streams.iter().skip(known).collect();
        if new.len() != 1 || !program.rules.is_empty() {
            return Err(NodeError::invalid(
                "a stream is created by exactly one CREATE STREAM statement",
            ));
        }
        let def = new[0];
        // Checked with the rest of the text above.
        let endpoint = Endpoint::from_options(&def.name, &def.options)
            .map_err(|e| NodeError::invalid(e.to_string()))?;
        st.registry.catalog.streams.insert(
            def.name.clone(),
            StreamRecord {
                name: def.name.clone(),
                sql: sql.trim().to_owned(),
            },
        );
        st.registry.save_streams()?;
        Ok(view(def, sql, &endpoint))
    }

    /// Every stream.
    pub async fn streams(&self) -> Vec<StreamView> {
        let st = self.state.lock().await;
        st.registry
            .catalog
            .streams
            .values()
            .filter_map(|r| stream_view(&r.sql))
            .collect()
    }

    /// The stream called `name`.
    pub async fn stream(&self, name: &str) -> Result<StreamView, NodeError> {
        let st = self.state.lock().await;
        Self::find_stream(&st, name)
            .and_then(|r| stream_view(&r.sql))
            .ok_or_else(|| NodeError::NotFound {
                kind: "stream",
                name: name.to_owned(),
            })
    }

    pub(super) fn find_stream<'a>(st: &'a State, name: &str) -> Option<&'a StreamRecord> {
        st.registry
            .catalog
            .streams
            .values()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Deletes a stream no rule reads or writes.
    pub async fn delete_stream(&self, name: &str) -> Result<(), NodeError> {
        let mut st = self.state.lock().await;
        let key = Self::find_stream(&st, name)
            .map(|s| s.name.clone())
            .ok_or_else(|| NodeError::NotFound {
                kind: "stream",
                name: name.to_owned(),
            })?;
        let users: Vec<String> = st
            .registry
            .catalog
            .rules
            .values()
            .filter(|r| {
                self.compile_rule(&st, &r.id, &r.sql).is_ok_and(|p| {
                    let (i, o) = rule::boundary(&p);
                    i.iter().chain(&o).any(|s| s.eq_ignore_ascii_case(&key))
                })
            })
            .map(|r| r.id.clone())
            .collect();
        if !users.is_empty() {
            return Err(NodeError::Conflict(format!(
                "stream {key} is used by rule(s) {}; delete them first",
                users.join(", ")
            )));
        }
        st.registry.catalog.streams.remove(&key);
        st.registry.save_streams()?;
        Ok(())
    }

    /// Where HTTP ingest puts a stream's events, and the field its events carry their id in
    /// (the stream's `event_id` option).
    pub async fn ingest_target(&self, name: &str) -> Result<(String, Option<String>), NodeError> {
        let (def, ep) = self.stream_endpoint(name).await?;
        Ok((
            rule::ingest_topic(&def, &ep),
            def.options.get("event_id").cloned(),
        ))
    }

    /// The hub topics where a stream's events are ingested and shown.
    pub async fn stream_topics(&self, name: &str) -> Result<(String, String), NodeError> {
        let (def, ep) = self.stream_endpoint(name).await?;
        Ok((rule::ingest_topic(&def, &ep), rule::tap_topic(&def, &ep)))
    }

    /// A stream and its connector. Besides catalogue streams, this finds streams that only
    /// rules declare or write.
    pub(super) async fn stream_endpoint(
        &self,
        name: &str,
    ) -> Result<(StreamDef, Endpoint), NodeError> {
        let st = self.state.lock().await;
        let in_rules = || {
            st.registry.catalog.rules.values().find_map(|r| {
                let p = self.compile_rule(&st, &r.id, &r.sql).ok()?;
                p.stream(name).cloned()
            })
        };
        let def = (self.catalog_streams(&st).iter())
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .cloned()
            .or_else(in_rules)
            .ok_or_else(|| NodeError::NotFound {
                kind: "stream",
                name: name.to_owned(),
            })?;
        let ep = Endpoint::from_options(&def.name, &def.options)
            .map_err(|e| NodeError::invalid(e.to_string()))?;
        Ok((def, ep))
    }

    // ---- rules ----

    /// The hub topics the rules write their results to (embedded outputs and taps): no MQTT
    /// client may publish there. `cache` keeps each rule's topics with the program they came
    /// from (the `compiled` cache), so a call works out only what changed, outside the
    /// lock.
    pub async fn output_topics(
        &self,
        cache: &mut HashMap<String, (Arc<Program>, Vec<String>)>,
    ) -> std::collections::HashSet<String> {
        let (texts, rules): (Vec<String>, Vec<(String, String)>) = {
            let st = self.state.lock().await;
            let rules = st
                .registry
                .catalog
                .rules
                .values()
                .map(|r| (r.id.clone(), r.sql.clone()))
                .collect();
            (Self::catalog_texts(&st), rules)
        };
        cache.retain(|id, _| rules.iter().any(|(r, _)| r == id));
        for (id, sql) in rules {
            let Ok(program) = self.compiled.rule(&texts, &id, &sql) else {
                cache.remove(&id);
                continue;
            };
            if cache
                .get(&id)
                .is_some_and(|(p, _)| Arc::ptr_eq(p, &program))
            {
                continue;
            }
            let (_, outputs) = rule::boundary(&program);
            let topics = rule::endpoints(&program)
                .map(|eps| {
                    eps.iter()
                        .filter(|(d, _)| outputs.iter().any(|o| o.eq_ignore_ascii_case(&d.name)))
                        .map(|(d, e)| rule::tap_topic(d, e))
                        .collect()
                })
                .unwrap_or_default();
            cache.insert(id, (program, topics));
        }
        cache
            .values()
            .flat_map(|(_, t)| t.iter().cloned())
            .collect()
    }
}

pub(super) fn view(def: &StreamDef, sql: &str, endpoint: &Endpoint) -> StreamView {
    StreamView {
        name: def.name.clone(),
        sql: weir_core::redact::secrets(sql.trim()).into_owned(),
        connector: endpoint.kind(),
        topic: rule::ingest_topic(def, endpoint),
    }
}

pub(super) fn stream_view(sql: &str) -> Option<StreamView> {
    let def = weir_lang::compile(sql).ok()?.streams.into_iter().next()?;
    let ep = Endpoint::from_options(&def.name, &def.options).ok()?;
    Some(view(&def, sql, &ep))
}
