// SPDX-License-Identifier: GPL-2.0

//! Presenting results: the terminal table, JSON, RST tables for the
//! documentation, and SVG charts.

use crate::model::SchemeResult;
use crate::svg::{chart, Line};
use serde::Serialize;
use std::fmt::Write;

/// The trace a run used.
#[derive(Clone, Debug, Serialize)]
pub struct TraceInfo {
    /// Its name (file path or synthetic workload).
    pub name: String,
    /// Page size, bytes.
    pub page_size: u32,
    /// Frames in the VM.
    pub pfn_limit: u64,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// Samples in the trace.
    pub samples: usize,
    /// Time of the last sample, seconds.
    pub duration_s: f64,
    /// Whether the trace ended cleanly (a tracer that died leaves it open).
    pub complete: bool,
}

/// A run of several schemes on one trace: the `--json` document.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The trace.
    pub trace: TraceInfo,
    /// Link bandwidth, bytes/s.
    pub bandwidth_bytes_per_s: f64,
    /// One-way latency, seconds.
    pub latency_s: f64,
    /// Migration start, trace seconds.
    pub start_at_s: f64,
    /// One result per scheme.
    pub results: Vec<SchemeResult>,
}

/// One table row: the columns of every output format.
fn row(r: &SchemeResult) -> Vec<String> {
    vec![
        r.scheme.clone(),
        if r.converged { "ok" } else { "NO-CONVERGE" }.to_string(),
        format!("{:.3}", r.total_time_s),
        format!("{:.2}", r.downtime_s * 1e3),
        format!("{:.1}", r.bytes_sent as f64 / (1u64 << 20) as f64),
        r.rounds.to_string(),
        r.remote_faults.to_string(),
        r.cow_faults.to_string(),
        format!("{:.2}", r.stall_time_s * 1e3),
        r.trace_loops.to_string(),
    ]
}

const HEAD: [&str; 10] = [
    "scheme",
    "status",
    "total s",
    "down ms",
    "sent MiB",
    "rounds",
    "remote flt",
    "cow flt",
    "stall ms",
    "loops",
];

/// Aligned columns for the terminal: numeric columns right-aligned.
pub fn table(rows: &[Vec<String>], head: &[&str]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    let mut numeric = vec![!rows.is_empty(); head.len()];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
            numeric[i] &= c.chars().next().is_some_and(|ch| ch.is_ascii_digit());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            if numeric[i] {
                let _ = write!(s, "{c:>width$}", width = w[i]);
            } else {
                let _ = write!(s, "{c:<width$}", width = w[i]);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out += &line(&w.iter().map(|&n| "-".repeat(n)).collect::<Vec<_>>());
    for r in rows {
        out += &line(r);
    }
    out
}

/// The terminal report of a run.
pub fn text(rep: &RunReport) -> String {
    let t = &rep.trace;
    let mut s = format!(
        "trace {}: {} pages of {} B ({}), {} samples over {:.2} s{}\n",
        t.name,
        t.pfn_limit,
        t.page_size,
        crate::units::fmt_bytes(t.memory_bytes),
        t.samples,
        t.duration_s,
        if t.complete {
            ""
        } else {
            " (incomplete trace)"
        }
    );
    let _ = writeln!(
        s,
        "link {:.1} Mbit/s, latency {:.3} ms; migration starts at trace time {:.2} s\n",
        rep.bandwidth_bytes_per_s * 8.0 / 1e6,
        rep.latency_s * 1e3,
        rep.start_at_s
    );
    let rows: Vec<_> = rep.results.iter().map(row).collect();
    s += &table(&rows, &HEAD);
    s.push('\n');
    for r in &rep.results {
        let _ = writeln!(s, "{}: {}", r.scheme, r.status);
    }
    let looped: Vec<_> = rep
        .results
        .iter()
        .filter(|r| r.trace_loops > 0)
        .map(|r| r.scheme.as_str())
        .collect();
    if !looped.is_empty() {
        let _ = writeln!(
            s,
            "\nnote: the migration outlasted the trace for {}; the workload was replayed from the trace's start again (\"loops\").",
            looped.join(", ")
        );
    }
    s
}

/// An RST table comparing schemes over several runs.
pub fn rst(reports: &[RunReport], caption: &str) -> String {
    let mut head = vec!["trace"];
    head.extend(HEAD);
    let mut rows = Vec::new();
    for rep in reports {
        for r in &rep.results {
            let mut v = vec![rep.trace.name.clone()];
            v.extend(row(r));
            rows.push(v);
        }
    }
    format!("{caption}\n\n{}", rst_grid(&rows, &head))
}

/// An RST simple table of `rows` under `head`.
pub fn rst_grid(rows: &[Vec<String>], head: &[&str]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let rule = w
        .iter()
        .map(|&n| "=".repeat(n))
        .collect::<Vec<_>>()
        .join("  ");
    let fmt = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut s = String::new();
    let _ = writeln!(s, "{rule}");
    let _ = writeln!(
        s,
        "{}",
        fmt(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>())
    );
    let _ = writeln!(s, "{rule}");
    for r in rows {
        let _ = writeln!(s, "{}", fmt(r));
    }
    let _ = writeln!(s, "{rule}");
    s
}

/// The paragraph above a report table: what the rows are and the link.
pub fn rsttable_caption(reports: &[RunReport], synthetic: bool, seconds: f64) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let mut s = format!(
        "Link {:.0} Mbit/s, one-way latency {:.3} ms; times in seconds (total) and \
         milliseconds (downtime, stall), sent in MiB; NO-CONVERGE marks a pre-copy \
         that gave up (its times are a forced stop-and-copy); loops counts replays of \
         the trace from its start.",
        first.bandwidth_bytes_per_s * 8.0 / 1e6,
        first.latency_s * 1e3
    );
    if synthetic {
        s += &format!(
            " Rows named *synthetic* are generated workloads (``migsim gen``, \
             {seconds} s, seed 1), not recorded guests."
        );
    }
    s
}

/// Replaces the text between the `.. migsim-results-begin` and
/// `.. migsim-results-end` lines of `doc` with `table`.
pub fn splice(doc: &str, table: &str) -> Result<String, String> {
    splice_between(
        doc,
        table,
        (".. migsim-results-begin", ".. migsim-results-end"),
    )
}

/// Replaces the text between the `markers.0` and `markers.1` lines of
/// `doc` with `table`.
pub fn splice_between(doc: &str, table: &str, markers: (&str, &str)) -> Result<String, String> {
    let (begin, end) = markers;
    let b = doc
        .find(begin)
        .ok_or_else(|| format!("no {begin:?} line"))?;
    let after_b = b + begin.len();
    let e = doc[after_b..]
        .find(end)
        .map(|e| e + after_b)
        .ok_or_else(|| format!("no {end:?} line after {begin:?}"))?;
    Ok(format!(
        "{}\n\n{}\n\n{}",
        &doc[..after_b],
        table.trim_end(),
        &doc[e..]
    ))
}

/// The two charts of a run: (file stem, SVG).
pub fn charts(rep: &RunReport) -> Vec<(&'static str, String)> {
    let bytes: Vec<Line> = rep
        .results
        .iter()
        .map(|r| Line {
            label: r.scheme.clone(),
            points: r
                .series
                .iter()
                .map(|p| (p.t_s, p.bytes as f64 / (1u64 << 20) as f64))
                .collect(),
        })
        .collect();
    let faults: Vec<Line> = rep
        .results
        .iter()
        .map(|r| Line {
            label: r.scheme.clone(),
            points: r.series.iter().map(|p| (p.t_s, p.faults as f64)).collect(),
        })
        .collect();
    vec![
        (
            "bytes",
            chart(
                &format!("Bytes sent: {}", rep.trace.name),
                "time since migration start (s)",
                "MiB sent",
                &bytes,
            ),
        ),
        (
            "faults",
            chart(
                &format!("Faults (remote or CoW): {}", rep.trace.name),
                "time since migration start (s)",
                "faults",
                &faults,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_between_markers() {
        let doc = "a\n.. migsim-results-begin\nold\n.. migsim-results-end\nz\n";
        let out = splice(doc, "new table\n").unwrap();
        assert_eq!(
            out,
            "a\n.. migsim-results-begin\n\nnew table\n\n.. migsim-results-end\nz\n"
        );
        assert_eq!(splice(&out, "new table").unwrap(), out);
        assert!(splice("nothing", "x").is_err());
    }

    #[test]
    fn table_aligns_numbers_right() {
        let t = table(
            &[
                vec!["x".into(), "5".into()],
                vec!["yy".into(), "100".into()],
            ],
            &["n", "v"],
        );
        let lines: Vec<_> = t.lines().collect();
        assert_eq!(lines[2], "x     5");
        assert_eq!(lines[3], "yy  100");
    }
}
