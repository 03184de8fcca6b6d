// SPDX-License-Identifier: GPL-2.0

//! Live checkpoints: `miglockctl checkpoint` and `restore`.
//!
//! QEMU's `background-snapshot` migration capability writes the guest's
//! memory and device state as of the moment it starts, while the guest
//! keeps running: userfaultfd write-protects guest memory, and a page the
//! guest writes before QEMU saved it is saved first (copy-on-write). The
//! pause is the device state only. Restoring is an incoming migration from
//! the image into a QEMU started with `-incoming defer`.
//!
//! A checkpoint does not move the VM, so the lock does not stop it (unless
//! the VM's policy says `checkpoint_locked = false`); it is audited as a
//! checkpoint of a locked VM. QEMU runs one migration at a time, the
//! checkpoint being one: while it runs, the gate refuses migrations, the
//! checkpoint refuses to start beside one, and the blocker (which QEMU
//! cannot take meanwhile, and which would refuse the checkpoint itself) is
//! lifted for it and put back before the guest hears that it ended.

use crate::agent::{Agent, Vm};
use crate::clock::now_ms;
use crate::enforce;
use miglock_abi::wire::Notice;
use miglock_control::{CheckpointRequest, ErrorClass, Reply, RestoreRequest};
use miglock_qmp::Monitor;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

type Progress<'a> = &'a mut dyn FnMut(&Reply) -> std::io::Result<()>;

fn err(m: impl Into<String>) -> Reply {
    Reply::error(ErrorClass::Failed, m)
}

fn refused(m: impl Into<String>) -> Reply {
    Reply::error(ErrorClass::Refused, m)
}

/// The capabilities a checkpoint runs with (`on`) and leaves behind (off):
/// a later migration must not be a snapshot, and post-copy and a paused
/// switchover cannot be combined with one.
fn capabilities(on: bool) -> Value {
    json!({"capabilities": [
        {"capability": "events", "state": true},
        {"capability": "postcopy-ram", "state": false},
        {"capability": "pause-before-switchover", "state": false},
        {"capability": "background-snapshot", "state": on},
    ]})
}

/// What QEMU says when it cannot take a live checkpoint here, made clear.
pub fn unsupported(qemu: &str) -> String {
    format!(
        "QEMU cannot take a live checkpoint here: {qemu} (the background-snapshot \
         capability needs userfaultfd write-protection in the host kernel, for \
         anonymous or shared memory backing the guest)"
    )
}

/// The first QEMU that takes a `file:` migration URI. Older ones (Debian
/// 12's 7.2) get an image through `exec:` and `cat`.
const FIRST_FILE_URI: (u64, u64, u64) = (8, 2, 0);

/// Which way an image goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A checkpoint: QEMU writes it.
    Save,
    /// A restore: QEMU reads it.
    Load,
}

/// The image's path if `target` names a file (a bare path or `file:PATH`,
/// without `file:`'s options), as QEMU sees it.
fn image_path(target: &str) -> Option<&str> {
    match target.strip_prefix("file:") {
        Some(rest) => rest.split(',').next(),
        None if !is_uri(target) => Some(target),
        None => None,
    }
}

fn is_uri(target: &str) -> bool {
    ["file:", "exec:", "tcp:", "unix:", "fd:", "vsock:"]
        .iter()
        .any(|k| target.starts_with(k))
}

/// `s` quoted for `/bin/sh`, which runs QEMU's `exec:` commands.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The URI QEMU `version` gets for `target`: a migration URI QEMU knows
/// (`file:`, `exec:`, `tcp:`, `unix:`, `fd:`, `vsock:`) as given; anything
/// else is a path, a `file:`. Before QEMU 8.2 a path (or a `file:` without
/// options) goes through `exec:cat`.
pub fn uri(target: &str, version: (u64, u64, u64), dir: Direction) -> Result<String, String> {
    if version >= FIRST_FILE_URI || (is_uri(target) && !target.starts_with("file:")) {
        return Ok(if is_uri(target) {
            target.to_string()
        } else {
            format!("file:{target}")
        });
    }
    let (a, b, c) = version;
    match image_path(target) {
        Some(path) if !target.contains(',') && !path.is_empty() => Ok(match dir {
            Direction::Save => format!("exec:cat > {}", sh_quote(path)),
            Direction::Load => format!("exec:cat {}", sh_quote(path)),
        }),
        _ => Err(format!(
            "QEMU {a}.{b}.{c} has no file: migration URI (8.2 and later have): give the \
             image's path alone, or exec:COMMAND"
        )),
    }
}

/// The version of the QEMU behind `qmp`; the newest behaviour if it does
/// not say (QEMU then names what it refuses itself).
fn version(qmp: &Monitor) -> (u64, u64, u64) {
    crate::fence::Qemu::query(qmp).map_or(FIRST_FILE_URI, |q| q.version)
}

/// Runs `checkpoint` for `req`, reporting progress through `p`.
pub fn checkpoint(agent: &Agent, req: &CheckpointRequest, p: Progress<'_>) -> Reply {
    let Some(vm) = agent.vm(&req.vm) else {
        return Reply::error(ErrorClass::UnknownVm, format!("no VM '{}'", req.vm));
    };
    let name = req.vm.as_str();
    if vm.config.qmp.is_none() {
        return err(format!("VM '{name}' has no QMP socket configured"));
    }
    // Checked and marked under one lock: a migration asked for from now on
    // is refused, and a checkpoint never starts beside one.
    let verdict = {
        let mut l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        let locked = l.locked(now);
        if l.gate || l.migration.is_some() {
            Err(refused(format!(
                "refused: VM '{name}' is migrating; a checkpoint cannot run beside a migration"
            )))
        } else if l.checkpoint {
            Err(err(format!("VM '{name}' is already being checkpointed")))
        } else if locked && !l.policy.checkpoint_locked {
            Err(refused(format!(
                "refused: VM '{name}' is locked and its policy (checkpoint_locked = false) \
                 forbids checkpoints of a locked VM: {}",
                l.reasons(now).join("; ")
            )))
        } else {
            l.checkpoint = true;
            Ok((locked, l.reasons(now)))
        }
    };
    let (locked, reasons) = match verdict {
        Ok(v) => v,
        Err(reply) => {
            if let Reply::Error { message, .. } = &reply {
                agent
                    .audit
                    .record(name, "checkpoint-refused", json!({"why": message}));
            }
            return reply;
        }
    };
    let mon = agent.monitor(vm);
    let mut ran = Ran::default();
    let r = match &mon {
        Ok(mon) => run(agent, vm, req, mon, locked, &reasons, &mut ran, p),
        Err(e) => err(e.clone()),
    };
    // The checkpoint is over: a later migration is not a snapshot, the
    // blocker goes back (the ledger may have locked meanwhile) before the
    // guest hears of the end.
    if let Ok(mon) = &mon {
        let _ = mon.execute("migrate-set-capabilities", Some(capabilities(false)));
    }
    agent.update(vm, |l, _| {
        l.checkpoint = false;
        ((), false)
    });
    enforce::reconcile(agent, vm);
    let saved = matches!(r, Reply::Ok { .. });
    if ran.started {
        let told = agent.notify(vm, Notice::CheckpointDone { saved });
        match (&r, ran.cancelled) {
            (Reply::Ok { data }, _) => {
                let mut rec = data.clone();
                rec["guest_told"] = json!(told);
                agent.audit.record(name, "checkpoint-done", rec);
            }
            (Reply::Error { .. }, Some(mut rec)) => {
                rec["guest_told"] = json!(told);
                agent.audit.record(name, "checkpoint-cancelled", rec);
            }
            (Reply::Error { message, .. }, None) => {
                agent.audit.record(
                    name,
                    "checkpoint-failed",
                    json!({"error": message, "guest_told": told}),
                );
            }
            _ => {}
        }
    } else if let Reply::Error { message, .. } = &r {
        agent
            .audit
            .record(name, "checkpoint-failed", json!({"error": message}));
    }
    r
}

/// What became of a checkpoint beyond its answer.
#[derive(Default)]
struct Ran {
    /// The guest was told it started (so it must hear that it ended).
    started: bool,
    /// The agent cancelled it (`--timeout`): the audit record's figures.
    cancelled: Option<Value>,
}

#[allow(clippy::too_many_arguments)]
fn run(
    agent: &Agent,
    vm: &Vm,
    req: &CheckpointRequest,
    qmp: &Monitor,
    locked: bool,
    reasons: &[String],
    ran: &mut Ran,
    p: Progress<'_>,
) -> Reply {
    let name = req.vm.as_str();
    let events = qmp.subscribe();
    // QEMU checks the host kernel when the capability is set: the one
    // place to learn that userfaultfd write-protection is missing.
    if let Err(e) = qmp.execute("migrate-set-capabilities", Some(capabilities(true))) {
        return err(unsupported(&e.to_string()));
    }
    let to = match uri(&req.to, version(qmp), Direction::Save) {
        Ok(to) => to,
        Err(e) => return err(e),
    };
    let lead = req.lead_ms.unwrap_or(0);
    // When the guest hears of it. Not as the image is taken: a frame still
    // arriving on the doorbell UART at that moment left the restored
    // guest's doorbell deaf (its interrupt was lost; 2 restores in 4 here),
    // so the notice goes out once the snapshot's pause is over, or a lead
    // before it.
    let mut told = false;
    if lead > 0 {
        told = agent.notify(vm, Notice::CheckpointStarted);
        ran.started = true;
        let _ = p(&Reply::progress(format!(
            "told the guest; {lead} ms for it to put its state in order"
        )));
        // The grace the operator asked for, not a synchronisation: no
        // guest answers "ready". Migrations stay refused meanwhile.
        std::thread::sleep(Duration::from_millis(lead));
    }
    if locked {
        let _ = p(&Reply::progress(format!(
            "VM locked ({}): a checkpoint does not move it, taking it",
            reasons.join("; ")
        )));
    }
    // QEMU refuses every migration, a snapshot too, while it carries the
    // blocker: lifted for the checkpoint, which itself keeps any other
    // migration out until it ends.
    if let Err(e) = enforce::lift_for_checkpoint(agent, vm, qmp) {
        return err(format!("lifting the blocker for the checkpoint: {e}"));
    }
    let start = Instant::now();
    if let Err(e) = qmp.execute("migrate", Some(json!({ "uri": to }))) {
        return err(format!("QEMU refused the checkpoint: {e}"));
    }
    // --timeout counts from the start of the image; the wait for the
    // pause to end is within it.
    let limit = req.timeout_ms.map(Duration::from_millis);
    if lead == 0 {
        let wait = limit.map_or(RESUME_WAIT, |l| l.min(RESUME_WAIT));
        resumed(qmp, &events, start + wait);
        told = agent.notify(vm, Notice::CheckpointStarted);
        ran.started = true;
    }
    agent.audit.record(
        name,
        "checkpoint-start",
        json!({"to": to, "locked": locked, "locks": reasons, "guest_told": told,
               "lead_ms": lead, "timeout_ms": req.timeout_ms}),
    );
    loop {
        // Any event, or none within a while, is a reason to look again.
        let (q, status) = match crate::blocker::next_look(qmp, &events, Duration::from_millis(100))
        {
            Ok(look) => look,
            Err(e) => return err(format!("query-migrate: {e}")),
        };
        match status.as_str() {
            "completed" => return done(&q, &to, image_path(&req.to), start),
            "failed" | "cancelled" => {
                return crate::gate::ended_badly("checkpoint", &status, &q);
            }
            s => {
                let ram = &q["ram"];
                let b = |k: &str| ram[k].as_u64().unwrap_or(0);
                if let Some(limit) = limit.filter(|&l| start.elapsed() > l) {
                    let why = format!(
                        "checkpoint still running after {} ms ({:.1} MiB written, {:.1} MiB \
                         remaining): --timeout",
                        limit.as_millis(),
                        b("transferred") as f64 / 1048576.0,
                        b("remaining") as f64 / 1048576.0
                    );
                    return timed_out(qmp, &events, why, &q, ran);
                }
                let _ = p(&Reply::Progress {
                    message: format!(
                        "checkpoint {s}: {:.1} MiB written, {:.1} MiB remaining",
                        b("transferred") as f64 / 1048576.0,
                        b("remaining") as f64 / 1048576.0
                    ),
                    migration: Some(crate::gate::progress(s, &q, start)),
                });
            }
        }
    }
}

/// The longest wait for the end of the snapshot's pause.
const RESUME_WAIT: Duration = Duration::from_secs(10);

/// Cancels a checkpoint that outlasted `--timeout`. QEMU stops writing the
/// image (what it wrote is not a usable checkpoint) and lifts the
/// write-protection: the guest runs on as if none had started. Returns once
/// QEMU has let it go, so that the capabilities can be reset and a
/// migration may follow; `ran` gets the audit record's figures.
fn timed_out(
    qmp: &Monitor,
    events: &std::sync::mpsc::Receiver<miglock_qmp::Event>,
    why: String,
    q: &Value,
    ran: &mut Ran,
) -> Reply {
    let ended = enforce::cancel(qmp, events).unwrap_or_else(|e| format!("unconfirmed: {e}"));
    ran.cancelled = Some(json!({
        "why": why,
        "ended": ended,
        "transferred_bytes": q["ram"]["transferred"],
        "remaining_bytes": q["ram"]["remaining"],
    }));
    Reply::error(ErrorClass::Cancelled, format!("cancelled: {why}"))
}

/// Waits, until `until` at the latest, for the snapshot's pause to be over:
/// QEMU saved the device state and runs the VM again (`RESUME`), or the
/// checkpoint ended.
fn resumed(qmp: &Monitor, events: &std::sync::mpsc::Receiver<miglock_qmp::Event>, until: Instant) {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match events.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(ev) if ev.name == "RESUME" => return,
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let status = qmp
            .execute("query-migrate", None)
            .map(|q| q["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            return;
        }
    }
}

/// The figures of a completed checkpoint.
fn done(q: &Value, to: &str, path: Option<&str>, start: Instant) -> Reply {
    let ram = &q["ram"];
    // The image's size, if the agent can see the file QEMU wrote.
    let file_bytes = path
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| m.len());
    Reply::Ok {
        data: json!({
            "to": to,
            "total_time_ms": q["total-time"],
            "downtime_ms": q["downtime"],
            "setup_time_ms": q["setup-time"],
            "transferred_bytes": ram["transferred"],
            "file_bytes": file_bytes,
            "normal_pages": ram["normal"],
            "zero_pages": ram["duplicate"],
            "ram_bytes": ram["total"],
            "wall_ms": start.elapsed().as_millis() as u64,
        }),
    }
}

/// Runs `restore` for `req`: the VM's QEMU (started with `-incoming
/// defer`) loads the image; once it runs, the watcher tells the guest it
/// was restored.
pub fn restore(agent: &Agent, req: &RestoreRequest, p: Progress<'_>) -> Reply {
    let Some(vm) = agent.vm(&req.vm) else {
        return Reply::error(ErrorClass::UnknownVm, format!("no VM '{}'", req.vm));
    };
    let name = req.vm.as_str();
    let qmp = match agent.monitor(vm) {
        Ok(m) => m,
        Err(e) => return err(e),
    };
    let from = match uri(&req.from, version(&qmp), Direction::Load) {
        Ok(from) => from,
        Err(e) => return err(e),
    };
    if !enforce::incoming(&qmp) {
        return err(format!(
            "VM '{name}': its QEMU is not waiting for an incoming image (start it with -incoming defer)"
        ));
    }
    agent.update(vm, |l, _| {
        l.restoring = true;
        ((), false)
    });
    agent
        .audit
        .record(name, "restore-start", json!({"from": from}));
    let _ = p(&Reply::progress(format!("restoring from {from}")));
    let events = qmp.subscribe();
    let start = Instant::now();
    let r = qmp
        .execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "events", "state": true}]})),
        )
        .and_then(|_| qmp.execute("migrate-incoming", Some(json!({ "uri": from }))));
    let r = match r {
        Err(e) => err(format!("QEMU cannot load the image: {e}")),
        Ok(_) => loop {
            let _ = events.recv_timeout(Duration::from_millis(50));
            let q = match qmp.execute("query-migrate", None) {
                Ok(q) => q,
                Err(e) => break err(format!("query-migrate: {e}")),
            };
            match q["status"].as_str().unwrap_or("") {
                "completed" => {
                    break Reply::Ok {
                        data: json!({"from": from, "wall_ms": start.elapsed().as_millis() as u64}),
                    }
                }
                s @ ("failed" | "cancelled") => {
                    let why = q["error-desc"].as_str().unwrap_or("no description");
                    break err(format!("restore {s}: {why}"));
                }
                _ => {}
            }
        },
    };
    match &r {
        Reply::Ok { data } => {
            agent.audit.record(name, "restore-done", data.clone());
        }
        Reply::Error { message, .. } => {
            agent.update(vm, |l, _| {
                l.restoring = false;
                ((), false)
            });
            agent
                .audit
                .record(name, "restore-failed", json!({"error": message}));
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: (u64, u64, u64) = (10, 0, 2);
    const OLD: (u64, u64, u64) = (7, 2, 22);

    #[test]
    fn a_bare_path_is_a_file() {
        let u = |t| uri(t, NEW, Direction::Save).unwrap();
        assert_eq!(u("/var/lib/x.img"), "file:/var/lib/x.img");
        assert_eq!(u("file:/a,offset=4096"), "file:/a,offset=4096");
        assert_eq!(u("exec:gzip -c > /a.gz"), "exec:gzip -c > /a.gz");
        assert_eq!(u("tcp:10.0.0.2:4444"), "tcp:10.0.0.2:4444");
        assert_eq!(u("images/a.img"), "file:images/a.img");
        assert_eq!(uri("/a", (8, 2, 0), Direction::Load).unwrap(), "file:/a");
    }

    #[test]
    fn before_8_2_a_file_goes_through_cat_quoted() {
        assert_eq!(
            uri("/var/lib/x.img", OLD, Direction::Save).unwrap(),
            "exec:cat > '/var/lib/x.img'"
        );
        assert_eq!(
            uri("file:/a b.img", OLD, Direction::Load).unwrap(),
            "exec:cat '/a b.img'"
        );
        // A quote in the path cannot end the quoting.
        assert_eq!(
            uri("/x'; rm -rf /; '", OLD, Direction::Save).unwrap(),
            r"exec:cat > '/x'\''; rm -rf /; '\'''"
        );
        assert_eq!(
            uri("exec:gzip -c > /a.gz", OLD, Direction::Save).unwrap(),
            "exec:gzip -c > /a.gz"
        );
        assert_eq!(
            uri("unix:/run/s", OLD, Direction::Load).unwrap(),
            "unix:/run/s"
        );
        // file:'s options mean nothing to cat: said, not dropped.
        let e = uri("file:/a,offset=4096", OLD, Direction::Save).unwrap_err();
        assert!(e.contains("7.2.22") && e.contains("8.2"), "{e}");
        assert!(uri("file:", OLD, Direction::Save).is_err());
    }

    #[test]
    fn the_image_path_is_known_only_for_files() {
        assert_eq!(image_path("/a"), Some("/a"));
        assert_eq!(image_path("file:/a,offset=4096"), Some("/a"));
        assert_eq!(image_path("exec:cat > /a"), None);
    }

    #[test]
    fn the_capabilities_leave_no_snapshot_behind() {
        let off = capabilities(false);
        let caps = off["capabilities"].as_array().unwrap();
        assert!(caps
            .iter()
            .any(|c| c["capability"] == "background-snapshot" && c["state"] == false));
        let on = capabilities(true);
        let caps = on["capabilities"].as_array().unwrap();
        // QEMU refuses a snapshot with post-copy or a paused switchover.
        for c in ["postcopy-ram", "pause-before-switchover"] {
            assert!(caps
                .iter()
                .any(|x| x["capability"] == c && x["state"] == false));
        }
    }
}
