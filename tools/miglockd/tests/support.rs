// SPDX-License-Identifier: GPL-2.0

//! The miglockd process under test, shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A running miglockd with `dir/agent.toml`; killed when dropped.
pub struct Agent {
    /// Its directory (configuration, sockets, logs).
    pub dir: PathBuf,
    child: Child,
}

impl Agent {
    /// Starts miglockd on `dir/agent.toml`, stderr to `dir/agent.err`.
    pub fn start(dir: &Path) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_miglockd"))
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .expect("start miglockd");
        Agent {
            dir: dir.to_path_buf(),
            child,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
