//! Which lines of a file are code to lint: comment lines, block comments,
//! Python triple-quoted blocks, lines marked `policy-lint: allow` and Rust
//! test modules are not; Go `const (`/`var (` blocks are tracked.

use super::{go, python, rust, Lang};

/// Line-to-line state: block comments, docstrings, Go blocks, Rust tests.
#[derive(Default)]
pub(super) struct Scan {
    in_block_comment: bool,
    in_docstring: bool,
    pub(super) in_go_block: bool,
    /// Nothing after this line is linted.
    pub(super) done: bool,
}

impl Scan {
    /// Whether `line` is code to lint; updates the state.
    pub(super) fn admit(&mut self, lang: Lang, line: &str) -> bool {
        let t = line.trim();
        if self.in_block_comment {
            self.in_block_comment = !t.contains("*/");
            return false;
        }
        if lang == Lang::Python {
            let toggles = python::toggles_docstring(t);
            if self.in_docstring || toggles {
                self.in_docstring ^= toggles;
                return false;
            }
        }
        if lang == Lang::Rust && rust::starts_tests(t) {
            self.done = true;
            return false;
        }
        if lang == Lang::Go && go::opens_block(t) {
            self.in_go_block = true;
            return false;
        }
        if lang == Lang::Go && self.in_go_block && go::closes_block(t) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_marker_is_found_in_any_comment_syntax() {
        assert!(is_allowed("X = 1  # policy-lint: allow"));
        assert!(is_allowed("x := 1 // policy-lint:allow (legacy)"));
        assert!(!is_allowed("x := 1 // policy-lint: deny"));
    }
}
