//! Reading a stream's `WITH (...)` options against its connector's spec: every option must be
//! one every stream takes or one the connector declares, each value must be of its declared
//! kind, and absent options take their declared default. Every problem is collected, so a
//! stream's mistakes are reported at once.

use std::collections::BTreeMap;

use weir_lang::diag::closest;
use weir_lang::STREAM_OPTIONS;

use crate::registry::CONNECTORS;
use crate::spec::{ConnectorSpec, OptionSpec};

/// A problem with a stream's connector settings, and the option it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionProblem {
    /// The option concerned.
    pub option: String,
    /// What is wrong with it.
    pub message: String,
    /// What to write instead, when there is something to say.
    pub hint: Option<String>,
}

/// A stream's options, read against its connector's spec.
pub(crate) struct Opts<'a> {
    map: &'a BTreeMap<String, String>,
    spec: &'static ConnectorSpec,
    pub(crate) problems: Vec<OptionProblem>,
}

impl<'a> Opts<'a> {
    /// Checks every option of `map` against `spec` (names and kinds).
    pub fn new(map: &'a BTreeMap<String, String>, spec: &'static ConnectorSpec) -> Opts<'a> {
        let mut o = Opts {
            map,
            spec,
            problems: Vec::new(),
        };
        for (key, value) in map {
            if STREAM_OPTIONS.iter().any(|(n, _)| n == key) {
                continue;
            }
            match spec.option(key) {
                Some(opt) => {
                    if let Some(message) = opt.kind.problem(key, value) {
                        o.fault(key, message);
                    }
                }
                None => o.unknown(key),
            }
        }
        o
    }

    /// Records a problem with option `key`.
    pub fn fault(&mut self, key: &str, message: String) {
        self.problems.push(OptionProblem {
            option: key.to_owned(),
            message,
            hint: None,
        });
    }

    /// An option that is neither every stream's nor this connector's.
    fn unknown(&mut self, key: &str) {
        let own: Vec<&str> = self.spec.all_options().map(|o| o.name).collect();
        let common: Vec<&str> = STREAM_OPTIONS.iter().map(|(n, _)| *n).collect();
        let takes = format!(
            "connector '{}' takes {} (and {})",
            self.spec.name,
            own.join(", "),
            common.join(", ")
        );
        let elsewhere = CONNECTORS
            .iter()
            .find(|c| c.name != self.spec.name && c.option(key).is_some());
        let (message, hint) = match elsewhere {
            Some(other) => (
                format!(
                    "option '{key}' belongs to connector '{}', not '{}'",
                    other.name, self.spec.name
                ),
                takes,
            ),
            None => (
                format!("unknown stream option '{key}'"),
                closest(key, own.iter().chain(&common).copied())
                    .map(|c| format!("did you mean '{c}'?"))
                    .unwrap_or(takes),
            ),
        };
        self.problems.push(OptionProblem {
            option: key.to_owned(),
            message,
            hint: Some(hint),
        });
    }

    /// The declaration of option `key`; connectors read only options they declare.
    fn declared(&self, key: &str) -> &'static OptionSpec {
        self.spec.option(key).unwrap_or_else(|| {
            panic!(
                "connector '{}' reads option '{key}' without declaring it",
                self.spec.name
            )
        })
    }

    /// The option's value as written, if given: one of the connector's or every stream's.
    pub fn get(&self, key: &str) -> Option<&str> {
        if !STREAM_OPTIONS.iter().any(|(n, _)| *n == key) {
            self.declared(key);
        }
        self.map.get(key).map(String::as_str)
    }

    /// The option's value when it fits its declared kind, else its default (a value that does
    /// not fit was reported by [`Opts::new`]).
    #[cfg(any(
        feature = "mqtt",
        feature = "amqp",
        feature = "nats",
        feature = "kafka",
        feature = "http"
    ))]
    pub fn fitting(&self, key: &str) -> Option<&str> {
        let declared = self.declared(key);
        let given = self
            .get(key)
            .filter(|v| declared.kind.problem(key, v).is_none());
        given.or(declared.default)
    }

    /// A required option's value (`""` after recording its absence).
    pub fn required(&mut self, key: &str) -> &str {
        match self.map.get(key) {
            Some(v) => v,
            None => {
                self.fault(key, format!("option '{key}' is required"));
                ""
            }
        }
    }

    /// A `Kind::Bool` option, or its default.
    #[cfg(feature = "amqp")]
    pub fn bool(&self, key: &str) -> bool {
        self.fitting(key)
            .and_then(crate::spec::parse_bool)
            .unwrap_or(false)
    }

    /// A `Kind::Int` option, or its default.
    #[cfg(any(
        feature = "mqtt",
        feature = "amqp",
        feature = "nats",
        feature = "kafka"
    ))]
    pub fn number<T: std::str::FromStr + Default>(&self, key: &str) -> T {
        (self.fitting(key))
            .and_then(|v| v.trim().parse::<T>().ok())
            .unwrap_or_default()
    }

    /// A `Kind::OneOf` option in lower case, or its default.
    #[cfg(any(feature = "mqtt", feature = "amqp", feature = "http"))]
    pub fn word(&self, key: &str) -> String {
        self.fitting(key).unwrap_or_default().to_ascii_lowercase()
    }

    /// The `url` option parsed, or its default.
    #[cfg(any(
        feature = "mqtt",
        feature = "amqp",
        feature = "nats",
        feature = "kafka"
    ))]
    pub fn url(&self) -> crate::live::Url {
        let url = self.fitting("url").expect("url options have defaults");
        crate::live::Url::parse(url).expect("URLs that fit their kind parse")
    }
}

/// The connector a stream names (`embedded` when it names none), or why there is none.
pub(crate) fn connector_of(
    options: &BTreeMap<String, String>,
) -> Result<&'static ConnectorSpec, OptionProblem> {
    let name = options.get("connector").map_or("embedded", String::as_str);
    let problem = |message: String, hint: Option<String>| OptionProblem {
        option: "connector".to_owned(),
        message,
        hint,
    };
    match crate::registry::find(name) {
        Some(spec) if spec.built() => Ok(spec),
        Some(spec) => Err(problem(
            format!(
                "this weir was built without its {} connector (cargo feature '{}')",
                spec.name,
                spec.feature.unwrap_or(spec.name)
            ),
            Some("use a build with default features, or another connector".to_owned()),
        )),
        None => {
            let names: Vec<&str> = CONNECTORS.iter().map(|c| c.name).collect();
            let hint = closest(name, names.iter().copied())
                .map(|c| format!("did you mean '{c}'?"))
                .unwrap_or_else(|| format!("connectors: {}", names.join(", ")));
            Err(problem(format!("unknown connector '{name}'"), Some(hint)))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Endpoint;
    use std::collections::BTreeMap;

    fn build(pairs: &[(&str, &str)]) -> (Endpoint, Vec<super::OptionProblem>) {
        let options: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Endpoint::build("s", &options)
    }

    #[cfg(all(feature = "amqp", feature = "mqtt"))]
    #[test]
    fn absent_options_take_the_spec_defaults() {
        let (ep, problems) = build(&[("connector", "amqp"), ("exchange", "x")]);
        assert_eq!(problems, []);
        let Endpoint::Amqp(c) = ep else { panic!() };
        assert_eq!((c.prefetch, c.durable), (256, true));
        assert_eq!(c.exchange_type, "direct");
        assert_eq!(c.url, "amqp://127.0.0.1:5672/%2f");
        let (ep, _) = build(&[("connector", "mqtt"), ("topic", "t")]);
        let Endpoint::Mqtt(c) = ep else { panic!() };
        assert_eq!((c.qos, c.v5, c.persistent, c.port), (0, false, false, 1883));
    }

    #[cfg(all(feature = "amqp", feature = "mqtt", feature = "http"))]
    #[test]
    fn values_are_checked_against_their_declared_kind() {
        let (_, problems) = build(&[
            ("connector", "amqp"),
            ("exchange", "x"),
            ("durable", "maybe"),
            ("exchange_type", "Topic"),
            ("prefetch", "0"),
        ]);
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "option 'durable' = 'maybe' is not true or false",
                "option 'prefetch' = '0' must be a number from 1 to 65535",
            ],
            "a word is taken in any case"
        );
        let (ep, problems) = build(&[("connector", "mqtt"), ("topic", "t"), ("version", "5")]);
        assert_eq!(problems, []);
        assert!(matches!(ep, Endpoint::Mqtt(c) if c.v5));
        let (_, problems) = build(&[("connector", "http"), ("method", "GET")]);
        assert_eq!(
            problems[0].message,
            "option 'method' = 'GET': use POST, PUT"
        );
    }

    #[cfg(feature = "nats")]
    #[test]
    fn an_option_of_another_connector_or_none_is_refused_with_a_hint() {
        let (_, problems) = build(&[("connector", "nats"), ("topic", "t"), ("qos", "1")]);
        assert_eq!(
            problems[0].message,
            "option 'qos' belongs to connector 'mqtt', not 'nats'"
        );
        assert!(problems[0]
            .hint
            .as_ref()
            .unwrap()
            .starts_with("connector 'nats' takes url, topic, subject"));
        let (_, problems) = build(&[("topc", "t")]);
        assert_eq!(problems[0].message, "unknown stream option 'topc'");
        assert_eq!(problems[0].hint.as_deref(), Some("did you mean 'topic'?"));
        let (_, problems) = build(&[("connector", "Kafkaa")]);
        assert_eq!(problems[0].hint.as_deref(), Some("did you mean 'kafka'?"));
    }

    /// A build without a connector's feature refuses streams naming it, and says which feature
    /// builds it in (CI runs this without default features, where every one is left out).
    #[test]
    fn a_connector_left_out_of_the_build_is_refused_with_its_feature() {
        for spec in crate::registry::CONNECTORS.iter().filter(|c| !c.built()) {
            let (_, problems) = build(&[("connector", spec.name)]);
            let feature = spec
                .feature
                .expect("connectors without a feature are always built");
            assert_eq!(
                problems[0].message,
                format!(
                    "this weir was built without its {} connector (cargo feature '{feature}')",
                    spec.name
                )
            );
        }
    }
}
