// SPDX-License-Identifier: GPL-2.0

//! A QMP connection that many threads share.
//!
//! QEMU serves one client per QMP socket, yet the host agent needs it from
//! several places at once: a watcher that must see every event as it
//! happens, lock decisions that add or remove a migration blocker, and
//! migrations it runs. A reader thread owns the receive side: each reply
//! goes to the command that carries its `id`, each event to every
//! subscriber. Commands are written whole under a lock, so they never
//! interleave; nobody holds a lock while waiting for QEMU.

use crate::{Error, Event, Result};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a command may wait for its reply by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the greeting and `qmp_capabilities` may take by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The deadlines of a connection's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Dialling, the greeting and `qmp_capabilities`, together. QEMU serves
    /// one client per socket and leaves the others in its backlog without
    /// a greeting: without this, a second client waits for ever.
    pub connect: Duration,
    /// Each command's reply, and each write of one.
    pub reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            reply: REPLY_TIMEOUT,
        }
    }
}

type Reply = std::result::Result<Value, (String, String)>;

#[derive(Default)]
struct State {
    /// Commands waiting for their reply: a reply to any other id (one that
    /// came after its command gave up) is dropped, never kept or returned.
    waiting: HashSet<u64>,
    replies: HashMap<u64, Reply>,
    subscribers: Vec<Sender<Event>>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

struct Shared {
    writer: Mutex<(UnixStream, u64)>,
    timeouts: Timeouts,
    state: Mutex<State>,
    replied: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A shared QMP connection in command mode; clones share it.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl Monitor {
    /// Reads the greeting from `stream`, enters command mode and starts the
    /// reader thread.
    pub fn handshake(stream: UnixStream) -> Result<Monitor> {
        Self::connect(stream).map(|(m, _)| m)
    }

    /// Like [`Monitor::handshake`], and also returns a subscription that
    /// holds every event from the first on (none is lost to a subscriber
    /// that comes a moment late).
    pub fn connect(stream: UnixStream) -> Result<(Monitor, Receiver<Event>)> {
        Self::connect_within(stream, Timeouts::default())
    }

    /// Dials the QMP socket at `path` and connects, all within
    /// `timeouts.connect` (a full backlog, a QEMU that never greets).
    pub fn dial(path: &Path, timeouts: Timeouts) -> Result<(Monitor, Receiver<Event>)> {
        let start = Instant::now();
        let stream = dial(path, timeouts.connect)?;
        let left = timeouts.connect.saturating_sub(start.elapsed());
        Self::connect_within(
            stream,
            Timeouts {
                connect: left,
                ..timeouts
            },
        )
    }

    /// [`Monitor::connect`] with deadlines: the greeting and
    /// `qmp_capabilities` within `timeouts.connect`, then each command
    /// within `timeouts.reply`.
    pub fn connect_within(
        stream: UnixStream,
        timeouts: Timeouts,
    ) -> Result<(Monitor, Receiver<Event>)> {
        let deadline = Instant::now() + timeouts.connect;
        let mut reader = BufReader::new(stream.try_clone()?);
        let greeting = read_before(&mut reader, deadline, "the QMP greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol(format!(
                "expected greeting, got {greeting}"
            )));
        }
        let mut writer = stream;
        // A write into a QEMU that does not read fails instead of blocking.
        writer.set_write_timeout(Some(nonzero(timeouts.reply)))?;
        writeln!(writer, r#"{{"execute": "qmp_capabilities"}}"#)?;
        loop {
            let m = read_before(&mut reader, deadline, "the answer to qmp_capabilities")?;
            if m.get("return").is_some() {
                break;
            }
            if let Some(e) = m.get("error") {
                return Err(Error::Protocol(format!("qmp_capabilities: {e}")));
            }
        }
        // The reader thread waits for events as long as the connection lasts.
        reader.get_ref().set_read_timeout(None)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            writer: Mutex::new((writer, 1)),
            timeouts,
            state: Mutex::new(State {
                subscribers: vec![tx],
                ..State::default()
            }),
            replied: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("qmp-reader".into())
            .spawn(move || read_loop(&s, reader))?;
        Ok((Monitor { shared }, rx))
    }

    /// The process at the other end (QEMU), from the socket's credentials.
    pub fn peer_pid(&self) -> Option<u32> {
        let w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
        let cred = rustix::net::sockopt::socket_peercred(&w.0).ok()?;
        u32::try_from(cred.pid.as_raw_nonzero().get()).ok()
    }

    /// Why the connection ended, if it has.
    pub fn closed(&self) -> Option<String> {
        self.shared.state().closed.clone()
    }

    /// Events from now on, in order, until the connection ends (then the
    /// receiver reports disconnection).
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = mpsc::channel();
        let mut st = self.shared.state();
        if st.closed.is_none() {
            st.subscribers.push(tx);
        }
        rx
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.call(command, arguments, None, self.shared.timeouts.reply)
    }

    /// Runs `command`, waiting at most `timeout` for its reply.
    pub fn execute_within(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        self.call(command, arguments, None, timeout)
    }

    /// Runs `command` with `fd` passed alongside (`SCM_RIGHTS`), as
    /// `add-fd` and `getfd` take it.
    pub fn execute_with_fd(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> Result<Value> {
        self.call(command, arguments, Some(fd), self.shared.timeouts.reply)
    }

    fn call(
        &self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Value> {
        let id = {
            let mut w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
            let id = w.1;
            w.1 += 1;
            let mut msg = Map::new();
            msg.insert("execute".into(), json!(command));
            if let Some(a) = arguments {
                msg.insert("arguments".into(), a);
            }
            msg.insert("id".into(), json!(id));
            let mut line = Value::Object(msg).to_string();
            line.push('\n');
            {
                let mut st = self.shared.state();
                if let Some(closed) = &st.closed {
                    return Err(gone(closed));
                }
                st.waiting.insert(id);
            }
            if let Err(e) = send(&w.0, line.as_bytes(), fd) {
                // Part of a line may have gone out: nothing after it could
                // be parsed by QEMU. The connection ends; the caller redials.
                let _ = w.0.shutdown(std::net::Shutdown::Both);
                self.shared.state().waiting.remove(&id);
                return Err(e);
            }
            id
        };
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state();
        loop {
            if let Some(r) = st.replies.remove(&id) {
                st.waiting.remove(&id);
                return r.map_err(|(class, desc)| Error::Command {
                    command: command.to_string(),
                    class,
                    desc,
                });
            }
            if let Some(closed) = &st.closed {
                return Err(gone(closed));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Its reply, if it ever comes, is dropped on arrival.
                st.waiting.remove(&id);
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply to '{command}' within {timeout:?}"),
                )));
            }
            st = self
                .shared
                .replied
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Ends the connection (the reader thread exits; pending commands fail).
    pub fn close(&self) {
        let w = self.shared.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.0.shutdown(std::net::Shutdown::Both);
    }
}

fn gone(why: &str) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("QMP connection closed: {why}"),
    ))
}

/// Writes `bytes` whole, with `fd` attached to the first chunk.
fn send(stream: &UnixStream, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<()> {
    let mut rest = bytes;
    if let Some(fd) = fd {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let fds = [fd];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(Error::Protocol("no room for the file descriptor".into()));
        }
        let n = sendmsg(
            stream.as_fd(),
            &[io::IoSlice::new(rest)],
            &mut anc,
            SendFlags::NOSIGNAL,
        )
        .map_err(io::Error::from)?;
        rest = &rest[n..];
    }
    let mut s = stream;
    s.write_all(rest)?;
    Ok(())
}

fn read_loop(shared: &Shared, mut reader: BufReader<UnixStream>) {
    let why = loop {
        let msg = match read_message(&mut reader) {
            Ok(m) => m,
            Err(e) => break e.to_string(),
        };
        let mut st = shared.state();
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let ev = Event {
                name: name.to_string(),
                data: msg.get("data").cloned().unwrap_or(Value::Null),
            };
            // A subscriber that went away is dropped.
            st.subscribers.retain(|s| s.send(ev.clone()).is_ok());
            continue;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            continue; // a reply to nobody (we always send an id)
        };
        let reply = match (msg.get("return"), msg.get("error")) {
            (Some(r), _) => Ok(r.clone()),
            (None, Some(e)) => {
                let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                Err((field("class"), field("desc")))
            }
            (None, None) => continue,
        };
        if st.waiting.contains(&id) {
            st.replies.insert(id, reply);
            shared.replied.notify_all();
        }
    };
    let mut st = shared.state();
    st.closed = Some(why);
    st.subscribers.clear();
    shared.replied.notify_all();
}

/// Reads one message before `deadline`; `what` names it in the error.
fn read_before(reader: &mut BufReader<UnixStream>, deadline: Instant, what: &str) -> Result<Value> {
    let left = deadline.saturating_duration_since(Instant::now());
    reader.get_ref().set_read_timeout(Some(nonzero(left)))?;
    read_message(reader).map_err(|e| match e {
        Error::Io(e) if timed_out(&e) => Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no {what} in time: QEMU serves one QMP client per socket; \
                 is another one connected?"
            ),
        )),
        e => e,
    })
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A socket timeout of zero means none at all: the least is 1 ms.
fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

/// Connects to `path` within `timeout`: a listener whose backlog is full
/// makes connect(2) wait, as long as the socket's send timeout allows.
fn dial(path: &Path, timeout: Duration) -> Result<UnixStream> {
    use rustix::net::{sockopt, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(nonzero(timeout)))
        .map_err(io::Error::from)?;
    let addr = SocketAddrUnix::new(path).map_err(io::Error::from)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(rustix::io::Errno::AGAIN) => Err(Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{} did not accept within {timeout:?} (its backlog is full)",
                path.display()
            ),
        ))),
        Err(e) => Err(Error::Io(e.into())),
    }
}

fn read_message(reader: &mut BufReader<UnixStream>) -> Result<Value> {
    let mut line = String::new();
    // One QMP message is one line; a broken peer cannot make us buffer
    // without bound.
    const MAX_LINE: u64 = 16 << 20;
    let n = Read::by_ref(reader).take(MAX_LINE).read_line(&mut line)?;
    if n == 0 {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "QMP socket closed",
        )));
    }
    if !line.ends_with('\n') && n as u64 == MAX_LINE {
        return Err(Error::Protocol("message exceeds 16 MiB".into()));
    }
    serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("bad JSON ({e}): {line}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::thread;

    /// A fake QEMU: greets, answers `qmp_capabilities`, then answers each
    /// command with `answer(cmd)` (which may emit events first), echoing
    /// the command's id.
    fn fake(answer: fn(&Value) -> Vec<Value>) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let v: Value = serde_json::from_str(&line).unwrap();
                line.clear();
                if v["execute"] == "qmp_capabilities" {
                    writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                    continue;
                }
                for mut m in answer(&v) {
                    if m.get("event").is_none() {
                        m["id"] = v["id"].clone();
                    }
                    writeln!(w, "{m}").unwrap();
                }
            }
        });
        ours
    }

    #[test]
    fn replies_reach_their_command_and_events_every_subscriber() {
        let m = Monitor::handshake(fake(|v| {
            vec![
                json!({"event": "MIGRATION", "data": {"status": "active"}}),
                json!({"return": {"echo": v["execute"]}}),
            ]
        }))
        .unwrap();
        let a = m.subscribe();
        let b = m.subscribe();
        assert_eq!(
            m.execute("query-status", None).unwrap()["echo"],
            "query-status"
        );
        for rx in [a, b] {
            let ev = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(
                (ev.name.as_str(), &ev.data["status"]),
                ("MIGRATION", &json!("active"))
            );
        }
    }

    #[test]
    fn commands_from_many_threads_each_get_their_own_reply() {
        let m = Monitor::handshake(fake(|v| vec![json!({"return": v["arguments"]["n"]})])).unwrap();
        let threads: Vec<_> = (0..16)
            .map(|n| {
                let m = m.clone();
                thread::spawn(move || {
                    for i in 0..50 {
                        let k = n * 1000 + i;
                        let r = m.execute("echo", Some(json!({ "n": k }))).unwrap();
                        assert_eq!(r, json!(k));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_socket_that_never_greets_fails_within_the_deadline() {
        let dir = std::env::temp_dir().join(format!("qmp-silent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        // Never accepted: the dial lands in the backlog, as a second
        // client of a QEMU does.
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = Instant::now();
        let limits = Timeouts {
            connect: Duration::from_millis(200),
            reply: Duration::from_secs(1),
        };
        let e = Monitor::dial(&path, limits).err().expect("no greeting");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(
            matches!(&e, Error::Io(io) if io.kind() == io::ErrorKind::TimedOut),
            "{e}"
        );
        assert!(e.to_string().contains("greeting"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_backlog_fails_the_dial_within_the_deadline() {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
        let dir = std::env::temp_dir().join(format!("qmp-backlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let l = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&l, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        // A backlog of none: the first client waits unaccepted, the next
        // cannot even connect (a QEMU whose main loop is stuck).
        rustix::net::listen(&l, 0).unwrap();
        let mut first = Vec::new();
        let mut dialled = 0;
        let t = Instant::now();
        let e = loop {
            match dial(&path, Duration::from_millis(200)) {
                Ok(s) => first.push(s),
                Err(e) => break e,
            }
            dialled += 1;
            assert!(dialled < 100, "the backlog never filled");
        };
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(e.to_string().contains("did not accept"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_late_reply_is_dropped_not_returned_for_the_next_command() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            writeln!(w, r#"{{"QMP": {{}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            let mut next = || {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                serde_json::from_str::<Value>(&line).unwrap()
            };
            // The first command's answer comes only after the second was
            // sent, and before the second's: too late for the first.
            let slow = next();
            let fast = next();
            writeln!(w, "{}", json!({"return": "slow", "id": slow["id"]})).unwrap();
            writeln!(w, "{}", json!({"return": "fast", "id": fast["id"]})).unwrap();
            let _ = next();
        });
        let m = Monitor::handshake(ours).unwrap();
        let e = m
            .execute_within("slow", None, Duration::from_millis(100))
            .unwrap_err();
        assert!(e.to_string().contains("no reply to 'slow'"), "{e}");
        assert_eq!(m.execute("fast", None).unwrap(), "fast");
        let st = m.shared.state();
        assert!(
            st.replies.is_empty() && st.waiting.is_empty(),
            "stale replies kept"
        );
    }

    #[test]
    fn the_peer_is_the_process_at_the_other_end() {
        // The fake runs in this process.
        let m = Monitor::handshake(fake(|_| vec![json!({"return": {}})])).unwrap();
        assert_eq!(m.peer_pid(), Some(std::process::id()));
    }

    #[test]
    fn errors_keep_their_class_and_text() {
        let m = Monitor::handshake(fake(|_| {
            vec![json!({"error": {"class": "GenericError", "desc": "disallowing migration blocker"}})]
        }))
        .unwrap();
        let e = m.execute("blockdev-add", None).unwrap_err();
        assert!(
            matches!(&e, Error::Command { desc, .. } if desc.contains("disallowing")),
            "{e}"
        );
    }

    #[test]
    fn a_closed_connection_fails_commands_and_ends_subscriptions() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            writeln!(w, r#"{{"QMP": {{}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            // Then QEMU goes away.
        });
        let m = Monitor::handshake(ours).unwrap();
        let rx = m.subscribe();
        t.join().unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
        assert!(m.execute("query-status", None).is_err());
        assert!(m.closed().is_some());
    }

    #[test]
    fn a_file_descriptor_travels_with_its_command() {
        use std::os::fd::AsFd;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || {
            use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
            let mut w = theirs.try_clone().unwrap();
            writeln!(w, r#"{{"QMP": {{}}}}"#).unwrap();
            let mut got_fd = false;
            let mut text = Vec::new();
            while !text.ends_with(b"\n") || text.iter().filter(|&&b| b == b'\n').count() < 2 {
                let mut buf = [0u8; 512];
                let mut space =
                    [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut anc = RecvAncillaryBuffer::new(&mut space);
                let n = recvmsg(
                    theirs.as_fd(),
                    &mut [io::IoSliceMut::new(&mut buf)],
                    &mut anc,
                    RecvFlags::empty(),
                )
                .unwrap()
                .bytes;
                for msg in anc.drain() {
                    if let RecvAncillaryMessage::ScmRights(fds) = msg {
                        got_fd |= fds.count() == 1;
                    }
                }
                text.extend_from_slice(&buf[..n]);
                if text.ends_with(b"\n") && text.iter().filter(|&&b| b == b'\n').count() == 1 {
                    writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
                }
            }
            let last = String::from_utf8_lossy(&text)
                .lines()
                .last()
                .unwrap()
                .to_string();
            let v: Value = serde_json::from_str(&last).unwrap();
            writeln!(w, "{}", json!({"return": {"fd": got_fd}, "id": v["id"]})).unwrap();
        });
        let m = Monitor::handshake(ours).unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        let r = m.execute_with_fd("add-fd", None, f.as_fd()).unwrap();
        assert_eq!(r["fd"], true);
        t.join().unwrap();
    }
}
