//! Plain-text tables for the CLI's HTTP commands, and typing a value typed
//! on the command line.

use serde_json::Value;

/// Reads a command-line value as the key's type: `45`, `true`, any text, or
/// for a list a JSON array (`'["git","npm"]'`) or comma-separated items (`git,npm`).
pub fn typed(raw: &str, value_type: &str) -> Result<Value, String> {
    match value_type {
        "int" => raw.parse::<i64>().map(Value::from).map_err(|_| format!("{raw:?} is not a whole number")),
        "bool" => raw.parse::<bool>().map(Value::from).map_err(|_| format!("{raw:?} is not true or false")),
        "list" if raw.trim_start().starts_with('[') => {
            serde_json::from_str(raw).map_err(|e| format!("{raw:?} is not a JSON array: {e}"))
        }
        "list" => Ok(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>().into()),
        _ => Ok(Value::from(raw)),
    }
}

/// A cell's text: strings bare, null as `-`, objects summarised, anything
/// else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(_) => "{...}".into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn items<'a>(json: &'a Value, field: &str) -> &'a [Value] {
    json[field].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn scope_text(level: &Value, scope_id: &Value) -> String {
    match (level.as_str(), scope_id.as_str()) {
        (Some("global"), _) | (None, _) => "global".into(),
        (Some(level), Some(id)) => format!("{level} {id}"),
        (Some(level), None) => level.into(),
    }
}

pub fn keys(json: &Value) -> String {
    let rows = items(json, "keys")
        .iter()
        .map(|k| {
            let b = &k["bounds"];
            let items = match (&b["enum"], &b["pattern"]) {
                (Value::Array(values), _) => values.iter().map(cell).collect::<Vec<_>>().join("|"),
                (_, Value::String(pattern)) => format!("/{pattern}/"),
                _ => "true|false".into(),
            };
            let bounds = match (&b["min"], &b["max_items"]) {
                (Value::Number(_), _) => format!("{}..{}", b["min"], b["max"]),
                (_, Value::Number(n)) => format!("max {n}: {items}"),
                _ => items,
            };
            vec![cell(&k["key"]), cell(&k["type"]), cell(&k["default"]), bounds, cell(&k["unit"])]
        })
        .collect();
    table(&["KEY", "TYPE", "DEFAULT", "BOUNDS", "UNIT"], rows)
}

pub fn resolution(json: &Value, explain: bool) -> String {
    let source = &json["source"];
    let mut out = format!("{}  ({})\n", cell(&json["value"]), scope_text(&source["level"], &source["scope_id"]));
    if explain {
        let rows = items(json, "explain")
            .iter()
            .map(|r| {
                let won = if r["won"] == Value::Bool(true) { "<-" } else { "" };
                vec![cell(&r["level"]), cell(&r["scope_id"]), cell(&r["state"]), cell(&r["value"]), won.into()]
            })
            .collect();
        out.push_str(&table(&["LEVEL", "SCOPE ID", "STATE", "VALUE", ""], rows));
    }
    out
}

pub fn written(json: &Value) -> String {
    if json["unchanged"] == Value::Bool(true) {
        return format!(
            "unchanged: {} at {} is already {} (value seq {}); nothing written\n",
            cell(&json["key"]),
            scope_text(&json["level"], &json["scope_id"]),
            cell(&json["value"]),
            cell(&json["value_seq"]),
        );
    }
    let row = &json["value"];
    format!(
        "{} {} at {}: {} -> {} (effective {}, seq {}, audit {})\n",
        cell(&row["kind"]),
        cell(&row["key"]),
        scope_text(&row["level"], &row["scope_id"]),
        cell(&json["old_value"]),
        cell(&row["value"]),
        cell(&row["effective_at"]),
        cell(&row["seq"]),
        cell(&json["audit_id"]),
    )
}

/// A change request: its id and state first (what a script needs).
pub fn change_request(json: &Value) -> String {
    let approvers: Vec<String> = items(json, "approvals").iter().map(|a| cell(&a["approver"])).collect();
    format!(
        "change request {} {}: {} at {}: {} -> {} (by {}, approvals {}/{}{})\n",
        cell(&json["id"]),
        cell(&json["state"]),
        cell(&json["key"]),
        scope_text(&json["level"], &json["scope_id"]),
        cell(&json["old_value"]),
        cell(&json["value"]),
        cell(&json["author"]),
        approvers.len(),
        cell(&json["approvals_required"]),
        if approvers.is_empty() { String::new() } else { format!(": {}", approvers.join(", ")) },
    )
}

pub fn change_requests(json: &Value) -> String {
    let rows = items(json, "change_requests")
        .iter()
        .map(|r| {
            let approvals = format!("{}/{}", items(r, "approvals").len(), cell(&r["approvals_required"]));
            vec![
                cell(&r["id"]),
                cell(&r["state"]),
                cell(&r["key"]),
                scope_text(&r["level"], &r["scope_id"]),
                cell(&r["value"]),
                cell(&r["author"]),
                approvals,
                cell(&r["created_at"]),
            ]
        })
        .collect();
    table(&["ID", "STATE", "KEY", "SCOPE", "VALUE", "AUTHOR", "APPROVALS", "CREATED"], rows)
}

/// A preview: what the write would do, and what shadows it.
pub fn preview(json: &Value) -> String {
    let shadow = &json["shadowed_by"];
    let would = match json["outcome"].as_str() {
        Some("change_request") => format!("a change request needing {} approval(s)", cell(&json["approvals_required"])),
        Some("unchanged") => "unchanged (already stored there)".to_string(),
        _ => "written".to_string(),
    };
    let mut out = format!(
        "dry run: {} at {}: {} -> {} would be {would}; nothing written\n",
        cell(&json["key"]),
        cell(&json["scope"]),
        cell(&json["before"]),
        cell(&json["after"]),
    );
    out.push_str(&format!("shadowed by {} override(s) at more specific levels", cell(&shadow["total"])));
    if let Some(levels) = shadow["by_level"].as_object().filter(|l| !l.is_empty()) {
        let counts: Vec<String> = levels.iter().map(|(l, n)| format!("{l} {n}")).collect();
        out.push_str(&format!(" ({})", counts.join(", ")));
    }
    out.push('\n');
    for s in items(shadow, "first") {
        out.push_str(&format!("  {} keeps {}\n", scope_text(&s["level"], &s["scope_id"]), cell(&s["value"])));
    }
    out
}

pub fn history(json: &Value) -> String {
    let rows = items(json, "changes")
        .iter()
        .map(|c| {
            let kind = match c["cancelled_by"] {
                Value::Null => cell(&c["kind"]),
                _ => format!("{} (cancelled)", cell(&c["kind"])),
            };
            let fields = ["value", "effective_at", "actor", "reason", "id", "audit_id"];
            let mut row = vec![cell(&c["seq"]), kind];
            row.extend(fields.iter().map(|f| cell(&c[*f])));
            row
        })
        .collect();
    table(&["SEQ", "KIND", "VALUE", "EFFECTIVE AT", "ACTOR", "REASON", "VALUE ID", "AUDIT ID"], rows)
}

pub fn audit(json: &Value) -> String {
    let rows = items(json, "items")
        .iter()
        .map(|a| {
            let m = &a["metadata"];
            let change = format!("{} -> {}", cell(&m["old_value"]), cell(&m["new_value"]));
            let outcome = match a["code"] {
                Value::Null => cell(&a["outcome"]),
                _ => format!("{} {}", cell(&a["outcome"]), cell(&a["code"])),
            };
            vec![
                cell(&a["seq"]),
                cell(&a["occurred_at"]),
                cell(&a["actor"]),
                cell(&a["action"]),
                outcome,
                cell(&a["policy_key"]),
                scope_text(&a["scope_level"], &a["scope_id"]),
                change,
                cell(&m["reason"]),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "ACTOR", "ACTION", "OUTCOME", "KEY", "SCOPE", "CHANGE", "REASON"], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_typed_on_the_command_line_take_the_key_type() {
        assert_eq!(typed("45", "int"), Ok(Value::from(45)));
        assert!(typed("4.5", "int").is_err());
        assert_eq!(typed("true", "bool"), Ok(Value::from(true)));
        assert_eq!(typed("45", "string"), Ok(Value::from("45")));
        assert_eq!(typed("git, cargo", "list"), Ok(serde_json::json!(["git", "cargo"])));
        assert_eq!(typed(r#"["a,b"]"#, "list"), Ok(serde_json::json!(["a,b"])));
        assert!(typed("[oops", "list").is_err());
    }

    #[test]
    fn tables_align_their_columns() {
        let out = table(&["A", "BB"], vec![vec!["long".into(), "x".into()], vec!["s".into(), "y".into()]]);
        assert_eq!(out, "A     BB\nlong  x\ns     y\n");
    }
}
