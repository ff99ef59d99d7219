//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "policy-values", description = "A scoped policy-values store: typed, bounded, audited business constants."),
    paths(
        super::read::keys,
        super::read::resolve,
        super::read::snapshot,
        super::read::healthz,
        super::read::readyz,
        super::admin::write,
        super::admin::cancel,
        super::admin::overrides,
        super::audit::audit_logs,
        super::audit::verify,
        super::audit::head,
        super::audit::history,
        super::preview::preview,
        super::change_requests::list,
        super::change_requests::show,
        super::change_requests::approve,
        super::change_requests::reject,
        super::change_requests::withdraw,
    ),
    components(schemas(super::error::ErrorBody, super::admin::WriteBody, super::admin::CancelBody,
                        super::change_requests::DecisionBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme every endpoint but health uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("bearer", scheme);
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
