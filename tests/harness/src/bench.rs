// SPDX-License-Identifier: GPL-2.0

//! The round-trip benchmark: an application's lock request to the host
//! agent's decision (ioctl → module → doorbell UART → miglockd → back), beside
//! qemu-guest-agent's `guest-ping` over a legacy UART in the same guest and
//! run, so the ratio is known. Figures are printed and kept in
//! `out/scenarios/bench-rtt/rtt.json`; nothing is asserted about them.

use crate::agentdemo::Agent;
use crate::scenario::{finish_guest, Env, FailKind, Failure, Scenario};
use crate::vm::{Doorbell, Vm, Wait};
use anyhow::Context;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// guest-ping round trips measured.
const PINGS: usize = 500;

fn percentiles(mut us: Vec<f64>) -> (f64, f64, f64) {
    us.sort_by(f64::total_cmp);
    let p = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    (p(0.5), p(0.99), us.iter().sum::<f64>() / us.len() as f64)
}

/// Waits for the guest's lock benchmark to end at `marker` and returns its
/// figures with the guest's and the agent's channel counters.
fn lock_bench(
    vm: &mut Vm,
    agent: &Agent,
    deadline: Instant,
    marker: &str,
) -> Result<serde_json::Value, Failure> {
    let from = vm.seen.len();
    if let Wait::Timeout | Wait::Closed = vm.wait_line(deadline, |l| l.contains(marker)) {
        return Err(Failure::new(
            FailKind::Timeout,
            format!(
                "lock benchmark did not finish; log: {}",
                vm.serial_log.display()
            ),
        ));
    }
    let lines = &vm.seen[from..];
    let line_of = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap_or_default()
    };
    let (line, second) = (line_of("bench lock-rtt"), line_of("bench second-holder"));
    let field_of = |line: &str, k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let field = |k: &str| field_of(&line, k);
    let guest_channel = lines
        .iter()
        .find(|l| l.starts_with("channel:"))
        .cloned()
        .unwrap_or_default();
    let agent_link = agent
        .ctl(&["--json", "status"])
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .map(|v| v["data"]["vms"]["guest"]["link"].clone())
        .unwrap_or_default();
    eprintln!("  guest {guest_channel}; agent's link: {agent_link}");
    Ok(json!({
        "p50": field("p50_us"), "p99": field("p99_us"), "mean": field("mean_us"), "n": field("n"),
        "refused_for_rate": field("refused_for_rate"),
        "pairs_per_s": field("pairs_per_s"),
        "pairs_refused_for_rate": field("pairs_refused_for_rate"),
        "second_holder_us": {"p50": field_of(&second, "p50_us"), "p99": field_of(&second, "p99_us"),
            "n": field_of(&second, "n")},
        "guest_channel": guest_channel, "agent_link": agent_link,
    }))
}

/// Runs the benchmark scenario.
pub fn run(sc: &Scenario, env: &Env<'_>, deadline: Instant) -> Result<(), Failure> {
    let bins = std::env::current_exe().map_err(anyhow::Error::from)?;
    let bins = bins.parent().context("harness directory")?.to_path_buf();
    let mut spec = env.spec_with("vm", sc.guest, false, Doorbell::Agent);
    spec.qga = true;
    spec.append.push_str(" 8250.nr_uarts=2");
    let mut vm = Vm::start(&spec)?;
    let agent = Agent::start(&bins, &env.dir, "vm")?;
    let limited = lock_bench(&mut vm, &agent, deadline, "@@MIGLOCK lock-bench-done@@")?;
    // Again with the per-guest rate limit out of the way: the path alone.
    drop(agent);
    let agent = Agent::start_with(
        &bins,
        &env.dir,
        "vm",
        "[limits]\nrate = 1000000.0\nburst = 1000000.0",
    )?;
    vm.send_line("go").context("console")?;
    let unlimited = lock_bench(&mut vm, &agent, deadline, "@@MIGLOCK lock-bench2-done@@")?;

    // qemu-ga: resynchronise, then time guest-ping.
    let qga = vm.qga.take().context("no qemu-ga serial")?;
    qga.set_read_timeout(Some(Duration::from_secs(10)))
        .context("timeout")?;
    let mut w = qga.try_clone().context("clone")?;
    let mut r = BufReader::new(qga);
    let mut line = Vec::new();
    let synced = (0..20).any(|i| {
        let id = 4242 + i;
        let _ = writeln!(
            w,
            "{}",
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
        );
        line.clear();
        r.read_until(b'\n', &mut line).is_ok()
            && String::from_utf8_lossy(&line).contains(&id.to_string())
    });
    if !synced {
        return Err(Failure::new(
            FailKind::Guest,
            "qemu-ga never answered guest-sync-delimited",
        ));
    }
    let mut us = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        writeln!(w, "{}", json!({"execute": "guest-ping"})).context("qga write")?;
        line.clear();
        r.read_until(b'\n', &mut line).context("qga read")?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        if !String::from_utf8_lossy(&line).contains("return") {
            return Err(Failure::new(
                FailKind::Guest,
                format!("qemu-ga answered {}", String::from_utf8_lossy(&line)),
            ));
        }
    }
    let (qga_p50, qga_p99, qga_mean) = percentiles(us);
    let show = |what: &str, r: &serde_json::Value| {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "  {what}: p50 {:.0} us, p99 {:.0} us, mean {:.0} us (n={}, refused for rate {})",
            f("p50"),
            f("p99"),
            f("mean"),
            f("n"),
            r["refused_for_rate"].as_f64().unwrap_or(0.0)
        );
    };
    show(
        "lock -> host decision, agent's default rate limit",
        &limited,
    );
    show(
        "lock -> host decision, rate limit raised          ",
        &unlimited,
    );
    // qemu-ga has no rate limit: every ping above was answered (or the
    // benchmark failed), so none was refused.
    let qga = json!({"p50": qga_p50, "p99": qga_p99, "mean": qga_mean, "n": PINGS,
        "refused_for_rate": 0});
    show("qemu-ga guest-ping over ttyS1                     ", &qga);
    eprintln!(
        "  ratio lock/guest-ping at p50: {:.2} (rate limit raised: {:.2})",
        limited["p50"].as_f64().unwrap_or(f64::NAN) / qga_p50,
        unlimited["p50"].as_f64().unwrap_or(f64::NAN) / qga_p50
    );
    eprintln!(
        "  second holder (VM already locked): p50 {} us, p99 {} us; pairs/s at default limits: {} ({} refused for rate)",
        limited["second_holder_us"]["p50"],
        limited["second_holder_us"]["p99"],
        limited["pairs_per_s"],
        limited["pairs_refused_for_rate"]
    );
    let results = json!({
        "second_holder_us": limited["second_holder_us"],
        "pairs_per_s": limited["pairs_per_s"],
        "pairs_refused_for_rate": limited["pairs_refused_for_rate"],
        "lock_rtt_us_default_limits": limited,
        "lock_rtt_us_unlimited": unlimited,
        "qga_ping_rtt_us": qga,
        "accel": format!("{:?}", env.accel),
    });
    std::fs::write(
        env.dir.join("rtt.json"),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    )
    .context("writing rtt.json")?;
    vm.send_line("done").context("console")?;
    let res = finish_guest(sc, &mut vm, deadline);
    vm.quit()?;
    res
}
