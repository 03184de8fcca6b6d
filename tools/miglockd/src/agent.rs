// SPDX-License-Identifier: GPL-2.0

//! The agent's shared state: every VM's ledger, its guest link, the audit
//! log and the state file. Each VM has its own lock on its own entry, so one
//! VM's traffic never waits for another's.

use crate::audit::Audit;
use crate::clock::now_ms;
use crate::ledger::{Ledger, Policy};
use crate::store;
use anyhow::{Context, Result};
use miglock_abi::wire::{self, Header, Message, Notice};
use miglock_qmp::{Event, Monitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex};

/// One VM in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Name used by miglockctl and the audit log.
    pub name: String,
    /// QEMU's doorbell chardev socket (server mode), which the agent dials.
    pub doorbell: PathBuf,
    /// QEMU's QMP socket (server mode): the agent enforces the lock there
    /// (a migration blocker), follows every migration and runs its own.
    /// Without it, decisions are recorded but nothing stops a migration.
    #[serde(default)]
    pub qmp: Option<PathBuf>,
    /// Policy at VM creation.
    #[serde(default)]
    pub policy: Policy,
    /// The libvirt domain this VM is, if libvirt runs it: the agent keeps
    /// the lock state in its metadata for the `qemu` hook.
    #[serde(default)]
    pub libvirt: Option<crate::libvirt::Domain>,
}

/// The agent's configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// State file (every VM's ledger): a snapshot, with the journal of
    /// changes since beside it (`journal.rs`).
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// Audit log, JSON lines, append-only.
    #[serde(default = "default_audit")]
    pub audit: PathBuf,
    /// Control socket for miglockctl.
    #[serde(default = "default_control")]
    pub control: PathBuf,
    /// How fast a guest may talk.
    #[serde(default)]
    pub limits: Limits,
    /// What the migration planner may choose.
    #[serde(default)]
    pub planner: crate::planner::Options,
    /// How the lock is enforced in QEMU.
    #[serde(default)]
    pub blocker: BlockerOptions,
    /// When written records reach the disk.
    #[serde(default)]
    pub storage: crate::commit::Storage,
    /// The deadlines of every QMP step.
    #[serde(default)]
    pub qmp: QmpOptions,
    /// Pauses before a switchover that nobody owns.
    #[serde(default)]
    pub switchover: SwitchoverOptions,
    /// The VMs.
    #[serde(rename = "vm", default)]
    pub vms: Vec<VmConfig>,
}

fn default_state() -> PathBuf {
    PathBuf::from("/var/lib/miglock/state.json")
}

fn default_audit() -> PathBuf {
    PathBuf::from("/var/log/miglock/audit.jsonl")
}

fn default_control() -> PathBuf {
    PathBuf::from(miglockd::cli::DEFAULT_SOCKET)
}

impl Config {
    /// Reads and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config
            .check()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(config)
    }

    /// What the types cannot say: VM names are unique, and so are the
    /// sockets (two VMs on one doorbell would see each other's frames).
    fn check(&self) -> Result<()> {
        let mut names = std::collections::BTreeSet::new();
        let mut sockets = std::collections::BTreeSet::new();
        for vm in &self.vms {
            anyhow::ensure!(!vm.name.is_empty(), "a VM without a name");
            anyhow::ensure!(names.insert(&vm.name), "VM '{}' twice", vm.name);
            for s in [Some(&vm.doorbell), vm.qmp.as_ref()].into_iter().flatten() {
                anyhow::ensure!(
                    sockets.insert(s),
                    "socket {} used twice (VM '{}')",
                    s.display(),
                    vm.name
                );
            }
        }
        Ok(())
    }
}

/// Per-guest rate limit (token bucket).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Frames per second on average.
    pub rate: f64,
    /// Frames in a burst.
    pub burst: f64,
    /// Hint frames per second (their own bucket: hints never use up the
    /// rate lock requests need).
    pub hint_rate: f64,
    /// Hint frames in a burst.
    pub hint_burst: f64,
    /// Blocker installs a second that guest locks may cause in one VM: what
    /// a lock costs the host (QMP calls into its QEMU). Locks inside a
    /// blocked VM, and the lock/unlock pairs of a burst (the blocker
    /// lingers), cost none.
    pub blocker_rate: f64,
    /// Blocker installs in a burst.
    pub blocker_burst: f64,
    /// Guests may take a hold inside one this agent granted without asking
    /// and tell it after (`Held`, audited as "held"); false: every hold is
    /// decided here.
    pub held: bool,
    /// Frames that may wait for a guest to read them; one more drops the
    /// link (a guest that does not drain its UART).
    pub send_queue: usize,
    /// Longest a guest may take to accept one frame, ms, before its link
    /// is dropped.
    pub send_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Frames are cheap to decide (nothing waits for the disk): the
            // frame bucket only bounds a flood; blocker installs are paced.
            rate: 5000.0,
            burst: 5000.0,
            hint_rate: 128.0,
            hint_burst: 128.0,
            blocker_rate: 10.0,
            blocker_burst: 20.0,
            held: true,
            send_queue: 64,
            send_timeout_ms: 2000,
        }
    }
}

/// `[blocker]` in the configuration.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockerOptions {
    /// How long a VM stays blocked after its last hold ended, ms: a burst
    /// of lock/unlock pairs then costs one blocker change.
    pub linger_ms: u64,
}

impl Default for BlockerOptions {
    fn default() -> Self {
        BlockerOptions {
            linger_ms: crate::blocker::DEFAULT_LINGER.as_millis() as u64,
        }
    }
}

/// `[qmp]` in the configuration: no QMP step waits longer than these.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QmpOptions {
    /// Dialling, the greeting and `qmp_capabilities`, ms. QEMU greets only
    /// the one client it serves: a socket another client holds (a debugging
    /// `socat`, a second agent) or a stuck main loop fails the dial here.
    pub connect_timeout_ms: u64,
    /// Each command's reply, ms.
    pub reply_timeout_ms: u64,
}

impl Default for QmpOptions {
    fn default() -> Self {
        QmpOptions {
            connect_timeout_ms: miglock_qmp::CONNECT_TIMEOUT.as_millis() as u64,
            reply_timeout_ms: 10_000,
        }
    }
}

impl QmpOptions {
    /// As the QMP client takes them.
    pub fn timeouts(&self) -> miglock_qmp::Timeouts {
        miglock_qmp::Timeouts {
            connect: std::time::Duration::from_millis(self.connect_timeout_ms),
            reply: std::time::Duration::from_millis(self.reply_timeout_ms),
        }
    }
}

/// `[switchover]` in the configuration.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwitchoverOptions {
    /// How long a migration may stay paused at "pre-switchover" with no
    /// gate of this agent owning it before the agent continues it (an
    /// unlocked VM), ms; a locked VM's is cancelled at once. Clients that
    /// pause there themselves (libvirt, with storage) continue well within.
    pub orphan_continue_ms: u64,
}

impl Default for SwitchoverOptions {
    fn default() -> Self {
        SwitchoverOptions {
            orphan_continue_ms: 5000,
        }
    }
}

/// A guest link's counters.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LinkStats {
    /// Frames accepted.
    pub frames: u64,
    /// Bytes or frames rejected as malformed.
    pub malformed: u64,
    /// Frames dropped by the rate limit.
    pub rate_dropped: u64,
    /// Times the link was cut for misbehaving.
    pub cut: u64,
    /// Times the link was dropped because the guest did not read it.
    pub undrained: u64,
}

/// The live connection to one VM's guest.
#[derive(Default)]
pub struct Link {
    /// Writes to the guest (notices from other threads go here too),
    /// never blocking: see [`crate::outbox`].
    pub writer: Option<crate::outbox::Outbox>,
    seq: u32,
    /// Counters.
    pub stats: LinkStats,
    /// The latest hint batch.
    pub hints: crate::hints::HintStore,
    /// The guest has reported its state since the agent last asked for it
    /// (connect or announce); the first report after that is always recorded.
    pub synced: bool,
    /// The last decision on holds the guest reported beyond its grants
    /// granted them: once that grant ends, the same report is decided
    /// again (a refused one is not, until it changes or a resync).
    pub reported_granted: bool,
    /// Notices for the guest that found no connection, sent when it comes
    /// (after the announce). At most [`OWED`].
    pub owed: Vec<Notice>,
}

/// Most notices kept for a guest that is not connected (older ones go).
pub const OWED: usize = 8;

impl Link {
    /// Queues `msg` answering `reply_to`; false if there is no connection
    /// (or it was dropped now, its guest not draining). Never blocks.
    pub fn send(&mut self, msg: &Message<'_>, reply_to: u32) -> bool {
        let Some(w) = self.writer.as_ref() else {
            return false;
        };
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut buf = [0u8; wire::MAX_FRAME];
        let Ok(n) = wire::encode(
            msg,
            Header {
                seq: self.seq,
                reply_to,
            },
            &mut buf,
        ) else {
            return false;
        };
        w.send(&buf[..n])
    }
}

/// One VM's entry.
pub struct Vm {
    /// Its configuration.
    pub config: VmConfig,
    /// Its ledger.
    pub ledger: Mutex<Ledger>,
    /// Its guest link.
    pub link: Mutex<Link>,
    /// Notified after every change of the ledger.
    pub changed: Condvar,
    /// The agent's QMP connection to this VM's QEMU (QEMU takes one client
    /// per socket: the watcher, lock decisions and migrations share it),
    /// and, until the watcher takes it, its events from the first on.
    pub monitor: Mutex<Option<(Monitor, Option<Receiver<Event>>)>>,
    /// The migration blocker in this VM's QEMU. Held across the QMP calls
    /// that change it, so they never interleave.
    pub blocker: Mutex<crate::blocker::Blocker>,
    /// The blocker's node as its last change left it, for `status`, which
    /// must not wait behind a QMP call that holds `blocker`.
    pub shown_blocker: Mutex<Option<String>>,
    /// Tells the libvirt metadata publisher whether the VM is blocked.
    pub published: Mutex<Option<std::sync::mpsc::Sender<bool>>>,
    /// Paces the blocker installs its guest's locks cause.
    pub installs: Mutex<crate::bucket::Bucket>,
}

impl Vm {
    /// Why the VM is locked now (each hold's reason and label), for
    /// messages and the audit log.
    pub fn reasons_now(&self) -> Vec<String> {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reasons(now_ms())
    }

    /// The blocker's node, without waiting for QEMU (see `shown_blocker`).
    pub fn blocker_node(&self) -> Option<String> {
        self.shown_blocker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Says whether the VM is blocked to whoever follows it (the libvirt
    /// metadata publisher).
    pub fn blocked(&self, blocked: bool) {
        if let Some(tx) = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(blocked);
        }
    }
}

/// The agent.
pub struct Agent {
    /// VMs by name.
    pub vms: BTreeMap<String, Arc<Vm>>,
    /// The audit log.
    pub audit: Audit,
    /// Random per agent start; guests learn it in `Welcome`.
    pub epoch: u64,
    /// The per-guest rate limit.
    pub limits: Limits,
    /// What the migration planner may choose.
    pub planner: crate::planner::Options,
    /// How the lock is enforced in QEMU.
    pub blocker: BlockerOptions,
    /// The deadlines of QMP steps.
    pub qmp: QmpOptions,
    /// Pauses before a switchover that nobody owns.
    pub switchover: SwitchoverOptions,
    /// The state's journal.
    pub journal: crate::journal::Journal,
    /// Syncs the audit log and the journal in batches.
    pub commit: Arc<crate::commit::Committer>,
    /// The state directory, locked (`flock`) for as long as the agent runs.
    _instance: std::fs::File,
    /// Records (audit or journal) that could not be written.
    pub unrecorded: std::sync::atomic::AtomicU64,
}

/// Takes the exclusive lock on the directory of `state`, or says which
/// agent holds it. The kernel drops it when the process ends, however.
fn lock_instance(state: &Path) -> Result<std::fs::File> {
    let dir = state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let f = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(f),
        Err(rustix::io::Errno::WOULDBLOCK) => anyhow::bail!(
            "another miglockd is running on the state directory {}: not starting \
             (its control socket and journal are left alone)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("locking {}", dir.display())),
    }
}

/// Brings a saved ledger onto this boot's lease clock: an older agent's
/// wall-clock times are moved onto it, another boot's holds forgotten.
fn on_this_boot(audit: &Audit, vm: &str, l: &mut Ledger) {
    let boot = crate::clock::boot();
    match l.host_boot.clone().as_deref() {
        Some(b) if b == boot => {}
        None => {
            let by = crate::audit::wall_ms().saturating_sub(now_ms());
            l.shift_back(by);
            audit.record(
                vm,
                "state-clock",
                serde_json::json!({"from": "wall clock", "shifted_ms": by}),
            );
        }
        Some(other) => {
            let holds = l.holds.len();
            l.forget_boot();
            audit.record(
                vm,
                "state-clock",
                serde_json::json!({"from": "another host boot", "boot": other, "holds_forgotten": holds}),
            );
        }
    }
    l.host_boot = Some(boot.to_string());
}

fn epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::audit::wall_ms());
    h.finish()
}

impl Agent {
    /// Builds the agent, restoring ledgers from the state file.
    pub fn new(config: &Config) -> Result<Agent> {
        let commit = Arc::new(crate::commit::Committer::new(
            std::time::Duration::from_millis(config.storage.commit_ms),
        ));
        // Before anything is touched: a second agent must neither truncate
        // the first one's journal nor unlink its control socket.
        let instance = lock_instance(&config.state)?;
        let (journal, mut saved) = crate::journal::Journal::open(&config.state, commit.clone())?;
        let audit = Audit::open(&config.audit, commit.clone())?;
        for problem in &journal.problems {
            tracing::error!("state journal: {problem}");
            audit.record(
                "-",
                "journal-repaired",
                serde_json::json!({ "problem": problem }),
            );
        }
        let mut vms = BTreeMap::new();
        for vc in &config.vms {
            // A restored ledger keeps its holds, and its policy (changes
            // made with `miglockctl policy`) while the file says what it
            // said when the agent last started; edited since, the file wins.
            let mut ledger = match saved.remove(&vc.name) {
                Some(mut l) => {
                    on_this_boot(&audit, &vc.name, &mut l);
                    if l.config_policy.as_ref() != Some(&vc.policy) && l.policy != vc.policy {
                        audit.record(
                            &vc.name,
                            "policy-restored",
                            serde_json::json!({"source": "config", "policy": vc.policy,
                                "replaced": l.policy}),
                        );
                        l.policy = vc.policy.clone();
                    } else if l.policy != vc.policy {
                        audit.record(
                            &vc.name,
                            "policy-restored",
                            serde_json::json!({"source": "runtime", "policy": l.policy,
                                "config": vc.policy}),
                        );
                    }
                    l
                }
                None => Ledger::new(vc.policy.clone()),
            };
            ledger.config_policy = Some(vc.policy.clone());
            ledger.host_boot = Some(crate::clock::boot().to_string());
            let vm = Vm {
                config: vc.clone(),
                ledger: Mutex::new(ledger),
                link: Mutex::new(Link::default()),
                changed: Condvar::new(),
                monitor: Mutex::new(None),
                blocker: Mutex::new(crate::blocker::Blocker::default()),
                shown_blocker: Mutex::new(None),
                published: Mutex::new(None),
                installs: Mutex::new(crate::bucket::Bucket::new(
                    config.limits.blocker_rate,
                    config.limits.blocker_burst,
                )),
            };
            vms.insert(vc.name.clone(), Arc::new(vm));
        }
        // The policies as resolved are the state the next start compares
        // with (VMs no longer configured keep theirs, in case they return).
        journal.compact(|| {
            let mut all = std::mem::take(&mut saved);
            all.extend(vms.iter().map(|(n, vm): (&String, &Arc<Vm>)| {
                let l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
                (n.clone(), l.clone())
            }));
            all
        })?;
        Ok(Agent {
            vms,
            audit,
            epoch: epoch(),
            limits: config.limits,
            planner: config.planner,
            blocker: config.blocker,
            qmp: config.qmp,
            switchover: config.switchover,
            journal,
            commit,
            _instance: instance,
            unrecorded: Default::default(),
        })
    }

    /// The agent's QMP connection to `vm`'s QEMU, dialled if there is none
    /// or the last one closed (a new QEMU process). A dial takes at most
    /// `[qmp] connect_timeout_ms`; it holds `vm.monitor` meanwhile (two
    /// dials at once would be two clients, and QEMU serves one), a lock
    /// `status` never takes.
    pub fn monitor(&self, vm: &Vm) -> Result<Monitor, String> {
        let Some(path) = vm.config.qmp.as_ref() else {
            return Err(format!(
                "VM '{}' has no QMP socket configured",
                vm.config.name
            ));
        };
        let mut m = vm.monitor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((mon, _)) = m.as_ref().filter(|(m, _)| m.closed().is_none()) {
            return Ok(mon.clone());
        }
        let (mon, events) = Monitor::dial(path, self.qmp.timeouts())
            .map_err(|e| format!("QMP {}: {e}", path.display()))?;
        *m = Some((mon.clone(), Some(events)));
        Ok(mon)
    }

    /// The events of `vm`'s current QMP connection from its first on, once
    /// (for the watcher); `None` if already taken.
    pub fn take_events(&self, vm: &Vm) -> Option<Receiver<Event>> {
        vm.monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(|(_, events)| events.take())
    }

    /// The VM called `name`.
    pub fn vm(&self, name: &str) -> Option<&Arc<Vm>> {
        self.vms.get(name)
    }

    /// Runs `f` on `vm`'s ledger and journals it if `f` says it changed
    /// (before anyone can act on the change). A change the journal cannot
    /// take stands all the same (releases, the admin's orders): it is
    /// logged and counted; decisions use [`Agent::try_update`].
    pub fn update<R>(&self, vm: &Vm, f: impl FnOnce(&mut Ledger, u64) -> (R, bool)) -> R {
        match self.changes(vm, f, false) {
            Ok(r) | Err((r, _)) => r,
        }
    }

    /// [`Agent::update`], undone if the journal cannot record it: a grant
    /// that is not on record must not stand.
    pub fn try_update<R>(
        &self,
        vm: &Vm,
        f: impl FnOnce(&mut Ledger, u64) -> (R, bool),
    ) -> Result<R, std::io::Error> {
        self.changes(vm, f, true).map_err(|(_, e)| e)
    }

    fn changes<R>(
        &self,
        vm: &Vm,
        f: impl FnOnce(&mut Ledger, u64) -> (R, bool),
        undo: bool,
    ) -> Result<R, (R, std::io::Error)> {
        let now = now_ms();
        let (r, changed) = {
            let mut l = vm.ledger.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded (holds and usage spans are): the change is found by
            // comparing, so no caller has to say what it changed.
            let before = l.clone();
            let (r, changed) = f(&mut l, now);
            let change = crate::change::Change::between(&before, &l);
            if changed && !change.is_empty() {
                if let Err(e) = self.journal.append(&vm.config.name, &change) {
                    self.unrecorded();
                    if undo {
                        *l = before;
                        return Err((r, e));
                    }
                }
            }
            (r, changed)
        };
        if changed {
            vm.changed.notify_all();
        }
        Ok(r)
    }

    /// Counts a record that could not be written (status shows it).
    pub fn unrecorded(&self) {
        self.unrecorded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every VM's ledger as it is now.
    pub fn ledgers(&self) -> store::Ledgers {
        self.vms
            .iter()
            .map(|(n, vm)| {
                (
                    n.clone(),
                    vm.ledger.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                )
            })
            .collect()
    }

    /// The committer's batch: everything written is synced, and a long
    /// journal folded into the snapshot.
    pub fn sync_batch(&self) {
        self.audit.sync();
        self.journal.sync();
        if self.journal.long() {
            if let Err(e) = self.journal.compact(|| self.ledgers()) {
                tracing::error!("cannot fold the state journal: {e:#}");
            }
        }
    }

    /// The `Welcome` this agent sends `vm`'s guest.
    pub fn welcome(&self, vm: &Vm) -> Message<'static> {
        let max_lease_ms = vm
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .policy
            .max_lease_ms;
        Message::Welcome {
            epoch: self.epoch,
            features: wire::FEATURE_SHORT
                | if self.limits.held {
                    wire::FEATURE_HELD
                } else {
                    0
                },
            max_lease_ms,
        }
    }

    /// Announces the agent to `vm`'s guest (`Welcome`, unsolicited): the
    /// guest answers with its whole state. False if not connected.
    pub fn announce(&self, vm: &Vm) -> bool {
        let welcome = self.welcome(vm);
        let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
        // The answer is a resync, recorded even if nothing changed.
        link.synced = false;
        link.send(&welcome, 0)
    }

    /// Sends `vm`'s guest a notice; false if it is not connected.
    pub fn notify(&self, vm: &Vm, n: Notice) -> bool {
        vm.link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(&Message::Notice(n), 0)
    }

    /// Sends `vm`'s guest a notice it must not miss: if it is not
    /// connected, the notice is sent once it is (see [`Agent::pay_owed`]).
    /// True if it went out now.
    pub fn notify_or_owe(&self, vm: &Vm, n: Notice) -> bool {
        let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
        if link.send(&Message::Notice(n), 0) {
            return true;
        }
        if link.owed.len() == OWED {
            link.owed.remove(0);
        }
        link.owed.push(n);
        false
    }

    /// Sends `vm`'s guest the notices it missed while not connected.
    pub fn pay_owed(&self, vm: &Vm) {
        let mut link = vm.link.lock().unwrap_or_else(|e| e.into_inner());
        let owed = std::mem::take(&mut link.owed);
        for n in owed {
            link.send(&Message::Notice(n), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        let c: Config = toml::from_str(text)?;
        c.check()?;
        Ok(c)
    }

    /// The journal on a full disk: a decision (`try_update`) is undone and
    /// fails; a release (`update`) stands, counted.
    #[test]
    fn a_change_the_journal_cannot_take_is_undone_for_decisions() {
        let dir = std::env::temp_dir().join(format!("miglockd-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.display();
        let config = parse(&format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             [[vm]]\nname = \"vm\"\ndoorbell = \"{d}/vm.sock\"\n"
        ))
        .unwrap();
        let agent = Agent::new(&config).unwrap();
        let vm = agent.vm("vm").unwrap().clone();
        agent
            .try_update(&vm, |l, now| (l.lock(1, 1, "a", 1000, now), true))
            .unwrap();
        agent.journal.fill_disk();
        let r = agent.try_update(&vm, |l, now| (l.lock(2, 1, "b", 1000, now), true));
        assert!(r.is_err());
        let holds: Vec<u32> = vm.ledger.lock().unwrap().holds.keys().copied().collect();
        assert_eq!(holds, [1], "the unrecorded grant stood");
        agent.update(&vm, |l, now| (l.unlock(1, now), true));
        assert!(vm.ledger.lock().unwrap().holds.is_empty());
        assert_eq!(
            agent.unrecorded.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_configuration_means_the_default_paths() {
        let c = parse("").unwrap();
        assert_eq!(c.state, Path::new("/var/lib/miglock/state.json"));
        assert_eq!(c.audit, Path::new("/var/log/miglock/audit.jsonl"));
        assert_eq!(c.control, Path::new("/run/miglock/control.sock"));
        assert!(c.vms.is_empty());
    }

    #[test]
    fn names_and_sockets_are_unique() {
        let vm =
            |name: &str, bell: &str| format!("[[vm]]\nname = \"{name}\"\ndoorbell = \"{bell}\"\n");
        assert!(parse(&(vm("a", "/a") + &vm("b", "/b"))).is_ok());
        let e = parse(&(vm("a", "/a") + &vm("a", "/b"))).unwrap_err();
        assert!(e.to_string().contains("'a' twice"), "{e}");
        let e = parse(&(vm("a", "/a") + &vm("b", "/a"))).unwrap_err();
        assert!(e.to_string().contains("/a used twice"), "{e}");
        assert!(
            parse("[[vm]]\nname = \"x\"\n").is_err(),
            "a VM needs a doorbell"
        );
        assert!(parse("bogus = 1\n").is_err(), "unknown keys are errors");
    }
}
