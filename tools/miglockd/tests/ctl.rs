// SPDX-License-Identifier: GPL-2.0

//! miglockctl's exit status, each case against a running agent: scripted
//! guests on the doorbells and fake QEMU monitors whose migrations end as
//! each test needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

#[path = "support.rs"]
mod support;
use support::{fake_qemu, listen, wait_for, Agent, FakeQemu, Guest};

/// A VM on a fake QEMU whose migrations end with `ending`, version `v`.
fn vm(d: &Path, name: &str, ending: &'static str, v: (u32, u32)) -> String {
    let qmp = d.join(format!("{name}-qmp.sock"));
    fake_qemu(
        &qmp,
        FakeQemu {
            version: v,
            ending,
            no_snapshot: name == "nowp",
            ..FakeQemu::default()
        },
    );
    format!(
        "[[vm]]\nname = \"{name}\"\ndoorbell = \"{}/{name}.sock\"\nqmp = \"{}\"\n",
        d.display(),
        qmp.display()
    )
}

fn setup() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("miglockd-ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let vms = [
        vm(&dir, "ok", "completed", (10, 0)),
        vm(&dir, "bad", "failed", (10, 0)),
        vm(&dir, "gone", "cancelled", (10, 0)),
        vm(&dir, "old", "completed", (7, 2)),
        vm(&dir, "slow", "active", (10, 0)),
        vm(&dir, "nowp", "completed", (10, 0)),
        vm(&dir, "split", "postcopy-paused", (10, 0)),
    ]
    .concat();
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n{vms}\
             [[vm]]\nname = \"held\"\ndoorbell = \"{d}/held.sock\"\n"
        ),
    )
    .unwrap();
    dir
}

fn ctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_miglockctl"))
        .arg("--socket")
        .arg(dir.join("control.sock"))
        .args(args)
        .output()
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_outcome_has_its_exit_status() {
    let dir = setup();
    let held = listen(&dir.join("held.sock"));
    let _agent = Agent::start(&dir);
    let mut guest = Guest::accept(&held);
    let within = Duration::from_secs(10);
    wait_for(within, "the control socket", || {
        dir.join("control.sock").exists()
    });

    // check: 0 may migrate, 1 locked, 2 unknown VM.
    assert_eq!(code(&ctl(&dir, &["check", "held"])), 0);
    assert!(guest.lock(1, "nightly backup", 60_000).0);
    let locked = ctl(&dir, &["check", "held"]);
    assert_eq!(code(&locked), 1, "{locked:?}");
    assert!(stderr(&locked).contains("nightly backup"), "{locked:?}");
    let json = ctl(&dir, &["check", "held", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["may_migrate"], false, "{v}");
    assert_eq!(code(&ctl(&dir, &["check", "nosuch"])), 2);

    // migrate: 0 done, 1 refused (locked, or fenced on this QEMU), 3 failed,
    // 4 cancelled, 2 unknown VM.
    let to = ["--to", "tcp:127.0.0.1:1"];
    let done = ctl(&dir, &[&["migrate", "ok"][..], &to].concat());
    assert_eq!(code(&done), 0, "{done:?}");
    assert!(stderr(&done).contains("MiB remaining"), "{done:?}");
    let policy = ctl(&dir, &["policy", "ok", "--migration", "false"]);
    assert_eq!(code(&policy), 0, "{policy:?}");
    let refused = ctl(&dir, &[&["migrate", "ok"][..], &to].concat());
    assert_eq!(code(&refused), 1, "{refused:?}");
    assert!(stderr(&refused).contains("migration = no"), "{refused:?}");
    let fenced = ctl(&dir, &[&["migrate", "old"][..], &to].concat());
    assert_eq!(code(&fenced), 1, "{fenced:?}");
    let failed = ctl(&dir, &[&["migrate", "bad"][..], &to].concat());
    assert_eq!(code(&failed), 3, "{failed:?}");
    let cancelled = ctl(&dir, &[&["migrate", "gone"][..], &to].concat());
    assert_eq!(code(&cancelled), 4, "{cancelled:?}");
    assert!(stderr(&cancelled).contains("cancelled"), "{cancelled:?}");
    // Post-copy that paused (the destination died) fails, not hangs.
    let split = ctl(
        &dir,
        &[&["migrate", "split", "--mode", "postcopy"][..], &to].concat(),
    );
    assert_eq!(code(&split), 3, "{split:?}");
    assert!(stderr(&split).contains("migrate-recover"), "{split:?}");
    // So does the destination's side of it.
    let split_rx = ctl(
        &dir,
        &[
            "incoming",
            "split",
            "--listen",
            "tcp:127.0.0.1:0",
            "--postcopy",
        ],
    );
    assert_eq!(code(&split_rx), 3, "{split_rx:?}");
    assert!(
        stderr(&split_rx).contains("migrate-recover"),
        "{split_rx:?}"
    );
    assert_eq!(
        code(&ctl(&dir, &[&["migrate", "nosuch"][..], &to].concat())),
        2
    );

    // checkpoint: 1 refused beside a migration (and a migration beside a
    // checkpoint, in the checkpoint-locked scenario), 3 where the host
    // kernel cannot write-protect (with why), 2 unknown VM.
    let migrating = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            ctl(
                &dir,
                &[
                    "migrate",
                    "slow",
                    "--to",
                    "tcp:127.0.0.1:1",
                    "--timeout",
                    "3s",
                ],
            )
        })
    };
    wait_for(within, "the slow migration to start", || {
        std::fs::read_to_string(dir.join("audit.jsonl")).is_ok_and(|a| {
            a.lines()
                .any(|l| l.contains(r#""event":"migrate-start""#) && l.contains(r#""vm":"slow""#))
        })
    });
    let beside = ctl(&dir, &["checkpoint", "slow", "--to", "/tmp/x.img"]);
    assert_eq!(code(&beside), 1, "{beside:?}");
    assert!(stderr(&beside).contains("is migrating"), "{beside:?}");
    let slow = migrating.join().unwrap();
    assert_eq!(code(&slow), 4, "{slow:?}");
    let nowp = ctl(&dir, &["checkpoint", "nowp", "--to", "/tmp/x.img"]);
    assert_eq!(code(&nowp), 3, "{nowp:?}");
    assert!(
        stderr(&nowp).contains("userfaultfd write-protection"),
        "{nowp:?}"
    );
    assert_eq!(
        code(&ctl(&dir, &["checkpoint", "nosuch", "--to", "/tmp/x.img"])),
        2
    );

    // Usage errors are 64, not clap's 2 (which would read "unreachable");
    // --help is 0.
    let force = ctl(&dir, &[&["migrate", "bad", "--force"][..], &to].concat());
    assert_eq!(code(&force), 64, "{force:?}");
    assert_eq!(code(&ctl(&dir, &["migrate", "bad"])), 64);
    assert_eq!(code(&ctl(&dir, &["--help"])), 0);

    // No agent there: 2.
    let gone = Command::new(env!("CARGO_BIN_EXE_miglockctl"))
        .args(["--socket", "/nonexistent/control.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(code(&gone), 2, "{gone:?}");
    assert!(stderr(&gone).contains("/nonexistent/control.sock"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `max-postcopy-bandwidth` values a fake QEMU was set to.
fn postcopy_caps(sent: &support::Commands) -> Vec<serde_json::Value> {
    sent.lock()
        .unwrap()
        .iter()
        .filter(|c| c["execute"] == "migrate-set-parameters")
        .filter_map(|c| c["arguments"].get("max-postcopy-bandwidth").cloned())
        .collect()
}

#[test]
fn hybrid_post_copy_phase_is_uncapped_only_where_proven() {
    let dir = std::env::temp_dir().join(format!("miglockd-ctl-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let qemu = |name: &str, v: (u32, u32)| {
        let qmp = dir.join(format!("{name}-qmp.sock"));
        let sent = fake_qemu(
            &qmp,
            FakeQemu {
                version: v,
                ..FakeQemu::default()
            },
        );
        let conf = format!(
            "[[vm]]\nname = \"{name}\"\ndoorbell = \"{d}/{name}.sock\"\nqmp = \"{}\"\n",
            qmp.display()
        );
        (sent, conf)
    };
    let (new, new_conf) = qemu("new", (10, 0));
    let (old, old_conf) = qemu("old", (7, 2));
    // QEMU 7.2 under TCG is fenced from the hybrid: lifted here to see
    // what the hybrid would get there.
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n\
             [planner]\nallow_fenced = true\n{new_conf}{old_conf}"
        ),
    )
    .unwrap();
    let _agent = Agent::start(&dir);
    wait_for(Duration::from_secs(10), "the control socket", || {
        dir.join("control.sock").exists()
    });
    let migrate = |vm: &str, extra: &[&str]| {
        let out = ctl(
            &dir,
            &[
                &[
                    "migrate",
                    vm,
                    "--to",
                    "tcp:127.0.0.1:1",
                    "--bandwidth",
                    "32M",
                ][..],
                extra,
            ]
            .concat(),
        );
        assert_eq!(code(&out), 0, "{out:?}");
    };
    let link = serde_json::json!(32u64 << 20);

    // QEMU 10.0: the hybrid's post-copy phase is uncapped (0, QEMU's "no
    // limit", set explicitly); post-copy from the start keeps the link.
    migrate("new", &["--mode", "hybrid"]);
    assert_eq!(postcopy_caps(&new), [serde_json::json!(0)]);
    migrate("new", &["--mode", "postcopy"]);
    assert_eq!(postcopy_caps(&new)[1], link);
    // An asked cap holds on any QEMU.
    migrate("new", &["--mode", "hybrid", "--postcopy-bandwidth", "8M"]);
    assert_eq!(postcopy_caps(&new)[2..], [serde_json::json!(8u64 << 20)]);
    // Pre-copy has no post-copy phase.
    migrate("new", &["--mode", "precopy"]);
    assert_eq!(postcopy_caps(&new).len(), 3);

    // QEMU 7.2: capped at the link, where it verified; uncapped only when
    // asked (0, to reproduce the corruption).
    migrate("old", &["--mode", "hybrid"]);
    assert_eq!(postcopy_caps(&old), [link]);
    migrate("old", &["--mode", "hybrid", "--postcopy-bandwidth", "0"]);
    assert_eq!(postcopy_caps(&old)[1..], [serde_json::json!(0)]);

    // postcopy-preempt only when asked, and where QEMU supports it; a
    // QEMU that does not is refused, not run without it.
    let preempt = |sent: &support::Commands| {
        sent.lock()
            .unwrap()
            .iter()
            .filter(|c| c["execute"] == "migrate-set-capabilities")
            .map(|c| {
                c["arguments"]["capabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["capability"] == "postcopy-preempt")
                    .map(|c| c["state"] == true)
            })
            .collect::<Vec<Option<bool>>>()
    };
    assert!(!preempt(&new).contains(&Some(true)));
    migrate("new", &["--mode", "postcopy", "--postcopy-preempt"]);
    assert_eq!(preempt(&new).last(), Some(&Some(true)));
    // QEMU keeps it: the next migration, whose destination did not ask for
    // it, turns it off.
    migrate("new", &["--mode", "postcopy"]);
    assert_eq!(preempt(&new).last(), Some(&Some(false)));
    let out = ctl(
        &dir,
        &[
            "migrate",
            "old",
            "--to",
            "tcp:127.0.0.1:1",
            "--mode",
            "postcopy",
            "--postcopy-preempt",
        ],
    );
    assert_eq!(code(&out), 1, "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs QEMU 8.0"),
        "{out:?}"
    );
    assert!(
        !preempt(&old).contains(&Some(true)),
        "refused, not run without it"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `auto-converge` states a fake QEMU was set to, in order.
fn auto_converge_states(sent: &support::Commands) -> Vec<serde_json::Value> {
    sent.lock()
        .unwrap()
        .iter()
        .filter(|c| c["execute"] == "migrate-set-capabilities")
        .flat_map(|c| {
            c["arguments"]["capabilities"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["capability"] == "auto-converge")
        .map(|c| c["state"].clone())
        .collect()
}

#[test]
fn auto_converge_is_set_when_asked_and_refused_where_qemu_lacks_it() {
    let dir = std::env::temp_dir().join(format!("miglockd-ctl-ac-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let qemu = |name: &str, no_auto_converge: bool| {
        let qmp = dir.join(format!("{name}-qmp.sock"));
        let sent = fake_qemu(
            &qmp,
            FakeQemu {
                no_auto_converge,
                ..FakeQemu::default()
            },
        );
        let conf = format!(
            "[[vm]]\nname = \"{name}\"\ndoorbell = \"{d}/{name}.sock\"\nqmp = \"{}\"\n",
            qmp.display()
        );
        (sent, conf)
    };
    let (has, has_conf) = qemu("has", false);
    let (lacks, lacks_conf) = qemu("lacks", true);
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "state = \"{d}/state.json\"\naudit = \"{d}/audit.jsonl\"\n\
             control = \"{d}/control.sock\"\n{has_conf}{lacks_conf}"
        ),
    )
    .unwrap();
    let _agent = Agent::start(&dir);
    wait_for(Duration::from_secs(10), "the control socket", || {
        dir.join("control.sock").exists()
    });
    let migrate = |vm: &str, extra: &[&str]| {
        ctl(
            &dir,
            &[&["migrate", vm, "--to", "tcp:127.0.0.1:1"][..], extra].concat(),
        )
    };
    let (on, off) = (serde_json::json!(true), serde_json::json!(false));

    // Asked: set on before the migration starts, which completes.
    let out = migrate("has", &["--auto-converge"]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(auto_converge_states(&has), std::slice::from_ref(&on));
    let started = has
        .lock()
        .unwrap()
        .iter()
        .position(|c| c["execute"] == "migrate")
        .unwrap();
    let set = has
        .lock()
        .unwrap()
        .iter()
        .position(|c| c["execute"] == "migrate-set-capabilities")
        .unwrap();
    assert!(
        set < started,
        "auto-converge set after the migration started"
    );
    // Not asked: set off, since QEMU keeps it from the last migration.
    let out = migrate("has", &[]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(auto_converge_states(&has), [on, off]);

    // A QEMU without it: refused before anything is set or started, and
    // it says why.
    let out = migrate("lacks", &["--auto-converge"]);
    assert_eq!(code(&out), 3, "{out:?}");
    assert!(
        stderr(&out).contains("does not offer the auto-converge"),
        "{out:?}"
    );
    assert!(!lacks
        .lock()
        .unwrap()
        .iter()
        .any(|c| c["execute"] == "migrate" || c["execute"] == "migrate-set-parameters"));
    // Not asked there: the migration runs, and the capability is left alone.
    let out = migrate("lacks", &[]);
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(auto_converge_states(&lacks).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
