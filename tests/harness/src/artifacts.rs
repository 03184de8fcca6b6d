// SPDX-License-Identifier: GPL-2.0

//! What a guest boots with: the test kernel, module builds (the normal one
//! and harness-only fault-injection variants), static guest binaries from the
//! workspace, and the initramfs that carries them.

use crate::initramfs::{self, Cpio};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Module builds a scenario can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The module as shipped.
    Normal,
    /// Built with a deliberately failing KUnit case.
    KunitFail,
    /// Built so that its init fails.
    InitFail,
}

impl Variant {
    /// Value of `MIGLOCK_SELFTEST` for this build.
    fn selftest(self) -> Option<&'static str> {
        match self {
            Variant::Normal => None,
            Variant::KunitFail => Some("kunit_fail"),
            Variant::InitFail => Some("init_fail"),
        }
    }

    /// Short name for file names.
    pub fn name(self) -> &'static str {
        self.selftest().unwrap_or("normal")
    }
}

/// Where things are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The repository.
    pub top: PathBuf,
    /// The kernel build directory.
    pub kdir: PathBuf,
    /// Output: logs, initramfs images, variant builds.
    pub out: PathBuf,
}

impl Paths {
    /// The kernel image.
    pub fn bzimage(&self) -> PathBuf {
        self.kdir.join("arch/x86/boot/bzImage")
    }

    fn toolchain(&self) -> Result<Vec<String>> {
        let out = Command::new(self.top.join("scripts/toolchain.sh")).output()?;
        if !out.status.success() {
            bail!("scripts/toolchain.sh failed");
        }
        Ok(String::from_utf8(out.stdout)?
            .split_whitespace()
            .map(String::from)
            .collect())
    }
}

fn run(cmd: &mut Command, what: &str, log: &Path) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let mut text = out.stdout;
    text.extend_from_slice(&out.stderr);
    fs::write(log, &text)?;
    if !out.status.success() {
        let s = String::from_utf8_lossy(&text);
        let tail: Vec<&str> = s
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "{what} failed (log: {}):\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// Builds the module `variant` and returns the path of its `.ko`.
///
/// The normal build is the repository's own (`make module`); variants are
/// built from a copy of the sources, since kbuild builds in the source tree.
pub fn module(p: &Paths, variant: Variant) -> Result<PathBuf> {
    let logs = p.out.join("build");
    fs::create_dir_all(&logs)?;
    let log = logs.join(format!("module-{}.log", variant.name()));
    let Some(flag) = variant.selftest() else {
        run(
            Command::new("make")
                .arg("-C")
                .arg(&p.top)
                .arg(format!("KDIR={}", p.kdir.display()))
                .arg("module"),
            "module build (make module)",
            &log,
        )?;
        return Ok(p.top.join("rust/miglock.ko"));
    };
    let src = logs.join(format!("src-{flag}"));
    let _ = fs::remove_dir_all(&src);
    copy_tree(&p.top.join("rust"), &src.join("rust"), &|f| {
        (f.ends_with(".rs") || f.ends_with(".h") || f == "Kbuild") && f != "bindings_generated.rs"
    })?;
    // The shared crates the module compiles through `#[path]`.
    for krate in ["miglock-abi", "miglock-lockstate"] {
        let dir = format!("tools/{krate}/src");
        copy_tree(&p.top.join(&dir), &src.join(&dir), &|f| f.ends_with(".rs"))?;
    }
    fs::copy(p.top.join("Kbuild"), src.join("Kbuild"))?;
    run(
        Command::new("make")
            .arg("-C")
            .arg(&p.kdir)
            .args(p.toolchain()?)
            .arg(format!("M={}", src.display()))
            .arg(format!("MIGLOCK_SELFTEST={flag}"))
            .arg("modules"),
        &format!("module build with MIGLOCK_SELFTEST={flag}"),
        &log,
    )?;
    Ok(src.join("rust/miglock.ko"))
}

fn copy_tree(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to.join(&name), keep)?;
        } else if keep(&name) {
            fs::copy(e.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// Static guest binaries built from the workspace: (name in the guest, path).
pub fn guest_binaries(p: &Paths) -> Result<Vec<(String, PathBuf)>> {
    const BINS: &[(&str, &str)] = &[
        ("miglock-workload", "mlworkload"),
        ("miglock-cli", "miglock"),
        ("miglock-cli", "set_migration_flag"),
        ("miglock-guest-tests", "mldtest"),
        ("mld-critical", "mld-critical"),
        ("miglock-tracer", "miglock-tracer"),
        ("miglock-tracer", "mlwset"),
    ];
    let target_dir = p.top.join("tools/target/guest");
    let log = p.out.join("build/guest-binaries.log");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(p.top.join("tools"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Static glibc binaries: the initramfs has no dynamic loader. No
        // debug info: every byte of the initramfs is guest memory that
        // each migration copies (twice: the image and the unpacked files).
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=debuginfo",
        );
    for (pkg, bin) in BINS {
        cmd.args(["-p", pkg, "--bin", bin]);
    }
    run(&mut cmd, "static guest binaries (cargo build)", &log)?;
    let mut bins: Vec<_> = BINS
        .iter()
        .map(|(_, bin)| {
            let path = target_dir
                .join("x86_64-unknown-linux-gnu/release")
                .join(bin);
            (bin.to_string(), path)
        })
        .collect();
    // The C sample, built against the UAPI header as applications would.
    let c_sample = p.out.join("build/mld_critical_c");
    run(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-Wall", "-Werror", "-O2", "-static", "-I"])
            .arg(p.top.join("include/uapi"))
            .arg(p.top.join("samples/c/mld_critical.c"))
            .arg("-o")
            .arg(&c_sample),
        "C sample (cc -static)",
        &p.out.join("build/c-sample.log"),
    )?;
    bins.push(("mld_critical_c".into(), c_sample));
    Ok(bins)
}

/// Builds the initramfs for `variant` and returns its path.
pub fn initramfs(
    p: &Paths,
    module: &Path,
    bins: &[(String, PathBuf)],
    variant: Variant,
) -> Result<PathBuf> {
    let mut c = Cpio::default();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "root",
        "scenarios",
        "sys",
        "tmp",
    ] {
        c.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    c.chardev("dev/console", 0o600, 5, 1);
    c.host_file("bin/busybox", Path::new("/bin/busybox"))
        .context("busybox-static is needed ('make deps')")?;
    c.symlink("bin/sh", "busybox");
    c.file("init", 0o755, &fs::read(p.top.join("tests/guest/init"))?);
    c.host_file("lib/miglock.sh", &p.top.join("tests/guest/miglock.sh"))?;
    c.host_file("lib/modules/miglock.ko", module)?;
    for (name, path) in bins {
        c.host_file(&format!("bin/{name}"), path)?;
    }
    add_qemu_ga(&mut c)?;
    let dir = p.top.join("tests/scenarios");
    let mut scripts: Vec<_> = fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
    scripts.sort_by_key(|e| e.file_name());
    for e in scripts {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sh") {
            c.host_file(&format!("scenarios/{name}"), &e.path())?;
        }
    }
    let path = p.out.join(format!("initramfs-{}.cpio", variant.name()));
    initramfs::write(&path, &c.finish())?;
    Ok(path)
}

/// Adds qemu-ga (Debian's qemu-guest-agent, for the round-trip benchmark)
/// with the shared libraries `ldd` names, at their paths.
fn add_qemu_ga(c: &mut Cpio) -> Result<()> {
    let bin = Path::new("/usr/sbin/qemu-ga");
    if !bin.exists() {
        return Ok(()); // only the benchmark needs it; 'make deps' installs it
    }
    let out = Command::new("ldd").arg(bin).output().context("ldd")?;
    let mut files = vec![bin.to_path_buf()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libx.so => /lib/.../libx.so (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = line
            .split("=>")
            .last()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            files.push(PathBuf::from(path));
        }
    }
    let mut dirs: Vec<String> = Vec::new();
    for f in &files {
        let rel = f.strip_prefix("/").unwrap_or(f);
        let mut acc = PathBuf::new();
        for comp in rel.parent().into_iter().flat_map(|p| p.components()) {
            acc.push(comp);
            let d = acc.to_string_lossy().into_owned();
            if !dirs.contains(&d) && !["lib", "bin", "tmp"].contains(&d.as_str()) {
                c.dir(&d);
                dirs.push(d);
            }
        }
        c.host_file(&rel.to_string_lossy(), f)?;
    }
    Ok(())
}
