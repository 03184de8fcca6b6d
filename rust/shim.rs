// SPDX-License-Identifier: GPL-2.0

//! The hypercall shim: lock requests and hints to the host over the port-I/O
//! doorbell (a 16550 UART backed by a QEMU chardev the host agent serves).
//!
//! Requests carry a sequence number; the receive side runs in a threaded
//! interrupt handler, matches answers to requests and wakes the waiter.
//! A request that gets no answer within [`REQUEST_TIMEOUT_MS`] is sent again,
//! up to [`ATTEMPTS`] times; then the channel counts as disconnected and the
//! caller decides locally (or fails, with `host_required=1`). A `Welcome` the
//! host sends on its own (agent restart, or the VM now on another host)
//! reconnects the channel, and the guest resends its whole state.

use crate::abi::types::Reason;
use crate::abi::wire::{self, Header, Message, Notice};
use crate::channel::{Decision, HostChannel, Report};
use crate::uart::Uart;
use crate::vmcall::{Hypercall, Op};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{CondVar, Mutex},
    time::msecs_to_jiffies,
};

/// How long one attempt waits for the host's answer.
pub(crate) const REQUEST_TIMEOUT_MS: u32 = 200;
/// Attempts per request.
pub(crate) const ATTEMPTS: u32 = 3;
/// Answers kept for waiters; more in flight than this is impossible since
/// requests are serialised.
const SLOTS: usize = 4;

/// An answer from the host, owned (frames live in the decoder's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Welcome {
        max_lease_ms: u32,
    },
    Decision {
        granted: bool,
        lease_ms: u32,
        reason: u32,
    },
    Pong,
}

/// What the host told the guest on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostEvent {
    /// A host notice.
    Notice(Notice),
    /// The host (re)appeared and wants the guest's whole state.
    Resync,
}

/// Counters for `/sys/kernel/miglock/channel_stats`.
#[derive(Clone, Copy, Default)]
pub(crate) struct Stats {
    /// Requests sent (first attempts).
    pub(crate) requests: u64,
    /// Attempts that got no answer in time and were sent again.
    pub(crate) retries: u64,
    /// Requests that got no answer at all.
    pub(crate) failures: u64,
    /// Received frames that failed to decode.
    pub(crate) dropped: u64,
    /// Answers that arrived for no waiting request (late or duplicate).
    pub(crate) stale: u64,
    /// Hint batches sent.
    pub(crate) hint_batches: u64,
    /// Hint frames sent (a batch is a `Workload` and its `Hints` frames).
    pub(crate) hint_frames: u64,
}

struct Rx {
    dec: wire::Decoder,
    stats: Stats,
    answers: [Option<(u32, Answer)>; SLOTS],
    next_slot: usize,
}

/// The shim's state; inert (always local) without a UART.
#[pin_data]
pub(crate) struct Shim {
    uart: Option<Uart>,
    /// Lock decisions as hypercalls, when the hypervisor offers them.
    hypercall: Option<Hypercall>,
    /// Serialises requests, and with them writes to the UART.
    #[pin]
    tx: Mutex<()>,
    #[pin]
    rx: Mutex<Rx>,
    #[pin]
    answered: CondVar,
    seq: AtomicU32,
    connected: AtomicBool,
    host_max_lease_ms: AtomicU32,
    boot_id: u64,
}

impl Shim {
    /// A shim over `uart` (none: decide locally).
    pub(crate) fn new(
        uart: Option<Uart>,
        hypercall: Option<Hypercall>,
        boot_id: u64,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            uart,
            hypercall,
            tx <- new_mutex!(()),
            rx <- new_mutex!(Rx {
                dec: wire::Decoder::new(),
                answers: [None; SLOTS],
                next_slot: 0,
                stats: Stats::default(),
            }),
            answered <- new_condvar!(),
            seq: AtomicU32::new(1),
            connected: AtomicBool::new(false),
            host_max_lease_ms: AtomicU32::new(0),
            boot_id,
        })
    }

    /// Whether there is a doorbell at all.
    pub(crate) fn present(&self) -> bool {
        self.uart.is_some()
    }

    fn next_seq(&self) -> u32 {
        // 0 means "answers nothing" on the wire: skip it on wrap-around.
        loop {
            let s = self.seq.fetch_add(1, Ordering::Relaxed);
            if s != 0 {
                return s;
            }
        }
    }

    /// Sends `msg` without waiting for an answer.
    fn send(&self, msg: &Message<'_>, reply_to: u32) -> Result<u32> {
        let uart = self.uart.as_ref().ok_or(ENODEV)?;
        let seq = self.next_seq();
        let mut buf = [0u8; 64];
        let n = wire::encode(msg, Header { seq, reply_to }, &mut buf).map_err(|_| EINVAL)?;
        let _tx = self.tx.lock();
        uart.send(&buf[..n])?;
        Ok(seq)
    }

    /// Sends `msg` and waits for its answer, retrying.
    fn request(&self, msg: &Message<'_>) -> Result<Answer> {
        self.rx.lock().stats.requests += 1;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.rx.lock().stats.retries += 1;
            }
            let seq = self.send(msg, 0)?;
            let mut rx = self.rx.lock();
            let mut left = msecs_to_jiffies(REQUEST_TIMEOUT_MS);
            loop {
                if let Some(slot) = rx
                    .answers
                    .iter_mut()
                    .find(|a| a.is_some_and(|(s, _)| s == seq))
                {
                    let answer = slot.take().map(|(_, a)| a);
                    self.connected.store(true, Ordering::Relaxed);
                    return answer.ok_or(EIO);
                }
                match self.answered.wait_interruptible_timeout(&mut rx, left) {
                    kernel::sync::CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                    kernel::sync::CondVarTimeoutResult::Timeout => break,
                    kernel::sync::CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
                }
            }
        }
        self.rx.lock().stats.failures += 1;
        self.connected.store(false, Ordering::Relaxed);
        Err(crate::errno::etimedout())
    }

    /// Says hello; true if the host welcomed us.
    pub(crate) fn connect(&self) -> bool {
        let hello = Message::Hello {
            boot_id: self.boot_id,
            features: 0,
        };
        match self.request(&hello) {
            Ok(Answer::Welcome { max_lease_ms }) => {
                self.host_max_lease_ms
                    .store(max_lease_ms, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Reads what the UART received (threaded interrupt context) and returns
    /// what the host said on its own, for the caller to act on.
    pub(crate) fn receive(&self, events: &mut KVec<HostEvent>) -> bool {
        let Some(uart) = &self.uart else { return false };
        let mut pong_for = None;
        let mut guard = self.rx.lock();
        let rx = &mut *guard;
        let got = uart.drain(|b| {
            match rx.dec.push(b) {
                wire::Event::Frame => {}
                wire::Event::Dropped(_) => {
                    rx.stats.dropped += 1;
                    return;
                }
                wire::Event::Pending => return,
            }
            let Ok((hdr, msg)) = wire::decode(rx.dec.frame()) else {
                return;
            };
            let answer = match msg {
                Message::Welcome { max_lease_ms, .. } if hdr.reply_to != 0 => {
                    Answer::Welcome { max_lease_ms }
                }
                Message::Welcome { max_lease_ms, .. } => {
                    self.host_max_lease_ms
                        .store(max_lease_ms, Ordering::Relaxed);
                    self.connected.store(true, Ordering::Relaxed);
                    let _ = events.push(HostEvent::Resync, GFP_KERNEL);
                    return;
                }
                Message::Decision {
                    granted,
                    lease_ms,
                    reason,
                } => Answer::Decision {
                    granted,
                    lease_ms,
                    reason,
                },
                Message::Pong => Answer::Pong,
                Message::Ping => {
                    pong_for = Some(hdr.seq);
                    return;
                }
                Message::Notice(n) => {
                    let _ = events.push(HostEvent::Notice(n), GFP_KERNEL);
                    return;
                }
                // Guest-to-host kinds coming back are a confused host: drop.
                _ => return,
            };
            let i = rx.next_slot;
            if rx.answers[i].is_some() {
                rx.stats.stale += 1;
            }
            rx.answers[i] = Some((hdr.reply_to, answer));
            rx.next_slot = (i + 1) % SLOTS;
        });
        drop(guard);
        uart.unmask();
        self.answered.notify_all();
        if let Some(seq) = pong_for {
            let _ = self.send(&Message::Pong, seq);
        }
        got > 0
    }

    /// Sends a hint batch: its `Workload` frame, then the ranges (`raw`, in
    /// wire layout) in frames of [`wire::MAX_HINTS`]. The transmit lock is
    /// taken per frame, so a lock request waits for one frame at most.
    pub(crate) fn send_hints(&self, w: &Message<'_>, batch: u32, raw: &[u8]) -> Result {
        let uart = self.uart.as_ref().ok_or(ENODEV)?;
        if !self.connected.load(Ordering::Relaxed) {
            return Err(crate::errno::enotconn());
        }
        let mut buf = KVec::from_elem(0u8, wire::MAX_FRAME, GFP_KERNEL)?;
        let mut frames = 0;
        let mut chunks = raw.chunks(wire::MAX_HINTS * wire::HINT_LEN);
        let mut first = Some(*w);
        loop {
            let msg = match first.take() {
                Some(m) => m,
                None => match chunks.next() {
                    Some(c) => Message::Hints {
                        batch,
                        ranges: wire::Hints::from_raw(c).ok_or(EINVAL)?,
                    },
                    None => break,
                },
            };
            let hdr = Header {
                seq: self.next_seq(),
                reply_to: 0,
            };
            let n = wire::encode(&msg, hdr, &mut buf).map_err(|_| EINVAL)?;
            let tx = self.tx.lock();
            uart.send(&buf[..n])?;
            drop(tx);
            frames += 1;
        }
        let mut rx = self.rx.lock();
        rx.stats.hint_batches += 1;
        rx.stats.hint_frames += frames;
        Ok(())
    }

    /// Sends the whole state after a (re)connect.
    pub(crate) fn send_state(&self, report: Report) {
        let _ = self.send(
            &Message::State {
                holders: report.holders,
                static_lock: report.static_lock,
                earliest_expiry_ms: report.earliest_expiry_ms,
            },
            0,
        );
    }

    /// The channel's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.rx.lock().stats
    }

    /// Hard-interrupt context: silences the UART until `receive` ran.
    pub(crate) fn quiesce(&self) -> bool {
        // Only this module's UART is on this line: always ours if present.
        self.uart.as_ref().is_some_and(|u| {
            u.quiesce();
            true
        })
    }

    /// Turns the UART on; false without one.
    pub(crate) fn start(&self) -> bool {
        match &self.uart {
            Some(u) => {
                u.start();
                true
            }
            None => false,
        }
    }

    /// Stops the UART's interrupt (before the line is freed).
    pub(crate) fn stop(&self) {
        if let Some(u) = &self.uart {
            u.stop();
        }
    }
}

/// The host's answer to a lock or renew; no answer means decide locally.
fn decision_of(answer: Result<Answer>) -> Decision {
    match answer {
        Ok(Answer::Decision {
            granted: true,
            lease_ms,
            ..
        }) => Decision::Granted { lease_ms },
        Ok(Answer::Decision {
            granted: false,
            reason,
            ..
        }) => Decision::Refused { reason },
        _ => Decision::Local,
    }
}

/// A hypercall's answer: a granted lease (> 0) or a refusal (< 0).
fn hc_decision(r: i64) -> Decision {
    if r > 0 {
        Decision::Granted {
            lease_ms: r.min(u32::MAX.into()) as u32,
        }
    } else {
        Decision::Refused {
            reason: r.unsigned_abs().min(u32::MAX.into()) as u32,
        }
    }
}

impl HostChannel for Shim {
    fn connected(&self) -> bool {
        self.hypercall.is_some() || self.connected.load(Ordering::Relaxed)
    }

    fn request_lock(&self, hold: u32, reason: Reason, lease_ms: u32, label: &[u8]) -> Decision {
        if let Some(hc) = &self.hypercall {
            return match hc.call(Op::Lock, hold, reason as u32, lease_ms) {
                r if r > 0 => Decision::Granted {
                    lease_ms: r.min(u32::MAX.into()) as u32,
                },
                r => Decision::Refused {
                    reason: r.unsigned_abs().min(u32::MAX.into()) as u32,
                },
            };
        }
        // Disconnected: decide locally at once rather than time out on every
        // lock; the host's next `Welcome` reconnects and resyncs.
        if !self.connected() {
            return Decision::Local;
        }
        let mut l = [0u8; wire::LABEL_LEN];
        let n = label.len().min(wire::LABEL_LEN - 1);
        l[..n].copy_from_slice(&label[..n]);
        let msg = Message::Lock {
            hold,
            reason: reason as u32,
            lease_ms,
            label: l,
        };
        decision_of(self.request(&msg))
    }

    fn request_renew(&self, hold: u32, lease_ms: u32) -> Decision {
        if let Some(hc) = &self.hypercall {
            return hc_decision(hc.call(Op::Renew, hold, 0, lease_ms));
        }
        if !self.connected() {
            return Decision::Local;
        }
        decision_of(self.request(&Message::Renew { hold, lease_ms }))
    }

    fn released(&self, hold: u32) {
        if let Some(hc) = &self.hypercall {
            hc.call(Op::Unlock, hold, 0, 0);
            return;
        }
        if self.connected() {
            let _ = self.send(&Message::Unlock { hold }, 0);
        }
    }

    fn state_changed(&self, report: Report) {
        if self.connected() {
            self.send_state(report);
        }
    }
}
