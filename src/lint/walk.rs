//! Which files to lint: walking directories, skipping build, vendored,
//! hidden and test files.

use std::fs;
use std::path::{Path, PathBuf};

use super::{go, language, lint_source, python, rust, script, Finding};
use crate::domain::Catalog;

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
    go::is_test_name(name)
        || python::is_test_name(name)
        || script::is_test_name(name)
        || dirs.iter().any(|d| TEST_DIRS.contains(d))
        || rust::is_bench_file(name, &dirs)
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
