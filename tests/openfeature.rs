//! The OpenFeature provider through the real `open-feature` API: the
//! crate's singleton, its clients and their evaluation details, over a fixed
//! `PolicyClient` and over one following a real database written over HTTP.
//!
//! Each test binds its provider to a client name of its own
//! (`set_named_provider`), so tests sharing the process-wide singleton under
//! `cargo test` do not see each other's providers.

mod common;

use std::time::Duration;

use common::{eventually, options_of, TestApp};
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{
    Client, EvaluationContext, EvaluationErrorCode, EvaluationReason, FlagMetadataValue, OpenFeature, StructValue,
};
use policy_values::openfeature::{PolicyValuesProvider, PROVIDER_NAME};
use policy_values::{Level, PolicyClient, WriteScope};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

const REFUNDS: &str = "allocation.refund_window_days";

/// Binds a provider over `client` to the client name `name` in the
/// OpenFeature singleton, and returns an OpenFeature client of that name.
async fn flags(name: &str, client: PolicyClient) -> Client {
    let mut api = OpenFeature::singleton_mut().await;
    api.set_named_provider(name, PolicyValuesProvider::new(client)).await;
    api.create_named_client(name)
}

fn context(user: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(user)
}

fn text(value: Option<&FlagMetadataValue>) -> Option<&str> {
    match value {
        Some(FlagMetadataValue::String(s)) => Some(s),
        _ => None,
    }
}

fn fixed() -> PolicyClient {
    PolicyClient::fixed()
        .set(REFUNDS, WriteScope::at(Level::Org, "acme").unwrap(), 45)
        .set(REFUNDS, WriteScope::at(Level::User, "vip").unwrap(), 90)
        .set("maas.enabled", WriteScope::at(Level::Plan, "pro").unwrap(), true)
        .set("allocation.isolation_model", WriteScope::global(), "full-reimage")
        .build()
        .unwrap()
}

#[tokio::test]
async fn an_override_is_a_targeting_match_named_by_its_level_with_its_row_and_scope_in_the_metadata() {
    let flags = flags("of-override", fixed()).await;
    let acme = context("u1").with_custom_field("org_id", "acme").with_custom_field("plan", "free");
    let details = flags.get_int_details(REFUNDS, Some(&acme), None).await.unwrap();
    assert_eq!(details.value, 45);
    assert_eq!(details.reason, Some(EvaluationReason::TargetingMatch));
    assert_eq!(details.variant.as_deref(), Some("org"));
    let metadata = &details.flag_metadata.values;
    assert_eq!(text(metadata.get("scope_id")), Some("acme"));
    let value_id = text(metadata.get("value_id")).expect("the winning row's id");
    assert!(uuid::Uuid::parse_str(value_id).is_ok(), "{value_id}");
    assert_eq!(text(metadata.get("origin")), Some("fixed"));
    assert!(text(metadata.get("effective_at")).is_some());

    let vip = context("vip").with_custom_field("org_id", "acme");
    let details = flags.get_int_details(REFUNDS, Some(&vip), None).await.unwrap();
    assert_eq!((details.value, details.variant.as_deref()), (90, Some("user")), "the targeting key is the user");
    assert_eq!(text(details.flag_metadata.values.get("scope_id")), Some("vip"));
    let by_field = EvaluationContext::default().with_custom_field("user_id", "vip");
    assert_eq!(flags.get_int_value(REFUNDS, Some(&by_field), None).await.unwrap(), 90, "user_id stands in for it");

    let pro = context("u2").with_custom_field("plan", "pro");
    let details = flags.get_bool_details("maas.enabled", Some(&pro), None).await.unwrap();
    assert_eq!((details.value, details.reason), (true, Some(EvaluationReason::TargetingMatch)));
    assert_eq!(details.variant.as_deref(), Some("plan"));
}

#[tokio::test]
async fn the_catalog_default_and_the_global_value_are_static_with_no_scope_id() {
    let flags = flags("of-static", fixed()).await;
    let globex = context("u1").with_custom_field("org_id", "globex");
    let details = flags.get_int_details(REFUNDS, Some(&globex), None).await.unwrap();
    assert_eq!(details.value, 30);
    assert_eq!(details.reason, Some(EvaluationReason::Static));
    assert_eq!(details.variant.as_deref(), Some("default"));
    let metadata = &details.flag_metadata.values;
    assert_eq!((metadata.get("value_id"), metadata.get("scope_id")), (None, None));
    assert_eq!(text(metadata.get("origin")), Some("fixed"));

    let details = flags.get_string_details("allocation.isolation_model", Some(&globex), None).await.unwrap();
    assert_eq!(details.value, "full-reimage");
    assert_eq!(details.reason, Some(EvaluationReason::Static));
    assert_eq!(details.variant.as_deref(), Some("global"));
    assert!(text(details.flag_metadata.values.get("value_id")).is_some(), "the global row is named");
    assert_eq!(details.flag_metadata.values.get("scope_id"), None, "the global level has no id");

    let no_context = flags.get_bool_details("maas.enabled", None, None).await.unwrap();
    assert_eq!((no_context.value, no_context.reason), (false, Some(EvaluationReason::Static)));
}

#[tokio::test]
async fn wrong_types_floats_structs_unknown_keys_and_unreadable_contexts_are_errors_with_their_codes() {
    let flags = flags("of-errors", fixed()).await;
    let ctx = context("u1");
    let code = |r: Result<(), open_feature::EvaluationError>| r.unwrap_err().code;

    let bool_of_int = flags.get_bool_value(REFUNDS, Some(&ctx), None).await.map(|_| ());
    assert_eq!(code(bool_of_int), EvaluationErrorCode::TypeMismatch);
    let string_of_int = flags.get_string_value(REFUNDS, Some(&ctx), None).await.map(|_| ());
    assert_eq!(code(string_of_int), EvaluationErrorCode::TypeMismatch);
    let int_of_bool = flags.get_int_value("maas.enabled", Some(&ctx), None).await.map(|_| ());
    assert_eq!(code(int_of_bool), EvaluationErrorCode::TypeMismatch);
    let float = flags.get_float_value(REFUNDS, Some(&ctx), None).await.map(|_| ());
    assert_eq!(code(float), EvaluationErrorCode::TypeMismatch);
    let structure = flags.get_struct_value::<StructValue>(REFUNDS, Some(&ctx), None).await.map(|_| ());
    assert_eq!(code(structure), EvaluationErrorCode::TypeMismatch);

    for unknown in [
        flags.get_int_value("no.such_key", Some(&ctx), None).await.map(|_| ()),
        flags.get_bool_value("no.such_key", Some(&ctx), None).await.map(|_| ()),
        flags.get_float_value("no.such_key", Some(&ctx), None).await.map(|_| ()),
        flags.get_struct_value::<StructValue>("no.such_key", Some(&ctx), None).await.map(|_| ()),
    ] {
        assert_eq!(code(unknown), EvaluationErrorCode::FlagNotFound);
    }

    let two_users = context("u1").with_custom_field("user_id", "u2");
    let not_a_string = context("u1").with_custom_field("org_id", true);
    for bad in [two_users, not_a_string] {
        let err = flags.get_int_value(REFUNDS, Some(&bad), None).await.unwrap_err();
        assert_eq!(err.code, EvaluationErrorCode::InvalidContext, "{bad:?}");
    }
}

#[tokio::test]
async fn the_default_provider_answers_clients_with_no_name_and_reports_its_name() {
    // The only test that sets the singleton's default provider.
    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(PolicyValuesProvider::new(fixed())).await;
    assert_eq!(api.provider_metadata().await.name, PROVIDER_NAME);
    let flags = api.create_client();
    drop(api);
    let acme = context("u1").with_custom_field("org_id", "acme");
    assert_eq!(flags.get_int_value(REFUNDS, Some(&acme), None).await.unwrap(), 45);
    assert_eq!(PolicyValuesProvider::new(fixed()).status(), ProviderStatus::Ready);
}

#[sqlx::test]
async fn a_connected_client_answers_a_value_written_over_http_as_a_targeting_match(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let client = PolicyClient::builder().connect_options(options_of(&app.pool)).connect().await.unwrap();
    let provider = PolicyValuesProvider::new(client.clone());
    assert_eq!(provider.status(), ProviderStatus::Ready);
    let flags = flags("of-connected", client).await;
    let acme = context("u1").with_custom_field("org_id", "acme");
    let before = flags.get_int_details(REFUNDS, Some(&acme), None).await.unwrap();
    assert_eq!((before.value, before.reason), (30, Some(EvaluationReason::Static)));
    assert_eq!(text(before.flag_metadata.values.get("origin")), Some("live"));

    let body = json!({"key": REFUNDS, "scope": {"org_id": "acme"}, "value": 45, "reason": "test", "old_value": 30});
    let written = app.write(body).await;
    assert_eq!(written.status, StatusCode::CREATED, "{}", written.json);
    let row_id = written.json["value"]["id"].as_str().unwrap().to_string();
    eventually("the provider answers the written value", || async {
        flags.get_int_value(REFUNDS, Some(&acme), None).await == Ok(45)
    })
    .await;
    let after = flags.get_int_details(REFUNDS, Some(&acme), None).await.unwrap();
    assert_eq!(after.reason, Some(EvaluationReason::TargetingMatch));
    assert_eq!(after.variant.as_deref(), Some("org"));
    assert_eq!(text(after.flag_metadata.values.get("value_id")), Some(row_id.as_str()));
    assert_eq!(text(after.flag_metadata.values.get("scope_id")), Some("acme"));
    let elsewhere = context("u2").with_custom_field("org_id", "globex");
    assert_eq!(flags.get_int_value(REFUNDS, Some(&elsewhere), None).await.unwrap(), 30);
}

#[tokio::test]
async fn with_nothing_but_the_defaults_a_fail_closed_key_is_not_ready_and_the_provider_is_in_error() {
    // Nothing listens on port 1: the client falls back to the catalog defaults.
    let options = sqlx::postgres::PgConnectOptions::new().host("127.0.0.1").port(1).database("none");
    let client = PolicyClient::builder()
        .connect_options(options)
        .load_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let provider = PolicyValuesProvider::new(client.clone());
    assert_eq!(provider.status(), ProviderStatus::Error);
    let flags = flags("of-defaults", client).await;
    let ctx = context("u1");
    let deposit = flags.get_int_value("billing.minimum_deposit_minor", Some(&ctx), None).await.unwrap_err();
    assert_eq!(deposit.code, EvaluationErrorCode::ProviderNotReady);
    assert!(deposit.message.unwrap_or_default().contains("fail-closed"));
    let refunds = flags.get_int_details(REFUNDS, Some(&ctx), None).await.unwrap();
    assert_eq!((refunds.value, refunds.reason), (30, Some(EvaluationReason::Static)), "other keys: the default");
    assert_eq!(text(refunds.flag_metadata.values.get("origin")), Some("default"));
}
