//! Go: `const`/`var NAME [T] = lit`, `NAME := lit`, `NAME [T] = lit` inside
//! `const (`/`var (` blocks, and struct-literal fields `Name: lit,`; files
//! named `_test.go` are test files.

use super::declaration::{decl, keyword, typed_assign, Decl};

/// The declaration `s` (trimmed at the start) makes, if any; `in_block`
/// when the line is inside a `const (` or `var (` block.
pub(super) fn declaration(s: &str, in_block: bool) -> Option<Decl<'_>> {
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

/// Whether the trimmed line opens a `const (` or `var (` block.
pub(super) fn opens_block(t: &str) -> bool {
    t.starts_with("const (") || t.starts_with("var (")
}

/// Whether the trimmed line closes a block.
pub(super) fn closes_block(t: &str) -> bool {
    t.starts_with(')')
}

pub(super) fn is_test_name(name: &str) -> bool {
    name.ends_with("_test.go")
}

#[cfg(test)]
mod tests {
    use crate::lint::{decl_of, Lang};

    #[test]
    fn go_declarations_are_const_var_short_block_or_field_forms_with_the_offset_of_the_name() {
        assert_eq!(decl_of(Lang::Go, "var X int64 = 5", false), Some((4, "X", "5")));
        assert_eq!(decl_of(Lang::Go, "\tx := 5", false), Some((1, "x", "5")));
        assert_eq!(decl_of(Lang::Go, "\tX Kind = 5", true), Some((1, "X", "5")));
        assert_eq!(decl_of(Lang::Go, "\tX = 5", false), None);
        assert_eq!(decl_of(Lang::Go, "\tX: 5,", false), Some((1, "X", "5,")));
    }
}
