//! `/v1/templates`: the seed paper's rule templates, listed and instantiated.

use super::*;

pub(super) async fn list_templates() -> Json<&'static [weir_lang::templates::Template]> {
    Json(weir_lang::templates::TEMPLATES)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstantiateBody {
    id: String,
    params: BTreeMap<String, Json_>,
    #[serde(default)]
    options: RuleOptions,
    /// Return the rule text without installing it.
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn instantiate_template(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Result<Json<InstantiateBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Json_>), ApiError> {
    let Json(b) = body?;
    let sql = weir_lang::templates::instantiate(&name, &b.params)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if b.dry_run {
        node.validate_rule(&sql).await?;
        return Ok((
            axum::http::StatusCode::OK,
            Json(json!({"id": b.id, "sql": sql})),
        ));
    }
    let view = node.install_rule(&b.id, &sql, b.options, None).await?;
    Ok((axum::http::StatusCode::CREATED, Json(json!(view))))
}
