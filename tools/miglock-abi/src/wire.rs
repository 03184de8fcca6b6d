// SPDX-License-Identifier: GPL-2.0

//! The guest↔host wire protocol.
//!
//! Every message is one frame:
//!
//! ```text
//! offset size
//!      0    2  magic "ML"
//!      2    1  protocol version (VERSION)
//!      3    1  message kind (Kind)
//!      4    2  payload length, little-endian, at most MAX_PAYLOAD
//!      6    2  flags, zero
//!      8    4  sequence number of this message
//!     12    4  sequence number this message answers (0: none)
//!     16    N  payload
//!   16+N    4  CRC-32C of bytes 0..16+N
//! ```
//!
//! All integers are little-endian. Decoding never panics, never allocates,
//! and rejects anything not exactly as specified (unknown kinds, wrong
//! lengths, non-zero reserved bytes, bad checksums), so a guest can send
//! nothing the host has to guess about. [`Decoder`] finds frames in a byte
//! stream and resynchronises after garbage.

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"ML";
/// Protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 16;
/// Bytes after the payload (the checksum).
pub const TRAILER_LEN: usize = 4;
/// Largest payload.
pub const MAX_PAYLOAD: usize = 1024;
/// Largest frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// Bytes of a label on the wire.
pub const LABEL_LEN: usize = 32;
/// Bytes of one hint range on the wire.
pub const HINT_LEN: usize = 16;
/// Most hint ranges in one batch.
pub const MAX_HINTS: usize = (MAX_PAYLOAD - 8) / HINT_LEN;

/// Host refusal reason: the VM's policy does not let the guest lock.
pub const REFUSE_POLICY: u32 = 1;
/// Host refusal reason: the VM used up its locked-time quota for the window.
pub const REFUSE_QUOTA: u32 = 2;
/// Host refusal reason: a migration is past the point of no return.
pub const REFUSE_MIGRATING: u32 = 3;
/// Host refusal reason: too many requests; slow down.
pub const REFUSE_RATE: u32 = 4;
/// Host refusal reason: the guest's hold limit on the host side is reached.
pub const REFUSE_TOO_MANY: u32 = 5;
/// Host refusal reason: the request itself was invalid (reason, label).
pub const REFUSE_INVALID: u32 = 6;
/// Host refusal reason: the host cannot enforce a lock now (it cannot reach
/// the VM's QEMU to block migrations), so it grants none.
pub const REFUSE_UNENFORCEABLE: u32 = 7;

/// `Welcome` feature: the host records a [`Message::Held`] (a hold the guest
/// took under one the host granted) without deciding it.
pub const FEATURE_HELD: u32 = 1 << 0;
/// `Welcome` feature: the host takes [`Message::LockShort`] and answers it
/// with [`Message::Verdict`]: fewer bytes each way on the hot path.
pub const FEATURE_SHORT: u32 = 1 << 1;

/// Forced-release reason: an administrator forced a migration.
pub const FORCED_BY_ADMIN: u32 = 1;
/// Forced-release reason: the quota ran out.
pub const FORCED_BY_QUOTA: u32 = 2;
/// Forced-release reason: a `Held` hold had no granted hold around it on
/// the host, and the host would not grant it either.
pub const FORCED_UNCOVERED: u32 = 3;

/// Message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Guest → host: first message after (re)connecting.
    Hello = 1,
    /// Host → guest: answer to `Hello`.
    Welcome = 2,
    /// Guest → host: ask for a hold.
    Lock = 3,
    /// Guest → host: a hold ended.
    Unlock = 4,
    /// Guest → host: restart a hold's lease.
    Renew = 5,
    /// Guest → host: the whole lock state (after `Welcome`, for resync).
    State = 6,
    /// Host → guest: the answer to `Lock` or `Renew`.
    Decision = 7,
    /// Host → guest: migration pending, forced release, policy change.
    Notice = 8,
    /// Guest → host: ranked guest-physical ranges it will touch next.
    Hints = 9,
    /// Either way: are you there?
    Ping = 10,
    /// Either way: answer to `Ping`.
    Pong = 11,
    /// Guest → host: working-set figures; the `Hints` of the same batch follow.
    Workload = 12,
    /// Guest → host: a hold taken without asking, inside a hold the host
    /// granted (only after a `Welcome` with [`FEATURE_HELD`]); not answered.
    Held = 13,
    /// Guest → host: `Lock` with the label's bytes only (only after a
    /// `Welcome` with [`FEATURE_SHORT`]); answered with `Verdict`.
    LockShort = 14,
    /// Host → guest: the answer to `LockShort`.
    Verdict = 15,
}

impl Kind {
    /// The kind with code `v`.
    pub const fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Lock,
            4 => Kind::Unlock,
            5 => Kind::Renew,
            6 => Kind::State,
            7 => Kind::Decision,
            8 => Kind::Notice,
            9 => Kind::Hints,
            10 => Kind::Ping,
            11 => Kind::Pong,
            12 => Kind::Workload,
            13 => Kind::Held,
            14 => Kind::LockShort,
            15 => Kind::Verdict,
            _ => return None,
        })
    }
}

/// Host notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The host wants to migrate within `deadline_ms`; finish and unlock.
    MigrationPending {
        /// Grace period left, in milliseconds.
        deadline_ms: u32,
    },
    /// The host released the lock by force (admin, quota); `reason` says why.
    ForcedRelease {
        /// Host reason code.
        reason: u32,
    },
    /// The host's policy changed.
    PolicyChange {
        /// New maximum lease in milliseconds.
        max_lease_ms: u32,
    },
    /// Post-copy is running: the VM runs on the destination and pages not
    /// received yet are fetched when touched. Sent by the destination agent.
    PostcopyStarted,
    /// The pending migration will not happen (refused, cancelled, failed).
    MigrationCancelled,
    /// The VM now runs here, having arrived by live migration. Sent by the
    /// destination agent once the guest runs there.
    Migrated,
    /// The host is taking a live checkpoint of the VM (copy-on-write: the
    /// image is memory as of this moment, the guest keeps running). The VM
    /// does not move; a lock does not stop a checkpoint.
    CheckpointStarted,
    /// The checkpoint ended: written whole (`saved`) or given up.
    CheckpointDone {
        /// The image was written.
        saved: bool,
    },
    /// The VM was restored from a checkpoint: it runs again from the moment
    /// the checkpoint began, in a new QEMU. Sent by that QEMU's agent.
    Restored,
}

/// One ranked guest-physical range in a hint batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintRange {
    /// First page frame number.
    pub start_pfn: u64,
    /// Number of pages.
    pub pages: u32,
    /// Higher is hotter.
    pub score: u32,
}

/// The hint ranges of a `Hints` payload, read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hints<'a> {
    raw: &'a [u8],
}

impl<'a> Hints<'a> {
    /// Hint ranges already in wire layout (16 bytes each, at most
    /// [`MAX_HINTS`]); `None` if `raw` is not.
    pub fn from_raw(raw: &'a [u8]) -> Option<Self> {
        // Not `is_multiple_of`: the kernel builds this file for Rust 1.78.
        let n = raw.len() / HINT_LEN;
        (n * HINT_LEN == raw.len() && n <= MAX_HINTS).then_some(Hints { raw })
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.raw.len() / HINT_LEN
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The ranges, in rank order.
    pub fn iter(&self) -> impl Iterator<Item = HintRange> + 'a {
        self.raw.chunks_exact(HINT_LEN).map(|c| HintRange {
            start_pfn: u64_at(c, 0),
            pages: u32_at(c, 8),
            score: u32_at(c, 12),
        })
    }
}

/// A message, borrowing variable-size data from the frame it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Guest hello: its boot id (new on every guest boot) and features.
    Hello {
        /// Random per guest boot.
        boot_id: u64,
        /// Feature bits the guest supports.
        features: u32,
    },
    /// Host welcome: the agent's epoch (new on every agent start) and policy.
    Welcome {
        /// Random per agent start.
        epoch: u64,
        /// Feature bits both sides will use.
        features: u32,
        /// The host's maximum lease.
        max_lease_ms: u32,
    },
    /// Ask for hold `hold` (a guest-chosen id).
    Lock {
        /// Hold id, unique among the guest's holds.
        hold: u32,
        /// Reason code (`types::Reason`).
        reason: u32,
        /// Lease asked for.
        lease_ms: u32,
        /// Label, NUL-padded.
        label: [u8; LABEL_LEN],
    },
    /// Hold `hold` was taken, as `Lock` asks, without asking: its lease
    /// ends no later than that of a hold the host granted and still holds.
    Held {
        /// Hold id, unique among the guest's holds.
        hold: u32,
        /// Reason code (`types::Reason`).
        reason: u32,
        /// Lease taken.
        lease_ms: u32,
        /// Label, NUL-padded.
        label: [u8; LABEL_LEN],
    },
    /// [`Message::Lock`] with the label's bytes only (at most
    /// `LABEL_LEN - 1`, no NUL: the rest is implied NUL padding).
    LockShort {
        /// Hold id, unique among the guest's holds.
        hold: u32,
        /// Reason code (`types::Reason`).
        reason: u32,
        /// Lease asked for.
        lease_ms: u32,
        /// The label's bytes.
        label: &'a [u8],
    },
    /// The answer to `LockShort`: granted if `refusal` is 0.
    Verdict {
        /// Lease granted (0 when refused).
        lease_ms: u32,
        /// Refusal reason, 0 when granted.
        refusal: u32,
    },
    /// Hold `hold` ended.
    Unlock {
        /// Hold id.
        hold: u32,
    },
    /// Restart hold `hold`'s lease.
    Renew {
        /// Hold id.
        hold: u32,
        /// New lease from now.
        lease_ms: u32,
    },
    /// The guest's whole state.
    State {
        /// Number of holds.
        holders: u32,
        /// Static lock set.
        static_lock: bool,
        /// ms until the earliest lease ends, 0 if none.
        earliest_expiry_ms: u32,
    },
    /// Host decision on the request whose sequence number the header names.
    Decision {
        /// Granted (with `lease_ms`) or refused (with `reason`).
        granted: bool,
        /// Lease granted.
        lease_ms: u32,
        /// Refusal reason, 0 when granted.
        reason: u32,
    },
    /// A host notice.
    Notice(Notice),
    /// A batch of hints.
    Hints {
        /// Batch number (for ordering and loss detection).
        batch: u32,
        /// The ranges.
        ranges: Hints<'a>,
    },
    /// The workload behind a hint batch (sent before its `Hints` frames).
    Workload {
        /// The batch these figures go with.
        batch: u32,
        /// The tracer's sampling interval in milliseconds.
        interval_ms: u32,
        /// Pages touched recently.
        wss_pages: u64,
        /// Pages written per second.
        dirty_pages_per_s: u64,
        /// Every frame number is below this.
        pfn_limit: u64,
    },
    /// Liveness probe.
    Ping,
    /// Liveness answer.
    Pong,
}

impl Message<'_> {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Welcome { .. } => Kind::Welcome,
            Message::Lock { .. } => Kind::Lock,
            Message::Unlock { .. } => Kind::Unlock,
            Message::Renew { .. } => Kind::Renew,
            Message::State { .. } => Kind::State,
            Message::Decision { .. } => Kind::Decision,
            Message::Notice(_) => Kind::Notice,
            Message::Hints { .. } => Kind::Hints,
            Message::Workload { .. } => Kind::Workload,
            Message::Held { .. } => Kind::Held,
            Message::LockShort { .. } => Kind::LockShort,
            Message::Verdict { .. } => Kind::Verdict,
            Message::Ping => Kind::Ping,
            Message::Pong => Kind::Pong,
        }
    }
}

/// The header fields that are not the message itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Sequence number of this message.
    pub seq: u32,
    /// Sequence number this message answers, 0 if none.
    pub reply_to: u32,
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the frame needs.
    Short,
    /// Not starting with [`MAGIC`].
    Magic,
    /// A version this crate does not speak.
    Version(u8),
    /// An unknown message kind.
    Kind(u8),
    /// Payload longer than [`MAX_PAYLOAD`].
    TooLong,
    /// Non-zero reserved bits or bytes.
    Reserved,
    /// Checksum mismatch.
    Checksum,
    /// A payload of the wrong size or with invalid fields for its kind.
    Payload(Kind),
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    NoSpace,
    /// Too many hint ranges for one frame.
    TooManyHints,
    /// A field the frame cannot carry (a short label too long, or with a
    /// NUL).
    Invalid,
}

const fn crc32c_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32C: [u32; 256] = crc32c_table();

/// CRC-32C (Castagnoli) of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC32C[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Writes little-endian fields into a payload buffer.
struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.len + bytes.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(EncodeError::NoSpace)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
    fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }
}

const NOTICE_PENDING: u32 = 1;
const NOTICE_FORCED: u32 = 2;
const NOTICE_POLICY: u32 = 3;
const NOTICE_POSTCOPY: u32 = 4;
const NOTICE_CANCELLED: u32 = 5;
const NOTICE_MIGRATED: u32 = 6;
const NOTICE_CHECKPOINT: u32 = 7;
const NOTICE_CHECKPOINT_DONE: u32 = 8;
const NOTICE_RESTORED: u32 = 9;

/// Encodes a hint batch from `ranges` (at most [`MAX_HINTS`]).
pub fn encode_hints(
    batch: u32,
    ranges: &[HintRange],
    hdr: Header,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if ranges.len() > MAX_HINTS {
        return Err(EncodeError::TooManyHints);
    }
    frame(Kind::Hints, hdr, out, |w| {
        w.u32(batch)?;
        w.u32(ranges.len() as u32)?;
        for r in ranges {
            w.u64(r.start_pfn)?;
            w.u32(r.pages)?;
            w.u32(r.score)?;
        }
        Ok(())
    })
}

/// Encodes `msg` into `out`; returns the frame length.
pub fn encode(msg: &Message<'_>, hdr: Header, out: &mut [u8]) -> Result<usize, EncodeError> {
    frame(msg.kind(), hdr, out, |w| match *msg {
        Message::Hello { boot_id, features } => {
            w.u64(boot_id)?;
            w.u32(features)
        }
        Message::Welcome {
            epoch,
            features,
            max_lease_ms,
        } => {
            w.u64(epoch)?;
            w.u32(features)?;
            w.u32(max_lease_ms)
        }
        Message::Lock {
            hold,
            reason,
            lease_ms,
            label,
        }
        | Message::Held {
            hold,
            reason,
            lease_ms,
            label,
        } => {
            w.u32(hold)?;
            w.u32(reason)?;
            w.u32(lease_ms)?;
            w.put(&label)
        }
        Message::Unlock { hold } => w.u32(hold),
        Message::Renew { hold, lease_ms } => {
            w.u32(hold)?;
            w.u32(lease_ms)
        }
        Message::State {
            holders,
            static_lock,
            earliest_expiry_ms,
        } => {
            w.u32(holders)?;
            w.u32(u32::from(static_lock))?;
            w.u32(earliest_expiry_ms)
        }
        Message::Decision {
            granted,
            lease_ms,
            reason,
        } => {
            w.u32(u32::from(granted))?;
            w.u32(lease_ms)?;
            w.u32(reason)
        }
        Message::Notice(n) => {
            let (k, v) = match n {
                Notice::MigrationPending { deadline_ms } => (NOTICE_PENDING, deadline_ms),
                Notice::ForcedRelease { reason } => (NOTICE_FORCED, reason),
                Notice::PolicyChange { max_lease_ms } => (NOTICE_POLICY, max_lease_ms),
                Notice::PostcopyStarted => (NOTICE_POSTCOPY, 0),
                Notice::MigrationCancelled => (NOTICE_CANCELLED, 0),
                Notice::Migrated => (NOTICE_MIGRATED, 0),
                Notice::CheckpointStarted => (NOTICE_CHECKPOINT, 0),
                Notice::CheckpointDone { saved } => (NOTICE_CHECKPOINT_DONE, u32::from(saved)),
                Notice::Restored => (NOTICE_RESTORED, 0),
            };
            w.u32(k)?;
            w.u32(v)
        }
        Message::Hints { batch, ranges } => {
            w.u32(batch)?;
            w.u32(ranges.len() as u32)?;
            w.put(ranges.raw)
        }
        Message::Workload {
            batch,
            interval_ms,
            wss_pages,
            dirty_pages_per_s,
            pfn_limit,
        } => {
            w.u32(batch)?;
            w.u32(interval_ms)?;
            w.u64(wss_pages)?;
            w.u64(dirty_pages_per_s)?;
            w.u64(pfn_limit)
        }
        Message::LockShort {
            hold,
            reason,
            lease_ms,
            label,
        } => {
            if label.len() >= LABEL_LEN || label.contains(&0) {
                return Err(EncodeError::Invalid);
            }
            w.u32(hold)?;
            w.u32(reason)?;
            w.u32(lease_ms)?;
            w.put(label)
        }
        Message::Verdict { lease_ms, refusal } => {
            w.u32(lease_ms)?;
            w.u32(refusal)
        }
        Message::Ping | Message::Pong => Ok(()),
    })
}

fn frame(
    kind: Kind,
    hdr: Header,
    out: &mut [u8],
    body: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    if out.len() < HEADER_LEN + TRAILER_LEN {
        return Err(EncodeError::NoSpace);
    }
    let limit = out.len().min(MAX_FRAME) - TRAILER_LEN;
    let mut w = Writer {
        buf: &mut out[HEADER_LEN..limit],
        len: 0,
    };
    body(&mut w)?;
    let n = w.len;
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = kind as u8;
    out[4..6].copy_from_slice(&(n as u16).to_le_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
    out[8..12].copy_from_slice(&hdr.seq.to_le_bytes());
    out[12..16].copy_from_slice(&hdr.reply_to.to_le_bytes());
    let end = HEADER_LEN + n;
    let crc = crc32c(&out[..end]);
    out[end..end + TRAILER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(end + TRAILER_LEN)
}

/// How many bytes the frame starting at `buf` has in all, once its header is
/// there; `Ok(None)` while fewer than [`HEADER_LEN`] bytes are available.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() >= 2 && buf[0..2] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[2] != VERSION {
        return Err(DecodeError::Version(buf[2]));
    }
    let n = usize::from(u16::from_le_bytes([buf[4], buf[5]]));
    if n > MAX_PAYLOAD {
        return Err(DecodeError::TooLong);
    }
    Ok(Some(HEADER_LEN + n + TRAILER_LEN))
}

/// Decodes exactly one frame.
pub fn decode(buf: &[u8]) -> Result<(Header, Message<'_>), DecodeError> {
    let total = frame_len(buf)?.ok_or(DecodeError::Short)?;
    if buf.len() < total {
        return Err(DecodeError::Short);
    }
    if buf.len() > total {
        return Err(DecodeError::TooLong);
    }
    let end = total - TRAILER_LEN;
    if crc32c(&buf[..end]) != u32_at(buf, end) {
        return Err(DecodeError::Checksum);
    }
    if buf[6] != 0 || buf[7] != 0 {
        return Err(DecodeError::Reserved);
    }
    let kind = Kind::from_u8(buf[3]).ok_or(DecodeError::Kind(buf[3]))?;
    let hdr = Header {
        seq: u32_at(buf, 8),
        reply_to: u32_at(buf, 12),
    };
    let p = &buf[HEADER_LEN..end];
    let bad = DecodeError::Payload(kind);
    let need = |len: usize| if p.len() == len { Ok(()) } else { Err(bad) };
    let flag = |v: u32| match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(bad),
    };
    let msg = match kind {
        Kind::Hello => {
            need(12)?;
            Message::Hello {
                boot_id: u64_at(p, 0),
                features: u32_at(p, 8),
            }
        }
        Kind::Welcome => {
            need(16)?;
            Message::Welcome {
                epoch: u64_at(p, 0),
                features: u32_at(p, 8),
                max_lease_ms: u32_at(p, 12),
            }
        }
        Kind::Lock | Kind::Held => {
            need(12 + LABEL_LEN)?;
            let mut label = [0u8; LABEL_LEN];
            label.copy_from_slice(&p[12..]);
            let (hold, reason, lease_ms) = (u32_at(p, 0), u32_at(p, 4), u32_at(p, 8));
            if kind == Kind::Lock {
                Message::Lock {
                    hold,
                    reason,
                    lease_ms,
                    label,
                }
            } else {
                Message::Held {
                    hold,
                    reason,
                    lease_ms,
                    label,
                }
            }
        }
        Kind::Unlock => {
            need(4)?;
            Message::Unlock { hold: u32_at(p, 0) }
        }
        Kind::Renew => {
            need(8)?;
            Message::Renew {
                hold: u32_at(p, 0),
                lease_ms: u32_at(p, 4),
            }
        }
        Kind::State => {
            need(12)?;
            Message::State {
                holders: u32_at(p, 0),
                static_lock: flag(u32_at(p, 4))?,
                earliest_expiry_ms: u32_at(p, 8),
            }
        }
        Kind::Decision => {
            need(12)?;
            Message::Decision {
                granted: flag(u32_at(p, 0))?,
                lease_ms: u32_at(p, 4),
                reason: u32_at(p, 8),
            }
        }
        Kind::Notice => {
            need(8)?;
            let v = u32_at(p, 4);
            Message::Notice(match u32_at(p, 0) {
                NOTICE_PENDING => Notice::MigrationPending { deadline_ms: v },
                NOTICE_FORCED => Notice::ForcedRelease { reason: v },
                NOTICE_POLICY => Notice::PolicyChange { max_lease_ms: v },
                NOTICE_POSTCOPY if v == 0 => Notice::PostcopyStarted,
                NOTICE_CANCELLED if v == 0 => Notice::MigrationCancelled,
                NOTICE_MIGRATED if v == 0 => Notice::Migrated,
                NOTICE_CHECKPOINT if v == 0 => Notice::CheckpointStarted,
                NOTICE_CHECKPOINT_DONE if v <= 1 => Notice::CheckpointDone { saved: v == 1 },
                NOTICE_RESTORED if v == 0 => Notice::Restored,
                _ => return Err(bad),
            })
        }
        Kind::Hints => {
            if p.len() < 8 {
                return Err(bad);
            }
            let count = u32_at(p, 4) as usize;
            if count > MAX_HINTS || p.len() != 8 + count * HINT_LEN {
                return Err(bad);
            }
            Message::Hints {
                batch: u32_at(p, 0),
                ranges: Hints { raw: &p[8..] },
            }
        }
        Kind::Workload => {
            need(32)?;
            Message::Workload {
                batch: u32_at(p, 0),
                interval_ms: u32_at(p, 4),
                wss_pages: u64_at(p, 8),
                dirty_pages_per_s: u64_at(p, 16),
                pfn_limit: u64_at(p, 24),
            }
        }
        Kind::LockShort => {
            if p.len() < 12 || p.len() >= 12 + LABEL_LEN || p[12..].contains(&0) {
                return Err(bad);
            }
            Message::LockShort {
                hold: u32_at(p, 0),
                reason: u32_at(p, 4),
                lease_ms: u32_at(p, 8),
                label: &p[12..],
            }
        }
        Kind::Verdict => {
            need(8)?;
            Message::Verdict {
                lease_ms: u32_at(p, 0),
                refusal: u32_at(p, 4),
            }
        }
        Kind::Ping | Kind::Pong => {
            need(0)?;
            if kind == Kind::Ping {
                Message::Ping
            } else {
                Message::Pong
            }
        }
    };
    Ok((hdr, msg))
}

/// What [`Decoder::push`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing yet.
    Pending,
    /// A complete, valid frame is in [`Decoder::frame`].
    Frame,
    /// Bytes were dropped: garbage, or a frame that failed to decode.
    Dropped(DecodeError),
}

/// Finds frames in a byte stream with a fixed buffer.
///
/// Feed bytes with [`Decoder::push`]; after [`Event::Frame`] the frame is in
/// [`Decoder::frame`] until the next push. After an error the decoder drops
/// one byte and rescans for [`MAGIC`], so it resynchronises after garbage or
/// a torn frame.
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    ready: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        Decoder {
            buf: [0; MAX_FRAME],
            len: 0,
            ready: 0,
        }
    }

    /// The frame found by the last [`Event::Frame`].
    pub fn frame(&self) -> &[u8] {
        &self.buf[..self.ready]
    }

    /// How many more bytes the frame under way needs at least (its whole
    /// length once its header is in): 0 when none is under way. Lets a
    /// receiver wait briefly for the rest instead of for another interrupt.
    pub fn wanted(&self) -> usize {
        let rest = &self.buf[self.ready..self.len];
        if rest.first() != Some(&MAGIC[0]) {
            return 0;
        }
        match frame_len(rest) {
            Ok(None) => HEADER_LEN - rest.len(),
            Ok(Some(total)) => total.saturating_sub(rest.len()),
            Err(_) => 0,
        }
    }

    /// Adds one byte.
    pub fn push(&mut self, byte: u8) -> Event {
        if self.ready != 0 {
            // Keep what followed the last frame (possible after a resync).
            self.buf.copy_within(self.ready..self.len, 0);
            self.len -= self.ready;
            self.ready = 0;
        }
        self.buf[self.len] = byte;
        self.len += 1;
        let mut dropped = None;
        loop {
            let err = match frame_len(&self.buf[..self.len]) {
                Ok(None) => break,
                Ok(Some(total)) if self.len < total => break,
                Ok(Some(total)) => match decode(&self.buf[..total]) {
                    Ok(_) => {
                        self.ready = total;
                        return Event::Frame;
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            // A frame may already wait in what is left: look again.
            dropped.get_or_insert(err);
            self.resync();
        }
        dropped.map_or(Event::Pending, Event::Dropped)
    }

    /// Drops the first byte and everything up to the next possible magic.
    fn resync(&mut self) {
        let start = (1..self.len)
            .find(|&i| {
                self.buf[i] == MAGIC[0] && (i + 1 == self.len || self.buf[i + 1] == MAGIC[1])
            })
            .unwrap_or(self.len);
        self.buf.copy_within(start..self.len, 0);
        self.len -= start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn golden_frame() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(
            &Message::Unlock { hold: 7 },
            Header {
                seq: 2,
                reply_to: 0,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            &out[..n],
            &[
                b'M', b'L', 1, 4, 4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0x49, 0x8a, 0xad,
                0x38
            ][..n]
        );
    }

    #[test]
    fn held_is_kind_13_laid_out_as_lock() {
        let (hold, reason, lease_ms) = (5, 2, 900);
        let mut label = [0u8; LABEL_LEN];
        label[..2].copy_from_slice(b"tx");
        let hdr = Header {
            seq: 3,
            reply_to: 0,
        };
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        let n = encode(
            &Message::Held {
                hold,
                reason,
                lease_ms,
                label,
            },
            hdr,
            &mut a,
        )
        .unwrap();
        let m = encode(
            &Message::Lock {
                hold,
                reason,
                lease_ms,
                label,
            },
            hdr,
            &mut b,
        )
        .unwrap();
        assert_eq!((n, a[3], b[3]), (m, 13, 3));
        assert_eq!(a[4..n - TRAILER_LEN], b[4..m - TRAILER_LEN]);
        assert_eq!(FEATURE_HELD, 1);
    }

    #[test]
    fn short_lock_and_verdict_are_kinds_14_and_15() {
        let hdr = Header {
            seq: 3,
            reply_to: 0,
        };
        let mut out = [0u8; 64];
        let short = Message::LockShort {
            hold: 5,
            reason: 2,
            lease_ms: 900,
            label: b"txn 7",
        };
        let n = encode(&short, hdr, &mut out).unwrap();
        assert_eq!((n, out[3]), (HEADER_LEN + 12 + 5 + TRAILER_LEN, 14));
        assert_eq!(decode(&out[..n]).unwrap().1, short);
        let n = encode(
            &Message::Verdict {
                lease_ms: 900,
                refusal: 0,
            },
            hdr,
            &mut out,
        )
        .unwrap();
        assert_eq!((n, out[3]), (28, 15));
        // No NUL inside, and room for the NUL the long form ends with.
        for label in [&b"a\0b"[..], &[b'x'; LABEL_LEN][..]] {
            let m = Message::LockShort {
                hold: 1,
                reason: 1,
                lease_ms: 1,
                label,
            };
            assert_eq!(encode(&m, hdr, &mut out), Err(EncodeError::Invalid));
        }
        assert_eq!(FEATURE_SHORT, 2);
    }

    #[test]
    fn notice_codes_are_stable() {
        // Golden: the notice kind is the payload's first word, its value the second.
        let hdr = Header {
            seq: 1,
            reply_to: 0,
        };
        for (n, code, value) in [
            (Notice::MigrationPending { deadline_ms: 9 }, 1u32, 9u32),
            (Notice::ForcedRelease { reason: 2 }, 2, 2),
            (Notice::PolicyChange { max_lease_ms: 7 }, 3, 7),
            (Notice::PostcopyStarted, 4, 0),
            (Notice::MigrationCancelled, 5, 0),
            (Notice::Migrated, 6, 0),
            (Notice::CheckpointStarted, 7, 0),
            (Notice::CheckpointDone { saved: false }, 8, 0),
            (Notice::CheckpointDone { saved: true }, 8, 1),
            (Notice::Restored, 9, 0),
        ] {
            let mut out = [0u8; MAX_FRAME];
            let len = encode(&Message::Notice(n), hdr, &mut out).unwrap();
            assert_eq!(u32_at(&out, HEADER_LEN), code, "{n:?}");
            assert_eq!(u32_at(&out, HEADER_LEN + 4), value, "{n:?}");
            assert_eq!(decode(&out[..len]), Ok((hdr, Message::Notice(n))));
        }
        // A value where none is defined is rejected, not ignored.
        let mut out = [0u8; MAX_FRAME];
        let len = encode(&Message::Notice(Notice::Migrated), hdr, &mut out).unwrap();
        out[HEADER_LEN + 4] = 1;
        let crc = crc32c(&out[..len - TRAILER_LEN]);
        out[len - TRAILER_LEN..len].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&out[..len]), Err(DecodeError::Payload(Kind::Notice)));
        // A checkpoint is saved or not: no third value.
        let done = Message::Notice(Notice::CheckpointDone { saved: true });
        let len = encode(&done, hdr, &mut out).unwrap();
        out[HEADER_LEN + 4] = 2;
        let crc = crc32c(&out[..len - TRAILER_LEN]);
        out[len - TRAILER_LEN..len].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&out[..len]), Err(DecodeError::Payload(Kind::Notice)));
    }

    #[test]
    fn every_corruption_is_caught() {
        let mut out = [0u8; MAX_FRAME];
        let msg = Message::Renew {
            hold: 1,
            lease_ms: 5000,
        };
        let n = encode(
            &msg,
            Header {
                seq: 9,
                reply_to: 0,
            },
            &mut out,
        )
        .unwrap();
        for i in 0..n {
            for bit in 0..8 {
                let mut f = out;
                f[i] ^= 1 << bit;
                assert!(
                    decode(&f[..n]).is_err(),
                    "flip of bit {bit} in byte {i} accepted"
                );
            }
        }
    }

    #[test]
    fn decoder_finds_frames_swallowed_by_a_false_header() {
        // A false header claiming a long payload swallows the frames after
        // it; when its checksum fails they are found in the buffer.
        let mut stream: [u8; 2 * MAX_FRAME] = [0; 2 * MAX_FRAME];
        stream[..6].copy_from_slice(&[b'M', b'L', VERSION, 10, 0xff, 0x03]);
        let mut at = HEADER_LEN;
        let mut sent = 0;
        while at + 40 < stream.len() {
            let n = encode(
                &Message::Unlock { hold: sent },
                Header {
                    seq: sent,
                    reply_to: 0,
                },
                &mut stream[at..],
            )
            .unwrap();
            at += n;
            sent += 1;
        }
        let mut d = Decoder::new();
        let mut seqs = 0u32;
        for &b in &stream[..at] {
            if d.push(b) == Event::Frame {
                assert_eq!(decode(d.frame()).unwrap().0.seq, seqs);
                seqs += 1;
            }
        }
        assert_eq!(seqs, sent);
    }

    #[test]
    fn decoder_says_how_much_of_a_frame_is_missing() {
        let mut out = [0u8; 64];
        let n = encode(
            &Message::Unlock { hold: 7 },
            Header {
                seq: 1,
                reply_to: 0,
            },
            &mut out,
        )
        .unwrap();
        let mut d = Decoder::new();
        assert_eq!(d.wanted(), 0);
        for (i, &b) in out[..n].iter().enumerate() {
            let ev = d.push(b);
            let got = i + 1;
            let want = if got < HEADER_LEN {
                HEADER_LEN - got
            } else {
                n - got
            };
            assert_eq!(d.wanted(), want, "after {got} bytes");
            assert_eq!(ev == Event::Frame, got == n);
        }
        // Garbage is no frame under way.
        let mut d = Decoder::new();
        d.push(b'x');
        assert_eq!(d.wanted(), 0);
        // A frame's first byte after a complete one.
        let mut d = Decoder::new();
        for &b in &out[..n] {
            d.push(b);
        }
        d.push(MAGIC[0]);
        assert_eq!(d.wanted(), HEADER_LEN - 1);
    }

    #[test]
    fn decoder_resyncs_after_garbage() {
        let mut out = [0u8; MAX_FRAME];
        let n = encode(
            &Message::Ping,
            Header {
                seq: 1,
                reply_to: 0,
            },
            &mut out,
        )
        .unwrap();
        let mut d = Decoder::new();
        let mut frames = 0;
        for &b in b"MLxx\x00garbageM".iter().chain(&out[..n]) {
            if d.push(b) == Event::Frame {
                frames += 1;
                assert_eq!(decode(d.frame()).unwrap().1, Message::Ping);
            }
        }
        assert_eq!(frames, 1);
    }
}
