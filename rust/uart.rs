// SPDX-License-Identifier: GPL-2.0

//! A 16550-compatible UART used as the doorbell to the host.
//!
//! Transmit waits for the holding register a bounded number of polls per
//! byte; receive is interrupt-driven (see `doorbell.rs`), and polls only for
//! the rest of a frame already under way. A
//! UART that goes away (module unload, or a failed load after it started)
//! stops interrupting first.

use crate::compat::ioport::IoRegion;
use crate::compat::timer::{now_ns, sleep_us};
use kernel::{prelude::*, str::CStr};

const RBR_THR: u16 = 0; // receive buffer / transmit holding (DLL with DLAB)
const IER: u16 = 1; // interrupt enable (DLM with DLAB)
const FCR: u16 = 2; // FIFO control (write)
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const SCR: u16 = 7; // scratch

const LCR_DLAB: u8 = 0x80;
const LCR_8N1: u8 = 0x03;
// FIFOs on and cleared, receive trigger at 14 bytes: QEMU hands the UART
// as many bytes at once as the trigger level (one at 1 byte, an interrupt
// each); what stays below it comes with the FIFO timeout, 4 characters later.
const FCR_ENABLE_CLEAR_TRIGGER14: u8 = 0xc7;
const IER_RX_DATA: u8 = 0x01;
const MCR_DTR_RTS_OUT2: u8 = 0x0b; // OUT2 routes the interrupt on PCs
const LSR_DATA_READY: u8 = 0x01;
const LSR_THR_EMPTY: u8 = 0x20;

/// How long a drain waits for the next byte of a frame under way: the
/// 16550's own receive timeout (4 characters at 115200 baud), after which
/// the rest would come with an interrupt anyway. The rest of a frame is in
/// QEMU already; fetching it now saves an interrupt round (about 0.2 ms
/// under TCG) per 14 bytes, and the timeout on the last few.
const TAIL_WAIT_NS: u64 = 350_000;

/// Polls of LSR per transmitted byte before giving up; at 115200 baud a
/// byte takes about 87 µs, far fewer polls than this.
const TX_POLLS: u32 = 1_000_000;

/// A UART at a claimed I/O base; stopped when dropped.
pub(crate) struct Uart {
    io: IoRegion,
}

impl Uart {
    /// Claims the 8 ports at `base` and checks that a UART answers there
    /// (its scratch register keeps a value). `Ok(None)`: nothing there.
    pub(crate) fn probe(base: u16, name: &'static CStr) -> Result<Option<Uart>> {
        let io = IoRegion::request(base, 8, name)?;
        for v in [0x5a, 0xa5] {
            io.write(SCR, v);
            if io.read(SCR) != v {
                return Ok(None);
            }
        }
        Ok(Some(Uart { io }))
    }

    /// 115200 baud 8N1, FIFOs on, interrupt on received data.
    pub(crate) fn start(&self) {
        self.io.write(IER, 0);
        self.io.write(LCR, LCR_DLAB);
        self.io.write(RBR_THR, 1); // divisor 1: 115200 baud
        self.io.write(IER, 0);
        self.io.write(LCR, LCR_8N1);
        self.io.write(FCR, FCR_ENABLE_CLEAR_TRIGGER14);
        self.io.write(MCR, MCR_DTR_RTS_OUT2);
        // Drop whatever was pending before we listened.
        self.drain(|_| false);
        self.io.write(IER, IER_RX_DATA);
    }

    /// Masks the UART's interrupt and drops the modem lines.
    pub(crate) fn stop(&self) {
        self.io.write(IER, 0);
        self.io.write(MCR, 0);
    }

    /// Sends `bytes`; `ETIMEDOUT` if the transmitter stays busy.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result {
        for &b in bytes {
            let mut polls = 0;
            while self.io.read(LSR) & LSR_THR_EMPTY == 0 {
                polls += 1;
                if polls == TX_POLLS {
                    return Err(crate::compat::errno::etimedout());
                }
                core::hint::spin_loop();
            }
            self.io.write(RBR_THR, b);
        }
        Ok(())
    }

    /// Hands every received byte to `f`, which says whether more bytes are
    /// due (a frame is under way); while they are, waits up to
    /// [`TAIL_WAIT_NS`] for each. Returns how many bytes there were.
    pub(crate) fn drain(&self, mut f: impl FnMut(u8) -> bool) -> usize {
        let mut n = 0;
        let mut due = false;
        let mut empty_since = None;
        // Bounded: a UART cannot deliver more than its FIFO per check, but a
        // broken one might report data forever.
        while n < 4096 {
            if self.io.read(LSR) & LSR_DATA_READY != 0 {
                due = f(self.io.read(RBR_THR));
                n += 1;
                empty_since = None;
                continue;
            }
            if !due {
                break;
            }
            let now = now_ns();
            if now.saturating_sub(*empty_since.get_or_insert(now)) > TAIL_WAIT_NS {
                break;
            }
            core::hint::spin_loop();
        }
        n
    }

    /// Silences the receive interrupt (hard-interrupt context: one port
    /// write). Returns whether the UART has something pending.
    pub(crate) fn quiesce(&self) -> bool {
        self.io.write(IER, 0);
        self.io.read(LSR) & LSR_DATA_READY != 0
    }

    /// Lets the UART interrupt again; it does at once if data is pending,
    /// which gives the edge-triggered ISA line a fresh edge.
    pub(crate) fn unmask(&self) {
        self.io.write(IER, IER_RX_DATA);
    }

    /// Whether received data waits to be read.
    pub(crate) fn data_waiting(&self) -> bool {
        self.io.read(LSR) & LSR_DATA_READY != 0
    }

    /// Whether received data comes within `us` microseconds, asleep
    /// meanwhile (process context): QEMU refills the FIFO from what waits
    /// in its chardev while the vCPU leaves the UART alone.
    pub(crate) fn data_within(&self, us: u32) -> bool {
        self.data_waiting() || {
            sleep_us(us);
            self.data_waiting()
        }
    }
}

impl Drop for Uart {
    fn drop(&mut self) {
        // Before the ports are released: no interrupt from a UART nobody
        // owns, on a line that may already be freed.
        self.stop();
    }
}
