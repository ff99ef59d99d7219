//! The CLI end to end: the real binary against a server on port 0.

mod common;

use std::process::Output;

use common::TestApp;
use sqlx::PgPool;

const KEY: &str = "allocation.refund_window_days";

/// Runs the binary on a blocking thread, so the server in this test's
/// runtime keeps answering it.
async fn cli(app: &TestApp, token: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_policy-values"));
    command.args(args).env("POLICY_VALUES_URL", &app.base).env("POLICY_VALUES_TOKEN", token).env_remove("DATABASE_URL");
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[sqlx::test]
async fn an_admin_sets_reads_and_removes_a_value_with_the_cli(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let keys = cli(&app, &app.reader, &["keys"]).await;
    assert!(keys.status.success());
    assert_eq!(stdout(&keys).lines().count(), 17, "a header and 16 keys");
    assert!(stdout(&keys).contains("allocation.refund_window_days                  int     30           0..365"));

    let set = cli(&app, &app.admin, &["set", KEY, "45", "--org", "acme", "--reason", "Customer success request"]).await;
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert!(stdout(&set).starts_with("set allocation.refund_window_days at org acme: 30 -> 45"));
    let get = cli(&app, &app.reader, &["get", KEY, "--org", "acme", "--user", "u1"]).await;
    assert_eq!(stdout(&get), "45  (org acme)\n");
    let json = cli(&app, &app.reader, &["get", KEY, "--org", "acme", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["value"], 45);

    let stale =
        cli(&app, &app.admin, &["set", KEY, "50", "--org", "acme", "--reason", "race", "--old-value", "30"]).await;
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("409 stale_old_value"), "the server's code and message");
    let bad = cli(&app, &app.admin, &["set", KEY, "forty", "--org", "acme", "--reason", "typo"]).await;
    assert_eq!(bad.status.code(), Some(1));
    let out = cli(&app, &app.admin, &["set", KEY, "400", "--org", "acme", "--reason", "too long"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("422 out_of_bounds"));

    let unset = cli(&app, &app.admin, &["unset", KEY, "--org", "acme", "--reason", "back to default"]).await;
    assert!(unset.status.success(), "{}", String::from_utf8_lossy(&unset.stderr));
    assert_eq!(stdout(&cli(&app, &app.reader, &["get", KEY, "--org", "acme"]).await), "30  (default)\n");
    let history = cli(&app, &app.auditor, &["history", KEY, "--org", "acme"]).await;
    let lines: Vec<String> = stdout(&history).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].starts_with("2    unset  -") && lines[2].starts_with("1    set    45"), "{lines:?}");

    let denied = cli(&app, &app.reader, &["set", KEY, "45", "--org", "acme", "--reason", "r"]).await;
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403 forbidden"));
}

#[sqlx::test]
async fn auditors_read_and_export_the_log_with_the_cli(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    cli(&app, &app.admin, &["set", KEY, "45", "--org", "acme", "--reason", "first"]).await;
    let later = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled = cli(
        &app,
        &app.admin,
        &["set", KEY, "60", "--org", "acme", "--reason", "later", "--effective-at", &later, "--json"],
    )
    .await;
    let id = serde_json::from_slice::<serde_json::Value>(&scheduled.stdout).unwrap()["value"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = cli(&app, &app.admin, &["cancel", &id, "--reason", "changed our mind"]).await;
    assert!(stdout(&cancel).starts_with("cancel allocation.refund_window_days at org acme"), "{}", stdout(&cancel));

    let table = cli(&app, &app.auditor, &["audit", "--key", KEY, "--limit", "10"]).await;
    let rows: Vec<String> = stdout(&table).lines().map(str::to_string).collect();
    assert_eq!(rows.len(), 5, "a header, the catalog entry and three changes: {rows:?}");
    assert!(rows[1].contains("policy_value.cancel") && rows[3].contains("30 -> 45"));
    assert!(rows[4].contains("policy_key.create") && rows[4].contains("- -> {...}"), "definitions are summarised");
    let json = cli(&app, &app.auditor, &["audit", "--key", KEY, "--format", "json"]).await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&json.stdout).unwrap().as_array().unwrap().len(), 4);
    let csv = cli(&app, &app.auditor, &["audit", "--format", "csv", "--actor", "alice-admin"]).await;
    let text = stdout(&csv);
    assert!(text.starts_with("seq,id,occurred_at"));
    assert!(text.lines().last().unwrap().starts_with("# chain_head seq="));
    assert!(text.lines().last().unwrap().ends_with("rows=3"));
    let nobody = cli(&app, "pvt_wrong", &["audit"]).await;
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("401 unauthorized"));
}
