// SPDX-License-Identifier: GPL-2.0

//! A KTAP parser for KUnit output found in a guest's serial log.
//!
//! The log is untrusted text that mixes kernel and userspace lines, so the
//! parser never fails: it collects what it recognises and the checks in
//! [`Suite::problems`] decide.

/// The outcome of one test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `ok N name`
    Pass,
    /// `not ok N name`
    Fail,
    /// `ok N name # SKIP ...`
    Skip,
}

/// One test case of a suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Its number within the suite.
    pub number: usize,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Diagnostic lines KUnit printed before the result (failure messages).
    pub diagnostics: Vec<String>,
}

/// One KUnit suite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suite {
    /// `# Subtest: NAME`
    pub name: String,
    /// `1..N`, if seen.
    pub plan: Option<usize>,
    /// Cases in the order reported.
    pub cases: Vec<Case>,
    /// The suite's own result line, if seen.
    pub outcome: Option<Outcome>,
    indent: usize,
}

impl Suite {
    /// Everything wrong with this suite's run; empty means it passed.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.cases {
            if c.outcome == Outcome::Fail {
                let mut msg = format!("case '{}' failed", c.name);
                for d in &c.diagnostics {
                    msg.push_str("\n      ");
                    msg.push_str(d);
                }
                out.push(msg);
            }
        }
        match self.plan {
            None => out.push("no test plan (1..N) was printed".into()),
            Some(n) if n != self.cases.len() => out.push(format!(
                "plan announced {n} cases but {} reported (missing cases)",
                self.cases.len()
            )),
            _ => {}
        }
        for (i, c) in self.cases.iter().enumerate() {
            if c.number != i + 1 {
                out.push(format!(
                    "case '{}' numbered {}, expected {}",
                    c.name,
                    c.number,
                    i + 1
                ));
                break;
            }
        }
        match self.outcome {
            None => out.push("the suite's result line is missing (did the run stop?)".into()),
            Some(Outcome::Fail) if out.is_empty() => {
                out.push("KUnit reported the suite failed".into())
            }
            _ => {}
        }
        out
    }
}

/// Splits a result line `ok 3 name # SKIP why` into (outcome, number, name).
fn result_line(s: &str) -> Option<(Outcome, usize, String)> {
    let (failed, rest) = if let Some(r) = s.strip_prefix("not ok ") {
        (true, r)
    } else {
        (false, s.strip_prefix("ok ")?)
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = num.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, d),
        None => (rest, ""),
    };
    let name = name.trim().trim_start_matches("- ").to_string();
    let outcome = if failed {
        Outcome::Fail
    } else if directive
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("SKIP")
    {
        Outcome::Skip
    } else {
        Outcome::Pass
    };
    Some((outcome, number, name))
}

/// Lines kept before a case result: enough for any KUnit failure report.
const MAX_DIAGNOSTICS: usize = 16;

/// Finds every KUnit suite in `log`.
pub fn parse(log: &str) -> Vec<Suite> {
    let mut done: Vec<Suite> = Vec::new();
    let mut open: Option<Suite> = None;
    let mut pending: Vec<String> = Vec::new();
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r');
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if let Some(name) = body.strip_prefix("# Subtest: ") {
            if let Some(s) = open.take() {
                done.push(s);
            }
            open = Some(Suite {
                name: name.trim().to_string(),
                indent,
                ..Suite::default()
            });
            pending.clear();
            continue;
        }
        let Some(suite) = open.as_mut() else { continue };
        if indent == suite.indent {
            if let Some(n) = body.strip_prefix("1..").and_then(|n| n.trim().parse().ok()) {
                suite.plan = Some(n);
            } else if let Some((outcome, number, name)) = result_line(body) {
                let diagnostics = std::mem::take(&mut pending);
                suite.cases.push(Case {
                    number,
                    name,
                    outcome,
                    diagnostics,
                });
            } else if body.starts_with('#') || body.starts_with("Expected") {
                pending.push(body.to_string());
            }
        } else if indent > suite.indent {
            pending.push(body.to_string());
        } else if let Some((outcome, _, name)) = result_line(body) {
            if name == suite.name {
                suite.outcome = Some(outcome);
                done.push(open.take().expect("suite is open"));
            }
        } else if !body.is_empty() {
            // KUnit prints an expectation's message unindented.
            pending.push(body.to_string());
        }
        // Diagnostics only matter for the next case; bound them.
        if pending.len() > MAX_DIAGNOSTICS {
            pending.drain(..pending.len() - MAX_DIAGNOSTICS);
        }
    }
    done.extend(open);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSING: &str = "\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: miglock
    # module: miglock
    1..2
    ok 1 ioctl_encoding_matches_kernel
miglock: some unrelated kernel line
    ok 2 ioctl_size_field_round_trips
# miglock: pass:2 fail:0 skip:0 total:2
# Totals: pass:2 fail:0 skip:0 total:2
ok 1 miglock
";

    #[test]
    fn passing_suite() {
        let s = parse(PASSING);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "miglock");
        assert_eq!(s[0].plan, Some(2));
        assert_eq!(s[0].cases.len(), 2);
        assert_eq!(s[0].outcome, Some(Outcome::Pass));
        assert!(s[0].problems().is_empty(), "{:?}", s[0].problems());
    }

    #[test]
    fn failed_case_carries_diagnostics() {
        let log = "\
KTAP version 1
    # Subtest: miglock
    1..2
    ok 1 a
    # b: EXPECTATION FAILED at rust/kunit_tests.rs:40
    Expected 1 + 1 == 3 to be true, but is false

deliberate failure
    not ok 2 b
not ok 1 miglock
";
        let s = parse(log);
        let p = s[0].problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("case 'b' failed"));
        assert!(p[0].contains("rust/kunit_tests.rs:40"));
        assert!(p[0].contains("deliberate failure"), "{p:?}");
    }

    #[test]
    fn missing_cases_and_result_are_problems() {
        let log = "    # Subtest: miglock\n    1..3\n    ok 1 a\n";
        let p = parse(log)[0].problems();
        assert!(p.iter().any(|m| m.contains("missing cases")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("result line is missing")),
            "{p:?}"
        );
    }

    #[test]
    fn skip_is_not_failure() {
        let log = "    # Subtest: s\n    1..1\n    ok 1 a # SKIP no hw\nok 1 s\n";
        let s = parse(log);
        assert_eq!(s[0].cases[0].outcome, Outcome::Skip);
        assert!(s[0].problems().is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        for log in [
            "",
            "ok",
            "not ok x",
            "# Subtest:",
            "    1..x\nok 99999999999999999999 a",
            "\u{0}\u{ff}",
        ] {
            let _ = parse(log).iter().map(Suite::problems).count();
        }
    }
}
