// SPDX-License-Identifier: GPL-2.0

//! Safe access to `/dev/mld` from guest applications.
//!
//! A [`Device`] is one open file: a lock it takes belongs to it and ends
//! when it is dropped (closed), unless taken [`Lock::detached`].

use miglock_abi::ioctl as nr;
use miglock_abi::types::*;
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

pub use miglock_abi::types::{Reason, MLD_LABEL_LEN};

/// The device node.
pub const DEVICE: &str = "/dev/mld";

/// The test kernel's `set_migration_flag` syscall (not upstream; see patches/).
pub const SYS_SET_MIGRATION_FLAG: libc::c_long = nr::NR_SET_MIGRATION_FLAG as libc::c_long;

nix::ioctl_write_ptr_bad!(ioc_set_flag, nr::SET_MIGRATION_FLAG, libc::c_int);
nix::ioctl_write_ptr_bad!(ioc_lock, nr::MLD_IOC_LOCK, MldLock);
nix::ioctl_write_ptr_bad!(ioc_unlock, nr::MLD_IOC_UNLOCK, u32);
nix::ioctl_write_ptr_bad!(ioc_renew, nr::MLD_IOC_RENEW, MldRenew);
nix::ioctl_read_bad!(ioc_status, nr::MLD_IOC_STATUS, MldStatus);
nix::ioctl_write_ptr_bad!(ioc_hints, nr::MLD_IOC_HINTS, MldHints);

/// A lock request.
#[derive(Clone, Debug)]
pub struct Lock {
    /// Why.
    pub reason: Reason,
    /// Lease; `None` asks for the maximum.
    pub lease: Option<Duration>,
    /// Short printable label (at most 31 ASCII characters).
    pub label: String,
    /// Not owned by the file: lasts until unlocked or the lease ends.
    pub detached: bool,
}

/// A hint batch for [`Device::hints`].
#[derive(Clone, Debug, Default)]
pub struct HintBatch {
    /// Batch number, higher than the last one sent.
    pub batch: u32,
    /// Ranked ranges, hottest first (at most `MLD_MAX_HINTS`).
    pub ranges: Vec<MldHintRange>,
    /// Pages the workload touched recently.
    pub wss_pages: u64,
    /// Pages written per second.
    pub dirty_pages_per_s: u64,
    /// Every frame number is below this.
    pub pfn_limit: u64,
    /// The sampling interval.
    pub interval: Duration,
}

/// The lock state as the module reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub MldStatus);

impl Status {
    fn flag(&self, bit: u32) -> bool {
        self.0.flags & bit != 0
    }
    /// The VM is locked.
    pub fn locked(&self) -> bool {
        self.flag(MLD_ST_LOCKED)
    }
    /// This file holds a lock.
    pub fn held_by_me(&self) -> bool {
        self.flag(MLD_ST_HELD_BY_ME)
    }
    /// The static lock (module parameter) is set.
    pub fn static_lock(&self) -> bool {
        self.flag(MLD_ST_STATIC)
    }
    /// The detached hold exists.
    pub fn detached(&self) -> bool {
        self.flag(MLD_ST_DETACHED)
    }
    /// A host channel is connected.
    pub fn channel(&self) -> bool {
        self.flag(MLD_ST_CHANNEL)
    }
    /// The host announced a pending migration.
    pub fn migration_pending(&self) -> bool {
        self.flag(MLD_ST_MIGRATION_PENDING)
    }
    /// The host force-released the lock.
    pub fn forced_release(&self) -> bool {
        self.flag(MLD_ST_FORCED_RELEASE)
    }
    /// This file's lease ended since its last status call.
    pub fn lease_expired(&self) -> bool {
        self.flag(MLD_ST_LEASE_EXPIRED)
    }
    /// Number of holds.
    pub fn holders(&self) -> u32 {
        self.0.holders
    }
    /// Time until the earliest lease ends.
    pub fn earliest_expiry(&self) -> Option<Duration> {
        (self.0.earliest_expiry_ms != 0).then(|| Duration::from_millis(self.0.earliest_expiry_ms))
    }
    /// Time until this file's lease ends.
    pub fn own_expiry(&self) -> Option<Duration> {
        (self.0.own_expiry_ms != 0).then(|| Duration::from_millis(self.0.own_expiry_ms))
    }
    /// The last host decision, as a word.
    pub fn last_decision(&self) -> &'static str {
        match self.0.last_decision {
            MLD_DECISION_NONE => "none",
            MLD_DECISION_GRANTED => "granted",
            MLD_DECISION_REFUSED => "refused",
            MLD_DECISION_LOCAL => "local (no host channel)",
            _ => "unknown",
        }
    }
    /// The host announced post-copy.
    pub fn postcopy(&self) -> bool {
        self.flag(MLD_ST_POSTCOPY)
    }
    /// How many times the host announced post-copy.
    pub fn postcopy_gen(&self) -> u32 {
        self.0.postcopy_gen
    }
    /// The pending migration was called off since this file's last status.
    pub fn migration_cancelled(&self) -> bool {
        self.flag(MLD_ST_MIGRATION_CANCELLED)
    }
    /// The VM arrived here by live migration since this file's last status.
    pub fn migrated(&self) -> bool {
        self.flag(MLD_ST_MIGRATED)
    }
    /// How many times the VM arrived here by live migration.
    pub fn migration_gen(&self) -> u32 {
        self.0.migration_gen
    }
    /// Time left until the pending migration's deadline (`None` if none is
    /// pending; zero once it passed).
    pub fn pending_deadline(&self) -> Option<Duration> {
        self.migration_pending()
            .then(|| Duration::from_millis(self.0.pending_deadline_ms.into()))
    }
    /// The host is taking a live checkpoint of the VM now.
    pub fn checkpoint(&self) -> bool {
        self.flag(MLD_ST_CHECKPOINT)
    }
    /// A checkpoint ended since this file's last status.
    pub fn checkpoint_done(&self) -> bool {
        self.flag(MLD_ST_CHECKPOINT_DONE)
    }
    /// The VM was restored from a checkpoint since this file's last status.
    pub fn restored(&self) -> bool {
        self.flag(MLD_ST_RESTORED)
    }
    /// This file's last lock or renewal was decided in the guest alone (no
    /// host answered): the host does not enforce it yet.
    pub fn local_decision(&self) -> bool {
        self.flag(MLD_ST_LOCAL_DECISION)
    }
    /// The host's reason code with the last refusal, 0 if none.
    pub fn last_refusal(&self) -> u32 {
        self.0.last_refusal
    }
    /// The maximum lease.
    pub fn max_lease(&self) -> Duration {
        Duration::from_millis(self.0.max_lease_ms.into())
    }
}

fn ms(d: Option<Duration>) -> io::Result<u32> {
    match d {
        None => Ok(0),
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a lease of zero",
        )),
        Some(d) => u32::try_from(d.as_millis())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lease too long")),
    }
}

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An open `/dev/mld`.
pub struct Device {
    file: File,
}

/// For `poll()` beside other files: readable when [`Device::wait_event`]
/// would return true.
impl std::os::fd::AsFd for Device {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }
}

impl Device {
    /// Opens [`DEVICE`].
    pub fn open() -> io::Result<Device> {
        Self::open_path(Path::new(DEVICE))
    }

    /// Opens the device at `path`.
    pub fn open_path(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Device { file })
    }

    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    /// The paper's `ioctl(fd, SET_MIGRATION_FLAG, &flag)`.
    pub fn set_migration_flag(&self, flag: i32) -> io::Result<()> {
        // SAFETY: the fd is open and `&flag` is a valid int for the call.
        unsafe { ioc_set_flag(self.fd(), &flag) }
            .map(drop)
            .map_err(io)
    }

    /// Takes or updates a lock.
    pub fn lock(&self, req: &Lock) -> io::Result<()> {
        let label = make_label(&req.label).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "label must be printable ASCII of at most {} characters",
                    MLD_LABEL_LEN - 1
                ),
            )
        })?;
        let raw = MldLock {
            reason: req.reason as u32,
            flags: if req.detached { MLD_LOCK_DETACHED } else { 0 },
            lease_ms: ms(req.lease)?,
            reserved: 0,
            label,
        };
        self.lock_raw(&raw)
    }

    /// Passes a raw request (tests use this to send invalid ones).
    pub fn lock_raw(&self, raw: &MldLock) -> io::Result<()> {
        // SAFETY: `raw` is a valid `MldLock` for the duration of the call.
        unsafe { ioc_lock(self.fd(), raw) }.map(drop).map_err(io)
    }

    /// Drops this file's lock, or with `detached` the detached hold and the
    /// static lock.
    pub fn unlock(&self, detached: bool) -> io::Result<()> {
        self.unlock_raw(if detached { MLD_LOCK_DETACHED } else { 0 })
    }

    /// Unlock with raw flags.
    pub fn unlock_raw(&self, flags: u32) -> io::Result<()> {
        // SAFETY: `&flags` is a valid u32 for the call.
        unsafe { ioc_unlock(self.fd(), &flags) }
            .map(drop)
            .map_err(io)
    }

    /// Restarts a lease.
    pub fn renew(&self, lease: Option<Duration>, detached: bool) -> io::Result<()> {
        let raw = MldRenew {
            lease_ms: ms(lease)?,
            flags: if detached { MLD_LOCK_DETACHED } else { 0 },
        };
        // SAFETY: `raw` is a valid `MldRenew` for the call.
        unsafe { ioc_renew(self.fd(), &raw) }.map(drop).map_err(io)
    }

    /// Reads the lock state.
    pub fn status(&self) -> io::Result<Status> {
        let mut st = MldStatus::default();
        // SAFETY: `st` is a valid, writable `MldStatus` for the call.
        unsafe { ioc_status(self.fd(), &mut st) }.map_err(io)?;
        Ok(Status(st))
    }

    /// Hands a hint batch to the module, which forwards it to the host.
    /// `EAGAIN`: over the module's hint rate; try again next interval.
    pub fn hints(&self, b: &HintBatch) -> io::Result<()> {
        let count = u32::try_from(b.ranges.len())
            .ok()
            .filter(|&n| n <= MLD_MAX_HINTS)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many hint ranges"))?;
        let raw = MldHints {
            batch: b.batch,
            count,
            ranges: b.ranges.as_ptr() as u64,
            wss_pages: b.wss_pages,
            dirty_pages_per_s: b.dirty_pages_per_s,
            pfn_limit: b.pfn_limit,
            interval_ms: u32::try_from(b.interval.as_millis()).unwrap_or(u32::MAX),
            reserved: 0,
        };
        self.hints_raw(&raw)
    }

    /// Passes a raw hint request (tests use this to send invalid ones).
    pub fn hints_raw(&self, raw: &MldHints) -> io::Result<()> {
        // SAFETY: `raw` is valid for the call; the kernel reads `raw.count`
        // ranges at `raw.ranges` and checks that address itself.
        unsafe { ioc_hints(self.fd(), raw) }.map(drop).map_err(io)
    }

    /// The raw file descriptor (tests pass bad pointers through it).
    pub fn as_raw_fd(&self) -> libc::c_int {
        self.fd()
    }

    /// Waits up to `timeout` (`None`: for ever) until something happened
    /// this file has not seen in its status (a lease end, a notice from the
    /// host); true if it did. Read the status to see what, and to wait for
    /// the next event.
    pub fn wait_event(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        let mut p = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r >= 0 {
                return Ok(r == 1 && p.revents & libc::POLLIN != 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The paper's `syscall(NR, flag, &ret)`; `Err(ENOSYS)` without the patch or
/// the module.
pub fn syscall_set_migration_flag(flag: i32) -> io::Result<i32> {
    let mut ret: libc::c_int = 0;
    // SAFETY: the syscall takes an int and a pointer to a writable int.
    let r = unsafe {
        libc::syscall(
            SYS_SET_MIGRATION_FLAG,
            flag as libc::c_long,
            &mut ret as *mut libc::c_int,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Parses a reason name (`critical-code`, ...).
pub fn parse_reason(s: &str) -> Option<Reason> {
    Reason::ALL.iter().copied().find(|r| r.name() == s)
}
