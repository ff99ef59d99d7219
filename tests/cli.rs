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
    assert_eq!(stdout(&keys).lines().count(), common::catalog_len() + 1, "a header and a line per key");
    let words = |line: &str| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let lines: Vec<Vec<String>> = stdout(&keys).lines().map(words).collect();
    assert!(lines.contains(&words("allocation.refund_window_days int 30 0..365 days")));
    let commands = "agent.shell_exec.allowed_commands list [\"git\",\"python\",\"npm\",\"pytest\"] max 64: /[A-Za-z0-9][A-Za-z0-9._+-]{0,63}/";
    assert!(lines.contains(&words(commands)), "{}", stdout(&keys));

    let set = cli(&app, &app.admin, &["set", KEY, "45", "--org", "acme", "--reason", "Customer success request"]).await;
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    assert!(stdout(&set).starts_with("set allocation.refund_window_days at org acme: 30 -> 45"));
    let get = cli(&app, &app.reader, &["get", KEY, "--org", "acme", "--user", "u1"]).await;
    assert_eq!(stdout(&get), "45  (org acme)\n");
    let json = cli(&app, &app.reader, &["get", KEY, "--org", "acme", "--json"]).await;
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["value"], 45);
    let again = cli(&app, &app.admin, &["set", KEY, "45", "--org", "acme", "--reason", "again"]).await;
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(
        stdout(&again).starts_with("unchanged: allocation.refund_window_days at org acme is already 45"),
        "{}",
        stdout(&again)
    );

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
    let seq = |line: &str| line.split_whitespace().next().and_then(|s| s.parse::<i64>().ok()).unwrap_or_default();
    let kinds: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split_whitespace().skip(1).take(2).collect()).collect();
    assert_eq!(kinds, [vec!["unset", "-"], vec!["set", "45"]], "{lines:?}");
    assert!(seq(&lines[1]) > seq(&lines[2]), "newest first: {lines:?}");

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

/// A port nothing listens on: bound to find a free one, then released.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the binary with these arguments only: no server URL, token or
/// database from the environment.
async fn bare(args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_policy-values"));
    command.args(args).env_remove("POLICY_VALUES_URL").env_remove("POLICY_VALUES_TOKEN").env_remove("DATABASE_URL");
    tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[sqlx::test]
async fn a_url_without_a_scheme_is_taken_as_http_and_one_the_cli_cannot_use_is_refused_in_words(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let without_scheme = app.base.strip_prefix("http://").unwrap();
    let keys = bare(&["--url", without_scheme, "--token", &app.reader, "keys"]).await;
    assert!(keys.status.success(), "{}", stderr(&keys));
    assert_eq!(stdout(&keys).lines().count(), common::catalog_len() + 1);
    let slash = format!("{}/", app.base);
    let get = bare(&["--url", &slash, "--token", &app.reader, "get", KEY]).await;
    assert_eq!(stdout(&get), "30  (default)\n", "a trailing slash is dropped: {}", stderr(&get));

    for (url, words) in [
        ("ftp://127.0.0.1:21", "the scheme ftp:// is not supported; use http://"),
        ("https://127.0.0.1:8443", "https is not supported: this build of the CLI speaks no TLS"),
        ("http://", "not a URL"),
        ("http://127.0.0.1:8080/?x=1", "takes no query or fragment"),
    ] {
        let out = bare(&["--url", url, "keys"]).await;
        assert_eq!(out.status.code(), Some(2), "{url}: a usage error");
        assert!(stderr(&out).contains(words), "{url}: {}", stderr(&out));
    }
}

#[tokio::test]
async fn a_stopped_server_is_named_by_the_url_the_user_gave_not_the_endpoint() {
    let port = closed_port();
    let with_scheme = format!("http://127.0.0.1:{port}");
    let without_scheme = format!("127.0.0.1:{port}");
    let commands: [&[&str]; 6] = [
        &["keys"],
        &["get", KEY, "--org", "acme"],
        &["set", KEY, "45", "--org", "acme", "--reason", "r"],
        &["unset", KEY, "--org", "acme", "--reason", "r"],
        &["history", KEY],
        &["audit", "--format", "csv"],
    ];
    for url in [&with_scheme, &without_scheme] {
        for command in commands {
            let mut args = vec!["--url", url.as_str(), "--token", "pvt_x"];
            args.extend_from_slice(command);
            let out = bare(&args).await;
            assert_eq!(out.status.code(), Some(1), "{command:?}");
            let expected = format!("error: cannot connect to {url}: connection refused; is the server running?\n");
            assert_eq!(stderr(&out), expected, "{command:?}");
        }
    }
}

#[sqlx::test]
async fn an_unreachable_database_is_named_by_host_port_and_database_and_never_by_its_password(pool: PgPool) {
    let port = closed_port();
    let url = format!("postgres://pv_user:s3cret-pw@127.0.0.1:{port}/pv_nowhere");
    let commands: [&[&str]; 6] = [
        &["token", "list"],
        &["token", "create", "--role", "reader", "--name", "n"],
        &["audit", "verify"],
        &["migrate"],
        &["seed"],
        &["serve", "--addr", "127.0.0.1:0"],
    ];
    for command in commands {
        let mut args = vec!["--database-url", url.as_str()];
        args.extend_from_slice(command);
        let out = bare(&args).await;
        assert_eq!(out.status.code(), Some(1), "{command:?}");
        let expected = format!(
            "error: cannot connect to the database \"pv_nowhere\" on 127.0.0.1:{port}: connection refused; \
             is PostgreSQL running?\n"
        );
        assert_eq!(stderr(&out), expected, "{command:?}");
    }

    let options = common::options_of(&pool);
    let missing = format!(
        "postgres://{}:s3cret-pw@{}:{}/pv_no_such_database",
        options.get_username(),
        options.get_host(),
        options.get_port()
    );
    let out = bare(&["--database-url", &missing, "token", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!(
        "database \"pv_no_such_database\" on {}:{}",
        options.get_host(),
        options.get_port()
    )));
    assert!(err.contains("does not exist") && !err.contains("s3cret"), "{err}");
}

#[sqlx::test]
async fn a_negative_value_reaches_the_server_and_gets_its_bounds_check(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let before = app.counts().await;
    let negative = cli(&app, &app.admin, &["set", KEY, "-1", "--org", "acme", "--reason", "typo"]).await;
    assert_eq!(negative.status.code(), Some(1));
    assert!(stderr(&negative).contains("422 out_of_bounds"), "{}", stderr(&negative));
    let old = cli(&app, &app.admin, &["set", KEY, "45", "--org", "acme", "--reason", "r", "--old-value", "-5"]).await;
    assert!(stderr(&old).contains("409 stale_old_value"), "the old value reached the server: {}", stderr(&old));
    assert_eq!(app.counts().await, before, "nothing was written");
    let refused = app.refused_codes().await;
    assert_eq!(refused, ["out_of_bounds", "stale_old_value"], "the server saw both");
}

#[test]
fn every_argument_and_flag_of_every_command_has_help_text() {
    use clap::CommandFactory;
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&policy_values::cli::Cli::command(), "policy-values", &mut missing);
    assert_eq!(missing, Vec::<String>::new(), "arguments without help text");
}

#[sqlx::test]
async fn the_readme_cli_tour_runs_as_written(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = &readme[readme.find("The same tour with the CLI").expect("the CLI tour")..];
    let block = after.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let lines: Vec<&str> = block.lines().map(|l| l.split(" # ").next().unwrap().trim()).collect();
    let commands: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("policy-values ")).collect();
    for line in &lines {
        let known = line.is_empty()
            || commands.contains(line)
            || *line == "make install"
            || line.starts_with("export POLICY_VALUES_URL=");
        assert!(known, "a line this test does not run: {line:?}");
    }
    assert!(commands.len() >= 3, "{commands:?}");

    // `make install` puts the binary on the PATH; here, a directory of our own.
    let bin = std::env::temp_dir().join(format!("pv-bin-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_policy-values"), bin.join("policy-values")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for line in commands {
        let mut command = std::process::Command::new("bash");
        command.args(["-c", line]).env("PATH", &path).env("POLICY_VALUES_URL", &app.base);
        command.env("POLICY_VALUES_TOKEN", &app.admin).env_remove("DATABASE_URL");
        let out = tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap();
        assert!(out.status.success(), "{line}: {}", stderr(&out));
    }
    assert_eq!(app.resolve(KEY, "org_id=acme").await, 45, "the tour's write landed");
    std::fs::remove_dir_all(&bin).unwrap();
}
