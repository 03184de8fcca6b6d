// SPDX-License-Identifier: GPL-2.0

//! Idle page tracking (`/sys/kernel/mm/page_idle/bitmap`): one bit per
//! frame, read and written in 64-bit words. Writing a one marks an LRU page
//! idle (and clears its PTEs' young bits); any access through a page table
//! clears it again, which a read reports as a zero. So each sample reads
//! the words (zero = accessed since the last write, or not an LRU page; see
//! [`crate::lru`]) and writes all-ones back for the next interval.
//!
//! With an idle share of N ([`IdleBitmap::sample_part`]) a sample reads
//! and re-marks only one N-th of the RAM words, in turn.
//!
//! Only the words covering RAM ranges are touched: reads over holes fail
//! with EINVAL/ENXIO on some kernels. A range whose I/O fails is reported
//! once and then treated as idle (nothing accessed) from then on.

use crate::bitset::Bitset;
use crate::sysmem::PfnRange;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Words per read or write (64 KiB, 512 Ki frames per call).
const CHUNK_WORDS: usize = 8192;

/// A word span `[start, end)` of the bitmap and whether it still works.
#[derive(Clone, Debug)]
struct Span {
    start: u64,
    end: u64,
    broken: bool,
}

/// The open bitmap.
pub struct IdleBitmap {
    file: File,
    path: PathBuf,
    spans: Vec<Span>,
    buf: Vec<u8>,
    /// Human-readable notes about spans that failed (printed by the caller).
    pub warnings: Vec<String>,
}

/// The word spans covering `ram`, merged where they touch.
fn word_spans(ram: &[PfnRange]) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    for r in ram {
        let (s, e) = (r.start / 64, r.end.div_ceil(64));
        match out.last_mut() {
            Some(l) if s <= l.end => l.end = l.end.max(e),
            _ => out.push(Span {
                start: s,
                end: e,
                broken: false,
            }),
        }
    }
    out
}

impl IdleBitmap {
    /// Opens the bitmap at `path` for the frames in `ram`.
    pub fn open(path: &Path, ram: &[PfnRange]) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| {
                format!(
                    "opening {} (needs root and CONFIG_IDLE_PAGE_TRACKING)",
                    path.display()
                )
            })?;
        Ok(IdleBitmap {
            file,
            path: path.to_owned(),
            spans: word_spans(ram),
            buf: vec![0; CHUNK_WORDS * 8],
            warnings: Vec::new(),
        })
    }

    fn fail(&mut self, i: usize, what: &str, e: io::Error) {
        let s = &mut self.spans[i];
        s.broken = true;
        self.warnings.push(format!(
            "{}: {what} frames {:#x}..{:#x} failed ({e}); treating them as idle from now on",
            self.path.display(),
            s.start * 64,
            s.end * 64
        ));
    }

    /// The word ranges of part `part` of `parts` (taken modulo `parts`):
    /// the RAM word spans laid end to end and cut into `parts` runs of
    /// equal length (±1 word), each split back at span boundaries. Every
    /// RAM word is in exactly one part; with one part, a part is the spans.
    pub fn part_words(&self, part: u64, parts: u64) -> Vec<(u64, u64)> {
        self.part_spans(part, parts)
            .into_iter()
            .map(|(_, s, e)| (s, e))
            .collect()
    }

    /// [`Self::part_words`] with the index of each range's span.
    fn part_spans(&self, part: u64, parts: u64) -> Vec<(usize, u64, u64)> {
        let parts = parts.max(1);
        let part = part % parts;
        let total: u64 = self.spans.iter().map(|s| s.end - s.start).sum();
        let (lo, hi) = (total * part / parts, total * (part + 1) / parts);
        let mut out = Vec::new();
        let mut at = 0; // words of the spans before this one
        for (i, s) in self.spans.iter().enumerate() {
            let len = s.end - s.start;
            let (a, b) = (lo.max(at), hi.min(at + len));
            if a < b {
                out.push((i, s.start + (a - at), s.start + (b - at)));
            }
            at += len;
        }
        out
    }

    /// Marks every RAM frame idle.
    pub fn mark_all_idle(&mut self) {
        self.mark_idle(&self.part_spans(0, 1));
    }

    /// Marks the frames of `ranges` (span index, word range) idle.
    fn mark_idle(&mut self, ranges: &[(usize, u64, u64)]) {
        self.buf.fill(0xff);
        for &(i, start, end) in ranges {
            if self.spans[i].broken {
                continue;
            }
            let mut w = start;
            while w < end {
                let n = ((end - w) as usize).min(CHUNK_WORDS);
                match write_full(&self.file, &self.buf[..n * 8], w * 8) {
                    Ok(put) if put < n * 8 => break, // the bitmap ends at max_pfn
                    Ok(_) => {}
                    Err(e) => {
                        self.fail(i, "marking", e);
                        break;
                    }
                }
                w += n as u64;
            }
        }
    }

    /// Reads the idle bits into `idle` (one bit per frame; frames outside
    /// working spans read as idle).
    pub fn read(&mut self, idle: &mut Bitset) {
        self.read_ranges(idle, &self.part_spans(0, 1));
    }

    /// Reads the idle bits of `ranges` into `idle`; every other frame reads
    /// as idle.
    fn read_ranges(&mut self, idle: &mut Bitset, ranges: &[(usize, u64, u64)]) {
        for w in idle.words_mut() {
            *w = u64::MAX;
        }
        for &(i, start, end) in ranges {
            if self.spans[i].broken {
                continue;
            }
            let mut w = start;
            while w < end {
                let n = ((end - w) as usize).min(CHUNK_WORDS);
                let got = match read_full(&self.file, &mut self.buf[..n * 8], w * 8) {
                    Ok(got) => got,
                    Err(e) => {
                        self.fail(i, "reading", e);
                        break;
                    }
                };
                let words = idle.words_mut();
                for (k, c) in self.buf[..got].chunks_exact(8).enumerate() {
                    if let Some(dst) = words.get_mut(w as usize + k) {
                        *dst = u64::from_ne_bytes(c.try_into().unwrap_or([0xff; 8]));
                    }
                }
                if got < n * 8 {
                    break; // end of the bitmap (max_pfn): nothing more to read
                }
                w += n as u64;
            }
        }
    }

    /// One sample: reads the idle bits, then marks everything idle again.
    pub fn sample(&mut self, idle: &mut Bitset) {
        self.sample_part(idle, 0, 1);
    }

    /// One sample of part `part` of `parts` ([`Self::part_words`]): reads
    /// its idle bits (every other frame reads as idle), then marks its
    /// frames idle again. Other parts' bits are neither read nor written.
    pub fn sample_part(&mut self, idle: &mut Bitset, part: u64, parts: u64) {
        let ranges = self.part_spans(part, parts);
        self.read_ranges(idle, &ranges);
        self.mark_idle(&ranges);
    }
}

/// Runs `io(done, offset)` until `len` bytes are done or it does no more
/// (end of file; the kernel's bitmap stops at `max_pfn`, which need not be
/// word aligned); returns the bytes done.
fn until_done(
    len: usize,
    mut off: u64,
    mut io: impl FnMut(usize, u64) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut done = 0;
    while done < len {
        match io(done, off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes until `buf` is out or the file takes no more.
pub(crate) fn write_full(f: &File, buf: &[u8], off: u64) -> io::Result<usize> {
    until_done(buf.len(), off, |done, at| f.write_at(&buf[done..], at))
}

/// Reads until `buf` is full or end of file; returns the bytes read.
pub(crate) fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let len = buf.len();
    until_done(len, off, |done, at| f.read_at(&mut buf[done..], at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_file(path: &Path, words: &[u64]) {
        let b: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn reads_ram_words_and_marks_idle() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bitmap");
        // Frames 0..256: words 0..4. RAM is 10..70 and 192..256, so word 2
        // (frames 128..192) is a hole and must be neither read nor written.
        words_file(&p, &[!0b1010, !0, 0x1234, !(1 << 63)]);
        let ram = [
            PfnRange { start: 10, end: 70 },
            PfnRange {
                start: 192,
                end: 256,
            },
        ];
        let mut bm = IdleBitmap::open(&p, &ram).unwrap();
        let mut idle = Bitset::new(256);
        bm.sample(&mut idle);
        assert_eq!(idle.words(), &[!0b1010, !0, !0, !(1 << 63)]);
        let after = std::fs::read(&p).unwrap();
        let w: Vec<u64> = after
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(w, vec![!0, !0, 0x1234, !0], "hole word untouched");
        assert!(bm.warnings.is_empty());
    }

    #[test]
    fn short_bitmap_reads_as_idle() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bitmap");
        words_file(&p, &[0]);
        let mut bm = IdleBitmap::open(&p, &[PfnRange { start: 0, end: 128 }]).unwrap();
        let mut idle = Bitset::new(128);
        bm.read(&mut idle);
        assert_eq!(idle.words(), &[0, !0]);
    }

    #[test]
    fn failing_span_is_reported_once() {
        let d = tempfile::tempdir().unwrap();
        // A directory opens read-only but fails to read.
        let p = d.path().join("bitmap");
        words_file(&p, &[0; 2]);
        let mut bm = IdleBitmap::open(&p, &[PfnRange { start: 0, end: 128 }]).unwrap();
        bm.file = File::open(d.path()).unwrap();
        let mut idle = Bitset::new(128);
        bm.sample(&mut idle);
        bm.sample(&mut idle);
        assert_eq!(idle.count(), 128);
        assert_eq!(bm.warnings.len(), 1, "{:?}", bm.warnings);
    }

    #[test]
    fn parts_cut_the_ram_words_evenly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bitmap");
        words_file(&p, &[0; 16]);
        // Words 0..3 and 6..16 (a hole at 3..6): 13 words in 4 parts.
        let ram = [
            PfnRange { start: 1, end: 192 },
            PfnRange {
                start: 384,
                end: 1024,
            },
        ];
        let bm = IdleBitmap::open(&p, &ram).unwrap();
        assert_eq!(bm.part_words(0, 1), vec![(0, 3), (6, 16)]);
        assert_eq!(bm.part_words(0, 4), vec![(0, 3)]);
        assert_eq!(bm.part_words(1, 4), vec![(6, 9)]);
        assert_eq!(bm.part_words(2, 4), vec![(9, 12)]);
        assert_eq!(bm.part_words(3, 4), vec![(12, 16)]);
        assert_eq!(bm.part_words(5, 4), vec![(6, 9)], "modulo the parts");
        // 13 words in 3: 4 + 4 + 5, the first part crossing the hole.
        assert_eq!(bm.part_words(0, 3), vec![(0, 3), (6, 7)]);
        assert_eq!(bm.part_words(1, 3), vec![(7, 11)]);
        assert_eq!(bm.part_words(2, 3), vec![(11, 16)]);
    }

    /// Each sample of a 4-way share reads and re-marks exactly the words
    /// of its part, and every word once every 4 samples.
    #[test]
    fn shared_sampling_touches_each_word_once_per_round() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bitmap");
        let ram = [PfnRange { start: 0, end: 512 }]; // words 0..8
        words_file(&p, &[0; 8]);
        let mut bm = IdleBitmap::open(&p, &ram).unwrap();
        let mut idle = Bitset::new(512);
        let mut writes = [0u32; 8];
        let mut reads = [0u32; 8];
        for sample in 0..12u64 {
            // Every frame "accessed" since the last sample: all zeros.
            words_file(&p, &[0; 8]);
            bm.sample_part(&mut idle, sample, 4);
            let after: Vec<u64> = std::fs::read(&p)
                .unwrap()
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
                .collect();
            let part = (sample % 4) as usize;
            for w in 0..8 {
                let mine = w / 2 == part;
                assert_eq!(after[w] == !0, mine, "sample {sample} word {w} written");
                assert_eq!(idle.words()[w] == 0, mine, "sample {sample} word {w} read");
                writes[w] += u32::from(after[w] == !0);
                reads[w] += u32::from(idle.words()[w] == 0);
            }
        }
        assert_eq!(writes, [3; 8]);
        assert_eq!(reads, [3; 8]);
        assert!(bm.warnings.is_empty());
    }
}
