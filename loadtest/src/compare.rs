//! `piazza-loadtest compare A.json B.json`: the numeric fields of two reports side by side, with
//! the ratio B/A, so a change can be judged against a baseline run.
//!
//! Reports are read as plain JSON, not as [`crate::report::Report`], so reports written by older
//! or newer versions (fields are only ever added) compare on the fields both have. Nested objects
//! are flattened with dots (`latency_us.p99`, `node_metrics.sends_total`). The important fields
//! come first in a fixed order, then every other numeric field alphabetically; run metadata
//! (`started_at`, `version`) is left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;

/// Fields shown first, in this order, when present in either report.
const KEY_FIELDS: &[&str] = &[
    "throughput_per_s",
    "acked_per_s",
    "handshakes_per_s",
    "handshake_us.p50",
    "handshake_us.p99",
    "connected",
    "idle_connections",
    "latency_us.p50",
    "latency_us.p90",
    "latency_us.p99",
    "latency_us.p999",
    "latency_us.max",
    "ack_latency_us.p50",
    "ack_latency_us.p99",
    "ack_latency_us.p999",
    "lost",
    "duplicates",
    "out_of_order",
    "seq_mismatch",
    "errors",
    "node_cpu_s",
    "node_cpu_window_s",
    "node_peak_rss_bytes",
    "node_rss_per_connection_bytes",
];

/// Numeric fields that describe the run rather than measure it.
const IGNORED_FIELDS: &[&str] = &["started_at", "machine_cpus", "seed"];

/// Nesting deeper than this is not part of the report schema; it is not walked.
const DEPTH_MAX: usize = 4;

/// One row of the comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Row {
    /// Dotted field name.
    pub(crate) field: String,
    /// The value in A (`None`: missing or `null`).
    pub(crate) a: Option<f64>,
    /// The value in B.
    pub(crate) b: Option<f64>,
    /// B / A; `None` when either is missing, or when A is 0 and B is not.
    pub(crate) ratio: Option<f64>,
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Comparison {
    /// Differences in what was run (scenario, mode, clients, …): ratios across them mislead.
    pub(crate) notes: Vec<String>,
    pub(crate) rows: Vec<Row>,
}

/// Reads two report files and compares them.
pub(crate) fn compare_files(a: &Path, b: &Path) -> Result<Comparison> {
    let read = |path: &Path| -> Result<Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("parse {} as JSON", path.display()))?;
        if !value.is_object() {
            bail!("{} is not a JSON object (not a report)", path.display());
        }
        Ok(value)
    };
    Ok(compare(&read(a)?, &read(b)?))
}

/// Compares two reports (JSON objects).
pub(crate) fn compare(a: &Value, b: &Value) -> Comparison {
    let (fa, fb) = (numeric_fields(a), numeric_fields(b));
    let mut names: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    names.sort_by_key(|name| {
        let rank = KEY_FIELDS
            .iter()
            .position(|key| key == name)
            .unwrap_or(KEY_FIELDS.len());
        (rank, name.as_str())
    });
    names.dedup();
    let rows = names
        .into_iter()
        .map(|name| {
            let a = fa.get(name).copied().flatten();
            let b = fb.get(name).copied().flatten();
            Row {
                field: name.clone(),
                a,
                b,
                ratio: ratio(a, b),
            }
        })
        .collect();
    let mut notes = Vec::new();
    for field in [
        "scenario",
        "mode",
        "node",
        "clients",
        "connections",
        "group_size",
        "channels",
        "subscribers",
        "message_bytes",
        "rate_target_per_s",
        "arrivals",
        "seed",
        "duration_s",
        "version",
    ] {
        // A field missing from an older report is the same as `null`.
        let (va, vb) = (
            a.get(field).filter(|v| !v.is_null()),
            b.get(field).filter(|v| !v.is_null()),
        );
        if va != vb {
            let show = |v: Option<&Value>| v.map_or_else(|| "null".to_owned(), Value::to_string);
            notes.push(format!("{field} differs: A {} vs B {}", show(va), show(vb)));
        }
    }
    Comparison { notes, rows }
}

/// B / A. Both 0 is a ratio of 1 (nothing changed); A = 0 with B ≠ 0 has no ratio.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    if a == 0.0 {
        return (b == 0.0).then_some(1.0);
    }
    Some(b / a)
}

/// Every numeric leaf of a report, flattened with dots; `null` leaves map to `None` (a field the
/// run could not measure), strings, booleans and arrays are left out.
fn numeric_fields(report: &Value) -> BTreeMap<String, Option<f64>> {
    let mut out = BTreeMap::new();
    walk(report, "", 0, &mut out);
    out
}

fn walk(value: &Value, prefix: &str, depth: usize, out: &mut BTreeMap<String, Option<f64>>) {
    let Value::Object(map) = value else {
        return;
    };
    if depth > DEPTH_MAX {
        return;
    }
    for (key, child) in map {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if IGNORED_FIELDS.contains(&name.as_str()) {
            continue;
        }
        match child {
            Value::Number(n) => {
                out.insert(name, n.as_f64());
            }
            Value::Null => {
                out.insert(name, None);
            }
            Value::Object(_) => walk(child, &name, depth + 1, out),
            Value::String(_) | Value::Bool(_) | Value::Array(_) => {}
        }
    }
}

fn show_value(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn show_ratio(row: &Row) -> String {
    match (row.ratio, row.a, row.b) {
        (Some(r), _, _) => format!("{r:.3}"),
        (None, Some(0.0), Some(_)) => "new".to_owned(),
        _ => "-".to_owned(),
    }
}

impl Comparison {
    /// The human table: field, A, B, B/A.
    pub(crate) fn table(&self, a_name: &str, b_name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "A = {a_name}\nB = {b_name}");
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let width = self
            .rows
            .iter()
            .map(|row| row.field.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "{:<width$}  {:>16}  {:>16}  {:>8}",
            "field", "A", "B", "B/A"
        );
        for row in &self.rows {
            let _ = writeln!(
                out,
                "{:<width$}  {:>16}  {:>16}  {:>8}",
                row.field,
                show_value(row.a),
                show_value(row.b),
                show_ratio(row)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row<'a>(c: &'a Comparison, field: &str) -> &'a Row {
        match c.rows.iter().find(|r| r.field == field) {
            Some(row) => row,
            None => panic!("no row {field} in {c:?}"),
        }
    }

    #[test]
    fn ratios_are_b_over_a() {
        assert_eq!(ratio(Some(2.0), Some(3.0)), Some(1.5));
        assert_eq!(ratio(Some(4.0), Some(1.0)), Some(0.25));
        assert_eq!(ratio(Some(0.0), Some(0.0)), Some(1.0));
        assert_eq!(ratio(Some(0.0), Some(5.0)), None);
        assert_eq!(ratio(None, Some(5.0)), None);
        assert_eq!(ratio(Some(5.0), None), None);
    }

    #[test]
    fn nested_fields_are_flattened_and_compared() {
        let a = json!({
            "scenario": "chat", "throughput_per_s": 1000.0, "lost": 0,
            "latency_us": {"count": 10, "p99": 4000, "p50": null},
            "node_peak_rss_bytes": 20_000_000,
        });
        let b = json!({
            "scenario": "chat", "throughput_per_s": 1500.0, "lost": 3,
            "latency_us": {"count": 10, "p99": 2000, "p50": 900},
            "node_peak_rss_bytes": 30_000_000,
        });
        let c = compare(&a, &b);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        assert_eq!(row(&c, "throughput_per_s").ratio, Some(1.5));
        assert_eq!(row(&c, "latency_us.p99").ratio, Some(0.5));
        assert_eq!(row(&c, "node_peak_rss_bytes").ratio, Some(1.5));
        let p50 = row(&c, "latency_us.p50");
        assert_eq!((p50.a, p50.b, p50.ratio), (None, Some(900.0), None));
        let lost = row(&c, "lost");
        assert_eq!((lost.a, lost.b, lost.ratio), (Some(0.0), Some(3.0), None));
        assert_eq!(show_ratio(lost), "new");
    }

    #[test]
    fn key_fields_come_first_then_the_rest_alphabetically() {
        let a = json!({
            "zeta": 1, "alpha": 2, "lost": 0, "throughput_per_s": 5.0,
            "latency_us": {"p99": 1, "p50": 1}, "started_at": 17, "machine_cpus": 2,
        });
        let c = compare(&a, &a);
        let fields: Vec<&str> = c.rows.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "throughput_per_s",
                "latency_us.p50",
                "latency_us.p99",
                "lost",
                "alpha",
                "zeta"
            ]
        );
        assert!(c.rows.iter().all(|r| r.ratio == Some(1.0)), "{c:?}");
    }

    #[test]
    fn fields_of_one_side_only_show_without_a_ratio() {
        let a = json!({"throughput_per_s": 10.0});
        let b = json!({"throughput_per_s": 10.0, "handshakes_per_s": 300.0});
        let c = compare(&a, &b);
        let hs = row(&c, "handshakes_per_s");
        assert_eq!((hs.a, hs.b, hs.ratio), (None, Some(300.0), None));
        assert_eq!(show_ratio(hs), "-");
    }

    #[test]
    fn different_runs_are_noted() {
        let a = json!({"scenario": "chat", "mode": "open", "clients": 20});
        let b = json!({"scenario": "group", "mode": "open", "clients": 40, "group_size": null});
        let c = compare(&a, &b);
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        assert!(c.notes[0].contains("scenario"), "{:?}", c.notes);
        assert!(c.notes[1].contains("clients"), "{:?}", c.notes);
    }

    #[test]
    fn arrivals_and_seeds_are_noted_not_compared() {
        let a = json!({"arrivals": "constant", "throughput_per_s": 1.0});
        let b = json!({"arrivals": "poisson", "seed": 7, "throughput_per_s": 1.0});
        let c = compare(&a, &b);
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        assert!(c.notes[0].contains("arrivals"), "{:?}", c.notes);
        assert!(c.notes[1].contains("seed"), "{:?}", c.notes);
        assert!(c.rows.iter().all(|r| r.field != "seed"), "{c:?}");
    }

    #[test]
    fn the_table_has_one_line_per_field() {
        let a = json!({"throughput_per_s": 1000.0, "node_cpu_s": 5.58});
        let b = json!({"throughput_per_s": 1250.0, "node_cpu_s": 2.79});
        let table = compare(&a, &b).table("a.json", "b.json");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(
            lines[3].starts_with("throughput_per_s") && lines[3].ends_with("1.250"),
            "{table}"
        );
        assert!(
            lines[4].contains("5.580") && lines[4].ends_with("0.500"),
            "{table}"
        );
    }

    #[test]
    fn files_that_are_not_reports_are_refused() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("tempdir: {e}"),
        };
        let (good, bad) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&good, r#"{"throughput_per_s": 1}"#).unwrap();
        std::fs::write(&bad, "[1, 2]").unwrap();
        assert!(compare_files(&good, &good).is_ok());
        let error = compare_files(&good, &bad).unwrap_err();
        assert!(
            format!("{error:#}").contains("not a JSON object"),
            "{error:#}"
        );
        assert!(compare_files(&good, &dir.path().join("missing.json")).is_err());
    }
}
