// SPDX-License-Identifier: GPL-2.0

//! `/dev/mld`: the migration-lock device.
//!
//! Each open file may hold one lock; the lock is dropped when the file is
//! closed, so a crashed application never leaves the VM locked. A detached
//! hold (for CLIs that exit) is shared and lasts until unlocked or until its
//! lease ends. Every hold has a lease, capped by `max_lease_ms`.

use crate::abi::wire::Notice;
use crate::abi::{ioctl as nr, types::*};
use crate::channel::{Decision, HostChannel, Report};
use crate::cred;
use crate::hints::{self, Limiter};
use crate::lockstate::table::{Error as TableError, Owner, Table, LABEL_LEN};
use crate::miscdev::{MiscDevice, PollTable, EPOLLIN, EPOLLRDNORM};
use crate::shim::{HostEvent, Shim};
use crate::timer::Timer;
use crate::uart::Uart;
use crate::waitqueue::{StaticKey, WaitQueue};
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::{
    bindings, c_str, new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    time::Ktime,
    types::FromBytes,
    uaccess::UserSlice,
};

const NSEC_PER_MSEC: u64 = 1_000_000;

/// Settings fixed at module load.
pub(crate) struct Config {
    /// The longest lease a hold may ask for, in milliseconds.
    pub(crate) max_lease_ms: u32,
    /// Members of this group may lock besides CAP_SYS_ADMIN.
    pub(crate) lock_gid: Option<u32>,
    /// Fail a lock the host did not answer instead of recording it locally.
    pub(crate) host_required: bool,
    /// Hint frames per second forwarded to the host; 0: hints off.
    pub(crate) hint_rate: u32,
}

/// The lock state behind the mutex.
struct State {
    table: Table,
    last_decision: u32,
    last_refusal: u32,
    /// The host announced a migration; cleared when the VM is unlocked.
    migration_pending: bool,
    /// The host released the lock by force; cleared by the next lock.
    forced_release: bool,
    /// How many times the host announced post-copy.
    postcopy_gen: u32,
}

/// State shared by every open file of `/dev/mld`.
#[pin_data(PinnedDrop)]
pub(crate) struct Shared {
    #[pin]
    state: Mutex<State>,
    /// Woken when a lease ends (and, with a host channel, on host notices).
    #[pin]
    events: WaitQueue,
    /// Fires at the earliest lease end.
    #[pin]
    expiry: Timer,
    /// The host channel (decides locally without a doorbell).
    #[pin]
    shim: Shim,
    /// The hint rate limit.
    #[pin]
    hints: Mutex<Limiter>,
    config: Config,
    next_id: AtomicU64,
}

static EVENTS_KEY: StaticKey = StaticKey::new();

/// Softirq context: only wakes pollers; they expire leases themselves.
///
/// # Safety
///
/// `t` is the `expiry` timer of a live [`Shared`]: `Shared`'s drop cancels
/// the timer synchronously before the memory goes away.
unsafe extern "C" fn expiry_fired(t: *mut bindings::timer_list) {
    // SAFETY: per the contract, `t` is the (transparent) `expiry` field.
    let shared = unsafe { &*kernel::container_of!(t.cast::<Timer>(), Shared, expiry) };
    shared.events.wake_all();
}

impl Shared {
    /// Creates the state; `static_lock` is the paper's static lock, `uart`
    /// the doorbell to the host if there is one.
    pub(crate) fn new(
        config: Config,
        static_lock: bool,
        uart: Option<Uart>,
        hypercall: Option<crate::vmcall::Hypercall>,
        boot_id: u64,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                state <- new_mutex!(State {
                    table: Table::new(static_lock),
                    last_decision: MLD_DECISION_NONE,
                    last_refusal: 0,
                    migration_pending: false,
                    forced_release: false,
                    postcopy_gen: 0,
                }),
                hints <- new_mutex!(Limiter::new(config.hint_rate)),
                events <- WaitQueue::new(c_str!("miglock_events"), &EVENTS_KEY),
                // SAFETY: `expiry_fired` only touches `Shared`, whose drop
                // cancels the timer first.
                expiry <- unsafe { Timer::new(expiry_fired) },
                shim <- Shim::new(uart, hypercall, boot_id),
                config,
                next_id: AtomicU64::new(1),
            }),
            GFP_KERNEL,
        )
    }

    /// Runs `f` on the state after dropping expired holds, then arms the
    /// timer for the next lease end.
    /// Tells the host channel when the VM-wide state changed, after the
    /// state lock is dropped.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, u64) -> R) -> R {
        let now = now_ns();
        let mut st = self.state.lock();
        let before = st.table.locked();
        st.table.expire(now, |_| {});
        let r = f(&mut st, now);
        if let Some(end) = st.table.earliest_expiry() {
            self.expiry.arm_in(end.saturating_sub(now));
        }
        let after = st.table.locked();
        if !after {
            st.migration_pending = false;
        }
        let report = report_of(&st.table, now);
        drop(st);
        if before != after {
            self.shim.state_changed(report);
        }
        r
    }

    /// Starts the host channel: UART on, hello, and on welcome the state.
    pub(crate) fn start_channel(&self) -> bool {
        if !self.shim.start() {
            return false;
        }
        let ok = self.shim.connect();
        if ok {
            self.resync();
        }
        ok
    }

    /// Stops the host channel's interrupt source (before the line is freed).
    pub(crate) fn stop_channel(&self) {
        self.shim.stop();
    }

    /// Whether a doorbell UART was found.
    pub(crate) fn channel_present(&self) -> bool {
        self.shim.present()
    }

    /// The host channel's counters.
    pub(crate) fn channel_stats(&self) -> crate::shim::Stats {
        self.shim.stats()
    }

    /// Whether the host answered recently.
    pub(crate) fn channel_connected(&self) -> bool {
        self.shim.connected()
    }

    /// Sends the host the whole state (after it reappeared).
    fn resync(&self) {
        let report = self.with_table(report_of);
        self.shim.send_state(report);
    }

    fn host_event(&self, e: HostEvent) {
        match e {
            HostEvent::Resync => self.resync(),
            HostEvent::Notice(n) => {
                self.with_state(|st, _| match n {
                    Notice::MigrationPending { .. } => st.migration_pending = st.table.locked(),
                    // The host has overridden the lock (the paper's hard
                    // quota, or an administrator): the holds are void.
                    Notice::ForcedRelease { .. } => {
                        st.forced_release = st.table.clear() > 0;
                    }
                    Notice::PolicyChange { .. } => {}
                    // Pollers (the tracer) run ahead of the workload's faults.
                    Notice::PostcopyStarted => st.postcopy_gen = st.postcopy_gen.wrapping_add(1),
                    Notice::MigrationCancelled | Notice::Migrated => {}
                });
                self.events.wake_all();
            }
        }
    }

    /// Forwards a hint batch within the rate.
    fn hints(&self, req: &MldHints, raw: &[u8]) -> Result {
        hints::check(req, raw)?;
        self.hints
            .lock()
            .admit(hints::frames_for(req.count), now_ns())?;
        let w = crate::abi::wire::Message::Workload {
            batch: req.batch,
            interval_ms: req.interval_ms,
            wss_pages: req.wss_pages,
            dirty_pages_per_s: req.dirty_pages_per_s,
            pfn_limit: req.pfn_limit,
        };
        self.shim.send_hints(&w, req.batch, raw)
    }

    /// Takes a hold once the host agreed (or, without a host, locally).
    fn take(
        &self,
        owner: Owner,
        hold: u32,
        reason: Reason,
        label: [u8; LABEL_LEN],
        lease_ms: u32,
    ) -> Result {
        let text = check_label(&label).map_err(|_| EINVAL)?;
        // Ask first: a host round trip must not hold the state lock.
        let decision = self.shim.request_lock(hold, reason, lease_ms, text);
        if decision == Decision::Local && self.config.host_required && self.shim.present() {
            return Err(crate::errno::etimedout());
        }
        self.with_state(|st, now| {
            let (code, lease) = match decision {
                Decision::Granted { lease_ms: l } => (MLD_DECISION_GRANTED, l.min(lease_ms)),
                Decision::Local => (MLD_DECISION_LOCAL, lease_ms),
                Decision::Refused { reason } => {
                    st.last_decision = MLD_DECISION_REFUSED;
                    st.last_refusal = reason;
                    return Err(refusal_errno(reason));
                }
            };
            st.table
                .lock(owner, reason as u32, label, lease, now)
                .map_err(table_err)?;
            st.last_decision = code;
            st.last_refusal = 0;
            st.forced_release = false;
            Ok(())
        })
    }

    /// Drops the detached hold and the static lock; `ENOLCK` if neither
    /// existed.
    fn release_detached(&self) -> Result {
        let (held, had_static) = self.with_state(|st, _| {
            let had_static = st.table.static_lock();
            st.table.clear_static();
            (st.table.unlock(Owner::Detached).is_ok(), had_static)
        });
        if held {
            self.shim.released(0);
        }
        if held || had_static {
            Ok(())
        } else {
            Err(table_err(TableError::NotHeld))
        }
    }

    /// Whether the calling task may lock: CAP_SYS_ADMIN or the lock group.
    pub(crate) fn check_privilege(&self) -> Result {
        let group = self.config.lock_gid.is_some_and(cred::in_group);
        if group || cred::is_admin() {
            Ok(())
        } else {
            Err(EPERM)
        }
    }

    /// The paper's system call: 0 takes the detached hold (maximum lease),
    /// 1 drops it and the static lock. Returns whether the VM may migrate
    /// afterwards (file-owned holds may still lock it).
    pub(crate) fn set_flag_detached(&self, flag: i32) -> Result<bool> {
        if flag != 0 && flag != 1 {
            return Err(EINVAL);
        }
        self.check_privilege()?;
        if flag == 0 {
            let label = make_label("set_migration_flag").ok_or(EINVAL)?;
            let lease = self.config.max_lease_ms;
            self.take(Owner::Detached, 0, Reason::Other, label, lease)?;
        } else {
            // Nothing to release is fine here, as in the paper.
            let _ = self.release_detached();
        }
        Ok(self.with_table(|t, _| !t.locked()))
    }

    /// Runs `f` on the current table (for sysfs).
    pub(crate) fn with_table<R>(&self, f: impl FnOnce(&Table, u64) -> R) -> R {
        self.with_state(|st, now| f(&st.table, now))
    }
}

#[pinned_drop]
impl PinnedDrop for Shared {
    fn drop(self: Pin<&mut Self>) {
        self.expiry.cancel_sync();
    }
}

impl Shared {
    /// Drops every hold (module unload); returns how many there were.
    pub(crate) fn release_all(&self) -> usize {
        self.with_state(|st, _| st.table.clear())
    }
}

/// The device type registered as `/dev/mld`.
pub(crate) struct MldDevice;

/// One open file of `/dev/mld`.
pub(crate) struct MldFile {
    shared: Arc<Shared>,
    id: u64,
    /// This file took a hold and has not seen it end yet.
    expect_hold: AtomicBool,
    /// The post-copy announcement this file last saw in its status.
    seen_postcopy: AtomicU32,
}

impl MiscDevice for MldDevice {
    type Ctx = Arc<Shared>;
    type Ptr = KBox<MldFile>;

    fn open(shared: &Arc<Shared>) -> Result<KBox<MldFile>> {
        let file = MldFile {
            shared: shared.clone(),
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            expect_hold: AtomicBool::new(false),
            seen_postcopy: AtomicU32::new(shared.with_state(|st, _| st.postcopy_gen)),
        };
        Ok(KBox::new(file, GFP_KERNEL)?)
    }

    fn ioctl(file: &MldFile, cmd: u32, arg: usize) -> Result<isize> {
        file.ioctl(cmd, arg).map(|()| 0)
    }

    fn poll(file: &MldFile, table: &PollTable) -> u32 {
        table.register(&file.shared.events);
        if file.has_event() {
            EPOLLIN | EPOLLRDNORM
        } else {
            0
        }
    }
}

impl Drop for MldFile {
    fn drop(&mut self) {
        let owner = Owner::File(self.id);
        if self
            .shared
            .with_state(|st, _| st.table.unlock(owner).is_ok())
        {
            self.shared.shim.released(self.hold_id(owner));
        }
    }
}

fn now_ns() -> u64 {
    // CLOCK_MONOTONIC is never negative.
    Ktime::ktime_get().to_ns().max(0) as u64
}

fn report_of(t: &Table, now: u64) -> Report {
    Report {
        holders: t.holders() as u32,
        static_lock: t.static_lock(),
        earliest_expiry_ms: t
            .earliest_expiry()
            .map_or(0, |e| ms_until(e, now).min(u32::MAX.into()) as u32),
    }
}

impl crate::irq::Handler for Shared {
    fn quiesce(&self) -> bool {
        self.shim.quiesce()
    }

    fn handle(&self) -> bool {
        let mut events = KVec::new();
        let ours = self.shim.receive(&mut events);
        for e in events {
            self.host_event(e);
        }
        ours
    }
}

/// The errno for a host refusal: EAGAIN when the guest should simply try
/// again later (it asked too fast), EACCES otherwise.
fn refusal_errno(reason: u32) -> Error {
    if reason == crate::abi::wire::REFUSE_RATE {
        EAGAIN
    } else {
        EACCES
    }
}

/// Milliseconds from `now` until `t`, rounded up.
pub(crate) fn ms_until(t: u64, now: u64) -> u64 {
    t.saturating_sub(now).div_ceil(NSEC_PER_MSEC)
}

fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read::<T>()
}

fn table_err(e: TableError) -> Error {
    match e {
        TableError::Full => ENOSPC,
        TableError::NotHeld => crate::errno::enolck(),
        TableError::ZeroLease => EINVAL,
    }
}

impl MldFile {
    fn ioctl(&self, cmd: u32, arg: usize) -> Result {
        match cmd {
            nr::SET_MIGRATION_FLAG => self.set_flag(read_arg::<i32>(arg)?),
            nr::MLD_IOC_LOCK => self.lock(&read_arg::<MldLock>(arg)?),
            nr::MLD_IOC_UNLOCK => self.unlock(read_arg::<u32>(arg)?),
            nr::MLD_IOC_RENEW => self.renew(&read_arg::<MldRenew>(arg)?),
            nr::MLD_IOC_HINTS => self.hints(&read_arg::<MldHints>(arg)?),
            nr::MLD_IOC_STATUS => {
                let status = self.status();
                UserSlice::new(arg, size_of::<MldStatus>())
                    .writer()
                    .write(&status)
            }
            _ => Err(ENOTTY),
        }
    }

    fn check_privilege(&self) -> Result {
        self.shared.check_privilege()
    }

    /// A requested lease: 0 means the maximum, more than the maximum is invalid.
    fn lease(&self, ms: u32) -> Result<u32> {
        let max = self.shared.config.max_lease_ms;
        match ms {
            0 => Ok(max),
            ms if ms <= max => Ok(ms),
            _ => Err(EINVAL),
        }
    }

    fn owner(&self, flags: u32) -> Owner {
        if flags & MLD_LOCK_DETACHED != 0 {
            Owner::Detached
        } else {
            Owner::File(self.id)
        }
    }

    /// Applies `f` to the state after dropping expired holds.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, u64) -> Result<R>) -> Result<R> {
        self.shared.with_state(f)
    }

    /// Whether something happened this file must react to: its hold ended
    /// without it unlocking (lease expiry; until it reads its status), the
    /// host announced a migration or post-copy (until it reads its status),
    /// or released the lock by force.
    fn has_event(&self) -> bool {
        let (mine, host) = self.shared.with_state(|st, _| {
            let mine = st.table.hold(Owner::File(self.id)).is_some();
            let postcopy = st.postcopy_gen != self.seen_postcopy.load(Ordering::Relaxed);
            (mine, st.migration_pending || st.forced_release || postcopy)
        });
        host || (!mine && self.expect_hold.load(Ordering::Relaxed))
    }

    /// `MLD_IOC_HINTS`: a privileged caller's batch, copied in and checked
    /// before any of it reaches the host.
    fn hints(&self, req: &MldHints) -> Result {
        self.check_privilege()?;
        if req.count > MLD_MAX_HINTS {
            return Err(EINVAL);
        }
        let len = req.count as usize * size_of::<MldHintRange>();
        let mut raw = KVec::with_capacity(len, GFP_KERNEL)?;
        let addr = usize::try_from(req.ranges).map_err(|_| EFAULT)?;
        UserSlice::new(addr, len)
            .reader()
            .read_all(&mut raw, GFP_KERNEL)?;
        self.shared.hints(req, &raw)
    }

    /// The hold id the host knows an owner by.
    fn hold_id(&self, owner: Owner) -> u32 {
        match owner {
            Owner::Detached => 0,
            Owner::File(_) => (self.id as u32).max(1),
        }
    }

    fn take(&self, owner: Owner, reason: Reason, label: [u8; LABEL_LEN], lease_ms: u32) -> Result {
        self.shared
            .take(owner, self.hold_id(owner), reason, label, lease_ms)?;
        if owner == Owner::File(self.id) {
            self.expect_hold.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The paper's `SET_MIGRATION_FLAG`: 0 locks (this file), 1 unlocks.
    fn set_flag(&self, flag: i32) -> Result {
        match flag {
            0 => {
                self.check_privilege()?;
                let label = make_label("set_migration_flag").ok_or(EINVAL)?;
                let lease = self.lease(0)?;
                self.take(Owner::File(self.id), Reason::Other, label, lease)
            }
            1 => {
                self.expect_hold.store(false, Ordering::Relaxed);
                self.with_state(|st, _| Ok(st.table.release(Owner::File(self.id))))?;
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    fn lock(&self, req: &MldLock) -> Result {
        self.check_privilege()?;
        let reason = Reason::from_u32(req.reason).ok_or(EINVAL)?;
        if req.reserved != 0 || req.flags & !MLD_LOCK_FLAGS != 0 {
            return Err(EINVAL);
        }
        check_label(&req.label).map_err(|_| EINVAL)?;
        let lease = self.lease(req.lease_ms)?;
        self.take(self.owner(req.flags), reason, req.label, lease)
    }

    fn unlock(&self, flags: u32) -> Result {
        if flags & !MLD_LOCK_DETACHED != 0 {
            return Err(EINVAL);
        }
        if flags & MLD_LOCK_DETACHED == 0 {
            self.expect_hold.store(false, Ordering::Relaxed);
            let owner = Owner::File(self.id);
            self.with_state(|st, _| st.table.unlock(owner).map_err(table_err))?;
            self.shared.shim.released(self.hold_id(owner));
            return Ok(());
        }
        // The detached hold and the static lock belong to no file: only a
        // privileged caller may drop them.
        self.check_privilege()?;
        self.shared.release_detached()
    }

    fn renew(&self, req: &MldRenew) -> Result {
        if req.flags & !MLD_LOCK_DETACHED != 0 {
            return Err(EINVAL);
        }
        let owner = self.owner(req.flags);
        if owner == Owner::Detached {
            self.check_privilege()?;
        }
        let lease = self.lease(req.lease_ms)?;
        // Nothing to renew: fail before asking the host.
        self.with_state(|st, _| {
            st.table
                .hold(owner)
                .map(drop)
                .ok_or_else(crate::errno::enolck)
        })?;
        let shim = &self.shared.shim;
        let lease = match shim.request_renew(self.hold_id(owner), lease) {
            Decision::Granted { lease_ms } => lease_ms.min(lease),
            Decision::Local if self.shared.config.host_required && shim.present() => {
                return Err(crate::errno::etimedout())
            }
            Decision::Local => lease,
            Decision::Refused { reason } => {
                self.shared.with_state(|st, _| {
                    st.last_decision = MLD_DECISION_REFUSED;
                    st.last_refusal = reason;
                });
                return Err(refusal_errno(reason));
            }
        };
        self.with_state(|st, now| {
            st.table
                .renew(owner, lease, now)
                .map(drop)
                .map_err(table_err)
        })
    }

    fn status(&self) -> MldStatus {
        self.shared.with_state(|st, now| self.status_of(st, now))
    }

    fn status_of(&self, st: &State, now: u64) -> MldStatus {
        let t = &st.table;
        let mine = t.hold(Owner::File(self.id));
        let mut flags = 0;
        for (set, bit) in [
            (self.shared.shim.connected(), MLD_ST_CHANNEL),
            (st.migration_pending, MLD_ST_MIGRATION_PENDING),
            (st.forced_release, MLD_ST_FORCED_RELEASE),
            (t.locked(), MLD_ST_LOCKED),
            (t.static_lock(), MLD_ST_STATIC),
            (mine.is_some(), MLD_ST_HELD_BY_ME),
            (t.hold(Owner::Detached).is_some(), MLD_ST_DETACHED),
        ] {
            if set {
                flags |= bit;
            }
        }
        if mine.is_none() && self.expect_hold.swap(false, Ordering::Relaxed) {
            flags |= MLD_ST_LEASE_EXPIRED;
        }
        if self.seen_postcopy.swap(st.postcopy_gen, Ordering::Relaxed) != st.postcopy_gen {
            flags |= MLD_ST_POSTCOPY;
        }
        MldStatus {
            flags,
            holders: t.holders() as u32,
            earliest_expiry_ms: t.earliest_expiry().map_or(0, |e| ms_until(e, now)),
            own_expiry_ms: mine.map_or(0, |h| ms_until(h.expires_at, now)),
            last_decision: st.last_decision,
            last_refusal: st.last_refusal,
            max_lease_ms: self.shared.config.max_lease_ms,
            postcopy_gen: st.postcopy_gen,
            pending_deadline_ms: 0,
            migration_gen: 0,
            reserved: [0; 4],
        }
    }
}
