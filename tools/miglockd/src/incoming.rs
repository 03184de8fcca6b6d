// SPDX-License-Identifier: GPL-2.0

//! The destination side of a migration: listen, follow it to the end, and
//! tell the guest the moment it runs here under post-copy, so its tracer can
//! touch its hot pages before the workload faults on them.

use crate::agent::{qmp_connected, Agent};
use miglock_abi::wire::Notice;
use miglock_control::{IncomingRequest, Reply};
use miglock_qmp::Qmp;
use serde_json::json;
use std::time::{Duration, Instant};

type Progress<'a> = &'a mut dyn FnMut(&Reply) -> std::io::Result<()>;

fn err(m: impl Into<String>) -> Reply {
    Reply::Error { message: m.into() }
}

/// Runs `incoming` for `req`, reporting progress through `p`.
pub fn incoming(agent: &Agent, req: &IncomingRequest, p: Progress<'_>) -> Reply {
    let Some(vm) = agent.vm(&req.vm) else {
        return err(format!("no VM '{}'", req.vm));
    };
    let name = req.vm.as_str();
    let Some(qmp_path) = vm.config.qmp.clone() else {
        return err(format!("VM '{name}' has no QMP socket configured"));
    };
    let mut guard = vm.qmp.lock().unwrap_or_else(|e| e.into_inner());
    let mut caps = vec![json!({"capability": "events", "state": true})];
    if req.postcopy {
        caps.push(json!({"capability": "postcopy-ram", "state": true}));
        // How long vCPUs waited for pages: the cost post-copy has here.
        caps.push(json!({"capability": "postcopy-blocktime", "state": true}));
    }
    let set_caps = |qmp: &mut Qmp| {
        qmp.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": caps })),
        )
    };
    // A connection kept from a QEMU that has since been replaced (a new
    // destination process) fails at once: dial the new one.
    if guard.as_mut().is_none_or(|q| set_caps(q).is_err()) {
        *guard = None;
    }
    let qmp = match qmp_connected(&mut guard, &qmp_path) {
        Ok(q) => q,
        Err(e) => return err(e),
    };
    let listen = set_caps(qmp)
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
    let _ = p(&Reply::Progress {
        message: format!("listening on {bound}"),
    });
    let started = Instant::now();
    let (mut resumed, mut told) = (false, false);
    loop {
        let tick = Instant::now() + Duration::from_millis(50);
        // Any event wakes us to look again; none within the tick is fine too.
        let _ = qmp.wait_event(tick, |_| true);
        let q = match qmp.execute("query-migrate", None) {
            Ok(q) => q,
            Err(e) => return err(format!("query-migrate: {e:#}")),
        };
        let status = q["status"].as_str().unwrap_or("").to_string();
        // This request holds the QMP connection, so it does the QMP
        // watcher's job: once the guest runs here, announce the agent so
        // the guest resends its lock state to this host.
        if !resumed
            && qmp
                .execute("query-status", None)
                .is_ok_and(|s| s["running"] == true)
        {
            resumed = true;
            let announced = agent.announce(vm);
            agent
                .audit
                .record(name, "vm-resumed", json!({"guest_told": announced}));
        }
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
                return err(format!("incoming migration {s}"));
            }
            // Listening starts before the device state arrives: wait until
            // the guest runs here, or the notice would land in a UART that
            // is about to be overwritten.
            "postcopy-active" if resumed && !told => {
                told = agent.notify(vm, Notice::PostcopyStarted);
                agent
                    .audit
                    .record(name, "incoming-postcopy", json!({"guest_told": told}));
                let _ = p(&Reply::Progress {
                    message: format!(
                        "post-copy: the guest runs here; {}",
                        if told {
                            "told it to run ahead"
                        } else {
                            "guest link not connected"
                        }
                    ),
                });
            }
            _ => {}
        }
    }
}
