// SPDX-License-Identifier: GPL-2.0

//! A scripted stand-in for the host agent on the doorbell socket, to test
//! the guest's host channel on its own: it answers `Hello`, grants locks (capping the
//! lease at [`MAX_LEASE_MS`]) except those labelled `refuse*`, announces a
//! pending migration after granting a lock labelled `await-notice`, answers
//! `Ping`, and records everything it received and which holds it holds.
//! Options make it slow to decide and refuse now and then, as a host under
//! load with a quota may.

use miglock_abi::wire::{self, Decoder, Event, Header, Message, Notice};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::scenario::{FailKind, Failure};
use crate::vm::Vm;

/// The stub's maximum lease.
pub const MAX_LEASE_MS: u32 = 60_000;
/// The stub's refusal reason code.
pub const REFUSAL: u32 = 42;

/// What the stub saw.
#[derive(Debug, Default)]
pub struct Record {
    /// `Hello`s received.
    pub hellos: usize,
    /// `(hold, label)` of every `Lock`.
    pub locks: Vec<(u32, String)>,
    /// Holds of every `Unlock`.
    pub unlocks: Vec<u32>,
    /// `Renew`s received.
    pub renews: usize,
    /// `State` messages.
    pub states: usize,
    /// Holder counts reported in `State` messages.
    pub state_holders: Vec<u32>,
    /// Frames dropped by the decoder.
    pub dropped: usize,
    /// The holds it holds now: granted, not yet unlocked (nor ended by a
    /// `State` of no holders).
    pub holds: BTreeSet<u32>,
    /// Locks granted.
    pub grants: usize,
    /// Locks refused.
    pub refusals: usize,
}

/// How the stub behaves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// First send a `Welcome` of its own, as an agent that starts while the
    /// guest runs does.
    pub announce: bool,
    /// Wait this long before each decision.
    pub delay: Duration,
    /// Refuse every n-th lock (0: none but `refuse*` labels).
    pub refuse_every: usize,
}

/// A running stub host.
pub struct Stub {
    /// What it saw so far.
    pub record: Arc<Mutex<Record>>,
    thread: JoinHandle<()>,
    /// The doorbell socket, closed by [`Stub::finish`].
    bell: UnixStream,
}

/// Serves `vm`'s doorbell (the harness's end of it) with a stub host that
/// logs to `log`.
pub fn attach(vm: &mut Vm, log: &Path, opts: Options) -> Result<Stub, Failure> {
    let harness = |e: std::io::Error| Failure::new(FailKind::Harness, format!("stub host: {e}"));
    let bell = vm
        .doorbell
        .take()
        .ok_or_else(|| Failure::new(FailKind::Harness, "no doorbell socket"))?;
    let (record, thread) = serve(bell.try_clone().map_err(harness)?, log, opts).map_err(harness)?;
    Ok(Stub {
        record,
        thread,
        bell,
    })
}

impl Stub {
    /// Closes the doorbell (once the guest is done) and waits for the stub;
    /// what it saw.
    pub fn finish(self) -> Result<Record, Failure> {
        let _ = self.bell.shutdown(std::net::Shutdown::Both);
        self.thread
            .join()
            .map_err(|_| Failure::new(FailKind::Harness, "stub host panicked"))?;
        let r = std::mem::take(&mut *self.record.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(r)
    }

    /// The holds it holds now.
    pub fn holds(&self) -> BTreeSet<u32> {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holds
            .clone()
    }
}

fn label(l: &[u8]) -> String {
    let end = l.iter().position(|&b| b == 0).unwrap_or(l.len());
    String::from_utf8_lossy(&l[..end]).into_owned()
}

/// Serves `stream` until it closes, as `opts` say.
fn serve(
    mut stream: UnixStream,
    log: &Path,
    opts: Options,
) -> std::io::Result<(Arc<Mutex<Record>>, JoinHandle<()>)> {
    let mut log = File::create(log)?;
    let record = Arc::new(Mutex::new(Record::default()));
    let shared = record.clone();
    let thread = thread::spawn(move || {
        let mut locks_seen = 0usize;
        let mut dec = Decoder::new();
        let mut seq = 1u32;
        let mut buf = [0u8; 512];
        let mut out = [0u8; wire::MAX_FRAME];
        let mut w = stream.try_clone().expect("clone doorbell socket");
        let mut send = |msg: &Message<'_>, reply_to: u32, log: &mut File| {
            seq += 1;
            let n = wire::encode(msg, Header { seq, reply_to }, &mut out).expect("encode");
            let _ = writeln!(log, "> {msg:?} (reply to {reply_to})");
            let _ = w.write_all(&out[..n]);
        };
        if opts.announce {
            let welcome = Message::Welcome {
                epoch: 8,
                features: 0,
                max_lease_ms: MAX_LEASE_MS,
            };
            send(&welcome, 0, &mut log);
        }
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for &b in &buf[..n] {
                match dec.push(b) {
                    Event::Pending => continue,
                    Event::Dropped(e) => {
                        shared.lock().unwrap_or_else(|e| e.into_inner()).dropped += 1;
                        let _ = writeln!(log, "! dropped: {e:?}");
                        continue;
                    }
                    Event::Frame => {}
                }
                let Ok((hdr, msg)) = wire::decode(dec.frame()) else {
                    continue;
                };
                let mut rec = shared.lock().unwrap_or_else(|e| e.into_inner());
                match msg {
                    Message::Lock {
                        hold,
                        reason,
                        lease_ms,
                        label: l,
                    } => {
                        let _ = writeln!(log, "< Lock hold {hold} reason {reason} lease {lease_ms} ms label {:?} (seq {})", label(&l), hdr.seq);
                    }
                    _ => {
                        let _ = writeln!(log, "< {msg:?} (seq {})", hdr.seq);
                    }
                }
                match msg {
                    Message::Hello { .. } => {
                        rec.hellos += 1;
                        let welcome = Message::Welcome {
                            epoch: 7,
                            features: 0,
                            max_lease_ms: MAX_LEASE_MS,
                        };
                        send(&welcome, hdr.seq, &mut log);
                    }
                    Message::Lock {
                        hold,
                        lease_ms,
                        label: l,
                        ..
                    } => {
                        let text = label(&l);
                        locks_seen += 1;
                        let refuse = text.starts_with("refuse")
                            || (opts.refuse_every != 0
                                && locks_seen.is_multiple_of(opts.refuse_every));
                        if !opts.delay.is_zero() {
                            // A host slow to decide (the point of the option),
                            // not synchronisation.
                            drop(rec);
                            thread::sleep(opts.delay);
                            rec = shared.lock().unwrap_or_else(|e| e.into_inner());
                        }
                        if refuse {
                            // A refusal leaves a hold the guest had as it was.
                            rec.refusals += 1;
                        } else {
                            rec.grants += 1;
                            rec.holds.insert(hold);
                        }
                        let decision = if refuse {
                            Message::Decision {
                                granted: false,
                                lease_ms: 0,
                                reason: REFUSAL,
                            }
                        } else {
                            Message::Decision {
                                granted: true,
                                lease_ms: lease_ms.min(MAX_LEASE_MS),
                                reason: 0,
                            }
                        };
                        send(&decision, hdr.seq, &mut log);
                        if text == "await-notice" {
                            send(
                                &Message::Notice(Notice::MigrationPending { deadline_ms: 5000 }),
                                0,
                                &mut log,
                            );
                        }
                        rec.locks.push((hold, text));
                    }
                    Message::Renew { lease_ms, .. } => {
                        rec.renews += 1;
                        let decision = Message::Decision {
                            granted: true,
                            lease_ms: lease_ms.min(MAX_LEASE_MS),
                            reason: 0,
                        };
                        send(&decision, hdr.seq, &mut log);
                    }
                    Message::Unlock { hold } => {
                        rec.unlocks.push(hold);
                        rec.holds.remove(&hold);
                    }
                    Message::State {
                        holders,
                        static_lock,
                        ..
                    } => {
                        rec.states += 1;
                        rec.state_holders.push(holders);
                        // As the agent: a guest that holds nothing ends
                        // every hold the host remembers.
                        if holders == 0 && !static_lock {
                            rec.holds.clear();
                        }
                    }
                    Message::Ping => send(&Message::Pong, hdr.seq, &mut log),
                    _ => {}
                }
            }
        }
    });
    Ok((record, thread))
}
