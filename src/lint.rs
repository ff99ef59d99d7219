//! The lint gate: business constants hard-coded in service code, which should be read through `PolicyClient`.
//!
//! [`lint_source`] scans one file line by line, in the language of its
//! extension: Rust (`.rs`), Go (`.go`), TypeScript/JavaScript (`.ts .tsx .js
//! .jsx .mjs .cjs`) or Python (`.py`); other files give no findings.
//! [`lint_paths`] walks files and directories and skips test files.
//!
//! Matching: names are normalised (lowercase, `_` and `-` removed). A key's
//! suffix is its normalised last segment (`allocation.max_concurrent_per_user`
//! -> `maxconcurrentperuser`), or its last two segments when the last is a
//! single generic word (`maas.enabled` -> `maasenabled`). A declared name
//! matches when it ends with (or equals) the suffix: `MAX_CONCURRENT_PER_USER`,
//! `maxConcurrentPerUser`, `DefaultMaxConcurrentPerUser`, `MAAS_ENABLED`; the
//! full key with dots as underscores ends with the suffix, so it matches too.
//! Of several matching keys, the longest suffix wins.
//!
//! Only literal values count: numbers (`50`, `50_000`, `50u32`, `1.5`),
//! strings (`"full-reimage"`, `'x'`, backticks without `${`) and
//! `true`/`false`/`True`/`False`, followed by nothing but `;` or `,` and a
//! comment (`50 * 60` and `cfg.Limit` are not literals). A literal equal to the
//! key's default (ints numerically, strings exactly, bools) is reported as a
//! hard-coded default, any other as a constant named like the key.
//!
//! Declarations: Rust `const`/`static`/`let` (`pub`, `mut`, `: T` allowed);
//! Go `const`/`var NAME [T] = lit`, `NAME := lit`, `NAME [T] = lit` inside
//! `const (`/`var (` blocks and struct-literal fields `Name: lit,`; TS/JS
//! `const|let|var NAME [: T] = lit` (after `export`, `static`, `readonly`,
//! `private`, `public`, `protected`) and object or class fields `NAME: lit`,
//! `NAME [: T] = lit` at line start; Python `NAME [: T] = lit` at any
//! indentation. The column reported (1-based) is the name's.
//!
//! Skipped: comment lines (starting `//`, `#`, `/*` or `*`), block comments
//! whose `/*` starts a line, Python triple-quoted blocks, lines containing
//! `policy-lint: allow`, and in Rust files every line after a `#[cfg(test)]`
//! line (test modules conventionally close the file; the spec allows test
//! constants).

use std::fs;
use std::path::{Path, PathBuf};

use crate::domain::{Catalog, KeyDef, Value};

/// One hard-coded constant named like a policy key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Go,
    Script,
    Python,
}

fn language(path: &str) -> Option<Lang> {
    let ext = Path::new(path).extension()?.to_str()?;
    match ext {
        "rs" => Some(Lang::Rust),
        "go" => Some(Lang::Go),
        "ts" | "tsx" | "js" | "jsx" | "mjs" | "cjs" => Some(Lang::Script),
        "py" => Some(Lang::Python),
        _ => None,
    }
}

/// Lowercase, with `_` and `-` removed.
fn normalise(name: &str) -> String {
    name.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// The normalised suffix a name must end with to match `key`.
fn key_suffix(key: &str) -> String {
    let segments: Vec<&str> = key.split('.').collect();
    match segments.as_slice() {
        [.., parent, last] if !last.contains('_') => normalise(&format!("{parent}{last}")),
        [.., last] => normalise(last),
        [] => String::new(),
    }
}

struct Matcher<'a> {
    def: &'a KeyDef,
    suffix: String,
}

fn matchers(catalog: &Catalog) -> Vec<Matcher<'_>> {
    let all = catalog.keys.iter().map(|def| Matcher { suffix: key_suffix(def.key.as_str()), def });
    all.filter(|m| !m.suffix.is_empty()).collect()
}

/// The key whose suffix `name` ends with; the longest suffix wins.
fn best_match<'a, 'c>(name: &str, matchers: &'a [Matcher<'c>]) -> Option<&'a Matcher<'c>> {
    let name = normalise(name);
    matchers.iter().filter(|m| name.ends_with(&m.suffix)).max_by_key(|m| m.suffix.len())
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Int(i128),
    Float,
    Str(String),
    Bool(bool),
}

/// The literal `text` consists of, if any (after it only `;`, `,`, a comment).
fn literal(text: &str) -> Option<Literal> {
    let text = text.trim();
    let (lit, rest) = match text.chars().next()? {
        '"' | '\'' | '`' => string_literal(text)?,
        _ => word_literal(text)?,
    };
    let rest = rest.trim_start();
    let rest = rest.strip_prefix([';', ',']).unwrap_or(rest).trim_start();
    let ends = rest.is_empty() || ["//", "/*", "#"].iter().any(|c| rest.starts_with(c));
    ends.then_some(lit)
}

fn string_literal(text: &str) -> Option<(Literal, &str)> {
    let quote = text.chars().next()?;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote != '`' {
            escaped = true;
        } else if c == quote {
            let body = &text[1..i];
            if quote == '`' && body.contains("${") {
                return None;
            }
            return Some((Literal::Str(body.to_string()), &text[i + 1..]));
        }
    }
    None
}

fn word_literal(text: &str) -> Option<(Literal, &str)> {
    let (sign, body) = match text.strip_prefix('-') {
        Some(body) => (-1, body),
        None => (1, text),
    };
    let end = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(body.len());
    let (word, rest) = body.split_at(end);
    let lit = match word {
        "true" | "True" if sign == 1 => Literal::Bool(true),
        "false" | "False" if sign == 1 => Literal::Bool(false),
        _ => number(word, sign)?,
    };
    Some((lit, rest))
}

fn number(word: &str, sign: i128) -> Option<Literal> {
    if !word.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let end = word.find(|c: char| !c.is_ascii_digit() && c != '_');
    let (digits, suffix) = word.split_at(end.unwrap_or(word.len()));
    let int_suffixes = ["", "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize"];
    if int_suffixes.contains(&suffix) {
        let digits: String = digits.chars().filter(|c| *c != '_').collect();
        return digits.parse::<i128>().ok().map(|n| Literal::Int(sign * n));
    }
    let float: String = word.chars().filter(|c| *c != '_').collect();
    float.parse::<f64>().ok().map(|_| Literal::Float)
}

fn equals_default(lit: &Literal, default: &Value) -> bool {
    match (lit, default) {
        (Literal::Int(n), Value::Int(d)) => *n == i128::from(*d),
        (Literal::Str(s), Value::String(d)) => s.as_str() == &**d,
        (Literal::Bool(b), Value::Bool(d)) => b == d,
        _ => false,
    }
}

fn message(def: &KeyDef, lit: &Literal) -> String {
    let key = def.key.as_str();
    if equals_default(lit, &def.default) {
        let default = &def.default;
        format!("hard-coded default of policy key {key} ({default}): read it through PolicyClient")
    } else {
        format!("constant named like policy key {key}: read it through PolicyClient")
    }
}

/// `s` without the leading `word` and the whitespace after it.
fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(word)?;
    rest.starts_with(char::is_whitespace).then(|| rest.trim_start())
}

/// `s` without any leading run of the space-separated `words`.
fn skip_keywords<'a>(mut s: &'a str, words: &str) -> &'a str {
    while let Some(rest) = words.split(' ').find_map(|w| keyword(s, w)) {
        s = rest;
    }
    s
}

/// The identifier at the start of `s` and the text after it.
fn ident(s: &str) -> Option<(&str, &str)> {
    let first = s.chars().next()?;
    if !(first.is_alphabetic() || first == '_' || first == '$') {
        return None;
    }
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$')).unwrap_or(s.len());
    Some(s.split_at(end))
}

/// The value after a plain `=` (not `==` or `=>`).
fn plain_assign(rest: &str) -> Option<&str> {
    let value = rest.trim_start().strip_prefix('=')?;
    (!value.starts_with(['=', '>'])).then_some(value)
}

/// The value after `TYPE = ` (the type is any text without a plain `=`).
fn typed_assign(rest: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = rest[from..].find('=') {
        let at = from + i;
        if let Some(value) = plain_assign(&rest[at..]) {
            let before = rest[..at].chars().last();
            if !matches!(before, Some('=' | '!' | '<' | '>')) {
                return Some(value);
            }
        }
        from = at + 1;
    }
    None
}

/// The value after `= v` or `: T = v`.
fn annotated_assign(rest: &str) -> Option<&str> {
    match rest.trim_start().strip_prefix(':') {
        Some(typed) if !typed.starts_with([':', '=']) => typed_assign(typed),
        Some(_) => None,
        None => plain_assign(rest),
    }
}

/// A declaration: the line from the name on, the name, and the value text.
struct Decl<'a> {
    at_name: &'a str,
    name: &'a str,
    value: &'a str,
}

fn decl<'a>(at_name: &'a str, assign: impl Fn(&'a str) -> Option<&'a str>) -> Option<Decl<'a>> {
    let (name, rest) = ident(at_name)?;
    let value = assign(rest)?;
    Some(Decl { at_name, name, value })
}

fn rust_decl(s: &str) -> Option<Decl<'_>> {
    let s = match s.strip_prefix("pub(") {
        Some(rest) => rest.split_once(')')?.1.trim_start(),
        None => keyword(s, "pub").unwrap_or(s),
    };
    let s = ["const", "static", "let"].iter().find_map(|w| keyword(s, w))?;
    decl(keyword(s, "mut").unwrap_or(s), annotated_assign)
}

fn go_decl(s: &str, in_block: bool) -> Option<Decl<'_>> {
    if let Some(s) = keyword(s, "const").or_else(|| keyword(s, "var")) {
        return decl(s, typed_assign);
    }
    decl(s, |rest| {
        if let Some(value) = rest.trim_start().strip_prefix(":=") {
            return Some(value);
        }
        if in_block {
            return typed_assign(rest);
        }
        // A struct-literal field: `Name: lit,`.
        rest.strip_prefix(':').filter(|v| !v.starts_with('='))
    })
}

fn script_decl(s: &str) -> Option<Decl<'_>> {
    let s = skip_keywords(s, "export static readonly private public protected");
    if let Some(s) = ["const", "let", "var"].iter().find_map(|w| keyword(s, w)) {
        return decl(s, annotated_assign);
    }
    decl(s, |rest| {
        let field = rest.trim_start().strip_prefix(':');
        match field {
            Some(value) if literal(value).is_some() => Some(value),
            _ => annotated_assign(rest),
        }
    })
}

fn declaration(lang: Lang, line: &str, in_go_block: bool) -> Option<Decl<'_>> {
    let s = line.trim_start();
    match lang {
        Lang::Rust => rust_decl(s),
        Lang::Go => go_decl(s, in_go_block),
        Lang::Script => script_decl(s),
        Lang::Python => decl(s, annotated_assign),
    }
}

/// Line-to-line state: block comments, docstrings, Go blocks, Rust tests.
#[derive(Default)]
struct Scan {
    in_block_comment: bool,
    in_docstring: bool,
    in_go_block: bool,
    done: bool,
}

impl Scan {
    /// Whether `line` is code to lint; updates the state.
    fn admit(&mut self, lang: Lang, line: &str) -> bool {
        let t = line.trim();
        if self.in_block_comment {
            self.in_block_comment = !t.contains("*/");
            return false;
        }
        let triple_quotes = t.matches("\"\"\"").count() + t.matches("'''").count();
        if lang == Lang::Python && (self.in_docstring || triple_quotes % 2 == 1) {
            self.in_docstring ^= triple_quotes % 2 == 1;
            return false;
        }
        if lang == Lang::Rust && t.starts_with("#[cfg(test)]") {
            self.done = true;
            return false;
        }
        if lang == Lang::Go && (t.starts_with("const (") || t.starts_with("var (")) {
            self.in_go_block = true;
            return false;
        }
        if lang == Lang::Go && self.in_go_block && t.starts_with(')') {
            self.in_go_block = false;
            return false;
        }
        if lang != Lang::Python && t.starts_with("/*") && !t.contains("*/") {
            self.in_block_comment = true;
            return false;
        }
        let comment = ["//", "#", "/*", "*"].iter().any(|c| t.starts_with(c));
        !comment && !is_allowed(line)
    }
}

/// Whether the line carries `policy-lint: allow` (spaces after `:` optional).
fn is_allowed(line: &str) -> bool {
    line.match_indices("policy-lint:").any(|(i, m)| line[i + m.len()..].trim_start().starts_with("allow"))
}

/// Lints one file's text; the language comes from the extension of `path`.
pub fn lint_source(path: &str, text: &str, catalog: &Catalog) -> Vec<Finding> {
    let Some(lang) = language(path) else {
        return Vec::new();
    };
    let matchers = matchers(catalog);
    let mut scan = Scan::default();
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if !scan.admit(lang, line) {
            if scan.done {
                break;
            }
            continue;
        }
        let Some(d) = declaration(lang, line, scan.in_go_block) else {
            continue;
        };
        let (Some(m), Some(lit)) = (best_match(d.name, &matchers), literal(d.value)) else {
            continue;
        };
        findings.push(Finding {
            file: path.to_string(),
            line: index + 1,
            column: line[..line.len() - d.at_name.len()].chars().count() + 1,
            key: m.def.key.as_str().to_string(),
            message: message(m.def, &lit),
        });
    }
    findings
}

const TEST_DIRS: [&str; 4] = ["tests", "test", "__tests__", "testdata"];
const SKIPPED_DIRS: [&str; 4] = ["target", "node_modules", "vendor", ".git"];

/// Whether `path` is a test file: `_test.go`, `*_test.py`, `test_*.py`,
/// `*.test.{ts,tsx,js,jsx,mjs,cjs}`, `*.spec.{...}`, anything under a
/// `tests`, `test`, `__tests__` or `testdata` directory, and Rust files under
/// `benches`. Every component of `path` counts: pass a path relative to the
/// root being linted.
pub fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dirs: Vec<&str> = match path.parent() {
        Some(parent) => parent.iter().filter_map(|c| c.to_str()).collect(),
        None => Vec::new(),
    };
    let script = ["ts", "tsx", "js", "jsx", "mjs", "cjs"];
    let script_test =
        script.iter().any(|ext| name.ends_with(&format!(".test.{ext}")) || name.ends_with(&format!(".spec.{ext}")));
    name.ends_with("_test.go")
        || (name.ends_with(".py") && (name.ends_with("_test.py") || name.starts_with("test_")))
        || script_test
        || dirs.iter().any(|d| TEST_DIRS.contains(d))
        || (name.ends_with(".rs") && dirs.contains(&"benches"))
}

/// Lints files and directories (recursively, skipping hidden directories,
/// `target`, `node_modules`, `vendor` and test files); findings are sorted by
/// file, line and column. Test files are judged by their path below each root
/// given (or, for a file given, by its name), so a root inside `tests/` is linted.
pub fn lint_paths(paths: &[PathBuf], catalog: &Catalog) -> std::io::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for root in paths {
        let mut files = Vec::new();
        if fs::metadata(root)?.is_dir() {
            walk(root, &mut files)?;
        } else {
            files.push(root.clone());
        }
        for file in files {
            let relative = match file.strip_prefix(root) {
                Ok(below) if !below.as_os_str().is_empty() => below,
                _ => file.file_name().map(Path::new).unwrap_or(&file),
            };
            let display = file.display().to_string();
            if language(&display).is_none() || is_test_file(relative) {
                continue;
            }
            let text = String::from_utf8_lossy(&fs::read(&file)?).into_owned();
            findings.extend(lint_source(&display, &text, catalog));
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Ok(findings)
}

/// Collects the files under `dir`, not following symbolic links.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if kind.is_dir() && !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_ref()) {
            walk(&entry.path(), files)?;
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// One line per finding: `file:line:col key message`.
pub fn format_text(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("{}:{}:{} {} {}\n", f.file, f.line, f.column, f.key, f.message)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(name: &str) -> Option<String> {
        let catalog = Catalog::builtin().unwrap();
        let all = matchers(&catalog);
        best_match(name, &all).map(|m| m.def.key.as_str().to_string())
    }

    #[test]
    fn a_key_suffix_is_its_last_segment_or_its_last_two_when_the_last_is_one_word() {
        assert_eq!(key_suffix("allocation.max_concurrent_per_user"), "maxconcurrentperuser");
        assert_eq!(key_suffix("maas.enabled"), "maasenabled");
        assert_eq!(normalise("Max-Concurrent_PER_user"), "maxconcurrentperuser");
    }

    #[test]
    fn names_ending_with_a_key_suffix_match_in_any_case_style() {
        let key = Some("allocation.max_concurrent_per_user".to_string());
        for name in ["MAX_CONCURRENT_PER_USER", "maxConcurrentPerUser", "DefaultMaxConcurrentPerUser"] {
            assert_eq!(matched(name), key, "{name}");
        }
        assert_eq!(matched("ALLOCATION_MAX_CONCURRENT_PER_USER"), key);
        assert_eq!(matched("MAAS_ENABLED").as_deref(), Some("maas.enabled"));
        for name in ["ENABLED", "enabled", "MAX_RETRIES", "MAX_CONCURRENT", "REQUESTS_PER_MINUTE"] {
            assert_eq!(matched(name), None, "{name}");
        }
    }

    #[test]
    fn of_several_matching_keys_the_longest_suffix_wins() {
        let key = |k: &str| format!("[[key]]\nkey = \"{k}\"\ntype = \"bool\"\ndefault = true\ndescription = \"x\"\n");
        let text = format!("{}{}", key("a.window_days"), key("b.refund_window_days"));
        let catalog = Catalog::parse(&text).unwrap();
        let all = matchers(&catalog);
        let best = |name: &str| best_match(name, &all).map(|m| m.def.key.as_str());
        assert_eq!(best("REFUND_WINDOW_DAYS"), Some("b.refund_window_days"));
        assert_eq!(best("WINDOW_DAYS"), Some("a.window_days"));
    }

    #[test]
    fn literals_are_numbers_strings_and_bools_followed_only_by_punctuation_or_a_comment() {
        assert_eq!(literal(" 50;"), Some(Literal::Int(50)));
        assert_eq!(literal(" 50_000, // note"), Some(Literal::Int(50_000)));
        assert_eq!(literal(" 50u32; # x"), Some(Literal::Int(50)));
        assert_eq!(literal(" -5"), Some(Literal::Int(-5)));
        assert_eq!(literal(" 1.5"), Some(Literal::Float));
        assert_eq!(literal(r#" "full-reimage";"#), Some(Literal::Str("full-reimage".into())));
        assert_eq!(literal(r#" 'a\'b'"#), Some(Literal::Str(r"a\'b".into())));
        assert_eq!(literal(" `plain`"), Some(Literal::Str("plain".into())));
        assert_eq!(literal(" True"), Some(Literal::Bool(true)));
        assert_eq!(literal(" false;"), Some(Literal::Bool(false)));
        for text in [" 50 * 60", " cfg.Limit", " `${x}`", " \"open", " TRUE", " inf", " 50.max(1)", ""] {
            assert_eq!(literal(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_literal_equals_a_default_by_value_and_type() {
        assert!(equals_default(&Literal::Int(50), &Value::Int(50)));
        assert!(!equals_default(&Literal::Str("50".into()), &Value::Int(50)));
        assert!(equals_default(&Literal::Str("user-revoke".into()), &Value::String("user-revoke".into())));
        assert!(equals_default(&Literal::Bool(false), &Value::Bool(false)));
        assert!(!equals_default(&Literal::Float, &Value::Int(1)));
    }

    fn decl_of(lang: Lang, line: &str, in_block: bool) -> Option<(usize, &str, &str)> {
        declaration(lang, line, in_block).map(|d| (line.len() - d.at_name.len(), d.name, d.value.trim()))
    }

    #[test]
    fn declarations_are_recognised_per_language_with_the_offset_of_the_name() {
        let rust = "pub(crate) static mut LIMIT: u32 = 5;";
        assert_eq!(decl_of(Lang::Rust, rust, false), Some((22, "LIMIT", "5;")));
        assert_eq!(decl_of(Lang::Rust, "    let x: u8 = 1;", false), Some((8, "x", "1;")));
        assert_eq!(decl_of(Lang::Rust, "const fn f() -> u8 { 1 }", false), None);
        assert_eq!(decl_of(Lang::Go, "var X int64 = 5", false), Some((4, "X", "5")));
        assert_eq!(decl_of(Lang::Go, "\tx := 5", false), Some((1, "x", "5")));
        assert_eq!(decl_of(Lang::Go, "\tX Kind = 5", true), Some((1, "X", "5")));
        assert_eq!(decl_of(Lang::Go, "\tX = 5", false), None);
        assert_eq!(decl_of(Lang::Go, "\tX: 5,", false), Some((1, "X", "5,")));
        let ts = "  private readonly x: number = 5;";
        assert_eq!(decl_of(Lang::Script, ts, false), Some((19, "x", "5;")));
        assert_eq!(decl_of(Lang::Script, "  x: 5,", false), Some((2, "x", "5,")));
        assert_eq!(decl_of(Lang::Script, "if (x == 5) {", false), None);
        assert_eq!(decl_of(Lang::Python, "    X: Final = 5", false), Some((4, "X", "5")));
        assert_eq!(decl_of(Lang::Python, "X == 5", false), None);
    }

    #[test]
    fn the_allow_marker_is_found_in_any_comment_syntax() {
        assert!(is_allowed("X = 1  # policy-lint: allow"));
        assert!(is_allowed("x := 1 // policy-lint:allow (legacy)"));
        assert!(!is_allowed("x := 1 // policy-lint: deny"));
    }
}
