// SPDX-License-Identifier: GPL-2.0

//! Live migration of the test guest between two QEMU processes on 127.0.0.1.
//!
//! The destination starts with `-incoming defer` and listens on a port QEMU
//! picks itself (no race for a free port). The guest runs `mlworkload`, which
//! ticks and dirties memory; after the switchover the destination must show
//! ticks the source never printed, and the workload must verify every page.

use crate::scenario::{finish_guest, Env, FailKind, Failure, Scenario};
use crate::vm::{Vm, Wait};
use anyhow::Context;
use serde_json::{json, Value};
use std::fs;
use std::time::{Duration, Instant};

/// Migration mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Iterative pre-copy (QEMU's default).
    Precopy,
    /// Post-copy: switch over early, fetch remaining pages on fault.
    Postcopy,
}

/// The tick number in a workload line `tick N`.
pub(crate) fn tick_of(line: &str) -> Option<u64> {
    line.strip_prefix("tick ")?.trim().parse().ok()
}

fn wait_tick(vm: &mut Vm, deadline: Instant, after: u64, who: &str) -> Result<u64, Failure> {
    match vm.wait_line(deadline, |l| tick_of(l).is_some_and(|t| t > after)) {
        Wait::Line(l) => Ok(tick_of(&l).unwrap_or(0)),
        Wait::Timeout => Err(Failure::new(
            FailKind::Timeout,
            format!(
                "timed out waiting for the workload to tick past {after} on {who}; log: {}",
                vm.serial_log.display()
            ),
        )),
        Wait::Closed => Err(Failure::new(
            FailKind::Guest,
            format!("the {who} guest stopped; log: {}", vm.serial_log.display()),
        )),
    }
}

fn mib(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
}

/// Runs a migration scenario.
pub fn run(sc: &Scenario, env: &Env<'_>, mode: Mode, deadline: Instant) -> Result<(), Failure> {
    let mut dst = Vm::start(&env.spec("dst", sc.guest, true))?;
    let mut src = Vm::start(&env.spec("src", sc.guest, false))?;
    let mut caps = vec![json!({"capability": "events", "state": true})];
    if mode == Mode::Postcopy {
        caps.push(json!({"capability": "postcopy-ram", "state": true}));
    }
    for vm in [&mut src, &mut dst] {
        vm.qmp
            .execute(
                "migrate-set-capabilities",
                Some(json!({ "capabilities": caps })),
            )
            .context("migrate-set-capabilities")?;
    }
    dst.qmp
        .execute("migrate-incoming", Some(json!({"uri": "tcp:127.0.0.1:0"})))
        .context("migrate-incoming")?;
    let incoming = dst
        .qmp
        .execute("query-migrate", None)
        .context("query-migrate on destination")?;
    let port = incoming["socket-address"][0]["port"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow::anyhow!("destination reported no listening port: {incoming}"))?;
    // Loopback is fast; QEMU's default 32 MiB/s cap would only slow the test.
    src.qmp
        .execute(
            "migrate-set-parameters",
            Some(json!({"max-bandwidth": 1u64 << 30})),
        )
        .context("migrate-set-parameters")?;

    // Migrate a guest that is really working, not one still booting.
    let before = wait_tick(&mut src, deadline, 10, "source")?;
    let started = Instant::now();
    src.qmp
        .execute(
            "migrate",
            Some(json!({"uri": format!("tcp:127.0.0.1:{port}")})),
        )
        .context("migrate")?;
    if mode == Mode::Postcopy {
        src.qmp
            .execute("migrate-start-postcopy", None)
            .context("migrate-start-postcopy")?;
    }
    loop {
        let chunk = (Instant::now() + Duration::from_secs(1)).min(deadline);
        let ev = src
            .qmp
            .wait_event(chunk, |e| {
                e.name == "MIGRATION"
                    && matches!(
                        e.data["status"].as_str(),
                        Some("completed" | "failed" | "cancelled")
                    )
            })
            .context("waiting for the MIGRATION event")?;
        if ev.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                FailKind::Timeout,
                format!(
                    "migration did not finish within {} s; logs: {}",
                    sc.timeout.as_secs(),
                    env.dir.display()
                ),
            ));
        }
        if env.progress {
            let q = src
                .qmp
                .execute("query-migrate", None)
                .context("query-migrate")?;
            eprintln!(
                "  migrating: {} ({:.1} MiB sent, {:.1} MiB remaining)",
                q["status"].as_str().unwrap_or("?"),
                mib(&q["ram"]["transferred"]),
                mib(&q["ram"]["remaining"])
            );
        }
    }
    let info = src
        .qmp
        .execute("query-migrate", None)
        .context("query-migrate")?;
    fs::write(
        env.dir.join("migration.json"),
        serde_json::to_string_pretty(&info).unwrap_or_default(),
    )
    .context("writing migration.json")?;
    if info["status"] != "completed" {
        return Err(Failure::new(
            FailKind::Migration,
            format!(
                "migration ended '{}': {}; logs: {}",
                info["status"].as_str().unwrap_or("?"),
                info["error-desc"]
                    .as_str()
                    .unwrap_or("no error description"),
                env.dir.display()
            ),
        ));
    }
    let status = dst
        .qmp
        .execute("query-status", None)
        .context("query-status on destination")?;
    if status["status"] != "running" {
        return Err(Failure::new(
            FailKind::Migration,
            format!(
                "destination is '{}' after migration, not running",
                status["status"]
            ),
        ));
    }
    eprintln!(
        "  migrated ({mode:?}) in {} ms (wall {:.1} s): downtime {} ms, {:.1} MiB sent, {} dirty syncs, {} post-copy requests",
        info["total-time"],
        started.elapsed().as_secs_f64(),
        info["downtime"],
        mib(&info["ram"]["transferred"]),
        info["ram"]["dirty-sync-count"],
        info["ram"]["postcopy-requests"].as_u64().unwrap_or(0)
    );

    // The guest must go on where it stopped: ticks the source never printed.
    let last_src = src
        .seen
        .iter()
        .filter_map(|l| tick_of(l))
        .max()
        .unwrap_or(before);
    let first_dst = wait_tick(&mut dst, deadline, last_src, "destination")?;
    eprintln!(
        "  guest continues on the destination: last tick on source {last_src}, now {first_dst}"
    );
    dst.send_line("finish")
        .context("typing on the destination console")?;
    let r = finish_guest(sc, &mut dst, deadline);
    if r.is_ok() && !dst.seen.iter().any(|l| l.starts_with("workload: verified")) {
        return Err(Failure::new(
            FailKind::Migration,
            format!(
                "workload did not verify its memory; log: {}",
                dst.serial_log.display()
            ),
        ));
    }
    src.quit()?;
    dst.quit()?;
    r
}
