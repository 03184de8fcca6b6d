// SPDX-License-Identifier: GPL-2.0

//! miglock: a guest-controlled migration lock.
//!
//! Applications in the guest tell the host "do not live-migrate this VM now"
//! through `/dev/mld`; the host decides. See `Documentation/`.

use kernel::{c_str, prelude::*, sync::Arc};

pub mod abi;
mod bindings;
mod channel;
mod cred;
mod errno;
mod hints;
mod ioport;
mod irq;
mod kunit;
mod kunit_tests;
pub mod lockstate;
mod miscdev;
mod mld;
mod param;
mod shim;
#[cfg(miglock_syscall)]
mod syscall;
mod sysfs;
mod timer;
mod uart;
mod vmcall;
mod waitqueue;

module! {
    type: Miglock,
    name: "miglock",
    author: "miglock developers",
    description: "Guest-controlled migration lock (/dev/mld)",
    license: "GPL",
}

param::module_param!(
    LOCKED,
    "locked",
    bool = false,
    param_ops_bool,
    "Start locked: the paper's static lock, until set_migration_flag 1 (bool)"
);
param::module_param!(
    MAX_LEASE_MS,
    "max_lease_ms",
    u32 = 300_000,
    param_ops_uint,
    "Longest lease a lock may ask for, and the default, in ms (1..86400000)"
);
param::module_param!(
    LOCK_GID,
    "lock_gid",
    i32 = -1,
    param_ops_int,
    "Members of this group may lock besides CAP_SYS_ADMIN; -1: none (int)"
);
param::module_param!(
    DEV_MODE,
    "dev_mode",
    u32 = 0o666,
    param_ops_uint,
    "Permission bits of /dev/mld (anyone who can open it may read status)"
);

param::module_param!(
    DOORBELL_IO,
    "doorbell_io",
    u32 = 0x520,
    param_ops_uint,
    "I/O base of the 16550 UART to the host agent; 0: no host channel"
);
param::module_param!(
    DOORBELL_IRQ,
    "doorbell_irq",
    u32 = 5,
    param_ops_uint,
    "ISA interrupt of the doorbell UART"
);
param::module_param!(
    HOST_REQUIRED,
    "host_required",
    bool = false,
    param_ops_bool,
    "Fail locks the host does not answer (default: record locally, sync later)"
);

param::module_param!(
    HINT_RATE,
    "hint_rate",
    u32 = 64,
    param_ops_uint,
    "Hint frames per second forwarded to the host (1 KiB each); 0: hints off"
);

param::module_param!(
    VMCALL,
    "vmcall",
    bool = true,
    param_ops_bool,
    "Use the vmcall backend when the hypervisor advertises it (CPUID signature MigLockHVcal)"
);

/// The longest `max_lease_ms` accepted: a day.
const MAX_LEASE_LIMIT_MS: u32 = 86_400_000;

struct Miglock {
    _dev: Pin<KBox<miscdev::Registration<mld::MldDevice>>>,
    _sysfs: sysfs::Sysfs,
    #[cfg(miglock_syscall)]
    _syscall: syscall::Syscall,
    _irq: Option<irq::Irq<mld::Shared>>,
    shared: Arc<mld::Shared>,
}

/// A random id of this boot, so the host can tell a rebooted guest.
fn boot_id() -> u64 {
    // SAFETY: `get_random_u64` has no preconditions.
    unsafe { kernel::bindings::get_random_u64() }
}

impl kernel::Module for Miglock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        if cfg!(miglock_selftest = "init_fail") {
            pr_err!("selftest build: failing init on purpose\n");
            return Err(EINVAL);
        }
        let max_lease_ms = MAX_LEASE_MS.get();
        if max_lease_ms == 0 || max_lease_ms > MAX_LEASE_LIMIT_MS {
            pr_err!(
                "max_lease_ms={} out of range 1..={}\n",
                max_lease_ms,
                MAX_LEASE_LIMIT_MS
            );
            return Err(EINVAL);
        }
        let lock_gid = match LOCK_GID.get() {
            -1 => None,
            gid if gid >= 0 => Some(gid as u32),
            gid => {
                pr_err!("lock_gid={} invalid (a group id, or -1)\n", gid);
                return Err(EINVAL);
            }
        };
        let mode = DEV_MODE.get();
        if mode & !0o666 != 0 {
            pr_err!("dev_mode={:o} invalid (read/write bits only)\n", mode);
            return Err(EINVAL);
        }
        let config = mld::Config {
            max_lease_ms,
            lock_gid,
            host_required: HOST_REQUIRED.get(),
            hint_rate: HINT_RATE.get(),
        };
        let uart = match DOORBELL_IO.get() {
            0 => None,
            io if io > 0xfff8 => {
                pr_err!("doorbell_io={:#x} is not an I/O port\n", io);
                return Err(EINVAL);
            }
            io => match uart::Uart::probe(io as u16, c_str!("miglock doorbell")) {
                Ok(u) => u,
                Err(e) => {
                    pr_warn!(
                        "doorbell ports at {:#x} are taken ({:?}): no host channel\n",
                        io,
                        e
                    );
                    None
                }
            },
        };
        let (hypercall, seen) = if VMCALL.get() {
            vmcall::probe()
        } else {
            (None, vmcall::Detected::BareMetal)
        };
        match seen {
            vmcall::Detected::Offered => {
                pr_info!("vmcall backend: offered by the hypervisor, used for lock decisions\n")
            }
            vmcall::Detected::Other(sig) => pr_info!(
                "vmcall backend: not offered (hypervisor {:?}); using the port-I/O doorbell\n",
                core::str::from_utf8(&sig)
                    .unwrap_or("?")
                    .trim_end_matches('\0')
            ),
            vmcall::Detected::BareMetal => {
                pr_info!("vmcall backend: off or no hypervisor; using the port-I/O doorbell\n")
            }
        }
        let boot_id = boot_id();
        let shared = mld::Shared::new(config, LOCKED.get(), uart, hypercall, boot_id)?;
        let irq = if shared.channel_present() {
            Some(irq::Irq::request(
                DOORBELL_IRQ.get(),
                c_str!("miglock"),
                shared.clone(),
            )?)
        } else {
            None
        };
        let connected = shared.start_channel();
        // Whoever can open the node may read status; locking checks privilege.
        let sysfs = sysfs::Sysfs::new(shared.clone())?;
        #[cfg(miglock_syscall)]
        let syscall = syscall::Syscall::register(shared.clone())?;
        let dev = miscdev::Registration::new(c_str!("mld"), mode as u16, module, shared.clone())?;
        pr_info!(
            "loaded: /dev/mld ready (max lease {} ms{}); host channel: {}\n",
            max_lease_ms,
            if LOCKED.get() {
                ", static lock set"
            } else {
                ""
            },
            match (irq.is_some(), connected) {
                (false, _) => "none, decisions are local",
                (true, true) => "connected",
                (true, false) => "no answer yet, decisions are local until the host appears",
            }
        );
        Ok(Miglock {
            _dev: dev,
            _sysfs: sysfs,
            #[cfg(miglock_syscall)]
            _syscall: syscall,
            _irq: irq,
            shared,
        })
    }
}

impl Drop for Miglock {
    fn drop(&mut self) {
        // Quiet the doorbell before its interrupt line is freed.
        self.shared.stop_channel();
        // No file is open (each pins the module), so only the detached hold
        // and the static lock can remain: release them rather than vanish
        // silently.
        match self.shared.release_all() {
            0 => pr_info!("unloaded\n"),
            n => pr_info!("unloaded while locked: released {} hold(s)\n", n),
        }
    }
}
