//! Programs compiled from the catalogue, kept until their text or the catalogue's streams
//! change: a status request, a stream's deletion, a move or the MQTT endpoint's topic check
//! reads a rule's program without compiling it, and its streams, again. Compiling happens
//! outside the cache's lock; only the lookups and the insertions hold it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_lang::plan::StreamDef;
use weir_lang::Program;

use super::{compile_against, has_rules, streams_of, NodeError};

#[derive(Default)]
pub(crate) struct Compiled {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The stream declarations `streams` and `rules` were compiled from.
    texts: Vec<String>,
    streams: Arc<Vec<StreamDef>>,
    /// Each rule's text and its program.
    rules: HashMap<String, (String, Arc<Program>)>,
}

impl Compiled {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The streams the catalogue's declarations `texts` define.
    pub fn streams(&self, texts: &[String]) -> Arc<Vec<StreamDef>> {
        {
            let inner = self.lock();
            if inner.texts == texts {
                return inner.streams.clone();
            }
        }
        let streams = Arc::new(streams_of(texts));
        let mut inner = self.lock();
        if inner.texts != texts {
            inner.texts = texts.to_vec();
            inner.streams = streams.clone();
            inner.rules.clear();
        }
        streams
    }

    /// Rule `id`'s program from `sql`, against the catalogue of `texts`.
    pub fn rule(&self, texts: &[String], id: &str, sql: &str) -> Result<Arc<Program>, NodeError> {
        let streams = self.streams(texts);
        if let Some((text, program)) = self.lock().rules.get(id) {
            if text == sql {
                return Ok(program.clone());
            }
        }
        let program = Arc::new(has_rules(
            compile_against(&streams, &format!("rule {id}"), sql)?,
            id,
        )?);
        let mut inner = self.lock();
        // Kept only if the catalogue is still the one it was compiled against.
        if Arc::ptr_eq(&inner.streams, &streams) {
            inner
                .rules
                .insert(id.to_owned(), (sql.to_owned(), program.clone()));
        }
        Ok(program)
    }

    /// Forgets rule `id`'s program (the rule is gone).
    pub fn forget(&self, id: &str) {
        self.lock().rules.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_is_compiled_again_only_when_its_text_or_the_catalogue_changes() {
        let c = Compiled::default();
        let mut texts = vec!["CREATE STREAM i (x BIGINT)".to_owned()];
        let rule = "INSERT INTO o SELECT x FROM i WHERE x > 1";
        let first = c.rule(&texts, "r", rule).unwrap();
        assert!(Arc::ptr_eq(&first, &c.rule(&texts, "r", rule).unwrap()));
        let changed = c
            .rule(&texts, "r", "INSERT INTO o SELECT x FROM i")
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        texts.push("CREATE STREAM j (y BIGINT)".to_owned());
        let again = c
            .rule(&texts, "r", "INSERT INTO o SELECT x FROM i")
            .unwrap();
        assert!(!Arc::ptr_eq(&changed, &again), "the catalogue changed");
        assert!(c
            .rule(&texts, "r", "INSERT INTO o SELECT z FROM i")
            .is_err());
        c.forget("r");
        assert!(c.lock().rules.is_empty());
    }
}
