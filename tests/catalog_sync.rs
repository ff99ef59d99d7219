//! Syncing the declarative catalog: idempotent, audited, and refused when a
//! change would strand a stored value.

mod common;

use common::TestApp;
use policy_values::domain::Catalog;
use policy_values::store::{keys, StoreError};
use serde_json::json;
use sqlx::PgPool;

fn with_refund_max(max: i64) -> Catalog {
    let text = policy_values::domain::catalog::BUILTIN_CATALOG
        .replace("default = 30\nmin = 0\nmax = 365", &format!("default = 30\nmin = 0\nmax = {max}"));
    let catalog = Catalog::parse(&text).unwrap();
    let refund = catalog.get("allocation.refund_window_days").unwrap();
    assert_eq!(refund.bounds, policy_values::domain::Bounds::Int { min: 0, max });
    catalog
}

#[sqlx::test]
async fn a_second_sync_of_the_same_catalog_changes_and_audits_nothing(pool: PgPool) {
    let catalog = Catalog::builtin().unwrap();
    let first = keys::sync(&pool, &catalog, "catalog-sync", "first").await.unwrap();
    let n = catalog.keys.len();
    assert_eq!(first.created.len(), n);
    let audit_rows = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("select count(*) from audit_logs").fetch_one(&pool).await.unwrap()
    };
    assert_eq!(audit_rows(pool.clone()).await, n as i64);
    let second = keys::sync(&pool, &catalog, "catalog-sync", "second").await.unwrap();
    assert_eq!((second.created.len(), second.updated.len(), second.unchanged), (0, 0, n));
    assert_eq!(audit_rows(pool.clone()).await, n as i64);
}

#[sqlx::test]
async fn tightening_a_bound_below_a_stored_value_is_refused_naming_it(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"key": "allocation.refund_window_days", "scope": {"org_id": "acme"}, "value": 90,
                      "reason": "enterprise deal", "old_value": 30});
    let written = app.write(body).await;
    let before = app.counts().await;

    let err = keys::sync(&app.pool, &with_refund_max(60), "catalog-sync", "tighten").await.unwrap_err();
    let StoreError::CatalogConflict(offending) = err else { panic!("expected a conflict, got {err}") };
    assert_eq!(offending.len(), 1);
    assert_eq!(offending[0].key, "allocation.refund_window_days");
    assert_eq!((offending[0].level.as_str(), offending[0].scope_id.as_str()), ("org", "acme"));
    assert_eq!(offending[0].value, json!(90));
    assert_eq!(offending[0].value_id.to_string(), written.json["value"]["id"].as_str().unwrap());
    assert_eq!(app.counts().await, before, "nothing written");
    let max: Option<i64> =
        sqlx::query_scalar("select max_value from policy_keys where key = 'allocation.refund_window_days'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(max, Some(365));

    // Loosening (or tightening above every stored value) goes through, audited.
    let report = keys::sync(&app.pool, &with_refund_max(120), "catalog-sync", "tighten").await.unwrap();
    assert_eq!(report.updated, vec!["allocation.refund_window_days".to_string()]);
    let meta: serde_json::Value = sqlx::query_scalar(
        "select metadata from audit_logs where action = 'policy_key.update' order by seq desc limit 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(meta["old_value"]["bounds"], json!({"min": 0, "max": 365}));
    assert_eq!(meta["new_value"]["bounds"], json!({"min": 0, "max": 120}));
    let over = app
        .write(json!({"key": "allocation.refund_window_days", "scope": {"org_id": "b"}, "value": 121,
                      "reason": "r", "old_value": 30}))
        .await;
    assert_eq!(over.code(), "out_of_bounds");
}
