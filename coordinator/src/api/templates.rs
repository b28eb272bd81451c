//! `/api/v1/templates`: the built-in task templates ([`crate::templates`]), listed and rendered
//! into submission bodies. Rendering submits nothing; the body is then submitted like any other.

use ambient_protocol::{RenderedTemplate, TemplateInfo, TemplateRender};
use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;

use super::Failure;
use crate::templates::{RenderError, Templates};

/// The built-in templates, or a 500 when they do not parse (the tests keep that from shipping).
fn templates() -> Result<&'static Templates, Failure> {
    Templates::bundled().map_err(|e| {
        tracing::error!(error = %e, "Built-in templates do not parse.");
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })
}

impl From<RenderError> for Failure {
    fn from(e: RenderError) -> Failure {
        let status = match e {
            RenderError::UnknownTemplate { .. } => StatusCode::NOT_FOUND,
            RenderError::UnknownParam { .. } | RenderError::InvalidParam { .. } => {
                StatusCode::BAD_REQUEST
            }
        };
        Failure::new(status, e.code(), e.to_string())
    }
}

/// `GET /api/v1/templates`.
pub(super) async fn list_templates() -> Result<Json<Vec<TemplateInfo>>, Failure> {
    Ok(Json(
        templates()?
            .list()
            .iter()
            .map(|t| t.info().clone())
            .collect(),
    ))
}

/// `POST /api/v1/templates/{name}/render`.
pub(super) async fn render_template(
    Path(name): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<RenderedTemplate>, Failure> {
    let template = templates()?.get(&name)?;
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, "invalid_request", m);
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    // serde would also read a struct from an array; the body is an object.
    if !body.is_object() {
        return Err(bad(
            "the body must be a JSON object, {\"set\": {...}}".into()
        ));
    }
    let req: TemplateRender = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
    let submission = template.render(&req.set)?;
    Ok(Json(RenderedTemplate { submission }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The OpenAPI document names exactly the built-in templates in the render path's `name`.
    #[test]
    fn openapi_lists_the_templates_by_name() {
        let spec: serde_json::Value = serde_json::from_str(super::super::OPENAPI).unwrap();
        let params = &spec["paths"]["/api/v1/templates/{name}/render"]["post"]["parameters"];
        let names: Vec<&str> = params[0]["schema"]["enum"]
            .as_array()
            .expect("an enum of template names")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let bundled: Vec<&str> = Templates::bundled()
            .unwrap()
            .list()
            .iter()
            .map(|t| t.info().name.as_str())
            .collect();
        assert_eq!(names, bundled);
    }

    #[tokio::test]
    async fn render_answers_404_and_400_with_their_codes() {
        let e = render_template(Path("nope".into()), Ok(Json(json!({}))))
            .await
            .err()
            .unwrap();
        assert_eq!(
            (e.0, e.1.error.as_str()),
            (StatusCode::NOT_FOUND, "unknown_template")
        );
        let e = render_template(
            Path("pi".into()),
            Ok(Json(json!({"set": {"samples": "lots"}}))),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(
            (e.0, e.1.error.as_str()),
            (StatusCode::BAD_REQUEST, "invalid_template_param")
        );
        // serde reads a struct from an array too; the route does not.
        for body in [
            json!([]),
            json!([{}]),
            json!({"set": []}),
            json!({"sets": {}}),
        ] {
            let e = render_template(Path("pi".into()), Ok(Json(body.clone())))
                .await
                .err()
                .unwrap();
            assert_eq!(
                (e.0, e.1.error.as_str()),
                (StatusCode::BAD_REQUEST, "invalid_request"),
                "{body}"
            );
        }
        let Ok(Json(ok)) = render_template(Path("pi".into()), Ok(Json(json!({})))).await else {
            panic!("pi renders with its defaults");
        };
        assert_eq!(ok.submission["task_type"], "computation");
    }
}
