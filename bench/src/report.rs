//! Benchmark results as named fields, printed as a Markdown table or as JSON.
//!
//! Place: the last step of every benchmark program. A [`Record`] is an ordered list of
//! named values; the same record renders as a two-column Markdown table for people (and the
//! README) and as one JSON object for scripts, so the two outputs never disagree.

use std::fmt::Write as _;

/// One value of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Free text: names, versions, the command line.
    Text(String),
    /// A count or a size.
    Int(u64),
    /// A ratio or a duration.
    Float(f64),
    /// Not measured on this machine.
    Missing,
}

/// Named values in the order they are printed.
#[derive(Debug, Clone, Default)]
pub struct Record {
    fields: Vec<(String, Value)>,
}

impl Record {
    /// Appends `name` with `value`.
    pub fn push(&mut self, name: &str, value: Value) -> &mut Record {
        self.fields.push((name.to_owned(), value));
        self
    }

    /// Appends a text field.
    pub fn text(&mut self, name: &str, value: impl Into<String>) -> &mut Record {
        self.push(name, Value::Text(value.into()))
    }

    /// The value of `name`, if present.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A two-column Markdown table, one row per field.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| field | value |\n|---|---|\n");
        for (name, value) in &self.fields {
            let shown = value.to_string().replace('|', "\\|");
            let _ = writeln!(out, "| {name} | {shown} |");
        }
        out
    }

    /// A one-row Markdown table, with the header row when `header` is set; several runs
    /// printed this way paste into one table.
    pub fn markdown_row(&self, header: bool) -> String {
        let cell = |text: String| text.replace('|', "\\|");
        let mut out = String::new();
        if header {
            let names: Vec<String> = self.fields.iter().map(|(n, _)| cell(n.clone())).collect();
            let _ = writeln!(out, "| {} |", names.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(names.len()));
        }
        let values: Vec<String> = self.fields.iter().map(|(_, v)| cell(v.to_string())).collect();
        let _ = writeln!(out, "| {} |", values.join(" | "));
        out
    }

    /// One JSON object; [`Value::Missing`] becomes `null`.
    pub fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (name, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, name);
            out.push(':');
            match value {
                Value::Text(text) => json_string(&mut out, text),
                Value::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Float(x) if x.is_finite() => {
                    let _ = write!(out, "{x}");
                }
                Value::Float(_) | Value::Missing => out.push_str("null"),
            }
        }
        out.push('}');
        out
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x:.1}"),
            Value::Missing => f.write_str("n/a"),
        }
    }
}

impl From<Option<u64>> for Value {
    fn from(value: Option<u64>) -> Value {
        value.map_or(Value::Missing, Value::Int)
    }
}

/// Appends `text` as a JSON string literal.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_same_fields_both_ways() {
        let mut record = Record::default();
        record.text("command", "membench -- --path \"/a|b\"");
        record.push("connections", Value::Int(10_000)).push("per_conn", Value::Float(2.5));
        record.push("pss", Value::Missing);
        let json = concat!(
            r#"{"command":"membench -- --path \"/a|b\"","connections":10000,"#,
            r#""per_conn":2.5,"pss":null}"#
        );
        assert_eq!(record.json(), json);
        let table = record.markdown();
        assert!(table.contains("| command | membench -- --path \"/a\\|b\" |"));
        assert!(table.contains("| per_conn | 2.5 |"));
        assert!(table.contains("| pss | n/a |"));
        let row = record.markdown_row(true);
        assert!(row.starts_with("| command | connections | per_conn | pss |\n|---|---|---|---|\n"));
        assert!(row.ends_with("| 10000 | 2.5 | n/a |\n"));
    }
}
