//! Binding `CREATE STREAM`: columns, time, keys and options; streams rules only write.

use super::*;

impl Binder {
    pub(super) fn create_stream(&mut self, ct: &CreateTable, pos: Pos) {
        let name = object_name(&ct.name);
        if let Some(i) = self
            .program
            .streams
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(&name))
        {
            let hint = if i < self.known {
                format!("the node already has a stream '{name}': use it without declaring it, or pick another name")
            } else {
                format!(
                    "it is first declared on line {}",
                    self.program.streams[i].pos.line
                )
            };
            self.err(pos, format!("stream '{name}' is declared twice"), hint);
            return;
        }
        let mut def = StreamDef::implied(&name);
        def.declared = true;
        def.pos = pos;
        if !ct.columns.is_empty() {
            let mut cols = Vec::new();
            let mut computed = Vec::new();
            for c in &ct.columns {
                let mut not_null = false;
                for o in &c.options {
                    match &o.option {
                        ast::ColumnOption::NotNull => not_null = true,
                        ast::ColumnOption::Null => {}
                        ast::ColumnOption::Generated {
                            generation_expr: Some(e),
                            ..
                        } => computed.push((c.name.clone(), e.clone())),
                        other => self.err(
                            c.name.span,
                            format!("column option {other} is not supported on streams"),
                            "columns take a type and NOT NULL; computed columns are written name AS expression",
                        ),
                    }
                }
                if computed.last().is_some_and(|(n, _)| *n == c.name) {
                    continue;
                }
                let ty_text = c.data_type.to_string();
                match DataType::from_sql(&ty_text) {
                    Some(ty) => cols.push(Column {
                        name: Arc::from(c.name.value.as_str()),
                        ty,
                        not_null,
                    }),
                    None => self.err(
                        c.name.span,
                        format!("unknown type {ty_text} for column {}", c.name.value),
                        "use BOOLEAN, BIGINT, DOUBLE, STRING, TIMESTAMP or JSON",
                    ),
                }
            }
            // Computed columns see the declared ones (and those computed before them).
            for (n, e) in computed {
                def.columns = Some(cols.clone());
                let mut ctx = Ctx::new(Shape::Single {
                    stream: def.clone(),
                    alias: None,
                });
                let bound = self.bind_expr(&e, &mut ctx);
                let name: Arc<str> = Arc::from(n.value.as_str());
                cols.push(Column {
                    name: name.clone(),
                    ty: DataType::Any,
                    not_null: false,
                });
                def.computed.push((name, bound));
            }
            def.columns = Some(cols);
        }
        let options = match &ct.table_options {
            CreateTableOptions::With(o) | CreateTableOptions::Options(o) => o.clone(),
            _ => Vec::new(),
        };
        let mut time_set = None;
        let mut given = std::collections::BTreeSet::new();
        for opt in &options {
            let SqlOption::KeyValue { key, value } = opt else {
                continue;
            };
            let k = key.value.to_ascii_lowercase();
            if !given.insert(k.clone()) {
                self.err(
                    key.span,
                    format!("option {k} is given twice"),
                    "give each option once (WATERMARK FOR sets timestamp and watermark)",
                );
                continue;
            }
            let Some(v) = option_text(value) else {
                self.err(
                    key.span,
                    format!("option {k} needs a literal value"),
                    "write e.g. watermark = '2 seconds'",
                );
                continue;
            };
            let duration = |b: &mut Binder| match weir_core::parse_duration(&v) {
                Ok(ms) if ms >= 0 => Some(ms),
                Ok(_) => None,
                Err(e) => {
                    b.err(
                        key.span,
                        format!("option {k}: {e}"),
                        "write a duration such as '2 seconds'",
                    );
                    None
                }
            };
            match k.as_str() {
                "timestamp" => {
                    if def.columns.is_some() && def.column(&v).is_none() {
                        let cols: Vec<String> = def
                            .columns
                            .iter()
                            .flatten()
                            .map(|c| c.name.to_string())
                            .collect();
                        let hint = closest(&v, cols.iter().map(String::as_str))
                            .map(|c| format!("did you mean '{c}'?"))
                            .unwrap_or_else(|| format!("the columns are: {}", cols.join(", ")));
                        self.err(
                            key.span,
                            format!("timestamp column '{v}' is not a column of {name}"),
                            hint,
                        );
                    }
                    let col = def
                        .column(&v)
                        .map(|c| c.name.clone())
                        .unwrap_or_else(|| Arc::from(v.as_str()));
                    def.timestamp = Some(col);
                }
                "watermark" => def.watermark_ms = duration(self).unwrap_or(0),
                "allowed_lateness" => def.allowed_lateness_ms = duration(self).unwrap_or(0),
                "time" => match v.to_ascii_lowercase().as_str() {
                    "event" => time_set = Some(TimeMode::Event),
                    "processing" => time_set = Some(TimeMode::Processing),
                    _ => self.err(
                        key.span,
                        format!("time = '{v}' is not a time mode"),
                        "use time = 'event' or time = 'processing'",
                    ),
                },
                "key" => def.key = Some(Arc::from(v.as_str())),
                "order" => match v.to_ascii_lowercase().as_str() {
                    "event" | "event_time" => def.arrival_order = false,
                    "arrival" => def.arrival_order = true,
                    _ => self.err(
                        key.span,
                        format!("order = '{v}' is not an order"),
                        "use order = 'event' (hold events until the watermark, the default) or order = 'arrival'",
                    ),
                },
                "received_at" => def.received_at = Some(Arc::from(v.as_str())),
                "sent_at" => def.sent_at = Some(Arc::from(v.as_str())),
                _ => {}
            }
            def.option_pos.insert(k.clone(), Pos::from(key.span));
            def.options.insert(k, v);
        }
        def.time = match (time_set, &def.timestamp) {
            (Some(TimeMode::Event), None) => {
                self.err(
                    pos,
                    format!("stream {name} uses event time but names no timestamp column"),
                    "add timestamp = '<column>' to WITH (...)",
                );
                TimeMode::Event
            }
            (Some(t), _) => t,
            (None, Some(_)) => TimeMode::Event,
            (None, None) => TimeMode::Processing,
        };
        self.program.streams.push(def);
    }

    pub(super) fn implied_sink(&mut self, ins: &Insert) {
        let TableObject::TableName(name) = &ins.table else {
            return;
        };
        let name = object_name(name);
        if self.program.stream(&name).is_none() {
            self.program.streams.push(StreamDef::implied(&name));
        }
    }

    /// A stream only rules write has no declared time attribute; when a rule passes its input's
    /// timestamp column through unchanged, that column names the event time of its output too,
    /// so later rules in the file can bound joins and order patterns by it.
    pub(super) fn infer_sink_time(&mut self, sink: &str, input: &Input, body: &Body) {
        let Input::Stream(name) = input else {
            return;
        };
        let Some(ts) = self.program.stream(name).and_then(|s| s.timestamp.clone()) else {
            return;
        };
        let Body::Project(p) = body else {
            return;
        };
        let passes = p.items.iter().any(|i| match i {
            SelectItem::Star => true,
            SelectItem::Expr(n, Expr::Field(f)) => **n == *ts && **f == *ts,
            _ => false,
        });
        if let Some(def) = self
            .program
            .streams
            .iter_mut()
            .find(|s| s.name.eq_ignore_ascii_case(sink))
        {
            if passes && !def.declared && def.timestamp.is_none() {
                def.timestamp = Some(ts);
            }
        }
    }
}
