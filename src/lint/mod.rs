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
//! `true`/`false`/`True`/`False`, and for list keys one-line arrays of string
//! literals (`["git", "npm"]`, `&[...]`, `vec![...]`, Go's `[]string{...}`),
//! followed by nothing but `;` or `,` and a comment (`50 * 60` and `cfg.Limit`
//! are not literals). A literal equal to the key's default (ints numerically,
//! strings exactly, bools, lists item by item in order) is reported as a
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
//!
//! Files: `matcher` (which key a name is named like, literals), `declaration`
//! (the syntax the languages share), one file per language (`rust`, `go`,
//! `script`, `python`), `scan` (which lines are code) and `walk` (which files).

mod declaration;
mod go;
mod matcher;
mod python;
mod rust;
mod scan;
mod script;
mod walk;

use std::path::Path;

use crate::domain::Catalog;
use declaration::Decl;
use matcher::{best_match, literal, matchers, message};
use scan::Scan;

pub use walk::{is_test_file, lint_paths};

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

/// The language of a file, by its extension.
fn language(path: &str) -> Option<Lang> {
    let ext = Path::new(path).extension()?.to_str()?;
    match ext {
        "rs" => Some(Lang::Rust),
        "go" => Some(Lang::Go),
        ext if script::EXTENSIONS.contains(&ext) => Some(Lang::Script),
        "py" => Some(Lang::Python),
        _ => None,
    }
}

/// The declaration `line` makes in `lang`, if any.
fn declaration(lang: Lang, line: &str, in_go_block: bool) -> Option<Decl<'_>> {
    let s = line.trim_start();
    match lang {
        Lang::Rust => rust::declaration(s),
        Lang::Go => go::declaration(s, in_go_block),
        Lang::Script => script::declaration(s),
        Lang::Python => python::declaration(s),
    }
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

/// One line per finding: `file:line:col key message`.
pub fn format_text(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("{}:{}:{} {} {}\n", f.file, f.line, f.column, f.key, f.message)).collect()
}

/// A declaration's name offset, name and trimmed value, for the languages' tests.
#[cfg(test)]
fn decl_of(lang: Lang, line: &str, in_block: bool) -> Option<(usize, &str, &str)> {
    declaration(lang, line, in_block).map(|d| (line.len() - d.at_name.len(), d.name, d.value.trim()))
}
