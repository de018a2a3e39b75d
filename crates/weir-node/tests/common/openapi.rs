//! The node's OpenAPI document as tests use it: a real answer checked against the schema the
//! document gives for its route, method and status.

use reqwest::Method;
use serde_json::{json, Value};

use super::TestNode;

/// The document, and a check of one answer against it.
pub struct Document(Value);

impl Document {
    pub fn load() -> Document {
        Document(serde_json::from_str(weir_node::api::OPENAPI).expect("the document is JSON"))
    }

    /// The schema of `route`'s answer to `method` with `status` (`4XX` covers client errors).
    fn schema(&self, route: &str, method: &Method, status: u16) -> Value {
        let responses = &self.0["paths"][route][method.as_str().to_lowercase()]["responses"];
        let answer = match &responses[status.to_string()] {
            Value::Null if (400..500).contains(&status) => &responses["4XX"],
            a => a,
        };
        let schema = &answer["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {route}: the document gives no JSON schema for status {status}"
        );
        // References point into the document's components: the schema carries them along.
        json!({"$ref": "#/$defs/answer", "$defs": {"answer": schema}, "components": self.0["components"]})
    }

    /// Calls `path` (an instance of `route`) and checks the answer; returns it.
    pub async fn check(
        &self,
        node: &TestNode,
        method: Method,
        route: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, answer) = node.call(method.clone(), path, body).await;
        let schema = self.schema(route, &method, status);
        let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&answer)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} answered {status} {answer}\nwhich the document does not allow: {errors:#?}"
        );
        (status, answer)
    }
}
