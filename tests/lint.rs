//! The lint gate over fixtures in each language: every line marked `expect:`
//! is reported with its key and kind of message, nothing else is, and test
//! files are skipped. No database needed.
#![cfg(feature = "server")]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use policy_values::domain::Catalog;
use policy_values::lint::{format_text, is_test_file, lint_paths, lint_source, Finding};

const SOURCES: [&str; 5] = ["service.rs", "service.go", "service.ts", "handler.js", "service.py"];
const TEST_FILES: [&str; 3] = ["service_test.go", "test_service.py", "service.test.ts"];
const DEFAULT: &str = "hard-coded default of policy key ";
const NAMED: &str = "constant named like policy key ";

fn catalog() -> Catalog {
    Catalog::builtin().unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint")
}

fn lint_fixtures() -> Vec<Finding> {
    lint_paths(&[fixtures()], &catalog()).unwrap()
}

/// A finding reduced to (file name, line, key, is the default).
type Row = (String, usize, String, bool);

fn file_name(finding: &Finding) -> String {
    Path::new(&finding.file).file_name().unwrap().to_string_lossy().into_owned()
}

fn row(finding: &Finding) -> Row {
    let default = finding.message.starts_with(DEFAULT);
    assert!(default || finding.message.starts_with(NAMED), "{finding:?}");
    (file_name(finding), finding.line, finding.key.clone(), default)
}

/// The rows the fixtures ask for: `// expect: KEY` or `# expect: KEY`,
/// followed by `(default)` when the literal is the key's default.
fn expected_rows() -> BTreeSet<Row> {
    let mut rows = BTreeSet::new();
    for name in SOURCES {
        let text = fs::read_to_string(fixtures().join(name)).unwrap();
        for (index, line) in text.lines().enumerate() {
            let Some((_, marker)) = line.split_once("// expect: ").or_else(|| line.split_once("# expect: ")) else {
                continue;
            };
            let (key, default) = match marker.strip_suffix(" (default)") {
                Some(key) => (key, true),
                None => (marker, false),
            };
            rows.insert((name.to_string(), index + 1, key.trim().to_string(), default));
        }
    }
    rows
}

fn find<'a>(findings: &'a [Finding], name: &str, line: usize) -> &'a Finding {
    let found = findings.iter().find(|f| file_name(f) == name && f.line == line);
    found.unwrap_or_else(|| panic!("no finding at {name}:{line} in {findings:#?}"))
}

#[test]
fn every_line_marked_expect_in_the_fixtures_is_reported_with_its_key_and_kind_and_no_other_line_is() {
    let expected = expected_rows();
    let reported: BTreeSet<Row> = lint_fixtures().iter().map(row).collect();
    let missing: Vec<_> = expected.difference(&reported).collect();
    let unexpected: Vec<_> = reported.difference(&expected).collect();
    assert!(missing.is_empty() && unexpected.is_empty(), "missing {missing:#?}\nunexpected {unexpected:#?}");
}

#[test]
fn each_language_fixture_asks_for_several_findings_of_both_kinds() {
    let expected = expected_rows();
    for name in SOURCES {
        let rows: Vec<_> = expected.iter().filter(|r| r.0 == name).collect();
        assert!(rows.len() >= 5, "{name} has only {} expectations", rows.len());
        assert!(rows.iter().any(|r| r.3) && rows.iter().any(|r| !r.3), "{name} lacks one kind");
    }
}

#[test]
fn findings_carry_the_line_and_one_based_column_of_the_name_and_the_exact_message() {
    let findings = lint_fixtures();
    let at = |name: &str, line: usize| {
        let f = find(&findings, name, line);
        (f.column, f.key.as_str(), f.message.as_str())
    };
    let max = "allocation.max_concurrent_per_user";
    let default_50 = format!("{DEFAULT}{max} (50): read it through PolicyClient");
    assert_eq!(at("service.rs", 5), (11, max, default_50.as_str()));
    let refund = "allocation.refund_window_days";
    let named_refund = format!("{NAMED}{refund}: read it through PolicyClient");
    assert_eq!(at("service.rs", 6), (18, refund, named_refund.as_str()));
    assert_eq!(at("service.rs", 21).0, 9);
    assert_eq!(at("service.go", 10).0, 2);
    assert_eq!(at("service.go", 31), (2, max, default_50.as_str()));
    assert_eq!(at("service.ts", 5), (14, refund, named_refund.as_str()));
    assert_eq!(at("service.ts", 24).0, 19);
    let isolation = format!("{DEFAULT}allocation.isolation_model (\"user-revoke\"): read it through PolicyClient");
    assert_eq!(at("service.ts", 6), (5, "allocation.isolation_model", isolation.as_str()));
    let maas_named = format!("{NAMED}maas.enabled: read it through PolicyClient");
    assert_eq!(at("handler.js", 6), (5, "maas.enabled", maas_named.as_str()));
    let maas_default = format!("{DEFAULT}maas.enabled (false): read it through PolicyClient");
    assert_eq!(at("service.py", 24), (5, "maas.enabled", maas_default.as_str()));
    assert_eq!(at("service.py", 28).0, 9);
}

#[test]
fn must_not_cases_are_absent_unrelated_names_comments_allowed_lines_and_non_literals() {
    let findings = lint_fixtures();
    let quiet = [
        ("service.rs", "MAX_RETRIES"),
        ("service.rs", "const ENABLED"),
        ("service.rs", "// const API_REQUESTS_PER_MINUTE"),
        ("service.rs", "FINANCIAL_REQUESTS_PER_MINUTE"),
        ("service.rs", "policy-lint: allow"),
        ("service.rs", "LOW_BALANCE_THRESHOLD_MINOR: i64 = MAX_CONCURRENT_PER_USER"),
        ("service.rs", "let api_requests_per_minute = limit_from_policy"),
        ("service.rs", "    const MAX_CONCURRENT_PER_USER: u32 = 50;"),
        ("service.go", "MaxRetries"),
        ("service.go", "// FinancialRequestsPerMinute"),
        ("service.go", "policy-lint: allow"),
        ("service.go", "const TerminalTokenRequestsPerMinute"),
        ("service.go", "maxConcurrentPerUser := cfg.Limit"),
        ("service.go", "billingWindowSeconds := 60 * time.Second"),
        ("service.ts", "MAX_RETRIES"),
        ("service.ts", "policy-lint: allow"),
        ("service.ts", "terminalTokenRequestsPerMinute = config"),
        ("service.ts", "billingWindowSeconds = 60 * 1000"),
        ("service.ts", "sessionMaxTtlSeconds = `${"),
        ("service.ts", "const maxConcurrentPerUser = 50;"),
        ("handler.js", "const enabled = true"),
        ("handler.js", "BALANCE_DEPLETED_ENABLED = process.env"),
        ("handler.js", "// let refundWindowDays"),
        ("handler.js", "policy-lint: allow"),
        ("handler.js", "maxConcurrentPerUser = req.query.limit"),
        ("service.py", "MAX_CONCURRENT_PER_USER = 50 inside a docstring"),
        ("service.py", "MAX_RETRIES"),
        ("service.py", "# LOW_BALANCE_THRESHOLD_MINOR"),
        ("service.py", "policy-lint: allow"),
        ("service.py", "max_concurrent_per_user = settings.limit"),
        ("service.py", "billing_window_seconds = 60 * 60"),
        ("service.py", "ENABLED = True"),
    ];
    // Lines holding the needle, other than lines marked `expect:`, give no finding.
    for (name, needle) in quiet {
        let text = fs::read_to_string(fixtures().join(name)).unwrap();
        let lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle) && !l.contains("expect: "))
            .map(|(i, _)| i + 1)
            .collect();
        assert!(!lines.is_empty(), "{name} has no line with {needle:?}");
        for line in lines {
            let hit = findings.iter().find(|f| file_name(f) == name && f.line == line);
            assert!(hit.is_none(), "{name}:{line} ({needle:?}) reported: {hit:?}");
        }
    }
}

#[test]
fn test_files_are_skipped_by_lint_paths_though_they_hold_matching_constants() {
    let reported: BTreeSet<String> = lint_fixtures().iter().map(file_name).collect();
    let sources: BTreeSet<String> = SOURCES.iter().map(|s| s.to_string()).collect();
    assert_eq!(reported, sources);
    for name in TEST_FILES {
        let path = fixtures().join(name);
        let text = fs::read_to_string(&path).unwrap();
        let direct = lint_source(name, &text, &catalog());
        assert!(direct.len() >= 2, "{name} should hold matching constants: {direct:?}");
        assert!(lint_paths(&[path], &catalog()).unwrap().is_empty(), "{name} named directly is still a test file");
    }
}

#[test]
fn a_source_file_named_directly_is_linted_on_its_own() {
    let findings = lint_paths(&[fixtures().join("service.go")], &catalog()).unwrap();
    let expected = expected_rows().into_iter().filter(|r| r.0 == "service.go").count();
    assert_eq!(findings.len(), expected);
    assert!(findings.iter().all(|f| f.file.ends_with("tests/fixtures/lint/service.go")), "{findings:?}");
}

#[test]
fn findings_are_sorted_by_file_then_line_then_column() {
    let findings = lint_fixtures();
    let keys: Vec<_> = findings.iter().map(|f| (f.file.clone(), f.line, f.column)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

struct TempTree(PathBuf);

impl TempTree {
    fn new(tag: &str) -> TempTree {
        let root = std::env::temp_dir().join(format!("policy-lint-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        TempTree(root)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_walk_skips_test_vendored_hidden_and_build_directories_below_the_root_but_not_the_root_itself() {
    let tree = TempTree::new("walk");
    let line = "const MaxConcurrentPerUser = 50\n";
    let skipped = [
        "tests/a.go",
        "pkg/test/a.go",
        "web/__tests__/a.go",
        "pkg/testdata/a.go",
        "vendor/a.go",
        "node_modules/a.go",
        "target/a.go",
        ".git/a.go",
        ".cache/a.go",
    ];
    for relative in skipped {
        tree.write(relative, line);
    }
    tree.write("benches/a.rs", "const MAX_CONCURRENT_PER_USER: u32 = 50;\n");
    tree.write("benches/a.go", line);
    tree.write("cmd/server/main.go", line);
    tree.write("README.md", "MAX_CONCURRENT_PER_USER = 50\n");
    let findings = lint_paths(std::slice::from_ref(&tree.0), &catalog()).unwrap();
    let files: Vec<String> =
        findings.iter().map(|f| Path::new(&f.file).strip_prefix(&tree.0).unwrap().display().to_string()).collect();
    assert_eq!(files, ["benches/a.go", "cmd/server/main.go"]);
    // A root that is itself inside a `tests` directory is walked.
    let under_tests = lint_paths(&[tree.0.join("tests")], &catalog()).unwrap();
    assert_eq!(under_tests.len(), 1);
}

#[test]
fn test_files_are_recognised_by_name_and_by_directory() {
    let tests = [
        "service_test.go",
        "pkg/store_test.py",
        "test_store.py",
        "web/api.test.ts",
        "web/api.test.tsx",
        "web/api.test.js",
        "web/api.spec.ts",
        "web/api.spec.js",
        "tests/client.rs",
        "pkg/test/helpers.go",
        "web/__tests__/api.ts",
        "pkg/testdata/x.go",
        "benches/read_path.rs",
    ];
    for path in tests {
        assert!(is_test_file(Path::new(path)), "{path} is a test file");
    }
    let sources = [
        "service.go",
        "src/lint.rs",
        "contest.py",
        "latest.ts",
        "web/testing.ts",
        "benches/x.go",
        "src/attest_test.rs",
    ];
    for path in sources {
        assert!(!is_test_file(Path::new(path)), "{path} is not a test file");
    }
}

#[test]
fn the_text_format_is_one_file_line_column_key_message_line_per_finding() {
    let text = "const MaxConcurrentPerUser = 50\nvar refundWindowDays = 7\n";
    let findings = lint_source("svc/a.go", text, &catalog());
    assert_eq!(
        format_text(&findings),
        "svc/a.go:1:7 allocation.max_concurrent_per_user hard-coded default of policy key \
         allocation.max_concurrent_per_user (50): read it through PolicyClient\n\
         svc/a.go:2:5 allocation.refund_window_days constant named like policy key \
         allocation.refund_window_days: read it through PolicyClient\n"
    );
    assert_eq!(format_text(&[]), "");
}

#[test]
fn the_json_form_of_a_finding_has_file_line_column_key_and_message() {
    let findings = lint_source("a.py", "REFUND_WINDOW_DAYS = 30\n", &catalog());
    let json = serde_json::to_value(&findings).unwrap();
    assert_eq!(
        json,
        serde_json::json!([{
            "file": "a.py",
            "line": 1,
            "column": 1,
            "key": "allocation.refund_window_days",
            "message": "hard-coded default of policy key allocation.refund_window_days (30): read it through PolicyClient",
        }])
    );
}

#[test]
fn an_allow_comment_silences_a_line_in_every_language() {
    let cases = [
        ("a.rs", "const REFUND_WINDOW_DAYS: u32 = 30; // policy-lint: allow"),
        ("a.go", "const RefundWindowDays = 30 // policy-lint: allow"),
        ("a.ts", "const refundWindowDays = 30; // policy-lint: allow"),
        ("a.mjs", "export const REFUND_WINDOW_DAYS = 30; /* policy-lint: allow */"),
        ("a.py", "REFUND_WINDOW_DAYS = 30  # policy-lint: allow"),
    ];
    for (path, line) in cases {
        assert!(lint_source(path, line, &catalog()).is_empty(), "{path}: {line}");
        let bare = line.split_once("policy-lint").unwrap().0;
        let bare = bare.trim_end().trim_end_matches("//").trim_end_matches("/*").trim_end_matches('#');
        assert_eq!(lint_source(path, bare, &catalog()).len(), 1, "{path}: {bare}");
    }
}

#[test]
fn files_in_other_languages_give_no_findings() {
    for path in ["a.java", "a.rb", "a.toml", "Makefile", "a.go.txt"] {
        assert!(lint_source(path, "MAX_CONCURRENT_PER_USER = 50\n", &catalog()).is_empty(), "{path}");
    }
}

#[test]
fn the_cli_exits_one_on_findings_and_zero_on_clean_code() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lint");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_policy-values"))
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let dirty = run(&["lint".as_ref(), fixtures.as_os_str()]);
    assert_eq!(dirty.status.code(), Some(1));
    let out = String::from_utf8_lossy(&dirty.stdout);
    assert!(out.lines().any(|l| l.ends_with("service.go:7:7 allocation.max_concurrent_per_user hard-coded default of policy key allocation.max_concurrent_per_user (50): read it through PolicyClient")), "{out}");
    let json = run(&["lint".as_ref(), "--format".as_ref(), "json".as_ref(), fixtures.as_os_str()]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(parsed
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["file"].is_string() && f["line"].is_u64() && f["column"].is_u64()));
    let clean = run(&["lint".as_ref(), std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src").as_os_str()]);
    assert_eq!(clean.status.code(), Some(0), "{}", String::from_utf8_lossy(&clean.stdout));
}
