// SPDX-License-Identifier: GPL-2.0

//! Small QMP clients: [`Qmp`], synchronous, for one thread, and
//! [`Monitor`], which many threads share.
//!
//! QMP is line-delimited JSON: a greeting, then `qmp_capabilities`, then
//! commands answered by `return` or `error`, with asynchronous `event`s
//! interleaved. Events read while waiting for an answer are queued, so a
//! caller waiting for e.g. `MIGRATION` never misses one.

mod monitor;

pub use monitor::{Monitor, Timeouts, CONNECT_TIMEOUT, REPLY_TIMEOUT};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// What can go wrong talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed or closed.
    #[error("QMP I/O: {0}")]
    Io(#[from] io::Error),
    /// QEMU sent something that is not QMP.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU refused a command.
    #[error("QMP command '{command}' failed: {class}: {desc}")]
    Command {
        /// The command sent.
        command: String,
        /// QMP error class, e.g. `GenericError`.
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// Events kept for [`Qmp::wait_event`]; the oldest are dropped beyond this.
pub const MAX_QUEUED_EVENTS: usize = 256;

/// Result of QMP calls.
pub type Result<T> = std::result::Result<T, Error>;

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `MIGRATION`.
    pub name: String,
    /// Its `data` member (`null` if absent).
    pub data: Value,
}

/// A connected QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: VecDeque<Event>,
    transcript: Option<Box<dyn Write + Send>>,
}

impl Qmp {
    /// Reads the greeting from `stream` and enters command mode.
    pub fn handshake(stream: UnixStream) -> Result<Self> {
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: VecDeque::new(),
            transcript: None,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(Error::Protocol(format!(
                "expected greeting, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Copies every message sent and received to `out` (one JSON per line,
    /// prefixed `>` or `<`), for logs.
    pub fn set_transcript(&mut self, out: Box<dyn Write + Send>) {
        self.transcript = Some(out);
    }

    /// Limits how long one read may block; `None` blocks forever.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = Map::new();
        msg.insert("execute".into(), json!(command));
        if let Some(args) = arguments {
            msg.insert("arguments".into(), args);
        }
        let line = Value::Object(msg).to_string();
        self.log('>', &line);
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        loop {
            let reply = self.read_message()?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let field = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(Error::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            if !self.queue_event(&reply) {
                return Err(Error::Protocol(format!("unexpected message {reply}")));
            }
        }
    }

    /// Forgets the events queued so far (those of an earlier migration must
    /// not answer a wait for the next one's).
    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    /// Waits until `deadline` for an event matching `pred`; events that do
    /// not match stay queued. `Ok(None)` on timeout.
    pub fn wait_event(
        &mut self,
        deadline: Instant,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Option<Event>> {
        if let Some(i) = self.events.iter().position(&mut pred) {
            return Ok(self.events.remove(i));
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.set_timeout(Some(deadline - now))?;
            let msg = match self.read_message() {
                Ok(m) => m,
                Err(Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.set_timeout(None)?;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            self.set_timeout(None)?;
            if !self.queue_event(&msg) {
                return Err(Error::Protocol(format!("unexpected message {msg}")));
            }
            if pred(self.events.back().expect("just queued")) {
                return Ok(self.events.pop_back());
            }
        }
    }

    fn queue_event(&mut self, msg: &Value) -> bool {
        let Some(name) = msg.get("event").and_then(Value::as_str) else {
            return false;
        };
        // Events nobody waits for must not pile up without bound.
        if self.events.len() == MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            name: name.to_string(),
            data: msg.get("data").cloned().unwrap_or(Value::Null),
        });
        true
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        // A QMP message is one line; cap it so a broken peer cannot make us
        // buffer without bound.
        const MAX_LINE: u64 = 16 << 20;
        let n = Read::by_ref(&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)?;
        if n == 0 {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QMP socket closed",
            )));
        }
        if !line.ends_with('\n') && n as u64 == MAX_LINE {
            return Err(Error::Protocol("message exceeds 16 MiB".into()));
        }
        self.log('<', line.trim_end());
        serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("bad JSON ({e}): {line}")))
    }

    fn log(&mut self, dir: char, line: &str) {
        if let Some(t) = self.transcript.as_mut() {
            // The transcript is diagnostics only; losing it must not fail a command.
            let _ = writeln!(t, "{dir} {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::thread;

    /// A scripted QMP peer: sends the greeting, then for each expected
    /// command answers with the given lines.
    fn fake_qemu(script: Vec<(&'static str, Vec<String>)>) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for (cmd, replies) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], cmd);
                for reply in replies {
                    writeln!(w, "{reply}").unwrap();
                }
            }
            // Stay connected until the client hangs up.
            let mut rest = String::new();
            let _ = r.read_line(&mut rest);
        });
        ours
    }

    #[test]
    fn command_returns_value_and_queues_events() {
        let s = fake_qemu(vec![
            ("qmp_capabilities", vec![r#"{"return": {}}"#.into()]),
            (
                "query-status",
                vec![
                    r#"{"event": "STOP", "data": {}, "timestamp": {}}"#.into(),
                    r#"{"return": {"status": "running", "running": true}}"#.into(),
                ],
            ),
        ]);
        let mut q = Qmp::handshake(s).unwrap();
        let r = q.execute("query-status", None).unwrap();
        assert_eq!(r["status"], "running");
        let deadline = Instant::now() + Duration::from_secs(1);
        let ev = q.wait_event(deadline, |e| e.name == "STOP").unwrap();
        assert_eq!(ev.map(|e| e.name), Some("STOP".to_string()));
    }

    #[test]
    fn command_error_is_reported() {
        let s = fake_qemu(vec![
            ("qmp_capabilities", vec![r#"{"return": {}}"#.into()]),
            (
                "migrate",
                vec![r#"{"error": {"class": "GenericError", "desc": "nope"}}"#.into()],
            ),
        ]);
        let mut q = Qmp::handshake(s).unwrap();
        let e = q.execute("migrate", Some(json!({"uri": "x"}))).unwrap_err();
        assert!(
            matches!(e, Error::Command { ref desc, .. } if desc == "nope"),
            "{e}"
        );
    }

    #[test]
    fn wait_event_times_out() {
        let s = fake_qemu(vec![("qmp_capabilities", vec![r#"{"return": {}}"#.into()])]);
        let mut q = Qmp::handshake(s).unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(q.wait_event(deadline, |_| true).unwrap().is_none());
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = theirs;
            writeln!(w, "this is not json").unwrap();
        });
        assert!(matches!(Qmp::handshake(ours), Err(Error::Protocol(_))));
    }
}
