//! The declaration syntax the languages share: keywords, identifiers and
//! the assignment forms `= v`, `: T = v` and `T = v`.

/// `s` without the leading `word` and the whitespace after it.
pub(super) fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(word)?;
    rest.starts_with(char::is_whitespace).then(|| rest.trim_start())
}

/// `s` without any leading run of the space-separated `words`.
pub(super) fn skip_keywords<'a>(mut s: &'a str, words: &str) -> &'a str {
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
pub(super) fn typed_assign(rest: &str) -> Option<&str> {
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
pub(super) fn annotated_assign(rest: &str) -> Option<&str> {
    match rest.trim_start().strip_prefix(':') {
        Some(typed) if !typed.starts_with([':', '=']) => typed_assign(typed),
        Some(_) => None,
        None => plain_assign(rest),
    }
}

/// A declaration: the line from the name on, the name, and the value text.
pub(super) struct Decl<'a> {
    pub(super) at_name: &'a str,
    pub(super) name: &'a str,
    pub(super) value: &'a str,
}

/// The declaration at `at_name`, if `assign` finds its value after the name.
pub(super) fn decl<'a>(at_name: &'a str, assign: impl Fn(&'a str) -> Option<&'a str>) -> Option<Decl<'a>> {
    let (name, rest) = ident(at_name)?;
    let value = assign(rest)?;
    Some(Decl { at_name, name, value })
}
