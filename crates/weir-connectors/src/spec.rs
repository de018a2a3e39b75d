//! What a connector declares about itself: its options (name, type, default, what it does),
//! the delivery guarantees it can give as source and sink, whether a rule reading it can move,
//! and what its connection test tries. Each connector writes its [`ConnectorSpec`] in its own
//! module; [`crate::registry`] lists them. Validation, `weir check`, the node, the delivery and
//! move checks and the generated reference (`weir connectors`, `docs/connectors.md`) all read
//! these specs, so they cannot disagree.

use std::fmt::Write as _;

/// A connector's declaration of itself.
#[derive(Debug)]
pub struct ConnectorSpec {
    /// The name written in `WITH (connector = '...')`.
    pub name: &'static str,
    /// One paragraph on what it connects to and how.
    pub summary: &'static str,
    /// The cargo feature that builds it in; `None` when it is always built.
    pub feature: Option<&'static str>,
    /// Its options, in groups (its own, then shared ones such as TLS).
    pub options: &'static [&'static [OptionSpec]],
    /// The best delivery guarantee it gives as a source, and what that takes.
    pub source: &'static str,
    /// The best delivery guarantee it gives as a sink, and what that takes.
    pub sink: &'static str,
    /// Whether a rule reading it can move to another node, and why.
    pub moves: Moves,
    /// What `POST /v1/streams/{name}/check` and a rule's start try before reading.
    pub connection_test: &'static str,
    /// Why a node refuses the connector (`None` when it runs it); `weir run` runs them all.
    pub not_on_node: Option<&'static str>,
}

/// Whether a rule reading a connector's stream can move to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moves {
    /// The other node reads the same source; the text says how nothing is lost.
    Yes(&'static str),
    /// Only this node receives the stream; the text says why.
    No(&'static str),
}

/// One option of a connector.
#[derive(Debug)]
pub struct OptionSpec {
    /// The name written in `WITH (...)`.
    pub name: &'static str,
    /// What values it takes.
    pub kind: Kind,
    /// The value taken when the option is absent, as written in a rule; `None` when there is
    /// none or it depends on other options (then `doc` says which).
    pub default: Option<&'static str>,
    /// What it does, for the reference.
    pub doc: &'static str,
}

/// The type of an option's value, checked before the connector reads it.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Any text.
    Text,
    /// A credential: no problem quotes its value.
    Secret,
    /// An absolute, plain path on the machine the rule runs on.
    Path,
    /// `true`/`yes`/`1` or `false`/`no`/`0`.
    Bool,
    /// A whole number in `min..=max`.
    Int {
        /// The smallest value taken.
        min: i64,
        /// The largest value taken.
        max: i64,
    },
    /// One of these words, in any case.
    OneOf(&'static [&'static str]),
    /// A URL with one of these schemes.
    Url(&'static [&'static str]),
}

impl Kind {
    /// Why `value` is not of this kind (`None` when it is).
    pub fn problem(&self, name: &str, value: &str) -> Option<String> {
        match self {
            Kind::Text | Kind::Secret | Kind::Path => None,
            Kind::Bool => parse_bool(value)
                .is_none()
                .then(|| format!("option '{name}' = '{value}' is not true or false")),
            Kind::Int { min, max } => match value.trim().parse::<i64>() {
                Ok(v) if (*min..=*max).contains(&v) => None,
                _ => Some(format!(
                    "option '{name}' = '{value}' must be a number from {min} to {max}"
                )),
            },
            Kind::OneOf(words) => (!words.iter().any(|w| w.eq_ignore_ascii_case(value)))
                .then(|| format!("option '{name}' = '{value}': use {}", words.join(", "))),
            Kind::Url(schemes) => match crate::live::Url::parse(value) {
                Err(e) => Some(format!("option '{name}': {e}")),
                Ok(u) if schemes.contains(&u.scheme.as_str()) => None,
                Ok(u) => Some(format!(
                    "url scheme '{}' does not fit; use {}",
                    u.scheme,
                    schemes.join(" or ")
                )),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Kind::Text => "text".to_owned(),
            Kind::Secret => "secret".to_owned(),
            Kind::Path => "path".to_owned(),
            Kind::Bool => "true or false".to_owned(),
            Kind::Int { min, max } => format!("{min} to {max}"),
            Kind::OneOf(words) => words.join(" \\| "),
            Kind::Url(schemes) => {
                let s: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
                s.join(" \\| ")
            }
        }
    }
}

/// `true`/`yes`/`1` or `false`/`no`/`0`, in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

impl ConnectorSpec {
    /// Every option, own and shared.
    pub fn all_options(&self) -> impl Iterator<Item = &'static OptionSpec> + '_ {
        self.options.iter().flat_map(|g| g.iter())
    }

    /// The option called `name`.
    pub fn option(&self, name: &str) -> Option<&'static OptionSpec> {
        self.all_options().find(|o| o.name == name)
    }

    /// Whether this weir was built with the connector.
    pub fn built(&self) -> bool {
        self.feature.is_none_or(crate::registry::feature_enabled)
    }

    /// The connector's reference in Markdown: `weir connectors NAME` and `docs/connectors.md`.
    pub fn markdown(&self) -> String {
        let mut out = format!("## `{}`\n\n{}\n\n", self.name, self.summary);
        if let Some(f) = self.feature {
            let _ = writeln!(out, "Built with the cargo feature `{f}` (on by default).\n");
        }
        out += "| option | value | default | what it does |\n|---|---|---|---|\n";
        for o in self.all_options() {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                o.name,
                o.kind.describe(),
                o.default.map_or("—".to_owned(), |d| format!("`{d}`")),
                o.doc
            );
        }
        let moves = match self.moves {
            Moves::Yes(how) => format!("yes: {how}"),
            Moves::No(why) => format!("no: {why}"),
        };
        let _ = write!(
            out,
            "\n- **As a source:** {}\n- **As a sink:** {}\n- **A rule reading it moves:** {moves}\n- **Connection test:** {}\n",
            self.source, self.sink, self.connection_test
        );
        if let Some(why) = self.not_on_node {
            let _ = writeln!(out, "- **On a node:** refused: {why}");
        }
        out
    }
}
