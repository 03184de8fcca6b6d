// SPDX-License-Identifier: GPL-2.0

//! A socket the agent dials until it answers (a VM's doorbell, its QMP):
//! which failures are worth telling an operator, and when it recovered.
//! A redial every 200 ms must not say the same thing five times a second,
//! and a wrong path must not stay silent either: the first failure of an
//! outage is told, and so is a different error within it (the socket
//! appeared but nobody listens), then the recovery, once.

use std::time::{Duration, Instant};

/// The state of one dialled socket.
#[derive(Debug, Default)]
pub struct Dial {
    /// Since when it fails, and with which error last told.
    outage: Option<(Instant, String)>,
}

impl Dial {
    /// A dial failed at `now` with `error`: true if this is news (the first
    /// failure of an outage, or another error than the one last told).
    pub fn failed(&mut self, error: &str, now: Instant) -> bool {
        match &mut self.outage {
            Some((_, told)) if told == error => false,
            Some((_, told)) => {
                *told = error.to_string();
                true
            }
            None => {
                self.outage = Some((now, error.to_string()));
                true
            }
        }
    }

    /// A dial succeeded at `now`: how long the outage it ends lasted, if
    /// there was one.
    pub fn connected(&mut self, now: Instant) -> Option<Duration> {
        self.outage
            .take()
            .map(|(since, _)| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_told_once_and_its_end_once() {
        let t0 = Instant::now();
        let mut d = Dial::default();
        assert_eq!(d.connected(t0), None, "no outage yet");
        assert!(d.failed("ENOENT", t0));
        for i in 1..50 {
            assert!(!d.failed("ENOENT", t0 + Duration::from_millis(200 * i)));
        }
        // The socket appeared but nobody listens: that is news.
        assert!(d.failed("ECONNREFUSED", t0 + Duration::from_secs(10)));
        assert!(!d.failed("ECONNREFUSED", t0 + Duration::from_secs(11)));
        assert_eq!(
            d.connected(t0 + Duration::from_secs(12)),
            Some(Duration::from_secs(12))
        );
        assert_eq!(d.connected(t0 + Duration::from_secs(13)), None);
        // The next outage is told again, timed from its own start.
        assert!(d.failed("ENOENT", t0 + Duration::from_secs(20)));
        assert_eq!(
            d.connected(t0 + Duration::from_secs(21)),
            Some(Duration::from_secs(1))
        );
    }
}
