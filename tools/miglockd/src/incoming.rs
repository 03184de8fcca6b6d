// SPDX-License-Identifier: GPL-2.0

//! The destination side of a migration: listen, follow it to the end, and
//! the moment the guest runs here under post-copy, read its hot pages in
//! QEMU (`runahead.rs`) and tell the guest.

use crate::agent::Agent;
use crate::runahead::{self, Plan, Runahead};
use miglock_abi::wire::Notice;
use miglock_control::{ErrorClass, IncomingRequest, Reply};
use serde_json::json;
use std::time::{Duration, Instant};

type Progress<'a> = &'a mut dyn FnMut(&Reply) -> std::io::Result<()>;

fn err(m: impl Into<String>) -> Reply {
    Reply::error(ErrorClass::Failed, m)
}

/// Runs `incoming` for `req`, reporting progress through `p`.
pub fn incoming(agent: &Agent, req: &IncomingRequest, p: Progress<'_>) -> Reply {
    let Some(vm) = agent.vm(&req.vm) else {
        return Reply::error(ErrorClass::UnknownVm, format!("no VM '{}'", req.vm));
    };
    let name = req.vm.as_str();
    let qmp = match agent.monitor(vm) {
        Ok(m) => m,
        Err(e) => return err(e),
    };
    let events = qmp.subscribe();
    // Where the hot pages are in QEMU, found before the stream arrives.
    // The run-ahead is advice: without it the migration runs as ever.
    let mut plan = (!req.prefetch.is_empty())
        .then(|| prefetch_plan(&qmp, &req.prefetch))
        .and_then(|r| match r {
            Ok(plan) => {
                let _ = p(&Reply::progress(format!(
                    "run-ahead: {} hinted pages in QEMU's memory ({} not RAM)",
                    plan.0.addrs.len(),
                    plan.0.unmapped
                )));
                Some(plan)
            }
            Err(e) => {
                let _ = p(&Reply::progress(format!("run-ahead off: {e}")));
                agent
                    .audit
                    .record(name, "incoming-runahead-off", json!({"error": e}));
                None
            }
        });
    // `plan` is spent when the readers start.
    let mut reading: Option<Runahead> = None;
    let mut caps = vec![json!({"capability": "events", "state": true})];
    if req.postcopy {
        caps.push(json!({"capability": "postcopy-ram", "state": true}));
        // How long vCPUs waited for pages: the cost post-copy has here.
        caps.push(json!({"capability": "postcopy-blocktime", "state": true}));
    }
    if req.postcopy_preempt {
        match crate::fence::Qemu::query(&qmp) {
            Ok(q) => {
                if let Some(why) = crate::fence::preempt_refused(&q) {
                    return Reply::error(ErrorClass::Refused, why);
                }
            }
            Err(e) => return err(e),
        }
        caps.push(json!({"capability": "postcopy-preempt", "state": true}));
    }
    let listen = qmp
        .execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": caps })),
        )
        .and_then(|_| qmp.execute("migrate-incoming", Some(json!({"uri": req.uri}))))
        .and_then(|_| qmp.execute("query-migrate", None));
    let q = match listen {
        Ok(q) => q,
        Err(e) => return err(format!("QEMU cannot receive: {e:#}")),
    };
    // The address really bound (port 0 asks for any).
    let at = &q["socket-address"][0];
    let bound = match (at["host"].as_str(), at["port"].as_str()) {
        (Some(h), Some(port)) => format!("tcp:{h}:{port}"),
        _ => req.uri.clone(),
    };
    agent
        .audit
        .record(name, "incoming-listen", json!({"uri": bound}));
    let _ = p(&Reply::progress(format!("listening on {bound}")));
    let started = Instant::now();
    let (mut resumed, mut told) = (false, false);
    loop {
        // Any event wakes us to look again; none within a tick is fine too.
        let (q, status) = match crate::blocker::next_look(&qmp, &events, Duration::from_millis(50))
        {
            Ok(look) => look,
            Err(e) => return err(format!("query-migrate: {e:#}")),
        };
        // The watcher announces the agent once the guest runs here (the
        // guest resends its lock state); this only needs to know when.
        resumed = resumed
            || qmp
                .execute("query-status", None)
                .is_ok_and(|s| s["running"] == true);
        match status.as_str() {
            "completed" => {
                // Every page is here now: the readers end at once.
                let ran = reading.take().map(Runahead::report);
                let data = json!({"uri": bound, "wall_ms": started.elapsed().as_millis() as u64,
                                  "postcopy_notice": told,
                                  "runahead": ran,
                                  "postcopy_blocktime_ms": q["postcopy-blocktime"],
                                  "postcopy_vcpu_blocktime_ms": q["postcopy-vcpu-blocktime"]});
                agent.audit.record(name, "incoming-done", data.clone());
                return Reply::Ok { data };
            }
            "postcopy-paused" => {
                // Readers blocked on pages nobody sends are left behind.
                if let Some(r) = reading.take() {
                    r.finish(false);
                }
                return crate::gate::postcopy_paused(
                    agent,
                    name,
                    &q,
                    crate::gate::End::Destination,
                );
            }
            s @ ("failed" | "cancelled") => {
                if let Some(r) = reading.take() {
                    r.finish(false);
                }
                agent
                    .audit
                    .record(name, "incoming-failed", json!({"status": s}));
                let class = if s == "cancelled" {
                    ErrorClass::Cancelled
                } else {
                    ErrorClass::Failed
                };
                return Reply::error(class, format!("incoming migration {s}"));
            }
            // The guest runs here, so QEMU has registered its memory for
            // post-copy: reading it now fetches pages, never maps empty ones.
            "postcopy-active" if resumed && plan.is_some() => {
                if let Some((plan, pid)) = plan.take() {
                    let pages = plan.addrs.len();
                    match Runahead::start(pid, plan) {
                        Ok(r) => {
                            reading = Some(r);
                            let _ = p(&Reply::progress(format!(
                                "post-copy: reading {pages} hot pages ahead of the guest"
                            )));
                        }
                        Err(e) => {
                            let _ = p(&Reply::progress(format!("run-ahead off: {e}")));
                        }
                    }
                }
                // The next look tells the guest.
            }
            // Listening starts before the device state arrives: wait until
            // the guest runs here, or the notice would land in a UART that
            // is about to be overwritten.
            "postcopy-active" if resumed && !told => {
                // Until the guest link is up (it redials the new QEMU) the
                // notice cannot go out: try again at the next look.
                told = agent.notify(vm, Notice::PostcopyStarted);
                if told {
                    agent
                        .audit
                        .record(name, "incoming-postcopy", json!({"guest_told": true}));
                    let _ = p(&Reply::progress(
                        "post-copy: the guest runs here; told it to run ahead",
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The run-ahead's plan and QEMU's process.
fn prefetch_plan(
    qmp: &miglock_qmp::Monitor,
    ranges: &[miglock_control::PrefetchRange],
) -> Result<(Plan, u32), String> {
    let pid = qmp
        .peer_pid()
        .ok_or("QEMU's process is unknown (no peer credentials on its QMP socket)")?;
    let plan = runahead::plan(qmp, ranges)?;
    Ok((plan, pid))
}
