// SPDX-License-Identifier: GPL-2.0

//! miglock: a guest-controlled migration lock.
//!
//! Applications in the guest tell the host "do not live-migrate this VM now"
//! through `/dev/mld`; the host decides. See `Documentation/`.

use kernel::{c_str, prelude::*, sync::Arc};

pub mod abi;
mod channel;
mod compat;
mod doorbell;
mod hints;
mod kunit_tests;
pub mod lockstate;
mod mld;
mod service;
mod sysfs;
mod uart;
mod vmcall;

use channel::{HostChannel, NoHost};
use compat::irq::ThreadedRegistration;
use compat::miscdevice::{MiscDeviceOptions, MiscDeviceRegistration};
use compat::param;
use compat::x86::Hypervisor;
use doorbell::{Doorbell, DoorbellIrq};
use service::Service;

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
    LINGER_MS,
    "linger_ms",
    u32 = 20,
    param_ops_uint,
    "How long the host keeps a hold after its owner unlocked, for the owner to lock again without asking, in ms (0..1000; 0: off)"
);

param::module_param!(
    VMCALL,
    "vmcall",
    bool = true,
    param_ops_bool,
    "Use the vmcall backend when the hypervisor advertises it (CPUID signature MigLockHVcal)"
);

/// The longest `linger_ms` accepted.
const MAX_LINGER_MS: u32 = 1000;

/// The longest `max_lease_ms` accepted: a day.
const MAX_LEASE_LIMIT_MS: u32 = 86_400_000;

/// The host channel running; stopped when dropped, before the interrupt
/// line is freed (fields and locals drop in that order), so a failed load
/// never leaves the UART interrupting on a line nobody handles.
struct ChannelOn(Arc<Service>);

impl Drop for ChannelOn {
    fn drop(&mut self) {
        self.0.stop_channel();
    }
}

struct Miglock {
    _dev: Pin<KBox<MiscDeviceRegistration<mld::MldDevice>>>,
    _sysfs: compat::sysfs::Directory<sysfs::View>,
    #[cfg(miglock_syscall)]
    _syscall: compat::syscall::Registration<Service>,
    _channel: Option<ChannelOn>,
    _irq: Option<ThreadedRegistration<DoorbellIrq>>,
    service: service::Running,
}

impl kernel::Module for Miglock {
    fn init(_module: &'static ThisModule) -> Result<Self> {
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
        let linger_ms = LINGER_MS.get();
        if linger_ms > MAX_LINGER_MS {
            pr_err!(
                "linger_ms={} out of range 0..={}\n",
                linger_ms,
                MAX_LINGER_MS
            );
            return Err(EINVAL);
        }
        let mode = DEV_MODE.get();
        if mode & !0o666 != 0 {
            pr_err!("dev_mode={:o} invalid (read/write bits only)\n", mode);
            return Err(EINVAL);
        }
        let config = service::Config {
            max_lease_ms,
            lock_gid,
            host_required: HOST_REQUIRED.get(),
            hint_rate: HINT_RATE.get(),
            linger_ms,
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
        let hypervisor = if VMCALL.get() {
            vmcall::probe()
        } else {
            Hypervisor::None
        };
        let bell = match uart {
            Some(u) => Some(Arc::pin_init(
                Doorbell::new(u, compat::random::u64()),
                GFP_KERNEL,
            )?),
            None => None,
        };
        let channel: Arc<dyn HostChannel> = match (hypervisor, &bell) {
            (Hypervisor::Offers(hc), bell) => {
                pr_info!("vmcall backend: offered by the hypervisor, used for lock decisions\n");
                Arc::new(vmcall::Vmcall::new(hc, bell.clone()), GFP_KERNEL)?
            }
            (seen, bell) => {
                match seen {
                    Hypervisor::Other(sig) => pr_info!(
                        "vmcall backend: not offered (hypervisor {:?}); using the port-I/O doorbell\n",
                        core::str::from_utf8(&sig)
                            .unwrap_or("?")
                            .trim_end_matches('\0')
                    ),
                    _ => pr_info!(
                        "vmcall backend: off or no hypervisor; using the port-I/O doorbell\n"
                    ),
                }
                match bell {
                    Some(b) => b.clone(),
                    None => Arc::new(NoHost, GFP_KERNEL)?,
                }
            }
        };
        let service = Service::start(config, LOCKED.get(), channel)?;
        let irq = match bell {
            Some(b) => Some(ThreadedRegistration::register(
                DOORBELL_IRQ.get(),
                c_str!("miglock"),
                Arc::new(DoorbellIrq::new(b, service.clone()), GFP_KERNEL)?,
            )?),
            None => None,
        };
        let (channel, connected) = match service.channel_present() {
            true => {
                let on = ChannelOn(service.clone());
                let connected = service.start_channel();
                (Some(on), connected)
            }
            false => (None, false),
        };
        if cfg!(miglock_selftest = "init_fail") {
            // After the channel started, before anything userspace can
            // reach: its teardown (UART stopped, then the line freed) runs.
            pr_err!("selftest build: failing init on purpose\n");
            return Err(EINVAL);
        }
        // Whoever can open the node may read status; locking checks privilege.
        let sysfs = sysfs::create(service.clone())?;
        #[cfg(miglock_syscall)]
        let syscall = compat::syscall::Registration::register(service.clone())?;
        let dev = MiscDeviceRegistration::register(
            MiscDeviceOptions {
                name: c_str!("mld"),
                mode: mode as u16,
            },
            service.clone(),
        )?;
        pr_info!(
            "loaded: /dev/mld ready (max lease {} ms{}); host channel: {}\n",
            max_lease_ms,
            if LOCKED.get() {
                ", static lock set"
            } else {
                ""
            },
            match (service.channel_present(), connected) {
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
            _channel: channel,
            _irq: irq,
            service,
        })
    }
}

impl Drop for Miglock {
    fn drop(&mut self) {
        // No file is open (each pins the module), so only the detached hold
        // and the static lock can remain: release them rather than vanish
        // silently. The fields then go in order: the node, sysfs, the
        // syscall hook, the channel (stopped), the interrupt line.
        match self.service.release_all() {
            0 => pr_info!("unloaded\n"),
            n => pr_info!("unloaded while locked: released {} hold(s)\n", n),
        }
        // Owed frames go out while the channel still runs.
        self.service.shutdown();
    }
}
