// SPDX-License-Identifier: GPL-2.0

//! The `vmcall` backend: lock requests as hypercalls, for hypervisors that
//! implement them.
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
//! `REFUSE_*` reason from the wire protocol. Labels, state reports, notices
//! and hints stay on the doorbell UART.

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

/// The 12-byte vendor signature of a CPUID leaf's EBX, ECX, EDX.
pub(crate) fn signature(ebx: u32, ecx: u32, edx: u32) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&ebx.to_le_bytes());
    s[4..8].copy_from_slice(&ecx.to_le_bytes());
    s[8..12].copy_from_slice(&edx.to_le_bytes());
    s
}

/// CPUID `leaf` (subleaf 0): EAX, EBX, ECX, EDX.
fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    // (Older compilers require `unsafe` here, newer warn.)
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU and only reads identification
    // registers; no memory is touched.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, 0) };
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// What the hypervisor said about itself.
pub(crate) enum Detected {
    /// No hypervisor bit in CPUID.
    BareMetal,
    /// A hypervisor without the backend; its first signature, for logs.
    Other([u8; 12]),
    /// The backend is offered.
    Offered,
}

/// Looks for [`SIGNATURE`] in the hypervisor leaves.
pub(crate) fn detect() -> Detected {
    // CPUID.1:ECX bit 31: running under a hypervisor.
    if cpuid(1).2 & (1 << 31) == 0 {
        return Detected::BareMetal;
    }
    let mut first = None;
    for n in 0..256u32 {
        let leaf = 0x4000_0000 + n * 0x100;
        let (max, b, c, d) = cpuid(leaf);
        let sig = signature(b, c, d);
        if sig == SIGNATURE && max >= leaf {
            return Detected::Offered;
        }
        if max >= leaf && first.is_none() {
            first = Some(sig);
        }
    }
    first.map_or(Detected::BareMetal, Detected::Other)
}

/// Proof that the hypervisor offers the backend; only [`probe`] makes one.
pub(crate) struct Hypercall(());

/// A [`Hypercall`] if, and only if, the hypervisor advertised it.
pub(crate) fn probe() -> (Option<Hypercall>, Detected) {
    match detect() {
        Detected::Offered => (Some(Hypercall(())), Detected::Offered),
        d => (None, d),
    }
}

impl Hypercall {
    /// Performs `op`; see the module documentation for the ABI.
    pub(crate) fn call(&self, op: Op, hold: u32, reason: u32, lease_ms: u32) -> i64 {
        let ret: u64;
        // SAFETY: `Hypercall` exists only when the hypervisor advertised this
        // hypercall (see `probe`), so `vmcall` traps to it; RBX is saved and
        // restored around the call because LLVM reserves it.
        unsafe {
            core::arch::asm!(
                "xchg {b}, rbx",
                "vmcall",
                "xchg {b}, rbx",
                b = inout(reg) op as u64 => _,
                inout("rax") HC_MIGLOCK => ret,
                in("rcx") u64::from(hold),
                in("rdx") u64::from(reason),
                in("rsi") u64::from(lease_ms),
                options(nostack)
            )
        };
        ret as i64
    }
}
