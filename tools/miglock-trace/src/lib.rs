// SPDX-License-Identifier: GPL-2.0

//! The page-access trace file (`.mltrace`), documented in
//! `Documentation/trace-format.rst`.
//!
//! A trace is a header and a sequence of samples. Each sample lists the
//! guest-physical page ranges accessed (idle page tracking) and dirtied
//! (soft-dirty bits) since the previous sample. Ranges are sorted, disjoint
//! and coded as LEB128 varints relative to the previous range's end, so a
//! sample of a sparse working set costs a few bytes per range.
//!
//! ```text
//! header, 32 bytes, little-endian:
//!   0  8  magic "MLTRACE1"
//!   8  4  format version (1)
//!  12  4  page size in bytes
//!  16  8  pfn_limit: every page frame number is below it
//!  24  8  nominal sampling interval in microseconds
//! records:
//!   'S' varint dt_us, ranges(accessed), ranges(dirtied)
//!   'E' varint samples      (end: the writer finished cleanly)
//! ranges: varint n, then n × (varint gap, varint pages - 1)
//!   where start = previous end + gap (previous end 0 for the first)
//! ```
//!
//! Traces may come from a guest, so the reader trusts nothing: every count,
//! gap and length is checked against `pfn_limit`, varints are bounded, and
//! a bad byte is reported with its offset.

use std::io::{self, BufRead, Write};

mod varint;

/// First eight bytes of every trace.
pub const MAGIC: [u8; 8] = *b"MLTRACE1";
/// Format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
/// Largest `pfn_limit` accepted: 2^40 frames (4 PiB of 4 KiB pages).
pub const MAX_PFN_LIMIT: u64 = 1 << 40;

const TAG_SAMPLE: u8 = b'S';
const TAG_END: u8 = b'E';

/// What the whole trace is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Page size in bytes (a power of two, 4 KiB to 2 MiB).
    pub page_size: u32,
    /// Every frame number in the trace is below this.
    pub pfn_limit: u64,
    /// Nominal time between samples, microseconds.
    pub interval_us: u64,
}

impl Header {
    fn check(&self) -> Result<(), TraceError> {
        if !self.page_size.is_power_of_two() || !(4096..=1 << 21).contains(&self.page_size) {
            return Err(TraceError::BadHeader("page size"));
        }
        if self.pfn_limit == 0 || self.pfn_limit > MAX_PFN_LIMIT {
            return Err(TraceError::BadHeader("pfn_limit"));
        }
        if self.interval_us == 0 {
            return Err(TraceError::BadHeader("interval"));
        }
        Ok(())
    }

    /// Bytes of guest memory the trace covers.
    pub fn memory_bytes(&self) -> u64 {
        self.pfn_limit * u64::from(self.page_size)
    }
}

/// `pages` frames from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First frame number.
    pub start: u64,
    /// Number of frames, at least one.
    pub pages: u64,
}

impl Range {
    /// One past the last frame.
    pub fn end(&self) -> u64 {
        self.start + self.pages
    }
}

/// One sampling interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Microseconds since the trace began.
    pub t_us: u64,
    /// Frames accessed (read or written) since the previous sample.
    pub accessed: Vec<Range>,
    /// Frames written since the previous sample.
    pub dirtied: Vec<Range>,
}

impl Sample {
    /// Frames accessed in this sample.
    pub fn accessed_pages(&self) -> u64 {
        self.accessed.iter().map(|r| r.pages).sum()
    }

    /// Frames dirtied in this sample.
    pub fn dirtied_pages(&self) -> u64 {
        self.dirtied.iter().map(|r| r.pages).sum()
    }
}

/// Why bytes are not a valid trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading failed.
    #[error("reading the trace: {0}")]
    Io(#[from] io::Error),
    /// Not a trace file.
    #[error("not a miglock trace (bad magic)")]
    BadMagic,
    /// A version this crate does not read.
    #[error("trace format version {0} is not supported (this reader knows {VERSION})")]
    Version(u32),
    /// A header field out of range.
    #[error("bad trace header: {0}")]
    BadHeader(&'static str),
    /// A record that breaks the format.
    #[error("corrupt trace at byte {offset}: {what}")]
    Corrupt {
        /// Offset of the first byte of the bad field.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

/// Coalesces sorted, distinct frame numbers into ranges.
pub fn ranges_from_pfns(pfns: impl IntoIterator<Item = u64>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for p in pfns {
        match out.last_mut() {
            Some(r) if r.end() == p => r.pages += 1,
            _ => out.push(Range { start: p, pages: 1 }),
        }
    }
    out
}

/// Checks that `ranges` are non-empty, sorted, disjoint and below `limit`.
fn check_ranges(ranges: &[Range], limit: u64) -> bool {
    let mut end = 0;
    for (i, r) in ranges.iter().enumerate() {
        if r.pages == 0 || (i > 0 && r.start < end) {
            return false;
        }
        match r.start.checked_add(r.pages) {
            Some(e) if e <= limit => end = e,
            _ => return false,
        }
    }
    true
}

/// Writes a trace.
pub struct Writer<W: Write> {
    out: W,
    header: Header,
    last_t: u64,
    samples: u64,
    buf: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Starts a trace on `out`.
    pub fn new(mut out: W, header: Header) -> io::Result<Self> {
        header
            .check()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&header.page_size.to_le_bytes());
        h[16..24].copy_from_slice(&header.pfn_limit.to_le_bytes());
        h[24..32].copy_from_slice(&header.interval_us.to_le_bytes());
        out.write_all(&h)?;
        Ok(Writer {
            out,
            header,
            last_t: 0,
            samples: 0,
            buf: Vec::new(),
        })
    }

    /// Appends one sample; its ranges must be sorted, disjoint and below
    /// `pfn_limit`, and its time not before the previous sample's.
    pub fn write(&mut self, s: &Sample) -> io::Result<()> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        if s.t_us < self.last_t {
            return Err(bad("sample time goes backwards"));
        }
        let limit = self.header.pfn_limit;
        if !check_ranges(&s.accessed, limit) || !check_ranges(&s.dirtied, limit) {
            return Err(bad(
                "ranges must be non-empty, sorted, disjoint and below pfn_limit",
            ));
        }
        self.buf.clear();
        self.buf.push(TAG_SAMPLE);
        varint::put(&mut self.buf, s.t_us - self.last_t);
        for set in [&s.accessed, &s.dirtied] {
            varint::put(&mut self.buf, set.len() as u64);
            let mut end = 0;
            for r in set.iter() {
                varint::put(&mut self.buf, r.start - end);
                varint::put(&mut self.buf, r.pages - 1);
                end = r.end();
            }
        }
        self.out.write_all(&self.buf)?;
        self.last_t = s.t_us;
        self.samples += 1;
        Ok(())
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Flushes what was written (the trace stays readable if the writer
    /// dies later; it is then reported as incomplete).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Ends the trace and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.buf.clear();
        self.buf.push(TAG_END);
        varint::put(&mut self.buf, self.samples);
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a trace one sample at a time.
pub struct Reader<R: BufRead> {
    inp: R,
    header: Header,
    offset: u64,
    last_t: u64,
    samples: u64,
    complete: bool,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut inp: R) -> Result<Self, TraceError> {
        let mut h = [0u8; HEADER_LEN];
        if let Err(e) = inp.read_exact(&mut h) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                TraceError::BadMagic
            } else {
                e.into()
            });
        }
        if h[..8] != MAGIC {
            return Err(TraceError::BadMagic);
        }
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
        let version = u32_at(8);
        if version != VERSION {
            return Err(TraceError::Version(version));
        }
        let header = Header {
            page_size: u32_at(12),
            pfn_limit: u64_at(16),
            interval_us: u64_at(24),
        };
        header.check()?;
        Ok(Reader {
            inp,
            header,
            offset: HEADER_LEN as u64,
            last_t: 0,
            samples: 0,
            complete: false,
        })
    }

    /// The trace's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether the end record was read (false for a trace whose writer died).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Samples read so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn corrupt<T>(&self, what: &'static str) -> Result<T, TraceError> {
        Self::corrupt_at(self.offset, what)
    }

    fn corrupt_at<T>(offset: u64, what: &'static str) -> Result<T, TraceError> {
        Err(TraceError::Corrupt { offset, what })
    }

    fn byte(&mut self) -> Result<Option<u8>, TraceError> {
        let b = match self.inp.fill_buf()?.first() {
            Some(&b) => b,
            None => return Ok(None),
        };
        self.inp.consume(1);
        self.offset += 1;
        Ok(Some(b))
    }

    fn varint(&mut self) -> Result<u64, TraceError> {
        let mut v = varint::Decoder::default();
        loop {
            let Some(b) = self.byte()? else {
                return self.corrupt("truncated record");
            };
            match v.push(b) {
                Ok(Some(n)) => return Ok(n),
                Ok(None) => {}
                Err(()) => return self.corrupt("varint too long"),
            }
        }
    }

    fn ranges(&mut self, out: &mut Vec<Range>) -> Result<(), TraceError> {
        out.clear();
        let limit = self.header.pfn_limit;
        let n = self.varint()?;
        if n > limit {
            return self.corrupt("more ranges than frames");
        }
        let mut end = 0u64;
        for _ in 0..n {
            let at = self.offset;
            let gap = self.varint()?;
            let len = self.varint()?;
            let start = match end.checked_add(gap) {
                Some(s) if s < limit => s,
                _ => return Self::corrupt_at(at, "range starts beyond pfn_limit"),
            };
            let pages = match len.checked_add(1) {
                Some(p) if p <= limit - start => p,
                _ => return Self::corrupt_at(at, "range ends beyond pfn_limit"),
            };
            // A reserved-before-fill Vec would trust `n`; push grows with
            // what is really there.
            out.push(Range { start, pages });
            end = start + pages;
        }
        Ok(())
    }

    /// Reads the next sample into `s` (reusing its buffers); false at the
    /// end of the trace.
    pub fn next_into(&mut self, s: &mut Sample) -> Result<bool, TraceError> {
        if self.complete {
            return Ok(false);
        }
        match self.byte()? {
            None => Ok(false),
            Some(TAG_SAMPLE) => {
                let dt = self.varint()?;
                let Some(t) = self.last_t.checked_add(dt) else {
                    return self.corrupt("time overflows");
                };
                self.ranges(&mut s.accessed)?;
                self.ranges(&mut s.dirtied)?;
                s.t_us = t;
                self.last_t = t;
                self.samples += 1;
                Ok(true)
            }
            Some(TAG_END) => {
                let n = self.varint()?;
                if n != self.samples {
                    return self.corrupt("end record's sample count does not match");
                }
                if self.byte()?.is_some() {
                    return self.corrupt("bytes after the end record");
                }
                self.complete = true;
                Ok(false)
            }
            Some(_) => self.corrupt("unknown record tag"),
        }
    }
}

/// A whole trace in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The header.
    pub header: Header,
    /// Every sample, in time order.
    pub samples: Vec<Sample>,
    /// Whether the trace ended with its end record.
    pub complete: bool,
}

impl Trace {
    /// Reads a whole trace.
    pub fn read(inp: impl BufRead) -> Result<Trace, TraceError> {
        let mut r = Reader::new(inp)?;
        let mut samples = Vec::new();
        let mut s = Sample::default();
        while r.next_into(&mut s)? {
            samples.push(std::mem::take(&mut s));
        }
        Ok(Trace {
            header: r.header,
            complete: r.complete,
            samples,
        })
    }

    /// Parses a trace held in memory.
    pub fn parse(bytes: &[u8]) -> Result<Trace, TraceError> {
        Trace::read(bytes)
    }

    /// Reads the trace file at `path`.
    pub fn open(path: &std::path::Path) -> Result<Trace, TraceError> {
        Trace::read(io::BufReader::new(std::fs::File::open(path)?))
    }

    /// Writes the whole trace.
    pub fn write(&self, out: impl Write) -> io::Result<()> {
        let mut w = Writer::new(out, self.header)?;
        for s in &self.samples {
            w.write(s)?;
        }
        w.finish().map(drop)
    }
}
