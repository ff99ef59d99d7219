//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/api/v1/openapi.json`. Success answers name their schema
//! (`server::schemas`); the error answers are declared once here, as the
//! shared response `Error`, and given to each operation by what it can
//! refuse (`ErrorResponses`).

use axum::extract::State;
use axum::Json;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{schemas, AppState};

#[derive(OpenApi)]
#[openapi(
    info(title = "policy-values", description = "A scoped policy-values store: typed, bounded, audited business constants."),
    paths(
        super::read::keys,
        super::read::resolve,
        super::read::snapshot,
        super::read::healthz,
        super::read::readyz,
        super::bootstrap::replica,
        super::admin::write,
        super::admin::cancel,
        super::admin::overrides,
        super::admin::counts,
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
    components(schemas(
        super::error::ErrorBody, super::admin::WriteBody, super::admin::CancelBody,
        schemas::Status, schemas::Catalog, schemas::KeyDef, schemas::Bounds, schemas::ValueType,
        schemas::Resolution, schemas::Source, schemas::LevelReport, schemas::LevelState,
        schemas::Snapshot, schemas::SnapshotValue, schemas::ValueRow, schemas::Written, schemas::Unchanged,
        schemas::Override, schemas::Overrides, schemas::KeyCounts, schemas::Counts, schemas::HistoryItem, schemas::History,
        schemas::AuditRecord, schemas::AuditPage, schemas::ChainHead, schemas::Verification, schemas::Image,
        super::change_requests::DecisionBody, schemas::Approval, schemas::ChangeRequest, schemas::ChangeRequestPage,
        schemas::Shadow, schemas::Shadows, schemas::Preview,
    )),
    modifiers(&BearerAuth, &ErrorResponses),
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

/// The name of the shared error response in `components.responses`.
const ERROR: &str = "Error";

/// Declares the error response once (`{code, message, details}`, see
/// docs/api.md) and refers every operation to it for the statuses it can
/// answer: 401 and 403 where a token is needed, 422 where there is a query
/// or a body, what a write adds (400, 404, 409, 413, 415, 429), and 503
/// everywhere (the database is away, or the request timed out).
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        let error = ResponseBuilder::new()
            .description("an error: a stable `code`, a `message` and `details`")
            .content("application/json", body)
            .build();
        openapi.components.get_or_insert_with(Default::default).responses.insert(ERROR.to_string(), error.into());
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    for status in error_statuses(&method, operation) {
                        let reference = RefOr::Ref(Ref::new(format!("#/components/responses/{ERROR}")));
                        operation.responses.responses.entry(status.to_string()).or_insert(reference);
                    }
                }
            }
        }
    }
}

/// The error statuses one operation can answer.
fn error_statuses(method: &HttpMethod, operation: &Operation) -> Vec<u16> {
    let public = operation.security.as_ref().is_some_and(|s| s.iter().all(|r| r == &Default::default()));
    let mut statuses = Vec::new();
    if !public {
        statuses.extend([401, 403]);
    }
    let has_params = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_params || operation.request_body.is_some() {
        statuses.push(422);
    }
    if matches!(method, HttpMethod::Post) {
        statuses.extend([400, 404, 409, 413, 415, 429]);
    } else if operation
        .parameters
        .as_ref()
        .is_some_and(|p| p.iter().any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path)))
    {
        // Something named in the path (a change request by id) may not exist.
        statuses.push(404);
    }
    statuses.push(503);
    statuses
}

/// `GET /api/v1/openapi.json`: the document, made as strict as the server
/// for the catalog it serves now (`openapi_strict`).
pub async fn document(State(state): State<AppState>) -> Json<serde_json::Value> {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    super::openapi_strict::tighten(&mut doc, &state.replica.catalog());
    Json(doc)
}
