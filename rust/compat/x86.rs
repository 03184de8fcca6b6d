// SPDX-License-Identifier: GPL-2.0

//! The x86 instructions the module needs and the kernel crate does not
//! wrap: `cpuid`, and `vmcall` once the hypervisor has offered it.
//!
//! Remove when the kernel crate wraps them.

/// CPUID `leaf` (subleaf 0): EAX, EBX, ECX, EDX.
pub(crate) fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    // (Older compilers require `unsafe` here, newer warn.)
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU and only reads identification
    // registers; no memory is touched.
    let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, 0) };
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The 12-byte vendor signature of a CPUID leaf's EBX, ECX, EDX.
pub(crate) fn signature(ebx: u32, ecx: u32, edx: u32) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&ebx.to_le_bytes());
    s[4..8].copy_from_slice(&ecx.to_le_bytes());
    s[8..12].copy_from_slice(&edx.to_le_bytes());
    s
}

/// What the hypervisor says about itself.
pub(crate) enum Hypervisor {
    /// No hypervisor bit in CPUID.
    None,
    /// A hypervisor without the hypercall asked for; its first signature,
    /// for logs.
    Other([u8; 12]),
    /// It offers the hypercall.
    Offers(Hypercall),
}

/// Proof that the hypervisor offers hypercall `nr`; only [`find`] makes one.
pub(crate) struct Hypercall {
    nr: u64,
}

/// Looks for `sig` in the hypervisor CPUID leaves `0x40000000 + n * 0x100`
/// (n < 256, the leaf's EAX naming its highest leaf); with it, hypercall
/// `nr` may be made.
pub(crate) fn find(sig: [u8; 12], nr: u64) -> Hypervisor {
    // CPUID.1:ECX bit 31: running under a hypervisor.
    if cpuid(1).2 & (1 << 31) == 0 {
        return Hypervisor::None;
    }
    let mut first = None;
    for n in 0..256u32 {
        let leaf = 0x4000_0000 + n * 0x100;
        let (max, b, c, d) = cpuid(leaf);
        let found = signature(b, c, d);
        if found == sig && max >= leaf {
            return Hypervisor::Offers(Hypercall { nr });
        }
        if max >= leaf && first.is_none() {
            first = Some(found);
        }
    }
    first.map_or(Hypervisor::None, Hypervisor::Other)
}

impl Hypercall {
    /// Makes the hypercall with KVM's register convention: RAX = the
    /// number, RBX, RCX, RDX, RSI = the arguments; returns RAX.
    pub(crate) fn call(&self, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        let ret: u64;
        // SAFETY: a `Hypercall` exists only when the hypervisor advertised
        // this hypercall (see `find`), so `vmcall` traps to it; RBX is saved
        // and restored around the call because LLVM reserves it.
        unsafe {
            core::arch::asm!(
                "xchg {b}, rbx",
                "vmcall",
                "xchg {b}, rbx",
                b = inout(reg) a0 => _,
                inout("rax") self.nr => ret,
                in("rcx") a1,
                in("rdx") a2,
                in("rsi") a3,
                options(nostack)
            )
        };
        ret as i64
    }
}
