// SPDX-License-Identifier: GPL-2.0

//! One VM's guest link: dials QEMU's doorbell socket, announces the agent
//! (so a guest that was waiting resyncs), and answers the guest.
//!
//! The guest is untrusted. Every frame is validated by the wire decoder and
//! again here (reason codes, labels, sizes); a token bucket limits how fast
//! a guest may talk; a link that keeps sending garbage or floods is cut and
//! redialled after a pause; one that stops reading is dropped too (its
//! frames wait in a bounded queue, `outbox.rs`). Nothing a guest sends, or
//! fails to read, can stop the agent or touch another VM's state.

use crate::agent::{Agent, Vm};
use crate::bucket::Bucket;
use crate::dial::Dial;
use crate::ledger::{Verdict, REPORTED_HOLD, REPORTED_LABEL};
use crate::outbox::Outbox;
use miglock_abi::types::{check_label, Reason};
use miglock_abi::wire::{self, Decoder, Event, Message, Notice};
use serde_json::json;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Rejections (malformed or over the rate) in one second that cut the link.
pub const CUT_AFTER: u32 = 2000;
/// Pause before redialling a link that was cut or could not connect.
pub const REDIAL: Duration = Duration::from_millis(200);

/// Serves `vm` until `stop` is set: dial, serve, redial.
pub fn run(agent: Arc<Agent>, vm: Arc<Vm>, stop: Arc<AtomicBool>) {
    let name = vm.config.name.as_str();
    let path = vm.config.doorbell.display().to_string();
    let mut dial = Dial::default();
    let mut was_connected = false;
    while !stop.load(Ordering::Relaxed) {
        match UnixStream::connect(&vm.config.doorbell) {
            Ok(s) => {
                match dial.connected(Instant::now()) {
                    Some(after) => {
                        info!(vm = name, path, down_for = ?after, "doorbell reachable again")
                    }
                    None => info!(vm = name, path, "doorbell connected"),
                }
                agent
                    .audit
                    .record(name, "guest-link", json!({"state": "connected"}));
                was_connected = true;
                let why = serve(&agent, &vm, s, &stop);
                let why = match undrained(&vm) {
                    Some(stall) => {
                        let stats = vm.link.lock().unwrap_or_else(|e| e.into_inner()).stats;
                        warn!(vm = name, why = stall, "guest does not drain: link dropped");
                        agent.audit.record(
                            name,
                            "guest-misbehaving",
                            json!({"action": "link dropped", "why": stall, "stats": stats}),
                        );
                        format!("dropped: {stall}")
                    }
                    None => why,
                };
                info!(vm = name, path, why, "doorbell link ended");
                agent.audit.record(
                    name,
                    "guest-link",
                    json!({"state": "disconnected", "why": why}),
                );
            }
            Err(e) => {
                let error = e.to_string();
                if dial.failed(&error, Instant::now()) {
                    warn!(
                        vm = name,
                        path, error, "cannot dial the doorbell socket; retrying"
                    );
                } else {
                    debug!(vm = name, path, error, "doorbell dial failed again");
                }
                if was_connected {
                    agent.audit.record(
                        name,
                        "guest-link",
                        json!({"state": "unreachable", "error": error}),
                    );
                    was_connected = false;
                }
            }
        }
        std::thread::sleep(REDIAL); // redial pacing, not synchronisation
    }
}

/// Ends `vm`'s link on the host side: why it was dropped for not draining,
/// if it was (then counted).
fn undrained(vm: &Vm) -> Option<String> {
    let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
    let stall = link.writer.take().and_then(|w| w.stalled());
    if stall.is_some() {
        link.stats.undrained += 1;
    }
    stall
}

/// Serves one connection; returns why it ended.
fn serve(agent: &Agent, vm: &Vm, mut stream: UnixStream, stop: &AtomicBool) -> String {
    let name = vm.config.name.as_str();
    let timeout = Duration::from_millis(agent.limits.send_timeout_ms);
    let writer = match stream
        .try_clone()
        .and_then(|s| Outbox::start(s, agent.limits.send_queue, timeout))
    {
        Ok(w) => w,
        Err(e) => return format!("cannot start the writer: {e}"),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    vm.link.lock().unwrap_or_else(|e| e.into_inner()).writer = Some(writer);
    // Announce ourselves: a guest that decided locally meanwhile resyncs,
    // then hears what it missed.
    agent.announce(vm);
    agent.pay_owed(vm);
    let mut dec = Decoder::new();
    let mut bucket = Bucket::new(agent.limits.rate, agent.limits.burst);
    let mut hint_bucket = Bucket::new(agent.limits.hint_rate, agent.limits.hint_burst);
    let (mut rejected, mut window) = (0u32, Instant::now());
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return "closed by QEMU".into(),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return format!("read error: {e}"),
        };
        for &b in &buf[..n] {
            let ok = match dec.push(b) {
                Event::Pending => continue,
                Event::Dropped(_) => {
                    vm.link
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .stats
                        .malformed += 1;
                    false
                }
                Event::Frame if is_hint(dec.frame()) && !hint_bucket.take() => {
                    let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
                    link.hints.stats.rate_dropped += 1;
                    false
                }
                Event::Frame if !is_hint(dec.frame()) && !bucket.take() => {
                    over_rate(agent, vm, dec.frame());
                    false
                }
                Event::Frame => match wire::decode(dec.frame()) {
                    Ok((hdr, msg)) => handle(agent, vm, hdr, msg),
                    Err(_) => false,
                },
            };
            if ok {
                continue;
            }
            if window.elapsed() > Duration::from_secs(1) {
                (rejected, window) = (0, Instant::now());
            }
            rejected += 1;
            if rejected == CUT_AFTER {
                let stats = {
                    let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
                    link.stats.cut += 1;
                    link.stats
                };
                warn!(vm = name, "guest floods or sends garbage: link cut");
                agent.audit.record(
                    name,
                    "guest-misbehaving",
                    json!({"action": "link cut", "stats": stats}),
                );
                return "cut: malformed or flooding input".into();
            }
        }
    }
    "agent stopping".into()
}

/// Hint traffic (kind byte of a frame the decoder accepted).
fn is_hint(frame: &[u8]) -> bool {
    matches!(
        frame.get(3).copied().and_then(wire::Kind::from_u8),
        Some(wire::Kind::Hints | wire::Kind::Workload)
    )
}

/// A frame beyond the guest's rate: a lock or renew is refused at once with
/// `REFUSE_RATE` (the guest reports EAGAIN rather than waiting for a
/// retry); an unlock is still applied, since it can only release a hold
/// (at most 64 of them, and an unknown one costs nothing), and dropping it
/// would keep the VM locked on the host until the lease ends; everything
/// else is dropped. Either way it counts as rejected.
fn over_rate(agent: &Agent, vm: &Vm, frame: &[u8]) {
    let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
    link.stats.rate_dropped += 1;
    match wire::decode(frame) {
        Ok((
            hdr,
            m @ (Message::Lock { .. } | Message::Renew { .. } | Message::LockShort { .. }),
        )) => {
            let refusal = answer(m, Verdict::Refused(wire::REFUSE_RATE));
            link.send(&refusal, hdr.seq);
        }
        Ok((hdr, m @ Message::Unlock { .. })) => {
            // `handle` takes the link lock itself.
            drop(link);
            handle(agent, vm, hdr, m);
        }
        _ => {}
    }
}

/// Acts on one valid frame; false if it is not something a guest may send.
fn handle(agent: &Agent, vm: &Vm, hdr: wire::Header, msg: Message<'_>) -> bool {
    let name = vm.config.name.as_str();
    vm.link
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stats
        .frames += 1;
    let reply = |m: Message<'_>| {
        vm.link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(&m, hdr.seq)
    };
    match msg {
        Message::Hello { boot_id, .. } => {
            let rebooted = agent.update(vm, |l, now| {
                let rebooted = l.boot_id.is_some_and(|b| b != boot_id);
                if rebooted {
                    // A new boot holds nothing the old one held.
                    l.force_release(now);
                }
                let changed = rebooted || l.boot_id != Some(boot_id);
                l.boot_id = Some(boot_id);
                (rebooted, changed)
            });
            if rebooted {
                agent
                    .audit
                    .record(name, "guest-rebooted", json!({"boot_id": boot_id}));
            }
            reply(agent.welcome(vm));
        }
        Message::Lock { .. } | Message::LockShort { .. } => {
            let Some((hold, reason, lease_ms, label)) = lock_fields(msg) else {
                return false;
            };
            let text = check_label(&label)
                .ok()
                .and_then(|t| std::str::from_utf8(t).ok());
            // Each decision is in the audit log before anyone can see it,
            // and a grant only once QEMU enforces it.
            let verdict = match (Reason::from_u32(reason), text) {
                (Some(_), Some(text)) if hold != REPORTED_HOLD => {
                    lock_recorded(agent, vm, "lock", hold, reason, text, lease_ms)
                }
                _ => {
                    let v = Verdict::Refused(wire::REFUSE_INVALID);
                    decide(agent, vm, "lock", hold, reason, "?", lease_ms, v, None)
                }
            };
            reply(answer(msg, verdict));
        }
        Message::Held {
            hold,
            reason,
            lease_ms,
            label,
        } => {
            let text = check_label(&label)
                .ok()
                .and_then(|t| std::str::from_utf8(t).ok());
            let (Some(_), Some(text)) = (Reason::from_u32(reason), text) else {
                return false;
            };
            if hold == REPORTED_HOLD {
                return false;
            }
            held(agent, vm, hold, reason, text, lease_ms);
        }
        Message::Renew { hold, lease_ms } => {
            let prev = prior(vm, hold);
            let decided = agent.try_update(vm, |l, now| {
                let v = match l.holds.get(&hold).filter(|h| h.until_ms > now).cloned() {
                    Some(h) => l.lock(hold, h.reason, &h.label, lease_ms, now),
                    None => Verdict::Refused(wire::REFUSE_INVALID),
                };
                ((v, l.blocker_reason(now)), true)
            });
            let v = match decided {
                Ok((v @ Verdict::Granted(_), why)) => enforced(agent, vm, hold, why, v),
                Ok((refused, _)) => refused,
                Err(_) => Verdict::Refused(wire::REFUSE_UNENFORCEABLE),
            };
            let v = decide(agent, vm, "renew", hold, 0, "", lease_ms, v, prev);
            reply(decision(v));
        }
        Message::Unlock { hold } => {
            agent.update(vm, |l, now| {
                let known = l.unlock(hold, now);
                if known {
                    agent.audit.record(name, "unlock", json!({"hold": hold}));
                }
                ((), known)
            });
        }
        Message::State {
            holders,
            static_lock,
            earliest_expiry_ms,
        } => {
            // The answer to our announce (a resync) is always worth a record.
            let (resync, was_granted) = {
                let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
                (
                    !std::mem::replace(&mut link.synced, true),
                    link.reported_granted,
                )
            };
            let ask = agent.update(vm, |l, now| {
                let before = (l.reported.holders, l.reported.static_lock, l.locked(now));
                // Decided again only when there is something new to decide:
                // a guest repeating a refused report costs no record.
                let lapsed = was_granted && l.live_holds(now).all(|(&id, _)| id != REPORTED_HOLD);
                let regrant = resync || lapsed || before.0 != holders || before.1 != static_lock;
                let ended = l.report(holders, static_lock, earliest_expiry_ms, now);
                let ask = l.unbacked(now);
                if ask.is_none() {
                    // What it holds is what this host granted: nothing stands in.
                    l.unlock(REPORTED_HOLD, now);
                }
                for &hold in &ended {
                    agent
                        .audit
                        .record(name, "unlock", json!({"hold": hold, "via": "state"}));
                }
                let locked = l.locked(now);
                // A report that changes nothing costs no disk write: a guest
                // repeating itself cannot make the agent fsync in a loop.
                let changed =
                    resync || !ended.is_empty() || before != (holders, static_lock, locked);
                if changed {
                    let rec =
                        json!({"holders": holders, "static_lock": static_lock, "locked": locked});
                    agent.audit.record(name, "guest-state", rec);
                }
                (ask.filter(|_| regrant), changed)
            });
            // Holds the guest took while the host was away (or on another
            // host) are decided here as one lock, through the policy, the
            // quota and the install pacing; a report is never a grant.
            if let Some(lease_ms) = ask {
                reported(agent, vm, lease_ms);
            }
            crate::enforce::reconcile(agent, vm);
        }
        Message::Workload {
            batch,
            interval_ms,
            wss_pages,
            dirty_pages_per_s,
            pfn_limit,
        } => {
            let w = crate::hints::Workload {
                interval_ms,
                wss_pages,
                dirty_pages_per_s,
                pfn_limit,
            };
            let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
            return link.hints.workload(batch, w, crate::audit::wall_ms());
        }
        Message::Hints { batch, ranges } => {
            let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
            let v: Vec<_> = ranges.iter().collect();
            return link.hints.hints(batch, &v, crate::audit::wall_ms());
        }
        Message::Ping => {
            reply(Message::Pong);
        }
        // Host-to-guest kinds have no business coming from a guest.
        Message::Welcome { .. }
        | Message::Decision { .. }
        | Message::Verdict { .. }
        | Message::Notice(_)
        | Message::Pong => return false,
    }
    true
}

/// A hold the guest took inside one the host granted: recorded (and
/// audited) as the guest took it. If nothing covers it here (the covering
/// hold ended meanwhile), it is decided as a lock; refused, the guest is
/// told its holds are void, so none stands that the host did not grant.
fn held(agent: &Agent, vm: &Vm, hold: u32, reason: u32, label: &str, lease_ms: u32) {
    let name = vm.config.name.as_str();
    let (covered, until_ms) = agent.update(vm, |l, now| {
        let covered = l.held(hold, reason, label, lease_ms, now);
        let until = l.holds.get(&hold).map(|h| h.until_ms);
        ((covered, until), covered)
    });
    if covered {
        let rec = json!({"hold": hold, "reason": reason, "label": label, "asked_ms": lease_ms,
            "until_ms": until_ms});
        if agent.audit.try_record(name, "held", rec).is_ok() {
            return;
        }
        // Not on record: it does not stand, and is decided (and refused,
        // the log being full) like an uncovered one.
        agent.unrecorded();
        agent.update(vm, |l, _| (l.revoke(hold), true));
    }
    let v = lock_recorded(agent, vm, "held-uncovered", hold, reason, label, lease_ms);
    if let Verdict::Refused(_) = v {
        agent.notify(
            vm,
            Notice::ForcedRelease {
                reason: wire::FORCED_UNCOVERED,
            },
        );
        agent.update(vm, |l, now| (l.force_release(now), true));
    }
}

/// Decides the holds a guest reported but was not granted as a lock of
/// [`REPORTED_HOLD`]. Refused, the attempt is audited (`guest-state-lock`,
/// granted false) and the guest told its holds are void.
fn reported(agent: &Agent, vm: &Vm, lease_ms: u32) {
    let reason = Reason::Other as u32;
    let v = lock_recorded(
        agent,
        vm,
        "guest-state-lock",
        REPORTED_HOLD,
        reason,
        REPORTED_LABEL,
        lease_ms,
    );
    vm.link
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reported_granted = matches!(v, Verdict::Granted(_));
    if let Verdict::Refused(why) = v {
        let reason = if why == wire::REFUSE_QUOTA {
            wire::FORCED_BY_QUOTA
        } else {
            wire::FORCED_UNCOVERED
        };
        agent.notify(vm, Notice::ForcedRelease { reason });
    }
}

/// A `Lock`'s or `LockShort`'s hold, reason, lease and padded label.
fn lock_fields(msg: Message<'_>) -> Option<(u32, u32, u32, [u8; wire::LABEL_LEN])> {
    match msg {
        Message::Lock {
            hold,
            reason,
            lease_ms,
            label,
        } => Some((hold, reason, lease_ms, label)),
        Message::LockShort {
            hold,
            reason,
            lease_ms,
            label: short,
        } => {
            // The decoder allows no more than the padded label holds.
            let mut label = [0u8; wire::LABEL_LEN];
            label.get_mut(..short.len())?.copy_from_slice(short);
            Some((hold, reason, lease_ms, label))
        }
        _ => None,
    }
}

/// A lock of `hold` decided, enforced and recorded (audited as `event`):
/// the same path for a request, an uncovered hold and a reported one.
fn lock_recorded(
    agent: &Agent,
    vm: &Vm,
    event: &str,
    hold: u32,
    reason: u32,
    label: &str,
    lease_ms: u32,
) -> Verdict {
    let prev = prior(vm, hold);
    let v = lock_enforced(agent, vm, hold, reason, label, lease_ms);
    decide(agent, vm, event, hold, reason, label, lease_ms, v, prev)
}

/// Decides a lock of `hold` in the ledger; a grant stands once QEMU
/// enforces it (see [`enforced`]).
fn lock_enforced(
    agent: &Agent,
    vm: &Vm,
    hold: u32,
    reason: u32,
    label: &str,
    lease_ms: u32,
) -> Verdict {
    let decided = agent.try_update(vm, |l, now| {
        let v = l.lock(hold, reason, label, lease_ms, now);
        ((v, l.blocker_reason(now)), matches!(v, Verdict::Granted(_)))
    });
    match decided {
        Ok((v @ Verdict::Granted(_), why)) => enforced(agent, vm, hold, why, v),
        Ok((refused, _)) => refused,
        // Not in the journal, so not granted (and already undone).
        Err(_) => Verdict::Refused(wire::REFUSE_UNENFORCEABLE),
    }
}

/// `hold` as the ledger has it now (what a failed record puts back).
fn prior(vm: &Vm, hold: u32) -> Option<crate::ledger::Hold> {
    vm.ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .holds
        .get(&hold)
        .cloned()
}

/// A grant stands once QEMU carries the blocker; otherwise it is taken
/// back and refused with why.
fn enforced(agent: &Agent, vm: &Vm, hold: u32, why: &str, v: Verdict) -> Verdict {
    match crate::enforce::ensure_paced(agent, vm, why) {
        Ok(()) => v,
        Err(e) => {
            agent.update(vm, |l, _| {
                l.revoke(hold);
                ((), true)
            });
            Verdict::Refused(e.reason())
        }
    }
}

/// The answer to `request` (a `LockShort` gets the short form).
fn answer(request: Message<'_>, v: Verdict) -> Message<'static> {
    match (request, v) {
        (Message::LockShort { .. }, Verdict::Granted(lease_ms)) => Message::Verdict {
            lease_ms,
            refusal: 0,
        },
        (Message::LockShort { .. }, Verdict::Refused(refusal)) => Message::Verdict {
            lease_ms: 0,
            refusal,
        },
        _ => decision(v),
    }
}

fn decision(v: Verdict) -> Message<'static> {
    match v {
        Verdict::Granted(lease_ms) => Message::Decision {
            granted: true,
            lease_ms,
            reason: 0,
        },
        Verdict::Refused(reason) => Message::Decision {
            granted: false,
            lease_ms: 0,
            reason,
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn decide(
    agent: &Agent,
    vm: &Vm,
    what: &str,
    hold: u32,
    reason: u32,
    label: &str,
    lease_ms: u32,
    v: Verdict,
    prev: Option<crate::ledger::Hold>,
) -> Verdict {
    let (granted, lease, refusal) = match v {
        Verdict::Granted(l) => (true, l, 0),
        Verdict::Refused(r) => (false, 0, r),
    };
    // When the lease really ends (it began at the decision, before QEMU
    // took the blocker and this record was written).
    let until_ms = granted
        .then(|| {
            vm.ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .holds
                .get(&hold)
                .map(|h| h.until_ms)
        })
        .flatten();
    let recorded = agent.audit.try_record(
        &vm.config.name,
        what,
        json!({
            "hold": hold, "reason": reason, "label": label, "asked_ms": lease_ms,
            "granted": granted, "lease_ms": lease, "until_ms": until_ms, "refusal": refusal,
        }),
    );
    if recorded.is_ok() {
        return v;
    }
    agent.unrecorded();
    if !granted {
        return v;
    }
    // A grant the audit log does not have must not stand: the hold is put
    // back as it was and the guest refused.
    tracing::error!(
        vm = vm.config.name,
        hold,
        "the audit log cannot take a grant: refused"
    );
    agent.update(vm, |l, _| {
        match prev {
            Some(h) => {
                l.holds.insert(hold, h);
            }
            None => l.revoke(hold),
        }
        ((), true)
    });
    crate::enforce::reconcile(agent, vm);
    Verdict::Refused(wire::REFUSE_UNENFORCEABLE)
}
