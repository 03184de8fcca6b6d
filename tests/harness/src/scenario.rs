// SPDX-License-Identifier: GPL-2.0

//! The scenarios: what each boots, runs in the guest, and checks.

use crate::agentdemo::Story;
use crate::artifacts::Variant;
use crate::ktap;
use crate::stubhost;
use crate::vm::{Accel, Doorbell, Echo, Vm, VmSpec, Wait};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a scenario runs.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// One guest runs its script to the end.
    Guest,
    /// One guest with the doorbell UART served by the stub host.
    StubHost,
    /// The same, but the stub host starts only when the guest asks for it.
    LateStubHost,
    /// The round-trip benchmark (not part of a plain `run`).
    Bench,
    /// One guest like `Guest`, but a benchmark (not part of a plain `run`).
    GuestBench,
    /// Two QEMUs and two real agents, telling one story.
    Agents(crate::agentdemo::Story),
    /// A benchmark of hints as advice (not part of a plain `run`).
    AdviceBench(crate::advice::Bench),
    /// Chains of migrations after each of which the guest must prove it
    /// survived (see `survival.rs`).
    Survival(fn() -> crate::survival::Plan),
    /// The lock against migrations another QMP client starts.
    Blocker(Blocker),
    /// Two real libvirt daemons and `virsh migrate`.
    Libvirt,
    /// A lock call's result against the host's holds (see `locking.rs`).
    Locking(crate::locking::Which),
    /// Live checkpoints and restores through the agents.
    Checkpoint(crate::checkpoint::Which),
    /// The agent stops while its migration runs; no pause is left.
    RestartPaused,
}

/// Which `blocker-*` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// Refused while locked, completed after the unlock.
    AnyInitiator,
    /// Random locks against random migrations.
    Race,
    /// A guest's report of a hold it was never granted, under a policy
    /// that forbids guest locks.
    StateBypass,
}

/// Why a scenario failed; selftests expect a particular one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// The deadline passed.
    Timeout,
    /// `insmod` failed in the guest.
    ModuleLoad,
    /// A KUnit case failed or is missing.
    Kunit,
    /// The kernel logged an oops, BUG or warning.
    Kernel,
    /// The guest script failed or the guest stopped early.
    Guest,
    /// Migration failed or the guest did not continue on the destination.
    Migration,
    /// The host side saw something other than it must have.
    Host,
    /// The harness itself could not run the scenario.
    Harness,
}

/// A scenario's failure: which kind, and a message that says where to look.
#[derive(Debug)]
pub struct Failure {
    /// Kind.
    pub kind: FailKind,
    /// Human-readable reason.
    pub msg: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: FailKind, msg: impl Into<String>) -> Self {
        Failure {
            kind,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.msg)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(FailKind::Harness, format!("{e:#}"))
    }
}

/// What a scenario must end with to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Success.
    Pass,
    /// This failure (harness selftests: prove a failure is caught).
    Fail(FailKind),
}

/// One scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (also the log directory).
    pub name: &'static str,
    /// One line on what it shows.
    pub about: &'static str,
    /// Guest script, `tests/scenarios/<guest>.sh`.
    pub guest: &'static str,
    /// Module build to boot with.
    pub variant: Variant,
    /// KUnit suite whose KTAP must be complete and passing.
    pub kunit: Option<&'static str>,
    /// Single guest or migration.
    pub kind: Kind,
    /// Deadline for the whole scenario under TCG.
    pub timeout: Duration,
    /// Expected outcome.
    pub expect: Expect,
    /// Guest memory.
    pub mem_mib: u32,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A scenario running `tests/scenarios/<script>.sh` in one guest with the
/// normal module, expected to pass within 90 s.
const fn guest(name: &'static str, script: &'static str, about: &'static str) -> Scenario {
    Scenario {
        name,
        about,
        guest: script,
        variant: Variant::Normal,
        kunit: None,
        kind: Kind::Guest,
        timeout: secs(90),
        expect: Expect::Pass,
        mem_mib: 256,
    }
}

/// Every scenario, in the order `run` runs them.
pub const SCENARIOS: &[Scenario] = &[
    guest("boot", "boot", "the test kernel boots the initramfs and runs a scenario"),
    guest("module-load", "module", "miglock.ko loads, is live, and unloads cleanly"),
    Scenario {
        kunit: Some("miglock"),
        ..guest("kunit", "kunit", "the module's KUnit suite runs at insmod and every case passes")
    },
    Scenario {
        kunit: Some("miglock"),
        ..guest("demo", "demo", "the demo's first half: load the module and show it working")
    },
    Scenario {
        kunit: Some("miglock"),
        ..guest("mld-holders", "mld-holders", "/dev/mld: holders in two processes, exit without unlock, SIGKILL, close releases")
    },
    guest("mld-leases", "mld-leases", "/dev/mld: leases expire (and the holder is told), renew extends, detached holds"),
    guest("mld-badinput", "mld-badinput", "/dev/mld: ENOTTY, EFAULT, EINVAL, EPERM for bad calls, and none changes state"),
    guest("mld-poll", "mld-poll", "/dev/mld: poll() wakes a holder when its lease ends, and only then"),
    guest("mld-syscall", "mld-syscall", "set_migration_flag(2): ENOSYS without the module; lock, unlock, ret, EINVAL/EFAULT/EPERM"),
    guest("mld-params", "mld-params", "module parameters (static lock, max lease, mode, lock group) and /sys/kernel/miglock"),
    Scenario {
        timeout: secs(180),
        ..guest("mld-concurrency", "mld-concurrency", "/dev/mld: 8 threads x 20000 random lock/unlock/renew/close rounds on 2 vCPUs end unlocked")
    },
    Scenario {
        timeout: secs(180),
        ..guest("mld-fuzz", "mld-fuzz", "/dev/mld: 40000 random ioctls (commands, sizes, pointers): no oops, consistent state")
    },
    guest("mld-cli", "mld-cli", "miglock status/lock/unlock/run and set_migration_flag end to end"),
    guest("mld-unload", "mld-unload", "rmmod is refused while a file holds the lock; a detached hold is released at unload"),
    Scenario {
        kind: Kind::Locking(crate::locking::Which::Interrupted),
        timeout: secs(300),
        ..guest(
            "mld-interrupted-lock",
            "mld-interrupted-lock",
            "1000 locks against a slow host, SIGALRM (no SA_RESTART) mid-request: EINTR and no hold, never 0 without a grant; guest holds = host holds",
        )
    },
    Scenario {
        kind: Kind::Locking(crate::locking::Which::Storm),
        timeout: secs(300),
        ..guest(
            "mld-request-storm",
            "mld-request-storm",
            "64 threads lock and unlock at once against miglockd: every call gets its own answer, none lost or swapped",
        )
    },
    Scenario {
        kind: Kind::Locking(crate::locking::Which::FlagRelease),
        timeout: secs(180),
        ..guest(
            "mld-flag-release",
            "mld-flag-release",
            "two holders, one lets go with SET_MIGRATION_FLAG 1: miglockd's holds match the guest's after each step",
        )
    },
    Scenario {
        kind: Kind::Locking(crate::locking::Which::FastPaths),
        timeout: secs(180),
        ..guest(
            "mld-fast-paths",
            "mld-fast-paths",
            "locks without a round trip: a grant taken back from its linger, a second holder inside it; no request sent, and miglockd's holds match the guest's after each step",
        )
    },
    guest(
        "tracer-wset",
        "tracer-wset",
        "miglock-tracer (idle page tracking + soft-dirty) finds a known working set with precision and recall >= 0.9",
    ),
    guest("samples", "samples", "the C and Rust samples lock around a critical section as applications would"),
    Scenario {
        kind: Kind::StubHost,
        ..guest(
            "shim-stub-host",
            "shim-stub-host",
            "the host channel over the doorbell UART: hello, granted and refused locks, lease cap, a migration notice wakes poll",
        )
    },
    Scenario {
        kind: Kind::StubHost,
        ..guest(
            "shim-lost-irq",
            "shim-lost-irq",
            "a lost interrupt: the module listens on a line nothing raises; its watchdog reads what the host sent, the lock is still the host's",
        )
    },
    Scenario {
        kind: Kind::LateStubHost,
        ..guest(
            "shim-late-host",
            "shim-late-host",
            "no host answering: local decisions (or ETIMEDOUT with host_required); the host appears, the guest resyncs",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::Demo),
        timeout: secs(240),
        ..guest(
            "agent-migrate",
            "agent-demo",
            "real miglockd x2: a locked VM's migration is refused with its reason; after unlock it migrates; the destination agent takes over",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::Notice),
        timeout: secs(240),
        ..guest("agent-notice", "agent-notice", "migrate --wait-unlock: the notice wakes the application's poll(), it unlocks, the VM migrates")
    },
    Scenario {
        kind: Kind::Agents(Story::Notices),
        timeout: secs(300),
        ..guest(
            "mld-notices",
            "mld-notices",
            "a locked and an unlocked application both hear a pending migration with its deadline, its cancellation and (on the destination) the arrival; miglock wait returns for each",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::Force),
        timeout: secs(240),
        ..guest("agent-force", "agent-force", "migrate --force needs a reason, overrides the lock, is audited; the guest's holds are void")
    },
    Scenario {
        kind: Kind::Agents(Story::Restart),
        timeout: secs(240),
        ..guest("agent-restart", "agent-restart", "the agent killed and restarted mid-lock keeps the VM locked")
    },
    Scenario {
        kind: Kind::Agents(Story::Relock),
        timeout: secs(240),
        ..guest("agent-relock", "agent-relock", "a guest lock during the copy cancels the migration; the VM keeps running here")
    },
    Scenario {
        kind: Kind::Agents(Story::Hostile),
        timeout: secs(240),
        ..guest(
            "agent-hostile",
            "agent-demo",
            "another VM floods the same agent with garbage and frames; this VM's lock and migration work as usual",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::Hints),
        timeout: secs(240),
        ..guest(
            "agent-hints",
            "agent-hints",
            "hint batches via /dev/mld reach miglockd intact; bad ones fail; a flood is cut to the rate, locks keep their round trip",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::Postcopy),
        timeout: secs(240),
        ..guest(
            "agent-postcopy",
            "agent-postcopy",
            "post-copy with miglockctl incoming on the destination agent: it tells the guest once the VM runs there",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::PostcopyRecover),
        timeout: secs(240),
        ..guest(
            "agent-postcopy-recover",
            "agent-postcopy",
            "post-copy paused mid-way (a broken link): migrate and incoming fail at once naming the recovery; recovered so, the guest arrives whole",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::PostcopyRunahead),
        timeout: secs(240),
        ..guest(
            "agent-postcopy-runahead",
            "agent-postcopy-runahead",
            "post-copy with postcopy-preempt, the destination agent reading the guest's hinted pages ahead in QEMU's memory; the workload verifies every page there",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::PlanWriteHeavy),
        timeout: secs(300),
        ..guest(
            "agent-plan-writeheavy",
            "plan-writeheavy",
            "write-heavy guest on a 32 MiB/s link: default pre-copy does not converge in 10 s; --mode auto plans post-copy and completes",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::PlanReadMostly),
        timeout: secs(240),
        ..guest(
            "agent-plan-readmostly",
            "plan-readmostly",
            "read-mostly guest: --mode auto keeps pre-copy, which completes",
        )
    },
    Scenario {
        kind: Kind::Checkpoint(crate::checkpoint::Which::Restore),
        timeout: secs(180),
        ..guest(
            "checkpoint-restore",
            "checkpoint-restore",
            "a writing guest is checkpointed live (background snapshot); a new QEMU restored from the image runs on from the checkpoint, its memory verifies, it ticks on",
        )
    },
    Scenario {
        kind: Kind::Checkpoint(crate::checkpoint::Which::Locked),
        timeout: secs(180),
        ..guest(
            "checkpoint-locked",
            "checkpoint-locked",
            "a locked VM is checkpointed (audited; refused if its policy says so); a migration and a second checkpoint meanwhile are refused; the lock is QEMU's blocker again after",
        )
    },
    Scenario {
        kind: Kind::Blocker(Blocker::AnyInitiator),
        timeout: secs(180),
        ..guest(
            "blocker-any-initiator",
            "blocker",
            "a guest lock is QEMU's migration blocker: another QMP client's migrate fails with the lock's reason; after the unlock it completes",
        )
    },
    Scenario {
        kind: Kind::Agents(Story::StuckGuest),
        timeout: secs(180),
        ..guest(
            "agent-stuck-guest",
            "agent-stuck-guest",
            "a guest that stops reading its UART while the host keeps sending: status, migrate --force of it and a lock in another VM each answer within 1 s; its link is dropped, audited",
        )
    },
    Scenario {
        kind: Kind::Blocker(Blocker::StateBypass),
        timeout: secs(180),
        ..guest(
            "agent-state-bypass",
            "agent-state-bypass",
            "guest_locks = false: a guest reporting a hold the agent never granted is refused (audited), and another QMP client's migrate completes",
        )
    },
    Scenario {
        kind: Kind::RestartPaused,
        timeout: secs(300),
        ..guest(
            "agent-restart-paused",
            "agent-restart-paused",
            "the agent stops (SIGTERM, SIGKILL) while miglockctl migrate runs: the restarted agent ends a pause at pre-switchover (continued unlocked, cancelled locked) and the guest runs",
        )
    },
    Scenario {
        kind: Kind::Blocker(Blocker::Race),
        timeout: secs(420),
        ..guest(
            "blocker-race",
            "blocker-race",
            "50 rounds: the guest locks at random, another QMP client migrates at random moments; no switchover while a lock is granted",
        )
    },
    Scenario {
        kind: Kind::Libvirt,
        timeout: secs(300),
        ..guest(
            "libvirt-migrate-locked",
            "libvirt-locked",
            "two real libvirtd: virsh migrate --live of the locked guest fails naming the lock; a lock mid-migration cancels it; unlocked, it migrates",
        )
    },
    Scenario {
        kind: Kind::Survival(crate::survival::short),
        timeout: secs(300),
        ..guest(
            "migrate-survival",
            "survive",
            "guests writing at about the link rate migrated back and forth (pre-copy, post-copy, auto, pre-copy then post-copy; with and without the module): each is alive and whole on arrival",
        )
    },
    Scenario {
        kind: Kind::Survival(crate::survival::qemu72),
        timeout: secs(240),
        ..guest(
            "migrate-survival-qemu72",
            "survive",
            "Debian 12's QEMU 7.2 (TCG), where safe: the agent refuses pre-copy and the hybrid (its dirty log loses pages), auto plans post-copy, post-copy guests arrive whole",
        )
    },
    Scenario {
        kind: Kind::Bench,
        timeout: secs(600),
        ..guest(
            "bench-rtt",
            "bench",
            "benchmark (make bench): lock round trip through miglockd vs qemu-ga guest-ping, p50/p99",
        )
    },
    Scenario {
        kind: Kind::AdviceBench(crate::advice::Bench::Plan),
        timeout: secs(2400),
        ..guest(
            "bench-plan",
            "plan-idle",
            "benchmark (make bench): --mode auto vs QEMU's default pre-copy on idle, read-mostly and write-heavy guests, and vs pre-copy with auto-converge, post-copy and pre-copy then post-copy on the write-heavy one, 5 runs each: time, downtime, bytes and the work the workload lost",
        )
    },
    Scenario {
        kind: Kind::AdviceBench(crate::advice::Bench::Checkpoint),
        timeout: secs(600),
        ..guest(
            "bench-checkpoint",
            "plan-idle",
            "benchmark (make bench): checkpoint-and-restore as a migration against pre-copy and post-copy, idle and write-heavy guests, one 32 MiB/s link",
        )
    },
    Scenario {
        kind: Kind::AdviceBench(crate::advice::Bench::Prefetch),
        timeout: secs(900),
        ..guest(
            "bench-prefetch",
            "prefetch-on",
            "benchmark (make bench): post-copy with and without the tracer's run-ahead prefetch, 5 runs each",
        )
    },
    Scenario {
        kind: Kind::AdviceBench(crate::advice::Bench::Hints),
        timeout: secs(2400),
        ..guest(
            "bench-hints",
            "hints",
            "benchmark (make bench): post-copy (with and without postcopy-preempt) and pre-copy then post-copy, each with and without the destination's run-ahead over the guest's hints, 5 runs each: the workload's own stall time, QEMU's block time and requests",
        )
    },
    Scenario {
        kind: Kind::GuestBench,
        mem_mib: 1024,
        timeout: secs(180),
        ..guest(
            "bench-tracer",
            "bench-tracer",
            "benchmark (make bench): the tracer's own CPU cost in a 1 GiB guest at 1 s (TCG)",
        )
    },
    Scenario {
        kind: Kind::AdviceBench(crate::advice::Bench::Validate),
        timeout: secs(2700),
        ..guest(
            "bench-validate",
            "validate-idle",
            "recorded workloads (make sim-report): real pre-copy and post-copy migrations (one not bound by the link, two of the hot-set workload without and with the run-ahead) and real checkpoints with the guest's trace, for migsim validate",
        )
    },
    Scenario {
        variant: Variant::KunitFail,
        kunit: Some("miglock"),
        expect: Expect::Fail(FailKind::Kunit),
        ..guest("selftest-kunit-failure", "kunit", "harness selftest: a module with a failing KUnit case fails the run")
    },
    Scenario {
        variant: Variant::InitFail,
        // With the doorbell and a host, so init fails after the channel
        // started: the teardown must leave no kernel warning.
        kind: Kind::StubHost,
        expect: Expect::Fail(FailKind::ModuleLoad),
        ..guest(
            "selftest-module-load-failure",
            "module",
            "harness selftest: a module whose init fails (after its host channel started) fails the run, and its teardown leaves no kernel warning",
        )
    },
    Scenario {
        timeout: secs(6),
        expect: Expect::Fail(FailKind::Timeout),
        ..guest("selftest-timeout", "hang", "harness selftest: a guest that hangs is stopped at the deadline and fails the run")
    },
];

/// What a scenario run needs.
pub struct Env<'a> {
    /// bzImage.
    pub kernel: &'a Path,
    /// initramfs for the scenario's variant.
    pub initrd: &'a Path,
    /// Its log directory (emptied first).
    pub dir: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// The QEMU binary every guest of the run starts with.
    pub qemu: &'a Path,
    /// Echo guest serial output.
    pub echo: Echo,
}

impl Env<'_> {
    /// Writes `v` as the scenario's `result.json`.
    pub fn write_result(&self, v: &serde_json::Value) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(v).map_err(anyhow::Error::from)?;
        std::fs::write(self.dir.join("result.json"), text)
            .map_err(|e| Failure::new(FailKind::Harness, format!("writing result.json: {e}")))
    }

    /// The spec for one guest of this scenario.
    pub fn spec(&self, name: &str, guest: &str, incoming: bool) -> VmSpec {
        self.spec_with(name, guest, incoming, Doorbell::None)
    }

    /// The spec for one guest, with the doorbell UART if `doorbell`.
    pub fn spec_with(&self, name: &str, guest: &str, incoming: bool, doorbell: Doorbell) -> VmSpec {
        VmSpec {
            name: name.into(),
            dir: self.dir.clone(),
            kernel: self.kernel.into(),
            initrd: self.initrd.into(),
            // init_on_free: memory the kernel frees (the initramfs image
            // once unpacked) is zero, which a migration sends for nothing.
            append: format!("console=ttyS0 panic=-1 init_on_free=1 mlscenario={guest}"),
            qemu: self.qemu.into(),
            mem_mib: 256,
            cpus: 2,
            accel: self.accel,
            incoming,
            doorbell,
            qga: false,
            echo: self.echo,
        }
    }
}

/// The result line the guest's /init prints last.
const RESULT_HEAD: &str = "@@MIGLOCK result";

/// The exit code in a whole result line.
fn result_rc(line: &str) -> Option<i32> {
    line.split(RESULT_HEAD).nth(1).and_then(result_tail)
}

/// The exit code in `" rc=N@@"`, the end of a result line.
fn result_tail(s: &str) -> Option<i32> {
    s.trim_start()
        .strip_prefix("rc=")?
        .trim_end()
        .strip_suffix("@@")?
        .parse()
        .ok()
}

/// Waits for the guest's result line and judges the whole serial log.
pub fn finish_guest(sc: &Scenario, vm: &mut Vm, deadline: Instant) -> Result<(), Failure> {
    let log = vm.serial_log.display().to_string();
    let rc = match vm.wait_line(deadline, |l| l.contains(RESULT_HEAD)) {
        Wait::Line(l) => match result_rc(&l) {
            Some(rc) => rc,
            // A kernel line printed into the middle of ours: its tail follows.
            None => match vm.wait_line(deadline, |l| result_tail(l).is_some()) {
                Wait::Line(t) => result_tail(&t).unwrap_or(-1),
                _ => -1,
            },
        },
        Wait::Timeout => {
            return Err(Failure::new(
                FailKind::Timeout,
                format!("timed out after {} s; log: {log}", sc.timeout.as_secs()),
            ))
        }
        Wait::Closed => -1,
    };
    let seen = vm.seen.join("\n");
    // A kernel problem first: a load that failed must also fail cleanly.
    if seen.contains("@@MIGLOCK kernel-problem@@") {
        return Err(Failure::new(
            FailKind::Kernel,
            format!("the guest kernel logged an oops/BUG/warning; log: {log}"),
        ));
    }
    if seen.contains("@@MIGLOCK fail=module-load@@") {
        return Err(Failure::new(
            FailKind::ModuleLoad,
            format!("miglock.ko failed to load in the guest; log: {log}"),
        ));
    }
    if let Some(suite) = sc.kunit {
        let suites = ktap::parse(&seen);
        let Some(s) = suites.iter().find(|s| s.name == suite) else {
            return Err(Failure::new(
                FailKind::Kunit,
                format!("KUnit suite '{suite}' never ran; log: {log}"),
            ));
        };
        let problems = s.problems();
        if !problems.is_empty() {
            return Err(Failure::new(
                FailKind::Kunit,
                format!("KUnit suite '{suite}': {}; log: {log}", problems.join("; ")),
            ));
        }
    }
    match rc {
        0 => Ok(()),
        -1 => Err(Failure::new(
            FailKind::Guest,
            format!("the guest stopped without reporting a result (panic?); log: {log}"),
        )),
        rc => Err(Failure::new(
            FailKind::Guest,
            format!("guest scenario script exited {rc}; log: {log}"),
        )),
    }
}

/// Runs `sc` once.
pub fn run(sc: &Scenario, env: &Env<'_>) -> Result<(), Failure> {
    let deadline = Instant::now() + sc.timeout;
    match sc.kind {
        Kind::Guest | Kind::GuestBench => {
            let mut spec = env.spec("vm", sc.guest, false);
            spec.mem_mib = sc.mem_mib;
            let mut vm = Vm::start(&spec)?;
            let r = finish_guest(sc, &mut vm, deadline);
            vm.quit()?;
            r
        }
        Kind::StubHost => run_stub_host(sc, env, deadline, false),
        Kind::LateStubHost => run_stub_host(sc, env, deadline, true),
        Kind::Agents(story) => crate::agentdemo::run(sc, env, deadline, story),
        Kind::Bench => crate::bench::run(sc, env, deadline),
        Kind::AdviceBench(b) => crate::advice::bench(sc, env, deadline, b),
        Kind::Survival(plan) => crate::survival::run(&plan(), env, &env.dir),
        Kind::Blocker(Blocker::AnyInitiator) => crate::blocker::any_initiator(sc, env, deadline),
        Kind::Blocker(Blocker::Race) => crate::blocker::race(env, deadline),
        Kind::Blocker(Blocker::StateBypass) => crate::blocker::state_bypass(sc, env, deadline),
        Kind::Libvirt => crate::libvirt::migrate_locked(env, deadline),
        Kind::Locking(which) => crate::locking::run(sc, env, deadline, which),
        Kind::Checkpoint(which) => crate::checkpoint::run(sc, env, deadline, which),
        Kind::RestartPaused => crate::paused::run(sc, env, deadline),
    }
}

/// The guest's host channel against the stub host: the guest script checks what the
/// guest sees, this checks what the host saw.
fn run_stub_host(
    sc: &Scenario,
    env: &Env<'_>,
    deadline: Instant,
    late: bool,
) -> Result<(), Failure> {
    let mut vm = Vm::start(&env.spec_with("vm", sc.guest, false, Doorbell::Harness))?;
    let log = env.dir.join("stub-host.log");
    if late {
        // Nobody answers until the guest asks for the host.
        if let Wait::Timeout | Wait::Closed =
            vm.wait_line(deadline, |l| l.contains("@@MIGLOCK want-host@@"))
        {
            return finish_guest(sc, &mut vm, deadline);
        }
    }
    let opts = stubhost::Options {
        announce: late,
        ..Default::default()
    };
    let stub = stubhost::attach(&mut vm, &log, opts)?;
    let r = finish_guest(sc, &mut vm, deadline);
    vm.quit()?;
    let rec = stub.finish()?;
    r?;
    let labels: Vec<&str> = rec.locks.iter().map(|(_, l)| l.as_str()).collect();
    let mut wrong = Vec::new();
    if rec.hellos == 0 && !late {
        wrong.push("no Hello".to_string());
    }
    if rec.states == 0 {
        wrong.push("no State".to_string());
    }
    let lost_irq = sc.name == "shim-lost-irq";
    if !late && !lost_irq && rec.renews == 0 {
        wrong.push("no Renew".to_string());
    }
    let wanted: &[&str] = if late {
        &["after-reconnect"]
    } else if lost_irq {
        &["through-the-watchdog"]
    } else {
        &["granted-by-host", "refuse-me", "await-notice"]
    };
    if late && !rec.state_holders.contains(&1) {
        wrong.push("no resync State with the hold taken while disconnected".to_string());
    }
    for want in wanted {
        if !labels.contains(want) {
            wrong.push(format!("no Lock labelled {want}"));
        }
    }
    let granted = rec
        .locks
        .iter()
        .find(|(_, l)| l == "granted-by-host")
        .map(|(h, _)| *h);
    if granted.is_some_and(|h| !rec.unlocks.contains(&h)) {
        wrong.push("no Unlock for the granted hold".to_string());
    }
    if rec.dropped != 0 {
        wrong.push(format!("{} damaged frames", rec.dropped));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            FailKind::Host,
            format!("{}; log: {}", wrong.join(", "), log.display()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{result_rc, result_tail};

    #[test]
    fn result_line_whole_and_split_by_a_kernel_line() {
        assert_eq!(result_rc("@@MIGLOCK result rc=0@@"), Some(0));
        assert_eq!(result_rc("@@MIGLOCK result rc=127@@\r"), Some(127));
        // Seen on a loaded host: a device probe's printk inside our line.
        let glued = "@@MIGLOCK resultinput: ImExPS/2 Generic Explorer Mouse as /devices/platform/i8042/serio1/input/input2";
        assert_eq!(result_rc(glued), None);
        assert_eq!(result_tail(" rc=0@@"), Some(0));
        assert_eq!(result_tail("rc=0"), None);
        assert_eq!(result_tail("input: rc=1@@"), None);
    }
}
