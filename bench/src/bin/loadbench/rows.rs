//! One measured row per (scenario, parameter, peer), and the tables made from them.
//!
//! Every row carries the facts it was measured under (machine, kernel, versions, command)
//! in the JSON lines file; the Markdown tables put them once above each scenario's table,
//! and give each peer's value with its ratio to ours measured in the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use wse_bench::report::{Record, Value};

use crate::peers::Peer;

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    /// Throughput and rates.
    Higher,
    /// Latency and memory.
    Lower,
}

/// One measurement.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// `inbound`, `fanout`, `fanout_latency`, `connect_latency`, `ping`, `scale`.
    pub(crate) scenario: &'static str,
    pub(crate) peer: Peer,
    /// The parameter as people read it (`1,000 subscribers`, `64 B json`).
    pub(crate) param: String,
    /// The parameter as a number, for charts (subscribers, bytes, connections).
    pub(crate) x: f64,
    /// Named values, the headline one first.
    pub(crate) metrics: Vec<(&'static str, f64)>,
    /// Messages lost (missing, repeated or out of order); `None` where nothing is counted.
    pub(crate) lost: Option<u64>,
    /// Why a value is missing, or what to know about it.
    pub(crate) note: String,
    /// The server's command line.
    pub(crate) command: String,
}

/// The facts every row was measured under.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub(crate) date: String,
    pub(crate) machine: String,
    pub(crate) kernel: String,
    pub(crate) rustc: String,
    pub(crate) load_command: String,
    pub(crate) pinning: String,
    /// Version line per peer.
    pub(crate) versions: BTreeMap<Peer, String>,
}

impl Row {
    /// A row that says why `peer` was not measured.
    pub(crate) fn missing(
        scenario: &'static str,
        peer: Peer,
        param: String,
        x: f64,
        why: &str,
    ) -> Row {
        Row {
            scenario,
            peer,
            param,
            x,
            metrics: Vec::new(),
            lost: None,
            note: why.to_owned(),
            command: String::new(),
        }
    }

    /// The value of metric `name`.
    pub(crate) fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The row as one JSON object with the facts of the run.
    pub(crate) fn json(&self, facts: &Facts) -> String {
        let mut r = Record::default();
        r.text("date", &facts.date).text("machine", &facts.machine).text("kernel", &facts.kernel);
        r.text("rustc", &facts.rustc).text("pinning", &facts.pinning);
        r.text("scenario", self.scenario).text("peer", self.peer.key());
        r.text("version", facts.versions.get(&self.peer).cloned().unwrap_or_default());
        r.text("param", &self.param).push("x", Value::Float(self.x));
        for (name, value) in &self.metrics {
            r.push(name, Value::Float(*value));
        }
        r.push("lost", self.lost.into()).text("note", &self.note);
        r.text("server_command", &self.command).text("load_command", &facts.load_command);
        r.json()
    }
}

/// Rows read back from `results.jsonl` (for `--redraw`); metrics and scenarios this
/// program does not know are skipped.
pub(crate) fn parse_jsonl(text: &str) -> Vec<Row> {
    use sonic_rs::JsonValueTrait;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(value) = sonic_rs::from_str::<sonic_rs::Value>(line) else { continue };
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let Some(scenario) = SCENARIOS.iter().copied().find(|s| *s == text("scenario")) else {
            continue;
        };
        let Some(peer) = Peer::ALL.iter().copied().find(|p| p.key() == text("peer")) else {
            continue;
        };
        let metrics =
            METRICS.iter().filter_map(|&name| Some((name, value.get(name)?.as_f64()?))).collect();
        rows.push(Row {
            scenario,
            peer,
            param: text("param"),
            x: value.get("x").and_then(|v| v.as_f64()).unwrap_or(0.0),
            metrics,
            lost: value.get("lost").and_then(|v| v.as_u64()),
            note: text("note"),
            command: text("server_command"),
        });
    }
    rows
}

/// A scenario's Markdown table: one line per parameter and peer, the headline metric and
/// the others, the ratio of ours to the peer on `headline`, and the loss.
pub(crate) fn table(rows: &[Row], headline: &str, better: Better, facts: &Facts) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        for (name, _) in &row.metrics {
            if !names.contains(name) {
                names.push(name);
            }
        }
    }
    if !names.contains(&headline) {
        names.insert(0, headline);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}; {}; {})",
        first.scenario, facts.machine, facts.kernel, facts.pinning
    );
    let _ = writeln!(out);
    let _ = write!(out, "| parameter | server |");
    for name in &names {
        let _ = write!(out, " {name} |");
    }
    let _ = writeln!(out, " ours vs it on {headline} | lost | note |");
    let _ = writeln!(out, "|---|---|{}---:|---:|---|", "---:|".repeat(names.len()));
    for row in rows {
        let _ = write!(out, "| {} | {} |", row.param, row.peer.label());
        for name in &names {
            let _ = write!(out, " {} |", row.metric(name).map_or_else(|| "n/a".into(), number));
        }
        let ratio = ours_over(rows, row, headline, better)
            .map_or_else(|| "n/a".into(), |r| format!("{r:.2}x"));
        let lost = row.lost.map_or_else(|| "n/a".into(), |l| l.to_string());
        let _ = writeln!(out, " {ratio} | {lost} | {} |", row.note.replace('|', "/"));
    }
    out
}

/// How many times better ours is than `row`'s peer on `metric` at the same parameter
/// (above 1: ours is better).
pub(crate) fn ours_over(rows: &[Row], row: &Row, metric: &str, better: Better) -> Option<f64> {
    // The same parameter, else one within 1 % of it (a peer that held 9,995 of 10,000).
    let ours_rows = || rows.iter().filter(|r| r.peer == Peer::Wse && r.scenario == row.scenario);
    let near = |r: &&Row| (r.x - row.x).abs() <= 0.01 * row.x.abs();
    let ours = ours_rows().find(|r| r.param == row.param).or_else(|| ours_rows().find(near))?;
    let (a, b) = (ours.metric(metric)?, row.metric(metric)?);
    if a <= 0.0 || b <= 0.0 {
        return None;
    }
    Some(match better {
        Better::Higher => a / b,
        Better::Lower => b / a,
    })
}

/// A number as people read it: thousands separated, one decimal under 100.
pub(crate) fn number(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x.abs() < 100.0 && x.fract() != 0.0 {
        return format!("{x:.1}");
    }
    let whole = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// Every scenario name a row may carry.
const SCENARIOS: [&str; 6] =
    ["inbound", "fanout", "fanout_latency", "connect_latency", "ping", "scale"];
/// Every metric name a row may carry, in the order the scenarios print them.
const METRICS: [&str; 19] = [
    "msgs_per_s",
    "mb_per_s",
    "messages",
    "deliveries_per_s",
    "published",
    "p50_ms",
    "p99_ms",
    "p99_9_ms",
    "max_ms",
    "p50_us",
    "p99_us",
    "p99_9_us",
    "mean_us",
    "samples",
    "bytes_per_conn",
    "accept_per_s",
    "server_rss_mb",
    "kernel_tcp_bytes_per_conn",
    "processes",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(12.25), "12.2");
        assert_eq!(number(100.0), "100");
    }

    #[test]
    fn ratio_compares_the_same_parameter() {
        let row = |peer, v| Row {
            scenario: "fanout",
            peer,
            param: "10".into(),
            x: 10.0,
            metrics: vec![("deliveries_per_s", v)],
            lost: Some(0),
            note: String::new(),
            command: String::new(),
        };
        let rows = vec![row(Peer::Wse, 300.0), row(Peer::Legacy, 100.0)];
        assert_eq!(ours_over(&rows, &rows[1], "deliveries_per_s", Better::Higher), Some(3.0));
        assert_eq!(ours_over(&rows, &rows[1], "deliveries_per_s", Better::Lower), Some(1.0 / 3.0));
        let facts = Facts::default();
        let text: String = rows.iter().map(|r| r.json(&facts) + "\n").collect();
        let back = parse_jsonl(&text);
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].peer, back[1].metric("deliveries_per_s")), (Peer::Legacy, Some(100.0)));
    }
}
