// SPDX-License-Identifier: GPL-2.0

//! The binary end to end: gen, run --json --svg, report, and errors.

use std::path::PathBuf;
use std::process::Command;

fn migsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_migsim"))
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("migsim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn gen_then_run_json_and_svg() {
    let d = tmpdir("run");
    let trace = d.join("rm.mltrace");
    let out = migsim()
        .args([
            "gen",
            "--workload",
            "read-mostly",
            "--mem",
            "64MiB",
            "--seconds",
            "2",
        ])
        .arg("--out")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = d.join("svg");
    let out = migsim()
        .args([
            "run",
            "--json",
            "--quiet",
            "--bandwidth",
            "1Gbit",
            "--latency",
            "0.1ms",
        ])
        .arg("--trace")
        .arg(&trace)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trace"]["pfn_limit"], 16384);
    assert_eq!(v["bandwidth_bytes_per_s"], 125e6);
    let results = v["results"].as_array().unwrap();
    let names: Vec<_> = results
        .iter()
        .map(|r| r["scheme"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "precopy-clark",
            "precopy-qemu",
            "postcopy",
            "postcopy-prepaging",
            "lazy",
            "cow"
        ]
    );
    for r in results {
        for k in [
            "converged",
            "status",
            "total_time_s",
            "downtime_s",
            "bytes_sent",
            "pages_sent",
            "rounds",
            "remote_faults",
            "cow_faults",
            "stall_time_s",
            "trace_loops",
            "page_events",
        ] {
            assert!(!r[k].is_null(), "{} lacks {k}", r["scheme"]);
        }
        assert!(r["bytes_sent"].as_u64().unwrap() >= 64 << 20);
        let series = r["series"].as_array().unwrap();
        assert!(series.len() >= 2);
        assert!(series.last().unwrap()["bytes"] == r["bytes_sent"]);
    }
    for f in ["bytes.svg", "faults.svg"] {
        let s = std::fs::read_to_string(svg.join(f)).unwrap();
        assert!(s.starts_with("<svg"), "{f}");
        assert!(s.trim_end().ends_with("</svg>"), "{f}");
        assert_eq!(
            s.matches("<polyline").count(),
            6,
            "{f}: one line per scheme"
        );
    }
    // the table form names every scheme too
    let out = migsim()
        .args(["run", "--quiet", "--scheme", "postcopy,cow", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("postcopy") && text.contains("cow") && !text.contains("lazy"));
}

#[test]
fn report_splices_between_markers() {
    let d = tmpdir("report");
    let doc = d.join("doc.rst");
    std::fs::write(
        &doc,
        "Results\n=======\n\n.. migsim-results-begin\n\nold\n\n.. migsim-results-end\n\nafter\n",
    )
    .unwrap();
    let out = migsim()
        .args([
            "report",
            "--synthetic",
            "--mem",
            "16MiB",
            "--seconds",
            "1",
            "--quiet",
        ])
        .arg("--splice")
        .arg(&doc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = std::fs::read_to_string(&doc).unwrap();
    assert!(!s.contains("old"));
    assert!(s.contains("synthetic write-heavy") && s.ends_with("after\n"));
    assert_eq!(s.matches("precopy-qemu").count(), 3);
}

#[test]
fn bad_input_is_reported_with_its_name() {
    let d = tmpdir("bad");
    let bad = d.join("junk.mltrace");
    std::fs::write(&bad, b"MLTRACE1 but not really").unwrap();
    let out = migsim()
        .arg("run")
        .arg("--trace")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("junk.mltrace") && e.contains("trace"), "{e}");
    let out = migsim()
        .args(["run", "--bandwidth", "1G", "--trace"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("--bandwidth"), "{e}");
    let out = migsim()
        .args(["run", "--trace", "/nonexistent/x.mltrace"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("/nonexistent/x.mltrace"), "{e}");
}
