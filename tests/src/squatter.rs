//! A TCP listener held by a process of its own, for port-conflict tests.
//! Shared by the end-to-end harness (`tests/src/lib.rs`) and the server
//! crate's supervision tests, which cannot depend on this crate (it depends
//! on theirs), so both include this file.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

/// A listener on 127.0.0.1 in another process.
///
/// Not a listener of the test process: every process a parallel test forks
/// inherits the test's descriptors until its exec, so such a listener could
/// be named by the pid of that fork, and outlive its drop for a moment.
/// Dropping a `Squatter` kills and reaps the process, so the port is free
/// when `drop` returns.
pub struct Squatter {
    child: Child,
    port: u16,
}

impl Squatter {
    /// Listens on 127.0.0.1:`port` (0: any free port); returns once the
    /// socket listens.
    pub fn listen(port: u16) -> Squatter {
        const SCRIPT: &str = "import socket, sys\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', int(sys.argv[1])))\n\
s.listen()\n\
print(s.getsockname()[1], flush=True)\n\
sys.stdin.read()\n";
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3 as a port squatter");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("squatter stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("squatter output");
        let Ok(bound) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the squatter did not listen on port {port}: {line:?}");
        };
        Squatter { child, port: bound }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
