//! Python: `NAME [: T] = lit` at any indentation, outside triple-quoted
//! blocks; files named `test_*.py` or `*_test.py` are test files.

use super::declaration::{annotated_assign, decl, Decl};

/// The declaration `s` (trimmed at the start) makes, if any.
pub(super) fn declaration(s: &str) -> Option<Decl<'_>> {
    decl(s, annotated_assign)
}

/// Whether the trimmed line opens or closes a triple-quoted block (an odd
/// number of `"""` and `'''`).
pub(super) fn toggles_docstring(t: &str) -> bool {
    let triple_quotes = t.matches("\"\"\"").count() + t.matches("'''").count();
    triple_quotes % 2 == 1
}

pub(super) fn is_test_name(name: &str) -> bool {
    name.ends_with(".py") && (name.ends_with("_test.py") || name.starts_with("test_"))
}

#[cfg(test)]
mod tests {
    use crate::lint::{decl_of, Lang};

    #[test]
    fn python_declarations_are_assignments_with_the_offset_of_the_name() {
        assert_eq!(decl_of(Lang::Python, "    X: Final = 5", false), Some((4, "X", "5")));
        assert_eq!(decl_of(Lang::Python, "X == 5", false), None);
    }
}
