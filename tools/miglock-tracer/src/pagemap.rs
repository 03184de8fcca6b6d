// SPDX-License-Identifier: GPL-2.0

//! Soft-dirty sampling through `/proc/PID/pagemap` (see
//! `Documentation/admin-guide/mm/pagemap.rst` and `soft-dirty.rst`).
//!
//! Each entry is 64 bits: 63 present, 62 swapped, 61 file-page or
//! shared-anon, 56 exclusively mapped, 55 soft-dirty, 0–54 the frame number
//! (zero unless the reader has CAP_SYS_ADMIN). Writing "4" to
//! `/proc/PID/clear_refs` clears the process's soft-dirty bits, so the next
//! scan shows the pages written since.

use crate::idle::read_full;
use crate::Roots;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};

/// Entry bit: page present in RAM.
pub const PM_PRESENT: u64 = 1 << 63;
/// Entry bit: page swapped out (bits 0–54 are then swap type/offset).
pub const PM_SWAPPED: u64 = 1 << 62;
/// Entry bit: file page or shared anonymous.
pub const PM_FILE: u64 = 1 << 61;
/// Entry bit: mapped exclusively.
pub const PM_EXCLUSIVE: u64 = 1 << 56;
/// Entry bit: soft-dirty (written since the last clear).
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Entry bits 0–54: the frame number.
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// One pagemap entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry(pub u64);

impl Entry {
    /// In RAM.
    pub fn present(self) -> bool {
        self.0 & PM_PRESENT != 0
    }
    /// Written since the last soft-dirty clear.
    pub fn soft_dirty(self) -> bool {
        self.0 & PM_SOFT_DIRTY != 0
    }
    /// The frame of a present page; `Some(0)` means the PFN was hidden
    /// (reader without CAP_SYS_ADMIN).
    pub fn pfn(self) -> Option<u64> {
        (self.present() && self.0 & PM_SWAPPED == 0).then_some(self.0 & PM_PFN_MASK)
    }
}

/// A mapping from `/proc/PID/maps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

/// Mappings worth scanning: not `[vsyscall]` (outside the page tables) and
/// not PROT_NONE (guard regions and address-space reservations, which can
/// be terabytes of empty pagemap).
pub fn parse_maps(text: &str) -> Vec<Vma> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(span), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if perms.starts_with("---") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        if end > start {
            out.push(Vma { start, end });
        }
    }
    out
}

/// What scanning one process found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// Present pages.
    pub present: u64,
    /// Present pages whose frame number read as zero (no privilege).
    pub hidden_pfn: u64,
    /// Present soft-dirty pages.
    pub dirty: u64,
}

/// Why a process was not scanned.
#[derive(Debug)]
pub enum Skip {
    /// No address space (kernel thread or zombie).
    NoMm,
    /// It exited, or we may not read it.
    Gone(io::Error),
}

/// Reusable pagemap reader.
pub struct Scanner {
    buf: Vec<u8>,
    page_size: u64,
}

/// Entries per read (64 KiB).
const CHUNK: usize = 8192;

impl Scanner {
    /// A scanner for pages of `page_size` bytes.
    pub fn new(page_size: u64) -> Self {
        Scanner {
            buf: vec![0; CHUNK * 8],
            page_size,
        }
    }

    /// Calls `visit(pfn, vaddr, soft_dirty)` for each present page of
    /// `pid`. A process that vanishes mid-scan ends its scan early.
    pub fn scan(
        &mut self,
        roots: &Roots,
        pid: u32,
        mut visit: impl FnMut(u64, u64, bool),
    ) -> Result<ProcStats, Skip> {
        let base = roots.proc(pid.to_string());
        let maps = fs::read_to_string(base.join("maps")).map_err(Skip::Gone)?;
        let vmas = parse_maps(&maps);
        if vmas.is_empty() {
            return Err(Skip::NoMm);
        }
        let pm = File::open(base.join("pagemap")).map_err(Skip::Gone)?;
        let mut st = ProcStats::default();
        let ps = self.page_size;
        for v in vmas {
            let (mut vpn, end) = (v.start / ps, v.end.div_ceil(ps));
            while vpn < end {
                let n = ((end - vpn) as usize).min(CHUNK);
                let got = match read_full(&pm, &mut self.buf[..n * 8], vpn * 8) {
                    Ok(g) => g,
                    // Gone mid-scan: keep what was seen.
                    Err(_) => return Ok(st),
                };
                for (k, c) in self.buf[..got].chunks_exact(8).enumerate() {
                    let e = Entry(u64::from_ne_bytes(c.try_into().unwrap_or_default()));
                    let Some(pfn) = e.pfn() else { continue };
                    st.present += 1;
                    if pfn == 0 {
                        st.hidden_pfn += 1;
                        continue;
                    }
                    let sd = e.soft_dirty();
                    st.dirty += u64::from(sd);
                    visit(pfn, (vpn + k as u64) * ps, sd);
                }
                if got < n * 8 {
                    break;
                }
                vpn += n as u64;
            }
        }
        Ok(st)
    }
}

/// Clears `pid`'s soft-dirty bits (and write-protects its pages, so the
/// next write faults and sets the bit again).
pub fn clear_soft_dirty(roots: &Roots, pid: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(roots.proc(format!("{pid}/clear_refs")))?;
    f.write_all(b"4")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_decoding() {
        let e = Entry(PM_PRESENT | PM_SOFT_DIRTY | PM_EXCLUSIVE | 0x1234);
        assert!(e.present() && e.soft_dirty());
        assert_eq!(e.pfn(), Some(0x1234));
        let clean = Entry(PM_PRESENT | PM_FILE | 77);
        assert!(!clean.soft_dirty());
        assert_eq!(clean.pfn(), Some(77));
        // Swapped: bits 0–54 are not a frame.
        assert_eq!(Entry(PM_PRESENT | PM_SWAPPED | 5).pfn(), None);
        assert_eq!(Entry(PM_SOFT_DIRTY | 9).pfn(), None);
        // Unprivileged readers see present pages with PFN 0.
        assert_eq!(Entry(PM_PRESENT).pfn(), Some(0));
        assert_eq!(Entry(PM_PRESENT | PM_PFN_MASK).pfn(), Some((1 << 55) - 1));
    }

    #[test]
    fn maps_parsing() {
        let t = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
00651000-00652000 rw-p 00051000 08:02 173521      /usr/bin/dbus-daemon
7f0000000000-7f0040000000 ---p 00000000 00:00 0
7ffc0000a000-7ffc0002b000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
garbage line
zz-10 rw-p
";
        assert_eq!(
            parse_maps(t),
            vec![
                Vma {
                    start: 0x400000,
                    end: 0x452000
                },
                Vma {
                    start: 0x651000,
                    end: 0x652000
                },
                Vma {
                    start: 0x7ffc0000a000,
                    end: 0x7ffc0002b000
                },
            ]
        );
    }

    #[test]
    fn scans_fake_process() {
        let d = tempfile::tempdir().unwrap();
        let roots = Roots {
            procfs: d.path().into(),
            sysfs: d.path().into(),
        };
        let p = d.path().join("42");
        fs::create_dir(&p).unwrap();
        // Pages 2..5 mapped: 2 dirty at pfn 100, 3 clean at pfn 101, 4 absent.
        fs::write(p.join("maps"), "2000-5000 rw-p 0 0:0 0\n").unwrap();
        let mut pm = [0u64; 6];
        pm[2] = PM_PRESENT | PM_SOFT_DIRTY | 100;
        pm[3] = PM_PRESENT | 101;
        let b: Vec<u8> = pm.iter().flat_map(|e| e.to_ne_bytes()).collect();
        fs::write(p.join("pagemap"), b).unwrap();
        let mut seen = Vec::new();
        let st = Scanner::new(4096)
            .scan(&roots, 42, |pfn, va, sd| seen.push((pfn, va, sd)))
            .unwrap();
        assert_eq!(seen, vec![(100, 0x2000, true), (101, 0x3000, false)]);
        assert_eq!(
            st,
            ProcStats {
                present: 2,
                hidden_pfn: 0,
                dirty: 1
            }
        );
        fs::write(p.join("clear_refs"), "").unwrap();
        clear_soft_dirty(&roots, 42).unwrap();
        assert_eq!(fs::read(p.join("clear_refs")).unwrap(), b"4");
        // Vanished and kernel-thread processes are skipped, not errors.
        assert!(matches!(
            Scanner::new(4096).scan(&roots, 43, |_, _, _| {}),
            Err(Skip::Gone(_))
        ));
        fs::write(p.join("maps"), "").unwrap();
        assert!(matches!(
            Scanner::new(4096).scan(&roots, 42, |_, _, _| {}),
            Err(Skip::NoMm)
        ));
    }
}
