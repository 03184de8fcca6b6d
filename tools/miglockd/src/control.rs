// SPDX-License-Identifier: GPL-2.0

//! The control socket: one JSON request per line from miglockctl, answered
//! with JSON lines (see `miglock-control`). Only its owner (root) can reach
//! it, since it can force migrations: it is created with mode 0600, never
//! wider, not even for a moment.

use crate::agent::{Agent, Vm};
use crate::clock::now_ms;
use crate::gate;
use miglock_abi::wire::Notice;
use miglock_control::{ErrorClass, PolicyUpdate, Reply, Request};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

/// Binds the control socket, mode 0600 from the start (a directory it
/// creates for it is 0700).
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let _ = std::fs::remove_file(path);
    // bind(2) creates the socket file with the umask's mode: a chmod after
    // it would leave a moment in which anyone could connect. Called before
    // any other thread starts, so the umask is ours alone.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let l = UnixListener::bind(path);
    rustix::process::umask(old);
    Ok(l?)
}

/// Serves control connections, one thread each.
pub fn serve(agent: Arc<Agent>, listener: UnixListener) {
    for conn in listener.incoming().flatten() {
        let agent = agent.clone();
        std::thread::spawn(move || {
            let _ = client(&agent, conn);
        });
    }
}

/// Sends one reply line.
pub fn send(w: &mut impl Write, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_string(r).unwrap_or_default();
    line.push('\n');
    w.write_all(line.as_bytes())?;
    w.flush()
}

/// Who is at the other end of a control connection (`SO_PEERCRED`: the
/// kernel's word, not the client's), for the audit log.
fn peer(conn: &UnixStream) -> Value {
    match rustix::net::sockopt::socket_peercred(conn) {
        Ok(c) => {
            json!({"uid": c.uid.as_raw(), "gid": c.gid.as_raw(), "pid": c.pid.as_raw_nonzero()})
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn client(agent: &Agent, conn: UnixStream) -> std::io::Result<()> {
    let who = peer(&conn);
    let mut w = conn.try_clone()?;
    for line in BufReader::new(conn).lines() {
        let line = line?;
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::error(ErrorClass::Failed, format!("bad request: {e}")),
            Ok(Request::Status) => Reply::Ok {
                data: status(agent),
            },
            Ok(Request::Policy { vm, set }) => policy(agent, &vm, set, &who),
            Ok(Request::Watch) => return watch(agent, &mut w),
            Ok(Request::Hints { vm, all }) => hints(agent, &vm, all),
            Ok(Request::Migrate(req)) => {
                if req.force {
                    agent.audit.record(
                        &req.vm,
                        "migrate-force-requested",
                        json!({"reason": req.reason, "to": req.to, "peer": who}),
                    );
                }
                gate::migrate(agent, &req, &mut |p| send(&mut w, p))
            }
            Ok(Request::Checkpoint(req)) => {
                crate::checkpoint::checkpoint(agent, &req, &mut |p| send(&mut w, p))
            }
            Ok(Request::Restore(req)) => {
                crate::checkpoint::restore(agent, &req, &mut |p| send(&mut w, p))
            }
            Ok(Request::Incoming(req)) => {
                crate::incoming::incoming(agent, &req, &mut |p| send(&mut w, p))
            }
        };
        send(&mut w, &reply)?;
    }
    Ok(())
}

/// One VM's state as miglockctl shows it.
pub fn vm_status(vm: &Vm) -> Value {
    // Not `vm.blocker`: a lock decision holds it across QMP calls.
    let blocker = vm.blocker_node();
    let now = now_ms();
    let l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
    let link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
    let holds: serde_json::Map<String, Value> = l
        .live_holds(now)
        .map(|(id, h)| {
            (
                id.to_string(),
                json!({"reason": h.reason, "label": h.label, "left_ms": h.until_ms - now}),
            )
        })
        .collect();
    json!({
        "connected": link.writer.is_some(),
        "locked": l.locked(now),
        "reasons": l.reasons(now),
        "holds": holds,
        "reported": l.reported,
        "quota_used_ms": l.used_ms(now),
        "policy": l.policy,
        "boot_id": l.boot_id,
        "migration": l.migration.map(|m| format!("{m:?}")),
        "checkpoint": l.checkpoint,
        "blocker": blocker,
        "link": link.stats,
        "hint_ranges": link.hints.latest.as_ref().map_or(0, |b| b.ranges.len()),
    })
}

/// Ranges shown without `all`.
const TOP_RANGES: usize = 16;

fn hints(agent: &Agent, name: &str, all: bool) -> Reply {
    let Some(vm) = agent.vm(name) else {
        return Reply::error(ErrorClass::UnknownVm, format!("no VM '{name}'"));
    };
    let link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
    let h = &link.hints;
    let batch = h.latest.as_ref().map(|b| {
        let shown = if all { b.ranges.len() } else { TOP_RANGES };
        let ranges: Vec<Value> = b
            .ranges
            .iter()
            .take(shown)
            .map(|r| json!({"start_pfn": r.start_pfn, "pages": r.pages, "score": r.score}))
            .collect();
        json!({
            "batch": b.batch,
            "age_ms": crate::audit::wall_ms().saturating_sub(b.received_ms),
            "workload": b.workload,
            "ranges": b.ranges.len(),
            "pages": b.pages(),
            "top": ranges,
        })
    });
    Reply::Ok {
        data: json!({"vm": name, "latest": batch, "stats": h.stats}),
    }
}

fn status(agent: &Agent) -> Value {
    let vms: serde_json::Map<String, Value> = agent
        .vms
        .iter()
        .map(|(n, vm)| (n.clone(), vm_status(vm)))
        .collect();
    let unrecorded = agent.unrecorded.load(std::sync::atomic::Ordering::Relaxed);
    json!({ "epoch": agent.epoch, "vms": vms, "unrecorded": unrecorded,
        "watchers": agent.audit.watchers() })
}

fn policy(agent: &Agent, name: &str, set: Option<PolicyUpdate>, who: &Value) -> Reply {
    let Some(vm) = agent.vm(name) else {
        return Reply::error(ErrorClass::UnknownVm, format!("no VM '{name}'"));
    };
    let Some(u) = set else {
        let p = vm
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .policy
            .clone();
        return Reply::Ok { data: json!(p) };
    };
    if u.window_ms == Some(0) || u.max_lease_ms == Some(0) {
        return Reply::error(
            ErrorClass::Failed,
            "window_ms and max_lease_ms must be positive",
        );
    }
    let p = agent.update(vm, |l, _| {
        let p = &mut l.policy;
        p.migration = u.migration.unwrap_or(p.migration);
        p.guest_locks = u.guest_locks.unwrap_or(p.guest_locks);
        p.max_lease_ms = u.max_lease_ms.unwrap_or(p.max_lease_ms);
        p.quota_ms = u.quota_ms.unwrap_or(p.quota_ms);
        p.window_ms = u.window_ms.unwrap_or(p.window_ms);
        p.grace_ms = u.grace_ms.unwrap_or(p.grace_ms);
        p.checkpoint_locked = u.checkpoint_locked.unwrap_or(p.checkpoint_locked);
        (p.clone(), true)
    });
    agent
        .audit
        .record(name, "policy", json!({ "policy": p, "peer": who }));
    // A static lock is enforced in QEMU at once; lifting one frees it.
    crate::enforce::reconcile(agent, vm);
    agent.notify(
        vm,
        Notice::PolicyChange {
            max_lease_ms: p.max_lease_ms,
        },
    );
    Reply::Ok { data: json!(p) }
}

/// How long a watch client may leave a line unread before it is dropped
/// (its thread would otherwise wait in write(2) for ever).
const WATCH_STALL: std::time::Duration = std::time::Duration::from_secs(10);

fn watch(agent: &Agent, w: &mut UnixStream) -> std::io::Result<()> {
    let rx = agent.audit.watch();
    w.set_write_timeout(Some(WATCH_STALL))?;
    send(w, &Reply::progress("watching; one line per event"))?;
    for event in rx {
        send(w, &Reply::Event { event })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::inotify;
    use std::os::unix::fs::PermissionsExt;

    /// Under the loosest umask, the socket is born 0600: it ends 0600, and
    /// no attribute change follows its creation (a chmod after bind(2),
    /// which leaves it 0777 for a moment, would show as one).
    #[test]
    fn the_control_socket_is_private_from_birth() {
        let dir = std::env::temp_dir().join(format!("miglockd-umask-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let watch = inotify::init(inotify::CreateFlags::NONBLOCK).unwrap();
        inotify::add_watch(
            &watch,
            &dir,
            inotify::WatchFlags::CREATE | inotify::WatchFlags::ATTRIB,
        )
        .unwrap();
        let old = rustix::process::umask(rustix::fs::Mode::empty());
        let l = bind(&dir.join("control.sock"));
        rustix::process::umask(old);
        let _l = l.unwrap();
        let mode = std::fs::metadata(dir.join("control.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
        let mut events = inotify::Reader::new(&watch, &mut buf);
        let mut seen = Vec::new();
        while let Ok(e) = events.next() {
            seen.push(e.events());
        }
        assert_eq!(
            seen,
            [inotify::ReadFlags::CREATE],
            "events on the socket: {seen:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_it_creates_is_private() {
        let dir = std::env::temp_dir().join(format!("miglockd-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _l = bind(&dir.join("run/control.sock")).unwrap();
        let mode = std::fs::metadata(dir.join("run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
