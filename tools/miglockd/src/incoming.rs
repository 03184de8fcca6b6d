// SPDX-License-Identifier: GPL-2.0

//! The destination side of a migration: listen, follow it to the end, and
//! tell the guest the moment it runs here under post-copy, so its tracer can
//! touch its hot pages before the workload faults on them.

use crate::agent::Agent;
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
    let mut caps = vec![json!({"capability": "events", "state": true})];
    if req.postcopy {
        caps.push(json!({"capability": "postcopy-ram", "state": true}));
        // How long vCPUs waited for pages: the cost post-copy has here.
        caps.push(json!({"capability": "postcopy-blocktime", "state": true}));
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
                let data = json!({"uri": bound, "wall_ms": started.elapsed().as_millis() as u64,
                                  "postcopy_notice": told,
                                  "postcopy_blocktime_ms": q["postcopy-blocktime"],
                                  "postcopy_vcpu_blocktime_ms": q["postcopy-vcpu-blocktime"]});
                agent.audit.record(name, "incoming-done", data.clone());
                return Reply::Ok { data };
            }
            s @ ("failed" | "cancelled") => {
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
