// SPDX-License-Identifier: GPL-2.0

//! The host, as the service sees it: [`HostChannel`], which each transport
//! implements (the port-I/O doorbell in `doorbell.rs`, the vmcall backend
//! in `vmcall.rs`, and [`NoHost`] without either), and [`HostEvents`], how
//! a transport hands the service what the host says on its own.
//!
//! The ioctl ABI is the same whatever the transport; without a host the
//! guest decides and says so (`MLD_DECISION_LOCAL`, no `MLD_ST_CHANNEL`).

use crate::abi::types::Reason;
use crate::abi::wire::{Message, Notice, LABEL_LEN};
use kernel::prelude::*;

/// What the host answered to a lock or renew request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Granted, for at most this lease.
    Granted {
        /// Lease the host allows, in milliseconds.
        lease_ms: u32,
    },
    /// Refused, with the host's reason code.
    Refused {
        /// Host refusal reason.
        reason: u32,
    },
    /// There is no host to ask (none, or known to be away): the guest
    /// decides alone.
    Local,
}

/// The guest's lock state as reported to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// Number of holds.
    pub(crate) holders: u32,
    /// The static lock is set.
    pub(crate) static_lock: bool,
    /// ms until the earliest lease ends, 0 if none.
    pub(crate) earliest_expiry_ms: u32,
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
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    /// Requests sent (first attempts).
    pub(crate) requests: u64,
    /// Attempts that got no answer in time and were sent again.
    pub(crate) retries: u64,
    /// Requests that got no answer at all.
    pub(crate) failures: u64,
    /// Requests given up because the caller was interrupted by a signal.
    pub(crate) interrupted: u64,
    /// Received frames that failed to decode.
    pub(crate) dropped: u64,
    /// Answers that arrived for no waiting request (late or duplicate).
    pub(crate) stale: u64,
    /// Hint batches sent.
    pub(crate) hint_batches: u64,
    /// Hint frames sent (a batch is a `Workload` and its `Hints` frames).
    pub(crate) hint_frames: u64,
    /// Times the watchdog found data waiting unread, and read it.
    pub(crate) rescued: u64,
    /// Requests answered.
    pub(crate) answered: u64,
    /// Nanoseconds spent writing answered requests' frames to the transport.
    pub(crate) send_ns: u64,
    /// Nanoseconds from the end of that write to the answer, for the same
    /// requests: the host, the way back, and waking the requester.
    pub(crate) wait_ns: u64,
}

/// Where a transport hands what the host says on its own.
pub(crate) trait HostEvents: Send + Sync {
    /// The host said `e`.
    fn host_event(&self, e: HostEvent);
}

/// A channel to the host agent.
pub(crate) trait HostChannel: Send + Sync {
    /// Whether there is a transport to a host at all.
    fn present(&self) -> bool;

    /// Whether the host answered recently.
    fn connected(&self) -> bool;

    /// Starts the transport and says hello; true if the host answered.
    fn start(&self) -> bool;

    /// Stops the transport's interrupts (before its line is freed).
    fn stop(&self);

    /// Asks the host for hold `hold`; called without the state lock held.
    /// `Ok(Decision::Local)`: no host to ask. Errors: `ERESTARTSYS` (the
    /// caller got a signal) or `ETIMEDOUT` (no answer), after which the
    /// host may or may not have granted the hold.
    fn request_lock(
        &self,
        hold: u32,
        reason: Reason,
        lease_ms: u32,
        label: &[u8],
    ) -> Result<Decision>;

    /// Asks the host to restart hold `hold`'s lease; as
    /// [`HostChannel::request_lock`].
    fn request_renew(&self, hold: u32, lease_ms: u32) -> Result<Decision>;

    /// Tells the host that hold `hold` ended.
    fn released(&self, hold: u32);

    /// Whether the host records a hold taken inside one it granted
    /// ([`HostChannel::held`]) without deciding it.
    fn takes_held(&self) -> bool {
        false
    }

    /// Tells the host of hold `hold`, taken inside one it granted (see
    /// `lockstate::grants`); only if [`HostChannel::takes_held`].
    fn held(&self, _hold: u32, _reason: u32, _lease_ms: u32, _label: &[u8; LABEL_LEN]) {}

    /// Called about once a second: reads what waits unread (a lost
    /// interrupt) and returns what the host said on its own meanwhile.
    fn watchdog(&self) -> KVec<HostEvent> {
        KVec::new()
    }

    /// Tells the host the guest's whole state (after a VM-wide change, or
    /// when it asked).
    fn report(&self, report: Report);

    /// Sends a hint batch: its `Workload` frame `w`, then the ranges (`raw`,
    /// in wire layout).
    fn send_hints(&self, w: &Message<'_>, batch: u32, raw: &[u8]) -> Result;

    /// The channel's counters.
    fn stats(&self) -> Stats;
}

/// No transport: every decision is local, nothing is sent.
pub(crate) struct NoHost;

impl HostChannel for NoHost {
    fn present(&self) -> bool {
        false
    }

    fn connected(&self) -> bool {
        false
    }

    fn start(&self) -> bool {
        false
    }

    fn stop(&self) {}

    fn request_lock(&self, _: u32, _: Reason, _: u32, _: &[u8]) -> Result<Decision> {
        Ok(Decision::Local)
    }

    fn request_renew(&self, _: u32, _: u32) -> Result<Decision> {
        Ok(Decision::Local)
    }

    fn released(&self, _: u32) {}

    fn report(&self, _: Report) {}

    fn send_hints(&self, _: &Message<'_>, _: u32, _: &[u8]) -> Result {
        Err(crate::compat::errno::enotconn())
    }

    fn stats(&self) -> Stats {
        Stats::default()
    }
}
