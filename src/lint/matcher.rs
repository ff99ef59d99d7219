//! The shared matcher: which catalog key a declared name is named like, and
//! whether the value declared is a literal (and equal to the key's default).

use crate::domain::{Catalog, KeyDef, Value};

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

pub(super) struct Matcher<'a> {
    pub(super) def: &'a KeyDef,
    suffix: String,
}

/// A matcher for every catalog key that has a suffix.
pub(super) fn matchers(catalog: &Catalog) -> Vec<Matcher<'_>> {
    let all = catalog.keys.iter().map(|def| Matcher { suffix: key_suffix(def.key.as_str()), def });
    all.filter(|m| !m.suffix.is_empty()).collect()
}

/// The key whose suffix `name` ends with; the longest suffix wins.
pub(super) fn best_match<'a, 'c>(name: &str, matchers: &'a [Matcher<'c>]) -> Option<&'a Matcher<'c>> {
    let name = normalise(name);
    matchers.iter().filter(|m| name.ends_with(&m.suffix)).max_by_key(|m| m.suffix.len())
}

/// A literal value, as far as the lint needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Int(i128),
    Float,
    Str(String),
    Bool(bool),
    /// An array of string literals on one line: `["git", "npm"]`,
    /// `&["git"]`, `vec!["git"]`, Go's `[]string{"git"}`.
    List(Vec<String>),
}

/// The literal `text` consists of, if any (after it only `;`, `,`, a comment).
pub(super) fn literal(text: &str) -> Option<Literal> {
    let text = text.trim();
    let (lit, rest) = match text.chars().next()? {
        '"' | '\'' | '`' => string_literal(text)?,
        '[' | '&' | 'v' => list_literal(text).or_else(|| word_literal(text))?,
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

/// A one-line array of string literals, and the text after it.
fn list_literal(text: &str) -> Option<(Literal, &str)> {
    let openings = [("[]string{", '}'), ("&[", ']'), ("vec![", ']'), ("[", ']')];
    let (mut rest, close) = openings.iter().find_map(|(open, close)| Some((text.strip_prefix(open)?, *close)))?;
    let mut items = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(close) {
            return Some((Literal::List(items), after));
        }
        let (Literal::Str(item), after) = string_literal(rest)? else { return None };
        items.push(item);
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
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
        (Literal::List(items), Value::List(d)) => items.iter().map(String::as_str).eq(d.iter().map(|i| &**i)),
        _ => false,
    }
}

/// What a finding says: a hard-coded default, or a constant named like the key.
pub(super) fn message(def: &KeyDef, lit: &Literal) -> String {
    let key = def.key.as_str();
    if equals_default(lit, &def.default) {
        let default = &def.default;
        format!("hard-coded default of policy key {key} ({default}): read it through PolicyClient")
    } else {
        format!("constant named like policy key {key}: read it through PolicyClient")
    }
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
        let list = Value::from(&["git", "npm"][..]);
        assert!(equals_default(&literal(r#"["git", "npm"];"#).unwrap(), &list));
        assert!(equals_default(&literal(r#"[]string{"git", "npm"}"#).unwrap(), &list));
        assert!(equals_default(&literal(r#"&["git","npm"], // allowlist"#).unwrap(), &list));
        assert!(!equals_default(&literal(r#"vec!["npm", "git"];"#).unwrap(), &list));
        assert_eq!(literal(r#"["git", other]"#), None);
        assert!(equals_default(&Literal::Bool(false), &Value::Bool(false)));
        assert!(!equals_default(&Literal::Float, &Value::Int(1)));
    }
}
