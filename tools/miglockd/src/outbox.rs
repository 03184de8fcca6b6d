// SPDX-License-Identifier: GPL-2.0

//! The sending side of a guest link. Frames go into a bounded queue that a
//! thread of the link's own writes out, each write under a timeout, so
//! whoever sends (a lock decision, `miglockctl`, the watcher) never waits
//! for the guest and never does socket I/O under a VM's lock. A guest that
//! does not drain its UART fills the queue or outlasts the timeout; the
//! link is then dropped (the socket shut down, which ends the session's
//! read at once) and the session audits why.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a link was dropped, set once by whoever found out first.
type Stall = Arc<Mutex<Option<String>>>;

/// A link's outgoing queue; dropping it ends its writer thread.
pub struct Outbox {
    tx: SyncSender<Vec<u8>>,
    /// For shutting the socket down (never written here).
    stream: UnixStream,
    stall: Stall,
    depth: usize,
}

impl Outbox {
    /// Starts the writer of `stream`: at most `depth` frames wait, and a
    /// write the guest does not take within `timeout` drops the link.
    pub fn start(stream: UnixStream, depth: usize, timeout: Duration) -> std::io::Result<Outbox> {
        let mut w = stream.try_clone()?;
        // SO_SNDTIMEO: a full socket fails the write instead of blocking.
        w.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let (tx, rx) = sync_channel::<Vec<u8>>(depth.max(1));
        let stall = Stall::default();
        let (s, shut) = (stall.clone(), stream.try_clone()?);
        std::thread::Builder::new()
            .name("guest-writer".into())
            .spawn(move || {
                for frame in rx {
                    match w.write_all(&frame) {
                        Ok(()) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            let why = format!("guest took no frame for {timeout:?}");
                            stop(&s, &shut, why);
                            return;
                        }
                        // Gone: the session's read sees it too.
                        Err(_) => return,
                    }
                }
            })?;
        Ok(Outbox {
            tx,
            stream,
            stall,
            depth,
        })
    }

    /// Queues `frame`; false if the link is down or was dropped now because
    /// its queue is full (the guest does not drain).
    pub fn send(&self, frame: &[u8]) -> bool {
        if self.stalled().is_some() {
            return false;
        }
        match self.tx.try_send(frame.to_vec()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                let why = format!("guest left {} frames unread", self.depth);
                stop(&self.stall, &self.stream, why);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Why the link was dropped, if it was.
    pub fn stalled(&self) -> Option<String> {
        self.stall.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Records why and shuts the socket down (both ways: the session's read
/// returns at once). shutdown(2) never blocks.
fn stop(stall: &Stall, stream: &UnixStream, why: String) {
    let mut s = stall.lock().unwrap_or_else(|e| e.into_inner());
    if s.is_none() {
        *s = Some(why);
    }
    drop(s);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Instant;

    #[test]
    fn frames_arrive_in_order() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let o = Outbox::start(ours, 8, Duration::from_secs(5)).unwrap();
        for i in 0..100u8 {
            assert!(o.send(&[i; 3]));
            let mut b = [0u8; 3];
            theirs.read_exact(&mut b).unwrap();
            assert_eq!(b, [i; 3]);
        }
        assert_eq!(o.stalled(), None);
    }

    #[test]
    fn a_peer_that_never_reads_is_dropped_and_no_send_blocks() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let o = Outbox::start(ours, 4, Duration::from_millis(200)).unwrap();
        let frame = [7u8; 1024];
        let t = Instant::now();
        let mut sent = 0;
        while o.send(&frame) {
            sent += 1;
            assert!(sent < 100_000, "never dropped");
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let why = o.stalled().expect("dropped");
        assert!(why.contains("unread") || why.contains("no frame"), "{why}");
        // The socket is shut down: the peer reads the end of what was sent.
        theirs
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).unwrap();
        assert!(!o.send(&frame), "a dropped link takes no more");
    }
}
