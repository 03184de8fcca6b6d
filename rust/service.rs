// SPDX-License-Identifier: GPL-2.0

//! The VM-wide migration-lock service: who holds the lock and until when
//! (the lock table), what the host announced, the timer at the earliest
//! lease end, the wake-ups of every open file, and the host channel, used
//! only through [`HostChannel`]. `/dev/mld` (`mld.rs`), the system call and
//! sysfs are its front ends.
//!
//! A hold is reported to its caller as taken only if the host granted it,
//! or if there was no host to ask (and then the caller can tell, from
//! `MLD_ST_LOCAL_DECISION`). A hold inside one the host granted, or taken
//! back from a grant still lingering on the host, counts as granted: the
//! host has it, and hears of it in order (`lockstate::grants`). A request the host may have seen but did not
//! answer (the caller got a signal, or an answer of the wrong kind came)
//! leaves no hold in the guest, and the guest releases it on the host in
//! case it was granted meanwhile. Every hold ends through one path,
//! [`Service::release`], which tells the host.

use crate::abi::types::{
    check_label, MldHints, MldStatus, MLD_DECISION_GRANTED, MLD_DECISION_LOCAL, MLD_DECISION_NONE,
    MLD_DECISION_REFUSED,
};
use crate::abi::wire::{self, Message, Notice};
use crate::channel::{Decision, HostChannel, HostEvent, HostEvents, Report, Stats};
use crate::compat::delayed_work::{
    impl_has_delayed_work, new_delayed_work, DelayedWork, DelayedWorkItem,
};
use crate::compat::poll::{new_poll_condvar, PollCondVar};
use crate::compat::timer::{now_ns, Timer, TimerCallback};
use crate::compat::{cred, errno};
use crate::hints::{self, Limiter};
use crate::lockstate::grants::{Grants, Outbox, Owed, TakeBack};
use crate::lockstate::notices::Notices;
use crate::lockstate::request::{FlagRequest, LockRequest};
use crate::lockstate::status::{self, Facts, Seen};
use crate::lockstate::table::{Error as TableError, Owner, Table};
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

const NSEC_PER_MSEC: u64 = 1_000_000;

/// How often the channel's watchdog runs (see [`HostChannel::watchdog`]).
const WATCHDOG_NS: u64 = 1_000_000_000;

/// Settings fixed at module load.
pub(crate) struct Config {
    /// The longest lease a hold may ask for, in milliseconds.
    pub(crate) max_lease_ms: u32,
    /// Members of this group may lock besides CAP_SYS_ADMIN.
    pub(crate) lock_gid: Option<u32>,
    /// Fail a lock the host did not answer instead of deciding locally.
    pub(crate) host_required: bool,
    /// Hint frames per second forwarded to the host; 0: hints off.
    pub(crate) hint_rate: u32,
    /// How long a granted hold stays on the host after its owner let go,
    /// for that owner to take it back without asking; 0: not at all.
    pub(crate) linger_ms: u32,
}

/// The state behind the mutex.
struct State {
    table: Table,
    notices: Notices,
    last_decision: u32,
    last_refusal: u32,
    /// The host released the lock by force; cleared by the next lock.
    forced_release: bool,
    /// Lock requests the host may be deciding now.
    asking: u32,
    /// The host asked for the whole state (it is sent once no lock request
    /// is out).
    report_due: bool,
    /// Whether the last report said "locked" (holds or a static lock): a
    /// report goes out when that changes, once no lock request is out.
    told_locked: bool,
    /// The holds the host has, as far as the guest knows.
    grants: Grants,
}

/// Every open file's pollers. Notified by the lease timer (they then expire
/// the lease themselves, in process context) and on host notices.
#[pin_data]
pub(crate) struct Pollers {
    #[pin]
    cv: PollCondVar,
}

impl TimerCallback for Pollers {
    fn run(&self) {
        self.cv.notify_all();
    }
}

/// The service.
#[pin_data]
pub(crate) struct Service {
    #[pin]
    state: Mutex<State>,
    /// Fires at the earliest lease end; owns the pollers it wakes.
    #[pin]
    wakeup: Timer<Pollers>,
    /// Serialises requests about the detached hold (a host round trip
    /// included), as each file serialises its own.
    #[pin]
    detached: Mutex<()>,
    /// The hint rate limit.
    #[pin]
    hints: Mutex<Limiter>,
    /// Frames owed to the host, sent before any other the service sends
    /// (taken inside `state`, never the other way round).
    #[pin]
    outbox: Mutex<Outbox>,
    /// Sends owed frames and ends lingers when they are due.
    #[pin]
    owed_work: DelayedWork<Service>,
    /// This service, for queueing `owed_work`; cleared at shutdown.
    #[pin]
    me: Mutex<Option<Arc<Service>>>,
    channel: Arc<dyn HostChannel>,
    config: Config,
    next_id: AtomicU32,
}

/// What the host should hold: the table and the grants that linger.
fn report_of(t: &Table, g: &Grants, now: u64) -> Report {
    Report {
        holders: (t.holders() + g.lingering()) as u32,
        static_lock: t.static_lock(),
        earliest_expiry_ms: t
            .earliest_expiry()
            .map_or(0, |e| status::ms_until(e, now).min(u32::MAX.into()) as u32),
    }
}

/// The errno for a host refusal: EAGAIN when the guest should simply try
/// again later (it asked too fast), EACCES otherwise.
fn refusal_errno(reason: u32) -> Error {
    if reason == wire::REFUSE_RATE {
        EAGAIN
    } else {
        EACCES
    }
}

fn table_err(e: TableError) -> Error {
    match e {
        TableError::Full => ENOSPC,
        TableError::NotHeld => errno::enolck(),
        TableError::ZeroLease => EINVAL,
    }
}

/// The service, until dropped: then its owed-frame work stops for good
/// ([`Service::shutdown`]), so none runs after the module is gone.
pub(crate) struct Running(Arc<Service>);

impl core::ops::Deref for Running {
    type Target = Arc<Service>;

    fn deref(&self) -> &Arc<Service> {
        &self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The hold id the host knows `owner` by.
pub(crate) fn hold_id(owner: Owner) -> u32 {
    match owner {
        Owner::Detached => 0,
        // File ids are non-zero `u32`s (`Service::open_file`).
        Owner::File(id) => id as u32,
    }
}

impl Service {
    /// Starts the service over `channel`; `static_lock` is the paper's
    /// static lock.
    pub(crate) fn start(
        config: Config,
        static_lock: bool,
        channel: Arc<dyn HostChannel>,
    ) -> Result<Running> {
        Arc::pin_init(
            pin_init!(Self {
                state <- new_mutex!(State {
                    table: Table::new(static_lock),
                    notices: Notices::new(),
                    last_decision: MLD_DECISION_NONE,
                    last_refusal: 0,
                    forced_release: false,
                    asking: 0,
                    report_due: false,
                    told_locked: false,
                    grants: Grants::new(),
                }),
                wakeup <- Timer::new(pin_init!(Pollers {
                    cv <- new_poll_condvar!("miglock_events"),
                })),
                detached <- new_mutex!(()),
                hints <- new_mutex!(Limiter::new(config.hint_rate)),
                outbox <- new_mutex!(Outbox::new()),
                owed_work <- new_delayed_work!("miglock_owed"),
                me <- new_mutex!(None),
                channel,
                config,
                next_id: AtomicU32::new(1),
            }),
            GFP_KERNEL,
        )
        .map(|s| {
            *s.me.lock() = Some(s.clone());
            Running(s)
        })
    }

    /// Stops the owed-frame work for good (module unload): lingering grants
    /// are released now, owed frames sent, and nothing is queued again.
    pub(crate) fn shutdown(&self) {
        let me = self.me.lock().take();
        self.with_state(|st, now| self.end_lingers(st, now, true));
        self.flush();
        if let Some(me) = me {
            DelayedWork::cancel(&me);
        }
    }

    /// Runs the owed-frame work `delay_ns` from now (unless shut down).
    fn kick(&self, delay_ns: u64) {
        if let Some(me) = self.me.lock().as_ref() {
            DelayedWork::run_in(me, delay_ns);
        }
    }

    /// Sends what the host is owed, oldest first; every other frame the
    /// service sends goes after this.
    fn flush(&self) {
        let mut out = self.outbox.lock();
        while let Some(o) = out.pop() {
            match o {
                Owed::Held {
                    hold,
                    reason,
                    lease_ms,
                    label,
                } => self.channel.held(hold, reason, lease_ms, &label),
                Owed::Release(hold) => self.channel.released(hold),
            }
        }
    }

    /// Owes the host the release of the lingering grants that are due (all
    /// of them with `all`); the owed-frame work, which runs again by the
    /// next one's time, sends them if nothing else does first.
    fn end_lingers(&self, st: &mut State, now: u64, all: bool) {
        let mut out = self.outbox.lock();
        // A release that does not fit (it cannot: there is room for one per
        // grant) stays due, for the next run.
        st.grants
            .take_due(now, all, |hold| out.push(Owed::Release(hold)));
    }

    /// Runs `f` on the state after dropping expired holds, arms the timer
    /// for the next lease end, and tells the host the guest's state if the
    /// VM-wide lock changed.
    ///
    /// The report goes out under the state lock, so the host gets reports
    /// and requests in the order the state saw them; and while a lock
    /// request is out it waits for that to be decided ([`Service::asked`]):
    /// the host, told "no holders" while it grants a hold the guest is about
    /// to take, would end that hold.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, u64) -> R) -> R {
        let now = now_ns();
        let mut st = self.state.lock();
        st.table.expire(now, |_| {});
        st.grants.expire(now);
        let r = f(&mut st, now);
        if let Some(end) = st.table.earliest_expiry() {
            self.wakeup.arm_in(end.saturating_sub(now));
        }
        // What the host should hold: lingering grants count.
        let locked = st.table.locked() || st.grants.lingering() > 0;
        if (st.report_due || locked != st.told_locked) && st.asking == 0 {
            st.report_due = false;
            st.told_locked = locked;
            self.flush();
            self.channel.report(report_of(&st.table, &st.grants, now));
        }
        r
    }

    /// The lock request is decided (its hold taken or not): a report that
    /// waited goes out now, with the state that follows.
    fn asked(&self) {
        self.with_state(|st, _| st.asking = st.asking.saturating_sub(1));
    }

    /// Runs `f` on the current table (sysfs).
    pub(crate) fn with_table<R>(&self, f: impl FnOnce(&Table, u64) -> R) -> R {
        self.with_state(|st, now| f(&st.table, now))
    }

    /// Starts the host channel; on the host's welcome, sends it the state.
    pub(crate) fn start_channel(&self) -> bool {
        self.kick(WATCHDOG_NS);
        let ok = self.channel.start();
        if ok {
            self.resync();
        }
        ok
    }

    /// Stops the host channel's interrupts (before the line is freed).
    pub(crate) fn stop_channel(&self) {
        self.channel.stop();
    }

    /// Whether there is a transport to a host.
    pub(crate) fn channel_present(&self) -> bool {
        self.channel.present()
    }

    /// Whether the host answered recently.
    pub(crate) fn channel_connected(&self) -> bool {
        self.channel.connected()
    }

    /// The host channel's counters.
    pub(crate) fn channel_stats(&self) -> Stats {
        self.channel.stats()
    }

    /// The longest lease.
    pub(crate) fn max_lease_ms(&self) -> u32 {
        self.config.max_lease_ms
    }

    /// Sends the host the whole state (after it reappeared).
    fn resync(&self) {
        self.with_state(|st, _| st.report_due = true);
    }

    /// A new open file: its id (non-zero; the host knows its hold by it)
    /// and the announcements it starts from.
    pub(crate) fn open_file(&self) -> (u32, Seen) {
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let gens = self.with_state(|st, _| st.notices.gens());
        (
            id,
            Seen {
                gens,
                ..Seen::default()
            },
        )
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

    fn holds(&self, owner: Owner) -> bool {
        self.with_state(|st, _| st.table.hold(owner).is_some())
    }

    /// Takes (or updates) `owner`'s hold once the host granted it, or
    /// locally without a host; returns whether it was decided locally.
    /// Requests about one owner must not run concurrently (each file
    /// serialises its own; the detached hold is serialised here).
    pub(crate) fn lock(&self, owner: Owner, req: &LockRequest) -> Result<bool> {
        self.check_privilege()?;
        let _one_at_a_time = (owner == Owner::Detached).then(|| self.detached.lock());
        let label = check_label(&req.label).map_err(|_| EINVAL)?;
        let hold = hold_id(owner);
        // Counted as asking in the same step, so that no report goes out
        // between (a lingering grant it supersedes is not "no holders").
        let (had, superseded, taken) = self.with_state(|st, now| {
            let r = self.lock_without_asking(st, owner, req, now);
            if r.2.is_none() {
                st.asking = st.asking.saturating_add(1);
            }
            r
        });
        if let Some(r) = taken {
            return r;
        }
        // Ask first: a host round trip must not hold the state lock.
        self.flush();
        let asked_at = now_ns();
        let decision = match self
            .channel
            .request_lock(hold, req.reason, req.lease_ms, label)
        {
            Ok(Decision::Local) if self.config.host_required && self.channel.present() => {
                self.asked();
                return Err(errno::etimedout());
            }
            Ok(d) => d,
            // No answer in time: the host is away for now, so decide as
            // without one (unless the host is required).
            Err(e) if e == errno::etimedout() && !self.config.host_required => Decision::Local,
            Err(e) => {
                // Interrupted (or no answer with host_required): the caller
                // gets no hold it did not have, and the host, which may
                // have granted one meanwhile, is told it ended.
                if !had {
                    self.channel.released(hold);
                }
                self.asked();
                return Err(e);
            }
        };
        let r = self.with_state(|st, now| {
            st.asking = st.asking.saturating_sub(1);
            let (code, lease) = match decision {
                Decision::Granted { lease_ms } => {
                    (MLD_DECISION_GRANTED, lease_ms.min(req.lease_ms))
                }
                Decision::Local => (MLD_DECISION_LOCAL, req.lease_ms),
                Decision::Refused { reason } => {
                    st.last_decision = MLD_DECISION_REFUSED;
                    st.last_refusal = reason;
                    return Err(refusal_errno(reason));
                }
            };
            st.table
                .lock(owner, req.reason as u32, req.label, lease, now)
                .map_err(table_err)?;
            if code == MLD_DECISION_GRANTED {
                let until = asked_at.saturating_add(u64::from(lease) * NSEC_PER_MSEC);
                st.grants.granted(hold, req.reason as u32, req.label, until);
            } else {
                st.grants.forget(hold);
            }
            st.last_decision = code;
            st.last_refusal = 0;
            st.forced_release = false;
            Ok(code == MLD_DECISION_LOCAL)
        });
        let refused = matches!(decision, Decision::Refused { .. });
        if r.is_err() && !had && (superseded || !refused) {
            // Granted, but the guest cannot record it (table full, a lease
            // of 0), or refused while the host still has the grant this
            // request superseded: the host must not keep it.
            self.channel.released(hold);
        }
        r
    }

    /// A lock the guest may take without asking, under the state lock: its
    /// owner's grant lingering on the host (taken back), or inside a grant
    /// whose owner holds it (taken, and the host told in order). Returns
    /// whether the owner held already, whether a lingering grant was
    /// superseded (the request that follows replaces it on the host), and
    /// the result if it was taken.
    fn lock_without_asking(
        &self,
        st: &mut State,
        owner: Owner,
        req: &LockRequest,
        now: u64,
    ) -> (bool, bool, Option<Result<bool>>) {
        let hold = hold_id(owner);
        let had = st.table.hold(owner).is_some();
        if !self.channel.connected() {
            return (had, false, None);
        }
        let reason = req.reason as u32;
        let superseded = match st
            .grants
            .take_back(hold, reason, &req.label, req.lease_ms, now)
        {
            TakeBack::Taken(lease) => {
                let r = st.table.lock(owner, reason, req.label, lease, now);
                if let Err(e) = r {
                    // Not recorded: the grant goes, as after an unlock.
                    st.grants.forget(hold);
                    if !self.outbox.lock().push(Owed::Release(hold)) {
                        pr_warn!("owed frames overflow: hold {} stays on the host\n", hold);
                    }
                    self.kick(0);
                    return (had, false, Some(Err(table_err(e))));
                }
                Self::took(st);
                return (had, false, Some(Ok(false)));
            }
            TakeBack::Superseded => true,
            TakeBack::Nothing => false,
        };
        if had || superseded || !self.channel.takes_held() {
            return (had, superseded, None);
        }
        let Some(lease) = st.grants.cover(req.lease_ms, now) else {
            return (had, false, None);
        };
        if st.table.lock(owner, reason, req.label, lease, now).is_err() {
            // Full, say: the host decides (and refuses) as it would.
            return (had, false, None);
        }
        let owed = Owed::Held {
            hold,
            reason,
            lease_ms: lease,
            label: req.label,
        };
        let until = now.saturating_add(u64::from(lease) * NSEC_PER_MSEC);
        if !st.grants.granted(hold, reason, req.label, until) {
            // No room to remember it: the host decides.
            st.table.release(owner);
            return (had, false, None);
        }
        if !self.outbox.lock().push(owed) {
            // Cannot happen (room for a frame per grant); ask instead.
            st.grants.forget(hold);
            st.table.release(owner);
            return (had, false, None);
        }
        self.kick(0);
        Self::took(st);
        (had, false, Some(Ok(false)))
    }

    /// A hold was taken as granted without asking.
    fn took(st: &mut State) {
        st.last_decision = MLD_DECISION_GRANTED;
        st.last_refusal = 0;
        st.forced_release = false;
    }

    /// Restarts `owner`'s lease with `lease_ms`; returns whether it was
    /// decided locally.
    pub(crate) fn renew(&self, owner: Owner, lease_ms: u32) -> Result<bool> {
        if owner == Owner::Detached {
            self.check_privilege()?;
        }
        let _one_at_a_time = (owner == Owner::Detached).then(|| self.detached.lock());
        // Nothing to renew: fail before asking the host.
        if !self.holds(owner) {
            return Err(errno::enolck());
        }
        self.flush();
        let asked_at = now_ns();
        let local = match self.channel.request_renew(hold_id(owner), lease_ms) {
            Ok(Decision::Granted { lease_ms: l }) => Ok((l.min(lease_ms), false)),
            Ok(Decision::Local) => Ok((lease_ms, true)),
            Err(e) if e == errno::etimedout() && !self.config.host_required => Ok((lease_ms, true)),
            Ok(Decision::Refused { reason }) => {
                self.with_state(|st, _| {
                    st.last_decision = MLD_DECISION_REFUSED;
                    st.last_refusal = reason;
                });
                Err(refusal_errno(reason))
            }
            // Interrupted: the hold stays as it was (the host's lease may
            // have been restarted: it ends later, never earlier).
            Err(e) => Err(e),
        };
        let (lease, local) = local?;
        if local && self.config.host_required && self.channel.present() {
            return Err(errno::etimedout());
        }
        let hold = hold_id(owner);
        self.with_state(|st, now| {
            st.table.renew(owner, lease, now)?;
            match st.table.hold(owner) {
                Some(h) if !local => {
                    let until = asked_at.saturating_add(u64::from(lease) * NSEC_PER_MSEC);
                    st.grants.granted(hold, h.reason, h.label, until);
                }
                _ => st.grants.forget(hold),
            }
            Ok(())
        })
        .map_err(table_err)?;
        Ok(local)
    }

    /// Ends `owner`'s hold (and, with `and_static`, the static lock), then
    /// tells the host, or, with `linger` and a grant, lets the grant linger
    /// on the host for the owner to take back; returns whether there was a
    /// hold and a static lock.
    fn end(&self, owner: Owner, and_static: bool, linger: bool) -> (bool, bool) {
        let hold = hold_id(owner);
        let linger_ns = match linger && self.channel.connected() {
            true => u64::from(self.config.linger_ms) * NSEC_PER_MSEC,
            false => 0,
        };
        let (ended, had_static, tell) = self.with_state(|st, now| {
            let had_static = and_static && st.table.static_lock();
            if had_static {
                st.table.clear_static();
            }
            let ended = st.table.unlock(owner).is_ok();
            let lingers = ended && st.grants.let_go(hold, now, linger_ns).is_some();
            if let Some(due) = st.grants.next_due().filter(|_| lingers) {
                self.kick(due.saturating_sub(now));
            }
            (ended, had_static, ended && !lingers)
        });
        if tell {
            self.flush();
            self.channel.released(hold);
        }
        (ended, had_static)
    }

    /// The one release path (close, unlock, `SET_MIGRATION_FLAG 1`, the
    /// detached hold): ends `owner`'s hold if it has one and tells the
    /// host (at once with `linger` false: the file is closing); returns
    /// whether it had one.
    pub(crate) fn release(&self, owner: Owner, linger: bool) -> bool {
        self.end(owner, false, linger).0
    }

    /// Ends `owner`'s hold; `ENOLCK` if it had none. For the detached
    /// owner (privileged) the static lock ends too, and `ENOLCK` means
    /// neither existed.
    pub(crate) fn unlock(&self, owner: Owner) -> Result {
        if owner != Owner::Detached {
            return match self.release(owner, true) {
                true => Ok(()),
                false => Err(errno::enolck()),
            };
        }
        self.check_privilege()?;
        let _one_at_a_time = self.detached.lock();
        match self.end(Owner::Detached, true, true) {
            (false, false) => Err(errno::enolck()),
            _ => Ok(()),
        }
    }

    /// The paper's flag for `owner`: 0 locks (reason "other", the maximum
    /// lease), 1 ends the hold (and, for the detached owner, the static
    /// lock); nothing to end is no error. Returns whether a lock was decided
    /// locally.
    pub(crate) fn set_flag(&self, owner: Owner, flag: FlagRequest) -> Result<bool> {
        match flag {
            FlagRequest::Lock => {
                let target = match owner {
                    Owner::Detached => crate::lockstate::request::Target::Detached,
                    Owner::File(_) => crate::lockstate::request::Target::ThisFile,
                };
                let req = crate::lockstate::request::flag_lock(target, self.config.max_lease_ms);
                self.lock(owner, &req)
            }
            FlagRequest::Unlock if owner == Owner::Detached => {
                self.check_privilege()?;
                let _one_at_a_time = self.detached.lock();
                self.end(Owner::Detached, true, true);
                Ok(false)
            }
            FlagRequest::Unlock => {
                self.release(owner, true);
                Ok(false)
            }
        }
    }

    /// Drops every hold (module unload) without asking anyone; returns how
    /// many there were.
    pub(crate) fn release_all(&self) -> usize {
        self.with_state(|st, _| st.table.clear())
    }

    /// `owner`'s file's status; `seen` is brought up to date.
    pub(crate) fn status(&self, owner: Owner, seen: &mut Seen) -> MldStatus {
        let channel = self.channel.connected();
        self.with_state(|st, now| {
            let facts = Facts {
                channel,
                forced_release: st.forced_release,
                last_decision: st.last_decision,
                last_refusal: st.last_refusal,
                max_lease_ms: self.config.max_lease_ms,
            };
            status::status(&st.table, &st.notices, &facts, owner, seen, now)
        })
    }

    /// Whether `owner`'s file has something to react to (see
    /// [`status::has_event`]).
    pub(crate) fn has_event(&self, owner: Owner, seen: &Seen) -> bool {
        self.with_state(|st, _| status::has_event(&st.table, &st.notices, owner, seen))
    }

    /// What every open file is woken by.
    pub(crate) fn pollers(&self) -> &PollCondVar {
        &self.wakeup.callback().cv
    }

    /// Forwards a hint batch within the rate; the caller checked the
    /// privilege (before copying the ranges in).
    pub(crate) fn hints(&self, req: &MldHints, raw: &[u8]) -> Result {
        hints::check(req, raw)?;
        self.hints
            .lock()
            .admit(hints::frames_for(req.count), now_ns())?;
        let w = Message::Workload {
            batch: req.batch,
            interval_ms: req.interval_ms,
            wss_pages: req.wss_pages,
            dirty_pages_per_s: req.dirty_pages_per_s,
            pfn_limit: req.pfn_limit,
        };
        self.channel.send_hints(&w, req.batch, raw)
    }
}

impl HostEvents for Service {
    fn host_event(&self, e: HostEvent) {
        match e {
            HostEvent::Resync => {
                // Perhaps another host (the VM moved), perhaps one that lost
                // what it granted: lingering grants are released and no
                // grant covers anything until the host grants again.
                self.with_state(|st, now| {
                    self.end_lingers(st, now, true);
                    st.grants.clear();
                });
                self.resync();
            }
            HostEvent::Notice(n) => {
                let wake = self.with_state(|st, now| {
                    match n {
                        Notice::ForcedRelease { .. } => {
                            // The host has overridden the lock (the paper's
                            // hard quota, or an administrator): the holds
                            // are void, and so is anything owed about them.
                            st.forced_release = st.table.clear() > 0;
                            st.grants.clear();
                            self.outbox.lock().clear();
                        }
                        // The host wants to migrate: no linger holds it up.
                        Notice::MigrationPending { .. } => self.end_lingers(st, now, true),
                        _ => {}
                    }
                    st.notices.apply(n, now)
                });
                if wake {
                    self.pollers().notify_all();
                }
            }
        }
    }
}

impl_has_delayed_work!(Service, owed_work);

impl DelayedWorkItem for Service {
    /// Releases the grants whose linger ended, sends what is owed, and
    /// runs the channel's watchdog; again at the next linger's end or in
    /// [`WATCHDOG_NS`], whichever is sooner.
    fn run(this: Arc<Self>) {
        let next = this.with_state(|st, now| {
            this.end_lingers(st, now, false);
            st.grants.next_due().map(|due| due.saturating_sub(now))
        });
        this.flush();
        if this.channel.present() {
            for e in this.channel.watchdog() {
                this.host_event(e);
            }
            this.kick(next.unwrap_or(WATCHDOG_NS).min(WATCHDOG_NS));
        }
    }
}

#[cfg(miglock_syscall)]
impl crate::compat::syscall::SetMigrationFlag for Service {
    /// The paper's system call: 0 takes the detached hold (maximum lease),
    /// 1 ends it and the static lock. Returns whether the VM may migrate
    /// afterwards (file-owned holds may still lock it).
    fn set_migration_flag(&self, flag: i32) -> Result<bool> {
        let flag = crate::lockstate::request::check_flag(flag).map_err(|_| EINVAL)?;
        self.check_privilege()?;
        self.set_flag(Owner::Detached, flag)?;
        Ok(self.with_table(|t, _| !t.locked()))
    }
}
