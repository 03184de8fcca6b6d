// SPDX-License-Identifier: GPL-2.0

//! Builds the guest's initramfs: an uncompressed `newc` cpio archive that the
//! kernel unpacks without any decompressor configured.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A `newc` cpio archive being written to memory.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid: root
            0, // gid: root
            1,
            0, // mtime: fixed, so archives are reproducible
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0
        );
        self.buf.extend_from_slice(hdr.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, &[], (0, 0));
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | (perm & 0o7777), data, (0, 0));
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, target.as_bytes(), (0, 0));
    }

    /// A character device node.
    pub fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, &[], (major, minor));
    }

    /// Closes the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        // Pad to 512 like cpio(1) does.
        self.buf.resize(self.buf.len().next_multiple_of(512), 0);
        self.buf
    }

    /// Adds the host file `src` as `name`, keeping its permission bits.
    pub fn host_file(&mut self, name: &str, src: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        let perm = fs::metadata(src)?.permissions().mode();
        self.file(name, perm, &data);
        Ok(())
    }
}

/// Writes `archive` to `path` atomically (write to a temporary, rename).
pub fn write(path: &Path, archive: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(archive)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// The system's cpio(1) lists what we wrote: the format is right.
    #[test]
    fn cpio_tool_reads_archive() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        c.symlink("bin/sh", "busybox");
        c.chardev("dev/console", 0o600, 5, 1);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 512, 0);
        let Ok(mut child) = Command::new("cpio")
            .args(["-t", "-v"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        else {
            panic!("cpio(1) is needed for this test (Debian package cpio; 'make deps')");
        };
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(listing.contains("bin/hello"), "{listing}");
        assert!(listing.contains("bin/sh -> busybox"), "{listing}");
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("crw") && l.contains("dev/console")),
            "{listing}"
        );
    }
}
