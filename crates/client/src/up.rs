//! `hero_livekit up`: from a fresh machine to a running, consistent LiveKit
//! in one command, and a no-op when everything is already so.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use hero_livekit_client::wire as proto;
use hero_livekit_client::{Client, ClientError};

use crate::args::{UpArgs, DEFAULT_READY_TIMEOUT};
use crate::output::{self, Out};
use crate::terminal;

/// How long a freshly spawned daemon gets to open its socket, and a dying
/// one to let go of it.
const DAEMON_BOOT_TIMEOUT: Duration = Duration::from_secs(15);
/// The cheapest route that proves a daemon serves on the socket.
const WELL_KNOWN: &str = "/.well-known/heroservice.json";

pub async fn up(
    a: &UpArgs,
    client: &Client,
    out: &Out,
    root: &Path,
    root_flag: Option<&Path>,
    socket_flag: Option<&Path>,
) -> Result<ExitCode, ClientError> {
    refuse_another_deployments_ports(a, root)?;
    let spawned = ensure_daemon(client, root, root_flag, socket_flag).await?;
    if spawned && !out.is_json() {
        errln!("started hero_livekit_server on {}", client.socket().display());
    }

    let health = client.health().await?;
    output::warn_if_daemon_older(&health, out);
    // Configure before install: the daemon validates the flags there, and a
    // typo must fail in a second, not after a 50 MB download.
    let configured = client
        .configure(&a.configure.params())
        .await
        .map_err(|e| name_port_holder(e, root))?;
    let source_given = a.install.source.is_some() || a.install.version.is_some();
    let mut installed = None;
    if !health.binary.installed || a.install.force || (source_given && a.update) {
        let progress = output::progress_for_install(client, out).await;
        let r = client.install(&a.install.params()).await;
        drop(progress);
        let r = r?;
        if !out.is_json() {
            if r.changed {
                errln!(
                    "installed livekit-server {} at {}",
                    terminal::clean(&r.version),
                    terminal::clean(&r.path)
                );
            }
            for w in &r.warnings {
                errln!("warning: {}", terminal::clean(w));
            }
        }
        installed = Some(r);
    }
    let spinner = out.spinner("waiting for livekit-server and lk-backend to be ready");
    let started = client
        .start(&proto::StartParams {
            reset: a.reset.then_some(true),
            // `--update` with an explicit source was handled by the install above.
            update: (a.update && !source_given).then_some(true),
            timeout_ms: a.timeout_ms,
        })
        .await;
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            drop(spinner);
            return Err(name_port_holder(e, root));
        }
    };
    let health = wait_ready(
        client,
        a.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_READY_TIMEOUT),
    )
    .await;
    drop(spinner);
    let health = health?;

    let summary = serde_json::json!({
        "daemon_started": spawned,
        "installed": installed,
        "configure": configured,
        "start": started,
        "ready_for_tokens": health.ready_for_tokens,
        "livekit_url": health.livekit_url,
        "backend_url": health.backend_url,
        "api_key": health.api_key,
        "socket": client.socket(),
        "root": root,
    });
    if out.is_json() {
        out.json_value(&summary);
    } else {
        let changed = spawned
            || installed.as_ref().is_some_and(|i| i.changed)
            || !configured.heal.written.is_empty()
            || !configured.changed_fields.is_empty()
            || !started.heal.written.is_empty()
            || started
                .processes
                .values()
                .any(|o| *o != proto::StartOutcome::AlreadyRunning);
        if !changed {
            outln!("already up: nothing changed");
        }
        outln!("LiveKit is ready for tokens");
        // The daemon's words, cleaned for the terminal as every result is.
        outln!("  livekit url   {}", terminal::clean(&health.livekit_url));
        outln!(
            "  backend url   {}  (POST /token)",
            terminal::clean(&health.backend_url)
        );
        outln!("  api key       {}", terminal::clean(&health.api_key));
        outln!("  daemon socket {}", client.socket().display());
        // The root every later command must name (or find in PATH_ROOT).
        outln!("  root          {}", root.display());
    }
    Ok(if health.ready_for_tokens {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The ports LiveKit's defaults, livekit-server and lk-backend listen on.
const DEFAULT_PORTS: [(&str, u16); 3] = [("port", 7880), ("rtc_tcp_port", 7881), ("backend_port", 7890)];

/// Refuses `up` when a port this deployment would listen on is held by a
/// child of another hero_livekit deployment: going on would start a second
/// deployment with a credential of its own, which then fails on that port.
/// The ports are the flags', else this root's `runtime.json`'s, else the
/// defaults.
///
/// # Errors
/// [`ClientError::Refused`] (`port_conflict`) naming the port, the process
/// and the other deployment's root.
fn refuse_another_deployments_ports(a: &UpArgs, root: &Path) -> Result<(), ClientError> {
    let recorded: serde_json::Value = std::fs::read(root.join("var/hero_livekit/runtime.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let flags = [a.configure.port, a.configure.rtc_tcp_port, a.configure.backend_port];
    for ((name, default), flag) in DEFAULT_PORTS.into_iter().zip(flags) {
        let port = flag
            .or_else(|| recorded.get(name).and_then(serde_json::Value::as_u64).map(|p| p as u32))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(default);
        let Some(pid) = crate::deployments::port_holder(port) else {
            continue;
        };
        if let Some((process, other)) = crate::deployments::deployment_of(pid) {
            if !crate::deployments::same_root(&other, root) {
                return Err(another_deployment(port, pid, &process, &other, root));
            }
        }
    }
    Ok(())
}

fn another_deployment(port: u16, pid: i32, process: &str, other: &Path, root: &Path) -> ClientError {
    ClientError::Refused {
        kind: "port_conflict",
        message: format!(
            "port {port} is held by {process} (pid {pid}) of another hero_livekit deployment, root {}; \
             `up` with root {} would start a second deployment with a credential of its own: nothing was started",
            other.display(),
            root.display()
        ),
        hint: format!(
            "to use that deployment, pass its root: `hero_livekit --root {} ...` (or `PATH_ROOT={}`); \
             for a second deployment on this host, give this one other ports (--port, --rtc-tcp-port, --backend-port)",
            other.display(),
            other.display()
        ),
    }
}

/// A port conflict the daemon reports (`port P is held by pid N`) whose
/// holder is a child of another hero_livekit deployment: said as such,
/// naming that deployment's root. Any other error is returned as it is.
fn name_port_holder(e: ClientError, root: &Path) -> ClientError {
    if e.code() != Some(proto::ErrorCode::PortConflict) {
        return e;
    }
    match held_port(&e.to_string()).and_then(|(port, pid)| Some((port, pid, crate::deployments::deployment_of(pid)?))) {
        Some((port, pid, (process, other))) if !crate::deployments::same_root(&other, root) => {
            another_deployment(port, pid, &process, &other, root)
        }
        _ => e,
    }
}

/// The port and the holder's pid in the daemon's `port P is held by pid N`.
fn held_port(text: &str) -> Option<(u16, i32)> {
    let number = |s: &str| s.split(|c: char| !c.is_ascii_digit()).next().map(str::to_string);
    let i = text.find("port ")?;
    let rest = &text[i + "port ".len()..];
    let port = number(rest)?.parse().ok()?;
    let j = rest.find("held by pid ")?;
    let pid = number(&rest[j + "held by pid ".len()..])?.parse().ok()?;
    Some((port, pid))
}

/// Polls health until ready for tokens or the deadline, then returns the
/// last document; the caller reports whatever it says.
async fn wait_ready(client: &Client, timeout: Duration) -> Result<proto::Health, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        let h = client.health().await?;
        if h.ready_for_tokens || Instant::now() >= deadline {
            if !h.ready_for_tokens {
                return Err(ClientError::Rpc {
                    code: proto::ErrorCode::Timeout.code(),
                    message: format!(
                        "not ready for tokens after {} ms (consistent: {}, drift: {:?})",
                        timeout.as_millis(),
                        h.consistent,
                        h.drift
                    ),
                    data: Some(proto::ErrorData {
                        kind: proto::ErrorCode::Timeout.kind().into(),
                        hint: "run `hero_livekit health` and `hero_livekit logs livekit-server`".into(),
                        retryable: true,
                        field: None,
                    }),
                });
            }
            return Ok(h);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Makes sure a daemon answers on the socket, starting one detached when
/// none does. Returns whether it started one.
async fn ensure_daemon(
    client: &Client,
    root: &Path,
    root_flag: Option<&Path>,
    socket_flag: Option<&Path>,
) -> Result<bool, ClientError> {
    if daemon_answers(client).await? {
        return Ok(false);
    }
    let exe = daemon_exe();
    let logs = root.join("var").join("hero_livekit").join("logs");
    let io_err = |what: &str, e: std::io::Error| ClientError::Transport {
        socket: client.socket().to_path_buf(),
        detail: format!("{what}: {e}"),
    };
    create_private_dirs(&logs).map_err(|e| io_err(&format!("creating {}", logs.display()), e))?;
    let log_path = logs.join("hero_livekit_server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| io_err(&format!("opening {}", log_path.display()), e))?;
    let log2 = log.try_clone().map_err(|e| io_err("duplicating the log handle", e))?;
    let mut cmd = std::process::Command::new(&exe);
    if let Some(r) = root_flag {
        cmd.arg("--root").arg(r);
    }
    if let Some(s) = socket_flag {
        cmd.arg("--socket").arg(s);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from this
    // terminal's session so closing the terminal does not hang it up.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io_err(&format!("starting {}", exe.display()), e))?;

    let deadline = Instant::now() + DAEMON_BOOT_TIMEOUT;
    let mut delay = Duration::from_millis(5);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            return Err(ClientError::Transport {
                socket: client.socket().to_path_buf(),
                detail: format!(
                    "hero_livekit_server exited at once ({status}); its log {} ends with:\n  {}",
                    log_path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
                ),
            });
        }
        match client.get(WELL_KNOWN).await {
            Ok(_) => return Ok(true),
            // Before the new daemon binds, the path may still lead to the
            // dying old one (see `daemon_answers`).
            Err(ClientError::NotRunning { .. } | ClientError::Transport { .. }) if Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Whether a daemon serves on the socket: `true` when one answers, `false`
/// once nothing listens there.
///
/// A daemon killed a moment ago can still accept a connection and then
/// reset it: its main thread is already a zombie while its other threads,
/// which share the socket and the instance lock, finish exiting. Starting a
/// new daemon then would find the lock still held, so this waits (bounded)
/// until the socket either answers or is refused.
///
/// # Errors
/// The socket refuses this user, or keeps failing past the deadline.
async fn daemon_answers(client: &Client) -> Result<bool, ClientError> {
    let deadline = Instant::now() + DAEMON_BOOT_TIMEOUT;
    let mut delay = Duration::from_millis(5);
    loop {
        match client.get(WELL_KNOWN).await {
            Ok(_) => return Ok(true),
            Err(ClientError::NotRunning { .. }) => return Ok(false),
            Err(ClientError::Transport { .. }) if Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// `hero_livekit_server` next to this executable, else from `$PATH`.
fn daemon_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hero_livekit_server")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("hero_livekit_server"))
}

/// Creates `dir` and its missing parents, the state directory with 0700.
fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::held_port;

    #[test]
    fn the_daemons_port_conflict_names_the_port_and_the_holder() {
        assert_eq!(
            held_port("livekit-server cannot start: port 7880 is held by pid 20807; stop that process or configure another port"),
            Some((7880, 20807))
        );
        assert_eq!(held_port("port 7880 is free"), None);
        assert_eq!(held_port("no port here"), None);
    }
}
