//! Real LiveKit participants (tests/python/participant.py, LiveKit's
//! realtime SDK) run inside a test's [`Netns`]: each takes its token from
//! lk-backend's `POST /token`, joins over WebRTC, may publish a tone, and
//! reports what it hears as JSON lines that these helpers read.
//!
//! Every wait is for a line the script prints, bounded by a deadline whose
//! failure message says what was awaited and shows the script's recent
//! output (with any JWT redacted).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::Netns;

/// tests/python/participant.py.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/participant.py")
}

/// lk-backend's token URL for a backend on `port` inside the namespace.
pub fn token_url(backend_port: u16) -> String {
    format!("http://127.0.0.1:{backend_port}/token")
}

/// Frames of tone that count as "heard": half a second (10 ms frames).
pub const HEARD_FRAMES: u64 = 50;

/// The lines a script printed, shared with the thread that reads them.
type Lines = Arc<Mutex<Vec<Value>>>;

/// One running participant script.
pub struct Participant {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines,
    /// The thread reading its stdout into `lines`; it ends at EOF.
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: tempfile::NamedTempFile,
    /// Its identity (or `joiner` for a [`Joiner`]).
    pub identity: String,
}

impl Participant {
    /// Joins `room` as `identity` with a token from lk-backend on
    /// `backend_port`; publishes a 440 Hz tone when `publish`. Returns at
    /// once: wait for [`Participant::wait_connected`].
    pub fn join(ns: &Netns, backend_port: u16, room: &str, identity: &str, publish: bool) -> Participant {
        Self::join_with(ns, backend_port, room, identity, publish, &[])
    }

    /// [`Participant::join`] with more of the script's options
    /// (`--report-every N`, `--wait-for-backend S`).
    pub fn join_with(
        ns: &Netns,
        backend_port: u16,
        room: &str,
        identity: &str,
        publish: bool,
        extra: &[&str],
    ) -> Participant {
        let mut args = vec!["--room".to_string(), room.into(), "--identity".into(), identity.into()];
        if publish {
            args.push("--publish".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::spawn(ns, backend_port, identity, &args)
    }

    fn spawn(ns: &Netns, backend_port: u16, identity: &str, args: &[String]) -> Participant {
        let stderr = tempfile::Builder::new()
            .prefix("hero_livekit_participant")
            .tempfile()
            .expect("participant stderr file");
        let err = stderr.reopen().expect("reopen participant stderr");
        let mut cmd = ns.command("python3");
        cmd.arg(script())
            .arg("--token-url")
            .arg(token_url(backend_port))
            .args(args)
            // A stray LIVEKIT_* variable must not steer the SDK.
            .env_remove("LIVEKIT_URL")
            .env_remove("LIVEKIT_API_KEY")
            .env_remove("LIVEKIT_API_SECRET")
            // The script reads the mint secret at each token request from
            // the env file of the lk-backend on the port (`mint_secret_for`),
            // so a rotation during a long run is followed; never argv.
            .env_remove("LK_MINT_SECRET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err);
        let mut child = cmd
            .spawn()
            .expect("run python3 tests/python/participant.py (pip install -r tests/python/requirements.txt)");
        let stdout = child.stdout.take().expect("participant stdout");
        let stdin = child.stdin.take();
        let lines: Lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if let Ok(mut l) = sink.lock() {
                    l.push(v);
                }
            }
        });
        Participant {
            child,
            stdin,
            lines,
            reader: Some(reader),
            stderr,
            identity: identity.to_string(),
        }
    }

    /// How many lines were printed so far: a mark for waits "since now".
    pub fn mark(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Waits for the first line at or after `since` that `pred` accepts and
    /// returns it with its index. Fails when the deadline passes, or when the
    /// script printed an `error` line or exited.
    pub fn wait_line(
        &mut self,
        since: usize,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (usize, Value) {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(1);
        loop {
            let found = self.lines.lock().ok().and_then(|l| {
                l.iter()
                    .enumerate()
                    .skip(since)
                    .find(|(_, v)| pred(v))
                    .map(|(i, v)| (i, v.clone()))
            });
            if let Some(f) = found {
                return f;
            }
            let failed = self
                .lines
                .lock()
                .ok()
                .and_then(|l| l.iter().skip(since).find(|v| v["event"] == "error").cloned());
            if let Some(e) = failed {
                panic!(
                    "{} failed while waiting for {what}: {e}\n{}",
                    self.identity,
                    self.report()
                );
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The reader may still hold the last lines: it ends at the
                // pipe's EOF, which the exit brings; then one more look.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                let found = self.lines.lock().ok().and_then(|l| {
                    l.iter()
                        .enumerate()
                        .skip(since)
                        .find(|(_, v)| pred(v))
                        .map(|(i, v)| (i, v.clone()))
                });
                if let Some(f) = found {
                    return f;
                }
                panic!(
                    "{} exited ({status}) while waiting for {what}\n{}",
                    self.identity,
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out after {timeout:?} waiting for {what}\n{}",
                self.identity,
                self.report()
            );
            std::thread::park_timeout(delay);
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits until connected; returns the `connected` line (its `token_ms`
    /// and `connect_ms`).
    pub fn wait_connected(&mut self, timeout: Duration) -> Value {
        self.wait_line(0, timeout, "connected", |v| v["event"] == "connected").1
    }

    /// Waits until, after line `since`, this participant has heard `frames`
    /// frames of `from`'s tone. With `resubscribed`, only audio of a
    /// subscription made after `since` counts (after the server was
    /// replaced, the old subscription's concealment must not count).
    pub fn wait_heard(&mut self, from: &str, since: usize, frames: u64, resubscribed: bool, timeout: Duration) {
        let mut start = since;
        if resubscribed {
            let what = format!("a new subscription to {from}'s track");
            start = self
                .wait_line(since, timeout, &what, |v| {
                    v["event"] == "subscribed" && v["from"] == from
                })
                .0;
        }
        let mut heard = 0u64;
        let what = format!("{frames} frames of {from}'s tone");
        self.wait_line(start, timeout, &what, |v| {
            if v["event"] == "audio" && v["from"] == from {
                heard += v["loud"].as_u64().unwrap_or(0);
            }
            heard >= frames
        });
    }

    /// The script's output so far and the end of its stderr, for a failure
    /// message; JWTs redacted.
    pub fn report(&self) -> String {
        let lines = self
            .lines
            .lock()
            .map(|l| {
                l.iter()
                    .rev()
                    .take(30)
                    .rev()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let err = std::fs::read_to_string(self.stderr.path()).unwrap_or_default();
        let tail: String = err
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        redact_jwts(&format!(
            "--- {} stdout (last lines)\n{lines}\n--- stderr (last lines)\n{tail}",
            self.identity
        ))
    }

    /// The process id (to measure its resources).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}").and_then(|_| stdin.flush());
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        // Closing stdin asks the script to leave the room; one that does not
        // exit soon is killed.
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of one real join by a [`Joiner`].
#[derive(Debug, Clone)]
pub struct Join {
    pub ok: bool,
    /// `POST /token` to lk-backend, ms.
    pub token_ms: f64,
    /// From the token in hand to connected (signalling, ICE, DTLS), ms.
    pub connect_ms: f64,
    /// Why it failed (JWTs redacted), empty when it succeeded.
    pub message: String,
}

/// One long-lived script (`--serve`) that joins and leaves on command:
/// real joins without a process start each.
pub struct Joiner {
    p: Participant,
}

impl Joiner {
    pub fn start(ns: &Netns, backend_port: u16) -> Joiner {
        Joiner {
            p: Participant::spawn(ns, backend_port, "joiner", &["--serve".to_string()]),
        }
    }

    /// Takes a token from lk-backend, joins `room` as `identity`, leaves.
    pub fn join(&mut self, room: &str, identity: &str, timeout: Duration) -> Join {
        let since = self.p.mark();
        self.p.send(&format!("join {room} {identity}"));
        let (_, v) = self
            .p
            .wait_line(since, timeout, "the answer to a join", |v| v["event"] == "join");
        Join {
            ok: v["ok"] == true,
            token_ms: v["token_ms"].as_f64().unwrap_or(0.0),
            connect_ms: v["connect_ms"].as_f64().unwrap_or(0.0),
            message: redact_jwts(v["message"].as_str().unwrap_or("")),
        }
    }
}

/// Replaces every JWT-shaped run (`eyJ` then base64url and dots) with
/// `<jwt>`: a token must never reach a test's output.
pub fn redact_jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("eyJ") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .unwrap_or(tail.len());
        out.push_str("<jwt>");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_jwts;

    #[test]
    fn jwts_are_redacted_wherever_they_stand() {
        assert_eq!(
            redact_jwts("invalid token: eyJhbGciOi.eyJzdWIi.sig-_x, error: bad"),
            "invalid token: <jwt>, error: bad"
        );
        assert_eq!(redact_jwts("no token here"), "no token here");
        assert_eq!(redact_jwts("eyJa.b.c"), "<jwt>");
    }
}
