// SPDX-License-Identifier: GPL-2.0

//! The port-I/O doorbell: the wire protocol over a 16550 UART (`uart.rs`)
//! that QEMU backs with a chardev socket the host agent serves. It is a
//! [`HostChannel`], and [`DoorbellIrq`] is its interrupt handler.
//!
//! A request claims one of [`SLOTS`] answer slots (waiting, interruptibly,
//! for one while all are taken), is sent with a fresh sequence number, and
//! waits for the answer that names it; the interrupt thread files each
//! answer in the slot of the request it answers, so concurrent requests can
//! neither lose nor swap answers. A request that gets no answer within
//! [`REQUEST_TIMEOUT_MS`] is sent again, up to [`ATTEMPTS`] times; then the
//! channel counts as disconnected. A signal ends the wait at once
//! (`ERESTARTSYS`). A `Welcome` the host sends on its own (agent restart, or
//! the VM now on another host), or a late answer from a host thought gone,
//! reconnects the channel, and the guest resends its whole state.

use crate::abi::types::Reason;
use crate::abi::wire::{self, Header, Message};
use crate::channel::{Decision, HostChannel, HostEvent, HostEvents, Report, Stats};
use crate::compat::errno;
use crate::compat::irq::{IrqReturn, ThreadedHandler, ThreadedIrqReturn};
use crate::compat::timer::now_ns;
use crate::lockstate::slots::{Slots, Ticket};
use crate::uart::Uart;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::{
    new_condvar, new_mutex,
    prelude::*,
    sync::{Arc, CondVar, CondVarTimeoutResult, Mutex},
    time::msecs_to_jiffies,
};

/// How long one attempt waits for the host's answer: long enough for an
/// agent that first has QEMU take its blocker on a busy host (hundreds of
/// ms were seen), short enough that a host that is gone is found out in
/// [`ATTEMPTS`] of them.
pub(crate) const REQUEST_TIMEOUT_MS: u32 = 500;
/// Attempts per request.
pub(crate) const ATTEMPTS: u32 = 3;
/// Requests that may wait for the host at once; more wait for a slot. The
/// agent decides one request at a time (each audited, about 10 ms), with
/// unlocks and state reports in between: four in flight keep the queue
/// ahead of any one well inside [`REQUEST_TIMEOUT_MS`], where more
/// would only make each wait longer (and time out, and be sent again),
/// never the host faster.
pub(crate) const SLOTS: usize = 4;

/// An answer from the host, owned (frames live in the decoder's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Welcome {
        max_lease_ms: u32,
        features: u32,
    },
    Decision {
        granted: bool,
        lease_ms: u32,
        reason: u32,
    },
    Pong,
}

/// What the interrupt thread shares with requesters.
struct Rx {
    dec: wire::Decoder,
    stats: Stats,
    slots: Slots<Answer, SLOTS>,
}

/// The doorbell to the host.
#[pin_data]
pub(crate) struct Doorbell {
    uart: Uart,
    /// Serialises writes to the UART, one frame at a time.
    #[pin]
    tx: Mutex<()>,
    #[pin]
    rx: Mutex<Rx>,
    /// An answer was filed.
    #[pin]
    answered: CondVar,
    /// A slot was given back.
    #[pin]
    freed: CondVar,
    seq: AtomicU32,
    /// The interrupt thread is reading the UART.
    receiving: AtomicBool,
    connected: AtomicBool,
    host_max_lease_ms: AtomicU32,
    /// The `Welcome` feature bits of the host last heard.
    host_features: AtomicU32,
    boot_id: u64,
}

/// A claimed slot, given back when dropped.
struct Claim<'a> {
    bell: &'a Doorbell,
    ticket: Option<Ticket>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            self.bell.rx.lock().slots.release(t);
            self.bell.freed.notify_all();
        }
    }
}

impl Doorbell {
    /// A doorbell over `uart`; `boot_id` names this boot in `Hello`.
    pub(crate) fn new(uart: Uart, boot_id: u64) -> impl PinInit<Self> {
        pin_init!(Self {
            uart,
            tx <- new_mutex!(()),
            rx <- new_mutex!(Rx {
                dec: wire::Decoder::new(),
                stats: Stats::default(),
                slots: Slots::new(),
            }),
            answered <- new_condvar!(),
            freed <- new_condvar!(),
            seq: AtomicU32::new(1),
            receiving: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            host_max_lease_ms: AtomicU32::new(0),
            host_features: AtomicU32::new(0),
            boot_id,
        })
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

    /// Sends `msg` as `seq`, answering `reply_to`.
    fn send_as(&self, msg: &Message<'_>, seq: u32, reply_to: u32) -> Result {
        let mut buf = [0u8; 64];
        let n = wire::encode(msg, Header { seq, reply_to }, &mut buf).map_err(|_| EINVAL)?;
        let _tx = self.tx.lock();
        self.uart.send(&buf[..n])
    }

    /// Sends `msg` without waiting for an answer.
    fn send(&self, msg: &Message<'_>, reply_to: u32) -> Result {
        self.send_as(msg, self.next_seq(), reply_to)
    }

    /// Claims an answer slot, waiting while all are taken.
    fn claim(&self) -> Result<Claim<'_>> {
        let mut rx = self.rx.lock();
        loop {
            if let Some(t) = rx.slots.claim() {
                return Ok(Claim {
                    bell: self,
                    ticket: Some(t),
                });
            }
            if self.freed.wait_interruptible(&mut rx) {
                rx.stats.interrupted += 1;
                return Err(ERESTARTSYS);
            }
        }
    }

    /// Sends `msg` and waits for its answer, retrying.
    fn request(&self, msg: &Message<'_>) -> Result<Answer> {
        let claim = self.claim()?;
        let ticket = claim.ticket.as_ref().ok_or(EINVAL)?;
        self.rx.lock().stats.requests += 1;
        for attempt in 0..ATTEMPTS {
            let seq = self.next_seq();
            {
                let mut rx = self.rx.lock();
                if attempt > 0 {
                    rx.stats.retries += 1;
                }
                // Before the frame leaves: the answer may come at once.
                rx.slots.sent(ticket, seq);
            }
            let start = now_ns();
            self.send_as(msg, seq, 0)?;
            let sent = now_ns();
            let mut rx = self.rx.lock();
            let mut left = msecs_to_jiffies(REQUEST_TIMEOUT_MS);
            loop {
                if let Some(answer) = rx.slots.take(ticket) {
                    let waited = now_ns().saturating_sub(sent);
                    let st = &mut rx.stats;
                    st.answered += 1;
                    st.send_ns = st.send_ns.saturating_add(sent.saturating_sub(start));
                    st.wait_ns = st.wait_ns.saturating_add(waited);
                    self.connected.store(true, Ordering::Relaxed);
                    return Ok(answer);
                }
                match self.answered.wait_interruptible_timeout(&mut rx, left) {
                    CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                    CondVarTimeoutResult::Timeout => break,
                    CondVarTimeoutResult::Signal { .. } => {
                        rx.stats.interrupted += 1;
                        return Err(ERESTARTSYS);
                    }
                }
            }
        }
        self.rx.lock().stats.failures += 1;
        self.connected.store(false, Ordering::Relaxed);
        Err(errno::etimedout())
    }

    /// Remembers what the host's `Welcome` said.
    fn welcomed(&self, max_lease_ms: u32, features: u32) {
        self.host_max_lease_ms
            .store(max_lease_ms, Ordering::Relaxed);
        self.host_features.store(features, Ordering::Relaxed);
    }

    /// Says hello; true if the host welcomed us.
    fn connect(&self) -> bool {
        let hello = Message::Hello {
            boot_id: self.boot_id,
            features: 0,
        };
        match self.request(&hello) {
            Ok(Answer::Welcome {
                max_lease_ms,
                features,
            }) => {
                self.welcomed(max_lease_ms, features);
                true
            }
            _ => false,
        }
    }

    /// Reads what the UART received (interrupt thread), files answers, and
    /// returns in `events` what the host said on its own. True if there was
    /// anything to read.
    fn receive(&self, events: &mut KVec<HostEvent>) -> bool {
        let mut pong_for = None;
        let mut guard = self.rx.lock();
        self.receiving.store(true, Ordering::Relaxed);
        let rx = &mut *guard;
        let got = self.uart.drain(|b| {
            self.take_byte(rx, b, events, &mut pong_for);
            rx.dec.wanted() > 0
        });
        self.receiving.store(false, Ordering::Relaxed);
        drop(guard);
        self.uart.unmask();
        self.answered.notify_all();
        if let Some(seq) = pong_for {
            let _ = self.send(&Message::Pong, seq);
        }
        got > 0
    }

    /// Feeds one received byte to the decoder and acts on a frame it ends.
    fn take_byte(
        &self,
        rx: &mut Rx,
        b: u8,
        events: &mut KVec<HostEvent>,
        pong_for: &mut Option<u32>,
    ) {
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
            Message::Welcome {
                max_lease_ms,
                features,
                ..
            } if hdr.reply_to != 0 => Answer::Welcome {
                max_lease_ms,
                features,
            },
            Message::Welcome {
                max_lease_ms,
                features,
                ..
            } => {
                self.welcomed(max_lease_ms, features);
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
            Message::Verdict { lease_ms, refusal } => Answer::Decision {
                granted: refusal == 0,
                lease_ms,
                reason: refusal,
            },
            Message::Pong => Answer::Pong,
            Message::Ping => {
                *pong_for = Some(hdr.seq);
                return;
            }
            Message::Notice(n) => {
                let _ = events.push(HostEvent::Notice(n), GFP_KERNEL);
                return;
            }
            // Guest-to-host kinds coming back are a confused host: drop.
            _ => return,
        };
        if !rx.slots.answer(hdr.reply_to, answer) {
            rx.stats.stale += 1;
            // A late answer from a host given up for gone: it is back,
            // and may hold what the guest decided alone meanwhile.
            if !self.connected.swap(true, Ordering::Relaxed) {
                let _ = events.push(HostEvent::Resync, GFP_KERNEL);
            }
        }
    }
}

/// The host's answer to a lock or renew; an answer of another kind is an
/// error, never a decision.
fn decision_of(answer: Answer) -> Result<Decision> {
    match answer {
        Answer::Decision {
            granted: true,
            lease_ms,
            ..
        } => Ok(Decision::Granted { lease_ms }),
        Answer::Decision {
            granted: false,
            reason,
            ..
        } => Ok(Decision::Refused { reason }),
        _ => Err(EIO),
    }
}

impl HostChannel for Doorbell {
    fn present(&self) -> bool {
        true
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn start(&self) -> bool {
        self.uart.start();
        self.connect()
    }

    fn stop(&self) {
        self.uart.stop();
    }

    fn request_lock(
        &self,
        hold: u32,
        reason: Reason,
        lease_ms: u32,
        label: &[u8],
    ) -> Result<Decision> {
        // Disconnected: decide locally at once rather than time out on every
        // lock; the host's next frame reconnects and resyncs.
        if !self.connected() {
            return Ok(Decision::Local);
        }
        let n = label.len().min(wire::LABEL_LEN - 1);
        let label = &label[..n];
        if self.host_features.load(Ordering::Relaxed) & wire::FEATURE_SHORT != 0 {
            // A TCG I/O exit a byte: the label's padding is not sent.
            let msg = Message::LockShort {
                hold,
                reason: reason as u32,
                lease_ms,
                label,
            };
            return decision_of(self.request(&msg)?);
        }
        let mut l = [0u8; wire::LABEL_LEN];
        l[..n].copy_from_slice(label);
        let msg = Message::Lock {
            hold,
            reason: reason as u32,
            lease_ms,
            label: l,
        };
        decision_of(self.request(&msg)?)
    }

    fn request_renew(&self, hold: u32, lease_ms: u32) -> Result<Decision> {
        if !self.connected() {
            return Ok(Decision::Local);
        }
        decision_of(self.request(&Message::Renew { hold, lease_ms })?)
    }

    fn released(&self, hold: u32) {
        if self.connected() {
            let _ = self.send(&Message::Unlock { hold }, 0);
        }
    }

    /// Data waiting while the interrupt thread is not reading means an
    /// interrupt was lost (seen once in a VM restored from a checkpoint
    /// taken as a frame arrived): read it here, as the thread would.
    fn watchdog(&self) -> KVec<HostEvent> {
        let mut events = KVec::new();
        if self.receiving.load(Ordering::Relaxed) || !self.uart.data_waiting() {
            return events;
        }
        self.rx.lock().stats.rescued += 1;
        // A read stops at a frame's end; QEMU refills the FIFO from what
        // waits behind it once it is read. Bounded: a flood waits for the
        // next round.
        for _ in 0..64 {
            self.receive(&mut events);
            if !self.uart.data_within(2000) {
                break;
            }
        }
        events
    }

    fn takes_held(&self) -> bool {
        self.host_features.load(Ordering::Relaxed) & wire::FEATURE_HELD != 0
    }

    fn held(&self, hold: u32, reason: u32, lease_ms: u32, label: &[u8; wire::LABEL_LEN]) {
        if self.connected() {
            let msg = Message::Held {
                hold,
                reason,
                lease_ms,
                label: *label,
            };
            let _ = self.send(&msg, 0);
        }
    }

    fn report(&self, report: Report) {
        if self.connected() {
            let _ = self.send(
                &Message::State {
                    holders: report.holders,
                    static_lock: report.static_lock,
                    earliest_expiry_ms: report.earliest_expiry_ms,
                },
                0,
            );
        }
    }

    /// The transmit lock is taken per frame, so a lock request waits for
    /// one frame at most.
    fn send_hints(&self, w: &Message<'_>, batch: u32, raw: &[u8]) -> Result {
        if !self.connected() {
            return Err(errno::enotconn());
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
            self.uart.send(&buf[..n])?;
            drop(tx);
            frames += 1;
        }
        let mut rx = self.rx.lock();
        rx.stats.hint_batches += 1;
        rx.stats.hint_frames += frames;
        Ok(())
    }

    fn stats(&self) -> Stats {
        self.rx.lock().stats
    }
}

/// The doorbell's interrupt handler: silences the UART in hard-interrupt
/// context, then reads it in the thread and hands the host's own words to
/// `events` (the service).
pub(crate) struct DoorbellIrq {
    bell: Arc<Doorbell>,
    events: Arc<dyn HostEvents>,
}

impl DoorbellIrq {
    /// The handler of `bell`'s interrupt.
    pub(crate) fn new(bell: Arc<Doorbell>, events: Arc<dyn HostEvents>) -> Self {
        DoorbellIrq { bell, events }
    }
}

impl ThreadedHandler for DoorbellIrq {
    fn handle(&self) -> ThreadedIrqReturn {
        // Only this module's UART is on this line: always ours.
        self.bell.uart.quiesce();
        ThreadedIrqReturn::WakeThread
    }

    fn handle_threaded(&self) -> IrqReturn {
        let mut events = KVec::new();
        let ours = self.bell.receive(&mut events);
        for e in events {
            self.events.host_event(e);
        }
        if ours {
            IrqReturn::Handled
        } else {
            IrqReturn::None
        }
    }
}
