// SPDX-License-Identifier: GPL-2.0

//! The operator's log (the audit log is the record of decisions; this says
//! what the agent is doing and what goes wrong): `tracing` to stderr. Under
//! systemd, stderr goes to the journal, which stamps the time itself and
//! reads a syslog priority from a `<N>` prefix, so lines get one and no
//! timestamp. `MIGLOCKD_LOG` sets the level (default info).

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// Installs the logger.
pub fn init() {
    let level = std::env::var("MIGLOCKD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    if under_journald() {
        let inner = format::format()
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false);
        builder.event_format(Priority(inner)).init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// stderr is the journal's stream (systemd says which in `JOURNAL_STREAM`,
/// as "device:inode").
fn under_journald() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
}

/// Prefixes each line with its syslog priority (sd-daemon(3)).
struct Priority<F>(F);

/// The syslog priority of a level.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(w, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, w, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
