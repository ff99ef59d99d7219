//! Rust: `const`, `static` and `let` declarations (`pub`, `pub(...)`, `mut`
//! and `: T` allowed); a `#[cfg(test)]` line ends the file's scan; files under
//! `benches` are test files.

use super::declaration::{annotated_assign, decl, keyword, Decl};

/// The declaration `s` (trimmed at the start) makes, if any.
pub(super) fn declaration(s: &str) -> Option<Decl<'_>> {
    let s = match s.strip_prefix("pub(") {
        Some(rest) => rest.split_once(')')?.1.trim_start(),
        None => keyword(s, "pub").unwrap_or(s),
    };
    let s = ["const", "static", "let"].iter().find_map(|w| keyword(s, w))?;
    decl(keyword(s, "mut").unwrap_or(s), annotated_assign)
}

/// Whether the trimmed line opens the test module: test modules
/// conventionally close the file, and test constants are allowed.
pub(super) fn starts_tests(t: &str) -> bool {
    t.starts_with("#[cfg(test)]")
}

/// Whether the file `name`, in the directories `dirs`, is a benchmark.
pub(super) fn is_bench_file(name: &str, dirs: &[&str]) -> bool {
    name.ends_with(".rs") && dirs.contains(&"benches")
}

#[cfg(test)]
mod tests {
    use crate::lint::{decl_of, Lang};

    #[test]
    fn rust_declarations_are_const_static_or_let_with_the_offset_of_the_name() {
        let rust = "pub(crate) static mut LIMIT: u32 = 5;";
        assert_eq!(decl_of(Lang::Rust, rust, false), Some((22, "LIMIT", "5;")));
        assert_eq!(decl_of(Lang::Rust, "    let x: u8 = 1;", false), Some((8, "x", "1;")));
        assert_eq!(decl_of(Lang::Rust, "const fn f() -> u8 { 1 }", false), None);
    }
}
