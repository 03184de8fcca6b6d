// SPDX-License-Identifier: GPL-2.0

//! The `vmcall` backend: lock decisions as hypercalls, for hypervisors that
//! implement them. It is a [`HostChannel`]; labels, state reports, notices
//! and hints stay on the doorbell UART, when there is one.
//!
//! A hypervisor offers it by returning the signature [`SIGNATURE`]
//! (`"MigLockHVcal"`) in EBX, ECX, EDX of one of the CPUID hypervisor
//! leaves `0x40000000 + n * 0x100` (n < 256), with the number of its highest
//! leaf in EAX. Only then does the module execute `vmcall`: on a hypervisor
//! that does not implement it (stock QEMU under TCG, stock KVM) the
//! instruction would fault or return an error, so without the signature the
//! module keeps the port-I/O doorbell.
//!
//! Hypercall ABI (documented for hypervisor implementers; KVM's register
//! convention): RAX = [`HC_MIGLOCK`], RBX = operation (1 lock, 2 unlock,
//! 3 renew), RCX = hold id, RDX = reason code, RSI = lease in ms. Returns in
//! RAX: the granted lease in ms (> 0), 0 for a done unlock, or a negative
//! `REFUSE_*` reason from the wire protocol.

use crate::abi::types::Reason;
use crate::abi::wire::Message;
use crate::channel::{Decision, HostChannel, Report, Stats};
use crate::compat::x86::{self, Hypercall, Hypervisor};
use crate::doorbell::Doorbell;
use kernel::{prelude::*, sync::Arc};

/// The hypercall number ("ML", 1).
pub(crate) const HC_MIGLOCK: u64 = 0x4d4c_0001;

/// What a hypervisor offering the backend puts in EBX, ECX, EDX.
pub(crate) const SIGNATURE: [u8; 12] = *b"MigLockHVcal";

/// Hypercall operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Op {
    /// Ask for a hold.
    Lock = 1,
    /// A hold ended.
    Unlock = 2,
    /// Restart a hold's lease.
    Renew = 3,
}

/// Looks for the backend; see the module documentation.
pub(crate) fn probe() -> Hypervisor {
    x86::find(SIGNATURE, HC_MIGLOCK)
}

/// A hypercall's answer: a granted lease (> 0) or a refusal (<= 0).
fn decision(r: i64) -> Decision {
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

/// Lock decisions by hypercall, the rest over the doorbell if there is one.
pub(crate) struct Vmcall {
    hc: Hypercall,
    bell: Option<Arc<Doorbell>>,
}

impl Vmcall {
    /// The backend `hc`, with `bell` for everything but decisions.
    pub(crate) fn new(hc: Hypercall, bell: Option<Arc<Doorbell>>) -> Self {
        Vmcall { hc, bell }
    }

    fn call(&self, op: Op, hold: u32, reason: u32, lease_ms: u32) -> i64 {
        self.hc
            .call(op as u64, hold.into(), reason.into(), lease_ms.into())
    }
}

impl HostChannel for Vmcall {
    fn present(&self) -> bool {
        true
    }

    /// The hypervisor always answers.
    fn connected(&self) -> bool {
        true
    }

    fn start(&self) -> bool {
        self.bell.as_ref().map_or(true, |b| b.start())
    }

    fn stop(&self) {
        if let Some(b) = &self.bell {
            b.stop();
        }
    }

    fn request_lock(&self, hold: u32, reason: Reason, lease_ms: u32, _: &[u8]) -> Result<Decision> {
        Ok(decision(self.call(Op::Lock, hold, reason as u32, lease_ms)))
    }

    fn request_renew(&self, hold: u32, lease_ms: u32) -> Result<Decision> {
        Ok(decision(self.call(Op::Renew, hold, 0, lease_ms)))
    }

    fn released(&self, hold: u32) {
        self.call(Op::Unlock, hold, 0, 0);
    }

    fn report(&self, report: Report) {
        if let Some(b) = &self.bell {
            b.report(report);
        }
    }

    fn send_hints(&self, w: &Message<'_>, batch: u32, raw: &[u8]) -> Result {
        match &self.bell {
            Some(b) => b.send_hints(w, batch, raw),
            None => Err(crate::compat::errno::enotconn()),
        }
    }

    fn stats(&self) -> Stats {
        self.bell.as_ref().map_or(Stats::default(), |b| b.stats())
    }
}
