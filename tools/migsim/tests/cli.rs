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

#[test]
fn validate_compares_real_runs_and_splices() {
    let d = tmpdir("validate");
    let trace = d.join("idle.mltrace");
    let out = migsim()
        .args([
            "gen",
            "--workload",
            "idle",
            "--mem",
            "16MiB",
            "--seconds",
            "2",
        ])
        .arg("--out")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    // 4096 pages; an idle guest at 32 MiB/s completes in about half a
    // second (less with zero pages): a real run claiming that passes.
    std::fs::write(
        d.join("idle.real.json"),
        r#"{"workload":"idle","mode":"precopy","bandwidth_bytes_per_s":33554432,
            "downtime_limit_ms":300,"start_at_s":0.5,"timeout_s":20.0,"completed":true,
            "wall_ms":300,"total_time_ms":0,"transferred_bytes":9000000,
            "dirty_sync_count":3,"postcopy_requests":0,"zero_pages":2000,
            "normal_pages":2096,"latency_s":0.0001}"#,
    )
    .unwrap();
    let out = migsim()
        .args(["validate", "--quiet", "--json", "--real"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &v.as_array().unwrap()[0];
    assert_eq!(row["name"], "idle");
    assert_eq!(row["scheme"], "precopy-qemu");
    assert_eq!(row["real_syncs"], 3);
    assert_eq!(row["zero_pages_sim"], 2000);
    assert_eq!(row["real_converged"], true);
    assert_eq!(row["sim_converged"], true);
    for k in [
        "real_time_s",
        "sim_time_s",
        "time_rel_err",
        "sim_bytes",
        "bytes_rel_err",
        "sim_syncs",
        "sync_diff",
        "pass",
    ] {
        assert!(!row[k].is_null(), "lacks {k}");
    }
    // 2096 normal pages of 4104 bytes plus 2000 of 9, give or take the
    // few pages the idle workload dirties
    let sim_bytes = row["sim_bytes"].as_u64().unwrap();
    assert!(
        (2096 * 4104 + 2000 * 9..2096 * 4104 + 2000 * 9 + 100 * 4104).contains(&sim_bytes),
        "{sim_bytes}"
    );
    assert_eq!(row["sim_syncs"], row["sim_rounds"].as_u64().unwrap() + 2);

    let doc = d.join("doc.rst");
    std::fs::write(
        &doc,
        "V\n=\n\n.. migsim-validation-begin\n\nplaceholder\n\n.. migsim-validation-end\n\nafter\n",
    )
    .unwrap();
    let rst = d.join("v.rst");
    let out = migsim()
        .args(["validate", "--quiet", "--real"])
        .arg(&d)
        .arg("--splice")
        .arg(&doc)
        .arg("--out")
        .arg(&rst)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("idle ")).unwrap();
    assert!(
        line.contains("precopy") && line.contains("yes/yes"),
        "{text}"
    );
    assert!(line.ends_with("PASS") || line.ends_with("MISS"), "{line}");
    let s = std::fs::read_to_string(&doc).unwrap();
    assert!(!s.contains("placeholder") && s.ends_with("after\n"));
    assert!(
        s.contains("dirty-sync-count") && s.contains("\nidle "),
        "{s}"
    );
    assert_eq!(s.matches(".. migsim-validation-").count(), 2);
    assert!(std::fs::read_to_string(&rst).unwrap().contains("\nidle "));

    // report uses the real run's setup for that trace
    let out = migsim()
        .args(["report", "--quiet", "--traces"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("32.0 MiB/s, 2000 zero pages"), "{text}");
}
