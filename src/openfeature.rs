//! The store as an OpenFeature provider (the `openfeature` feature): a
//! service that evaluates flags through the `open-feature` crate reads policy
//! values from a [`PolicyClient`]'s replica, with no network on the way.
//!
//! How an evaluation maps onto the store:
//!
//! - **Context → scope.** The targeting key is the user; the custom fields
//!   `user_id`, `project_id`, `org_id` and `plan` fill the other levels
//!   (strings, or whole numbers written in decimal). `user_id` may stand in
//!   for the targeting key; if both are given they must agree. Other custom
//!   fields are ignored. A field of another type, or an id the store would
//!   refuse (empty, over 256 characters, control characters), is
//!   `INVALID_CONTEXT`.
//! - **Types.** Int, bool and string keys resolve through the matching
//!   call; asking for another type is `TYPE_MISMATCH`, and so is every float
//!   or struct evaluation (the store holds no such values). A key that is not
//!   in the catalog is `FLAG_NOT_FOUND`. A fail-closed key while the client
//!   knows nothing but the catalog defaults is `PROVIDER_NOT_READY`.
//! - **Reason.** `TARGETING_MATCH` when a user, project, org or plan value
//!   won; `STATIC` when the answer is the same for every caller: the admin-set
//!   global value, or the catalog default.
//! - **Variant.** The level that answered: `user`, `project`, `org`, `plan`,
//!   `global` or `default`.
//! - **Flag metadata.** `value_id` (the value row that won) and `scope_id`
//!   (the id at that level), both absent for the catalog default and the
//!   latter for the global level; `effective_at` (RFC 3339) with the row;
//!   always `origin`, where the replica came from (`live`, `snapshot`,
//!   `default`, `fixed`).
//!
//! ```
//! use open_feature::{EvaluationContext, EvaluationReason, OpenFeature};
//! use policy_values::openfeature::PolicyValuesProvider;
//! use policy_values::{Level, PolicyClient, WriteScope};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = PolicyClient::fixed()
//!     .set("allocation.refund_window_days", WriteScope::at(Level::Org, "acme")?, 45)
//!     .build()?;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(PolicyValuesProvider::new(client)).await;
//! let flags = api.create_client();
//!
//! let context = EvaluationContext::default().with_targeting_key("u1").with_custom_field("org_id", "acme");
//! let details = flags.get_int_details("allocation.refund_window_days", Some(&context), None).await.map_err(|e| e.code)?;
//! assert_eq!(details.value, 45);
//! assert_eq!(details.reason, Some(EvaluationReason::TargetingMatch));
//! assert_eq!(details.variant.as_deref(), Some("org"));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, StructValue,
};
use time::format_description::well_known::Rfc3339;

use crate::client::{Origin, PolicyClient, PolicyError};
use crate::domain::{Level, Scope, Value, ValueType};

/// The provider's name, as `ProviderMetadata` reports it.
pub const PROVIDER_NAME: &str = "policy-values";

/// An OpenFeature provider that answers from a [`PolicyClient`]. Cheap to
/// build: it shares the client's replica (clone the client to keep using it
/// beside the provider).
pub struct PolicyValuesProvider {
    client: PolicyClient,
    metadata: ProviderMetadata,
}

impl PolicyValuesProvider {
    /// A provider over `client`.
    pub fn new(client: PolicyClient) -> PolicyValuesProvider {
        PolicyValuesProvider { client, metadata: ProviderMetadata::new(PROVIDER_NAME) }
    }

    /// The client the provider reads from.
    pub fn client(&self) -> &PolicyClient {
        &self.client
    }

    /// Resolves `key` for the context's scope as a value of `requested`.
    fn evaluate(
        &self,
        key: &str,
        context: &EvaluationContext,
        requested: ValueType,
    ) -> EvaluationResult<ResolutionDetails<Value>> {
        let scope = scope_of(context)?;
        let explanation = self.client.explain(&scope, key).map_err(error_of)?;
        let resolution = explanation.resolution;
        if resolution.value_type != requested {
            return Err(error(
                EvaluationErrorCode::TypeMismatch,
                format!("policy key {key} holds {} values, not {requested}", resolution.value_type),
            ));
        }
        let source = resolution.source;
        let reason = match source.level {
            "default" | "global" => EvaluationReason::Static,
            _ => EvaluationReason::TargetingMatch,
        };
        let mut metadata = FlagMetadata::default().with_value("origin", explanation.origin.as_str());
        if let Some(id) = source.value_id {
            metadata.add_value("value_id", id.to_string());
        }
        if let Some(id) = source.scope_id.filter(|id| !id.is_empty()) {
            metadata.add_value("scope_id", id);
        }
        if let Some(at) = source.effective_at.and_then(|at| at.format(&Rfc3339).ok()) {
            metadata.add_value("effective_at", at);
        }
        Ok(ResolutionDetails {
            value: resolution.value,
            variant: Some(source.level.to_string()),
            reason: Some(reason),
            flag_metadata: Some(metadata),
        })
    }

    /// A float or struct evaluation: the store holds neither.
    fn unsupported<T>(&self, key: &str, requested: &str) -> EvaluationResult<ResolutionDetails<T>> {
        match self.client.key_def(key) {
            None => Err(error(EvaluationErrorCode::FlagNotFound, format!("unknown policy key {key:?}"))),
            Some(def) => Err(error(
                EvaluationErrorCode::TypeMismatch,
                format!("policy key {key} holds {} values, not {requested}", def.value_type),
            )),
        }
    }
}

impl From<PolicyClient> for PolicyValuesProvider {
    fn from(client: PolicyClient) -> PolicyValuesProvider {
        PolicyValuesProvider::new(client)
    }
}

/// The scope an evaluation context describes (see the module's summary).
pub fn scope_of(context: &EvaluationContext) -> Result<Scope, EvaluationError> {
    let fields = &context.custom_fields;
    let user_id = fields.get("user_id").map(|v| field_id("user_id", v)).transpose()?;
    let user = match (context.targeting_key.as_deref(), user_id) {
        (Some(key), Some(id)) if key != id => {
            let message = format!("the targeting key {key:?} and user_id {id:?} name different users");
            return Err(error(EvaluationErrorCode::InvalidContext, message));
        }
        (Some(key), _) => Some(key.to_string()),
        (None, id) => id,
    };
    let mut scope = Scope::new();
    if let Some(user) = user {
        scope = with(scope, Level::User, &user)?;
    }
    for level in [Level::Project, Level::Org, Level::Plan] {
        let field = level.field().unwrap_or_default();
        if let Some(value) = fields.get(field) {
            scope = with(scope, level, &field_id(field, value)?)?;
        }
    }
    Ok(scope)
}

/// A context field as a scope id: a string, or a whole number in decimal.
fn field_id(field: &str, value: &EvaluationContextFieldValue) -> Result<String, EvaluationError> {
    match value {
        EvaluationContextFieldValue::String(id) => Ok(id.clone()),
        EvaluationContextFieldValue::Int(id) => Ok(id.to_string()),
        _ => Err(error(EvaluationErrorCode::InvalidContext, format!("{field} must be a string or a whole number"))),
    }
}

fn with(scope: Scope, level: Level, id: &str) -> Result<Scope, EvaluationError> {
    scope.with(level, id).map_err(|e| error(EvaluationErrorCode::InvalidContext, e.to_string()))
}

fn error(code: EvaluationErrorCode, message: String) -> EvaluationError {
    EvaluationError { code, message: Some(message) }
}

/// A refused read as OpenFeature's error.
fn error_of(err: PolicyError) -> EvaluationError {
    let code = match &err {
        PolicyError::UnknownKey(_) => EvaluationErrorCode::FlagNotFound,
        PolicyError::TypeMismatch { .. } => EvaluationErrorCode::TypeMismatch,
        PolicyError::Unavailable(_) => EvaluationErrorCode::ProviderNotReady,
        PolicyError::InvalidValue { .. } | PolicyError::Start(_) => EvaluationErrorCode::General(err.to_string()),
    };
    error(code, err.to_string())
}

/// Takes the value out of details resolved as `ValueType` `T`.
fn typed<T>(
    details: ResolutionDetails<Value>,
    take: impl FnOnce(Value) -> Option<T>,
) -> EvaluationResult<ResolutionDetails<T>> {
    let ResolutionDetails { value, variant, reason, flag_metadata } = details;
    let value = take(value).ok_or_else(|| error(EvaluationErrorCode::TypeMismatch, "value of another type".into()))?;
    Ok(ResolutionDetails { value, variant, reason, flag_metadata })
}

#[open_feature::async_trait]
impl FeatureProvider for PolicyValuesProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    /// `Ready` while the client is live (or fixed in code); `STALE` while it
    /// serves its snapshot file or has lost its source; `Error` while it
    /// knows nothing but the catalog defaults.
    fn status(&self) -> ProviderStatus {
        let health = self.client.health();
        match health.origin {
            Origin::Default => ProviderStatus::Error,
            Origin::Snapshot => ProviderStatus::STALE,
            Origin::Live if health.stale_since.is_some() => ProviderStatus::STALE,
            Origin::Live | Origin::Fixed => ProviderStatus::Ready,
        }
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        let details = self.evaluate(flag_key, evaluation_context, ValueType::Bool)?;
        typed(details, |v| match v {
            Value::Bool(b) => Some(b),
            _ => None,
        })
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        let details = self.evaluate(flag_key, evaluation_context, ValueType::Int)?;
        typed(details, |v| match v {
            Value::Int(i) => Some(i),
            _ => None,
        })
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        _evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.unsupported(flag_key, "float")
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        let details = self.evaluate(flag_key, evaluation_context, ValueType::String)?;
        typed(details, |v| match v {
            Value::String(s) => Some(s.to_string()),
            _ => None,
        })
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        _evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.unsupported(flag_key, "struct")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> EvaluationContext {
        EvaluationContext::default()
    }

    #[test]
    fn the_targeting_key_is_the_user_and_custom_fields_fill_the_other_levels() {
        let ctx = context()
            .with_targeting_key("u1")
            .with_custom_field("project_id", "p1")
            .with_custom_field("org_id", 42)
            .with_custom_field("plan", "pro")
            .with_custom_field("email", "ignored@example.com");
        assert_eq!(scope_of(&ctx).unwrap(), Scope::new().user("u1").project("p1").org("42").plan("pro"));
        assert_eq!(scope_of(&context().with_custom_field("user_id", "u2")).unwrap(), Scope::new().user("u2"));
        let same = context().with_targeting_key("u1").with_custom_field("user_id", "u1");
        assert_eq!(scope_of(&same).unwrap(), Scope::new().user("u1"));
        assert_eq!(scope_of(&context()).unwrap(), Scope::new());
    }

    #[test]
    fn a_context_the_store_cannot_read_is_invalid() {
        let cases = [
            context().with_targeting_key("u1").with_custom_field("user_id", "u2"),
            context().with_custom_field("org_id", true),
            context().with_custom_field("plan", 1.5),
            context().with_custom_field("org_id", ""),
            context().with_targeting_key("a\nb"),
            context().with_custom_field("project_id", "x".repeat(257)),
        ];
        for ctx in cases {
            let err = scope_of(&ctx).unwrap_err();
            assert_eq!(err.code, EvaluationErrorCode::InvalidContext, "{ctx:?}");
            assert!(err.message.is_some_and(|m| !m.is_empty()));
        }
    }
}
