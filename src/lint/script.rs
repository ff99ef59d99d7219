//! TypeScript and JavaScript: `const|let|var NAME [: T] = lit` (after
//! `export`, `static`, `readonly`, `private`, `public`, `protected`) and object
//! or class fields `NAME: lit`, `NAME [: T] = lit` at line start; files named
//! `*.test.*` or `*.spec.*` are test files.

use super::declaration::{annotated_assign, decl, keyword, skip_keywords, Decl};
use super::matcher::literal;

/// The file extensions linted as TypeScript or JavaScript.
pub(super) const EXTENSIONS: [&str; 6] = ["ts", "tsx", "js", "jsx", "mjs", "cjs"];

/// The declaration `s` (trimmed at the start) makes, if any.
pub(super) fn declaration(s: &str) -> Option<Decl<'_>> {
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

pub(super) fn is_test_name(name: &str) -> bool {
    EXTENSIONS.iter().any(|ext| name.ends_with(&format!(".test.{ext}")) || name.ends_with(&format!(".spec.{ext}")))
}

#[cfg(test)]
mod tests {
    use crate::lint::{decl_of, Lang};

    #[test]
    fn script_declarations_follow_modifiers_or_are_fields_with_the_offset_of_the_name() {
        let ts = "  private readonly x: number = 5;";
        assert_eq!(decl_of(Lang::Script, ts, false), Some((19, "x", "5;")));
        assert_eq!(decl_of(Lang::Script, "  x: 5,", false), Some((2, "x", "5,")));
        assert_eq!(decl_of(Lang::Script, "if (x == 5) {", false), None);
    }
}
