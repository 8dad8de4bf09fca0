//! Human and JSON rendering of results, progress bars, and the small HTTP
//! helpers the CLI needs besides the daemon's socket.

use std::io::IsTerminal;
use std::time::Duration;

use bytes::Bytes;
use hero_livekit_client::wire::{self as proto, Event, EventMessage, Health, ProcessState};
use hero_livekit_client::{Client, ClientError};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::table::{Cell, Table};
use crate::terminal;

/// The exit status when stdout's reader went away (`hero_livekit discover |
/// head -1`): 128 + SIGPIPE, what a shell reports for a program the signal
/// ended, so that a pipeline under `pipefail` still sees the output was cut.
pub const EXIT_CLOSED_PIPE: i32 = 141;

/// Writes to stdout through [`terminal::guard`]; see [`stdout_failed`] for
/// a write that fails.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = args.to_string();
    if let Err(e) = std::io::stdout().lock().write_all(terminal::guard(&text).as_bytes()) {
        stdout_failed(&e);
    }
}

/// Writes to stderr through [`terminal::guard`]. A stderr nobody reads any
/// more leaves nothing to report.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = args.to_string();
    let _ = std::io::stderr().lock().write_all(terminal::guard(&text).as_bytes());
}

/// Ends the process after a failed write to stdout: quietly with
/// [`EXIT_CLOSED_PIPE`] when the reader closed the pipe (nobody is left to
/// read a message), else saying why on stderr.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_CLOSED_PIPE);
    }
    errln!("hero_livekit: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// Where and how to print.
pub struct Out {
    json: bool,
    color: bool,
}

impl Out {
    pub fn new(json: bool) -> Self {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Out { json, color }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn good(&self, t: &str) -> String {
        self.paint(t, "32")
    }
    fn bad(&self, t: &str) -> String {
        self.paint(t, "31")
    }
    fn yes_no(&self, b: bool) -> String {
        if b {
            self.good("yes")
        } else {
            self.bad("no")
        }
    }

    /// With `--json`, prints `v` as JSON and returns `None`. Else returns a
    /// copy of `v` with every string cleaned for the terminal
    /// ([`terminal::cleaned`]): the one way a result reaches a human
    /// layout. A copy that does not read back (never seen) is printed as
    /// its cleaned JSON document instead.
    fn human<T: Serialize + DeserializeOwned>(&self, v: &T) -> Option<T> {
        if self.json {
            self.json_value(v);
            return None;
        }
        match terminal::cleaned(v) {
            Ok(c) => Some(c),
            Err(doc) => {
                self.json_value(&doc);
                None
            }
        }
    }

    /// Prints `v` as pretty JSON, escaped so that nothing in it acts on a
    /// terminal ([`terminal::json_text`]).
    pub fn json_value<T: Serialize + ?Sized>(&self, v: &T) {
        match terminal::json_text(v, true) {
            Ok(s) => outln!("{s}"),
            Err(e) => errln!("hero_livekit: cannot encode output: {e}"),
        }
    }

    /// Prints a failure with its hint, on stderr (and as JSON on stdout with `--json`).
    pub fn error(&self, e: &ClientError) {
        if self.json {
            let data = match e {
                ClientError::Rpc { data, .. } => data.as_ref(),
                _ => None,
            };
            let v = serde_json::json!({
                "error": {
                    "message": e.to_string(),
                    "code": match e { ClientError::Rpc { code, .. } => Some(*code), _ => None },
                    "kind": e.kind(),
                    "retryable": data.map(|d| d.retryable),
                    "field": data.and_then(|d| d.field.as_deref()),
                    "hint": e.hint(),
                }
            });
            self.json_value(&v);
        }
        // The message and the hint quote the daemon, lk-backend or a file.
        errln!("{} {}", self.bad("error:"), terminal::clean_lines(&e.to_string()));
        errln!("hint: {}", terminal::clean_lines(e.hint()));
    }

    pub fn install(&self, r: &proto::InstallResult) {
        let Some(r) = self.human(r) else {
            return;
        };
        if r.changed {
            outln!(
                "installed livekit-server {} at {} (sha256 {})",
                r.version,
                r.path,
                short(&r.sha256)
            );
        } else {
            outln!(
                "livekit-server {} already installed at {}: nothing to do",
                r.version,
                r.path
            );
        }
        self.heal(&r.heal);
    }

    fn heal(&self, h: &proto::HealReport) {
        if h.written.is_empty() {
            outln!("config triple consistent: no file written");
        } else {
            outln!("healed: wrote {}", h.written.join(", "));
            for d in &h.drift {
                outln!("  was: {d}");
            }
        }
        if h.minted {
            outln!("minted a new API key and secret");
        }
        if !h.restarted.is_empty() {
            let names: Vec<&str> = h.restarted.iter().map(|p| p.as_str()).collect();
            outln!("restarted: {}", names.join(", "));
        }
        if !h.pending.is_empty() {
            outln!(
                "{} {} (the daemon retries every few seconds)",
                self.bad("pending:"),
                h.pending.join(", ")
            );
            if let Some(e) = &h.write_error {
                outln!("  because: {e}");
            }
        }
    }

    pub fn configure(&self, r: &proto::ConfigureResult) {
        let Some(r) = self.human(r) else {
            return;
        };
        if r.changed_fields.is_empty() {
            outln!("configuration unchanged");
        } else {
            outln!("changed: {}", r.changed_fields.join(", "));
        }
        outln!("api key: {}", r.api_key);
        if let Some(c) = &r.cluster {
            let how = if c.published {
                "published this node's credential"
            } else if c.credential_replaced {
                "adopted the cluster's credential, replacing this node's own"
            } else {
                "already held the cluster's credential"
            };
            outln!(
                "cluster {} joined as node {} (generation {}): {how}",
                c.name,
                c.node_id,
                c.generation
            );
        }
        self.heal(&r.heal);
    }

    pub fn config_show(&self, r: &proto::ConfigShowResult) {
        let Some(r) = self.human(r) else {
            return;
        };
        crate::settings_args::print_show(&r);
    }

    pub fn cluster_status(&self, c: &proto::ClusterHealth) {
        let Some(c) = self.human(c) else {
            return;
        };
        let Some(name) = &c.name else {
            outln!("not in a cluster (join one with `hero_livekit configure --cluster NAME`)");
            return;
        };
        let state = match c.state {
            proto::ClusterState::Joined => self.good("joined"),
            other => self.bad(&other.to_string()),
        };
        outln!("cluster           {name}");
        outln!("state             {state}");
        outln!("generation        {}", c.generation);
        if let Some(e) = &c.error {
            outln!("                  {e}");
        }
        outln!();
        for l in nodes_table(&c).lines(self.color) {
            outln!("{l}");
        }
    }

    pub fn cluster_token(&self, t: &proto::ClusterTokenResult) {
        let Some(t) = self.human(t) else {
            return;
        };
        outln!("{}", t.cluster_token);
        errln!(
            "join the next node with: hero_livekit configure --redis-address ADDR --cluster {} --cluster-token <the line above>",
            t.cluster
        );
    }

    pub fn cluster_leave(&self, l: &proto::ClusterLeave) {
        let Some(l) = self.human(l) else {
            return;
        };
        outln!(
            "left cluster {} (node {}); serving alone with the credential {}",
            l.cluster,
            l.node_id,
            l.api_key
        );
        if !l.heartbeat_removed {
            outln!("redis could not be reached: this node's heartbeat expires on its own within three poll periods");
        }
    }

    pub fn start(&self, r: &proto::StartResult) {
        let Some(r) = self.human(r) else {
            return;
        };
        if let Some(i) = &r.install {
            outln!("installed livekit-server {}", i.version);
        }
        if r.rotated {
            outln!("credential rotated (--reset)");
        }
        self.heal(&r.heal);
        for (name, outcome) in &r.processes {
            let what = match outcome {
                proto::StartOutcome::Started => "started",
                proto::StartOutcome::Restarted => "restarted",
                proto::StartOutcome::AlreadyRunning => "already running",
            };
            outln!("{name}: {what}");
        }
        outln!("ready for tokens: {}", self.yes_no(r.ready_for_tokens));
        outln!("livekit: {}   backend: {}", r.livekit_url, r.backend_url);
    }

    pub fn stop(&self, r: &proto::StopResult) {
        let Some(r) = self.human(r) else {
            return;
        };
        if r.stopped.is_empty() {
            outln!("nothing was running");
        }
        for p in &r.stopped {
            let how = if r.killed.contains(p) {
                "killed with SIGKILL at the drain deadline"
            } else {
                "exited on SIGTERM"
            };
            outln!("{p}: stopped ({how})");
        }
    }

    pub fn restart(&self, r: &proto::RestartResult) {
        let Some(r) = self.human(r) else {
            return;
        };
        if !r.heal.written.is_empty() {
            self.heal(&r.heal);
        }
        for p in &r.restarted {
            // Not running before, it was only started: say nothing of how
            // an old process ended unless it had to be killed.
            let how = if r.killed.contains(p) {
                " (the old process was killed with SIGKILL at the drain deadline)"
            } else {
                ""
            };
            outln!("{p}: restarted{how}");
        }
    }

    pub fn health(&self, h: &Health) {
        let Some(h) = self.human(h) else {
            return;
        };
        let status = match h.status {
            proto::OverallStatus::Ok => self.good("ok"),
            proto::OverallStatus::Degraded => self.paint("degraded", "33"),
            proto::OverallStatus::Down => self.bad("down"),
        };
        outln!("status            {status}");
        outln!("ready for tokens  {}", self.yes_no(h.ready_for_tokens));
        outln!("consistent        {}", self.yes_no(h.consistent));
        let chain = &h.token_chain;
        if chain.ok {
            outln!("token chain       {} ({} ms)", self.good("proven"), chain.latency_ms);
        } else {
            outln!(
                "token chain       {}",
                self.bad(chain.error.as_deref().unwrap_or("not proven yet"))
            );
        }
        outln!("api key           {}", h.api_key);
        outln!("livekit url       {}", h.livekit_url);
        outln!("backend url       {}", h.backend_url);
        let b = &h.binary;
        if b.installed {
            outln!(
                "livekit-server    {} {}",
                b.path,
                b.version.as_deref().map(|v| format!("({v})")).unwrap_or_default()
            );
        } else {
            outln!("livekit-server    {} ({})", b.path, self.bad("not installed"));
        }
        if let Some(r) = &h.redis {
            outln!(
                "redis             {} reachable: {}",
                r.address,
                self.yes_no(r.reachable)
            );
            if let Some(e) = &r.error {
                outln!("                  {e}");
            }
        }
        if let Some(name) = &h.cluster.name {
            outln!(
                "cluster           {name} {} generation {} ({} nodes)",
                h.cluster.state,
                h.cluster.generation,
                h.cluster.nodes.len()
            );
            if let Some(e) = &h.cluster.error {
                outln!("                  {e}");
            }
        }
        outln!();
        for l in files_table(&h).lines(self.color) {
            outln!("{l}");
        }
        outln!();
        // Each process row is followed by its details (conflict, reason,
        // last exit, log tail), indented under it.
        let rows = process_table(&h).lines(self.color);
        outln!("{}", rows[0]);
        for (row, p) in rows.iter().skip(1).zip(h.processes.values()) {
            outln!("{row}");
            if let Some(c) = &p.port_conflict {
                outln!("  {} {c}", self.bad("port conflict:"));
            }
            if let Some(r) = &p.reason {
                outln!("  {} {r}", self.bad("reason:"));
            }
            if let Some(e) = &p.last_exit {
                outln!("  last exit: {e}");
            }
            if let Some(tail) = &p.log_tail {
                for l in tail {
                    outln!("  | {l}");
                }
            }
        }
        if !h.drift.is_empty() {
            outln!();
            outln!("{}", self.bad("drift:"));
            for d in &h.drift {
                outln!("  - {d}");
            }
        }
    }

    /// Log lines keep their tabs ([`terminal::clean_log_line`]), so they
    /// are not cleaned as fields by [`Out::human`].
    pub fn logs(&self, r: &proto::LogsResult) {
        if self.json {
            self.json_value(r);
            return;
        }
        for l in &r.lines {
            outln!("{}", terminal::clean_log_line(l));
        }
    }

    pub fn event(&self, m: &EventMessage) {
        if self.json {
            match terminal::json_text(m, false) {
                Ok(s) => outln!("{s}"),
                Err(e) => errln!("hero_livekit: cannot encode event: {e}"),
            }
            return;
        }
        let m = match terminal::cleaned(m) {
            Ok(m) => m,
            Err(doc) => {
                self.json_value(&doc);
                return;
            }
        };
        let text = match &m.event {
            Event::State {
                process,
                state,
                pid,
                detail,
            } => format!(
                "{process} -> {state}{}{}",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            Event::Healed { trigger, written, .. } => format!("healed on {trigger}: wrote {}", written.join(", ")),
            Event::Restarted { process, reason } => format!("{process} restarted: {reason}"),
            Event::Configured { changed_fields, .. } => format!("configured: {}", changed_fields.join(", ")),
            Event::InstallProgress {
                phase,
                bytes_done,
                bytes_total,
            } => match bytes_total {
                Some(t) => format!("install {phase}: {bytes_done}/{t} bytes"),
                None => format!("install {phase}: {bytes_done} bytes"),
            },
            Event::Installed { version, sha256 } => format!("installed livekit-server {version} ({})", short(sha256)),
            Event::TokenChainFailed { error } => format!("token chain failed: {error}"),
            Event::ClusterJoined {
                cluster,
                node_id,
                generation,
                published,
            } => format!(
                "joined cluster {cluster} as {node_id} at generation {generation}{}",
                if *published {
                    " (published this node's credential)"
                } else {
                    ""
                }
            ),
            Event::CredentialReplaced {
                cluster,
                previous_api_key,
                api_key,
                ..
            } => format!("credential {previous_api_key} replaced by cluster {cluster}'s {api_key}"),
            Event::ClusterCredentialChanged {
                cluster,
                generation,
                api_key,
            } => format!("cluster {cluster} credential generation {generation} ({api_key}) applied"),
            Event::ClusterRepublished { cluster, generation } => {
                format!("cluster {cluster}: redis was empty, republished generation {generation}")
            }
            Event::ClusterLeft { cluster, node_id } => {
                format!("left cluster {cluster} (node {node_id}); serving alone with the same credential")
            }
        };
        outln!("#{} {text}", m.seq);
    }

    /// The token on stdout (so that `$(hero_livekit token ...)` is the
    /// token), the URL clients connect to with it on stderr.
    pub fn token(&self, v: &serde_json::Value) {
        if self.json {
            self.json_value(v);
        } else {
            outln!(
                "{}",
                terminal::clean(v.get("token").and_then(|t| t.as_str()).unwrap_or_default())
            );
            errln!(
                "url: {}",
                terminal::clean(v.get("url").and_then(|t| t.as_str()).unwrap_or_default())
            );
        }
    }

    /// The mint secret alone on stdout (for `$(hero_livekit backend-token)`),
    /// how to use it on stderr.
    pub fn backend_token(&self, t: &proto::BackendTokenResult) {
        if self.json {
            self.json_value(&serde_json::json!({"mint_secret": t.mint_secret, "token_url": t.token_url}));
            return;
        }
        outln!("{}", terminal::clean(&t.mint_secret));
        errln!(
            "mint with: curl -H \"Authorization: Bearer <the line above>\" -H 'Content-Type: application/json' -d '{{\"room\":\"r1\",\"identity\":\"alice\"}}' {}",
            terminal::clean(&t.token_url)
        );
    }

    /// A spinner on stderr while waiting; hidden when stderr is not a terminal.
    pub fn spinner(&self, msg: &'static str) -> Option<ProgressBar> {
        if self.json || !std::io::stderr().is_terminal() {
            return None;
        }
        let pb = ProgressBar::new_spinner().with_message(msg);
        pb.enable_steady_tick(Duration::from_millis(100));
        Some(pb)
    }
}

/// Shows a download progress bar fed by the daemon's install progress
/// events, until the returned guard is dropped.
pub async fn progress_for_install(client: &Client, out: &Out) -> Option<ProgressGuard> {
    if out.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let mut events = client.subscribe_events().await.ok()?;
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let bar = pb.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = events.next().await {
            if let Event::InstallProgress {
                phase,
                bytes_done,
                bytes_total,
            } = m.event
            {
                bar.set_message(terminal::clean(&phase).into_owned());
                if let Some(t) = bytes_total {
                    bar.set_length(t);
                }
                bar.set_position(bytes_done);
            }
        }
    });
    Some(ProgressGuard { pb, task })
}

/// Clears the progress bar and stops listening when dropped.
pub struct ProgressGuard {
    pb: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.task.abort();
        self.pb.finish_and_clear();
    }
}

/// Warns when the daemon speaks an older protocol than this CLI, and says
/// how to upgrade it.
pub fn warn_if_daemon_older(h: &Health, out: &Out) {
    if h.protocol < proto::PROTOCOL {
        errln!(
            "{} the daemon is older than this client: it speaks protocol {} (version {}), this client protocol {} (version {}). {}.",
            out.bad("warning:"),
            h.protocol,
            terminal::clean(&h.version),
            proto::PROTOCOL,
            proto::VERSION,
            hero_livekit_client::UPGRADE_ADVICE
        );
    }
}

/// Follows a log file like `tail -f`: polls its size on a short interval,
/// and starts over when it shrinks (the supervisor rotates by truncation).
pub async fn follow(path: &str) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let mut pos = tokio::fs::metadata(path).await?.len();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stdout = tokio::io::stdout();
    // The file is a child's output: cleaned as `logs` cleans its lines.
    let mut lines = terminal::LogStream::default();
    loop {
        tick.tick().await;
        let len = tokio::fs::metadata(path).await?.len();
        if len < pos {
            pos = 0;
        }
        if len > pos {
            let mut f = tokio::fs::File::open(path).await?;
            f.seek(std::io::SeekFrom::Start(pos)).await?;
            let mut buf = Vec::with_capacity((len - pos) as usize);
            f.take(len - pos).read_to_end(&mut buf).await?;
            let text = lines.push(&buf);
            if let Err(e) = stdout.write_all(text.as_bytes()).await.and(stdout.flush().await) {
                stdout_failed(&e);
            }
            pos = len;
        }
    }
}

/// `POST <token_url>` with a JSON body and `mint_secret` as the bearer;
/// returns the JSON response.
///
/// # Errors
/// [`ClientError::Refused`] naming lk-backend and what it said, with the
/// next step: `start` when it does not answer, the flag to fix when it
/// refused the request, its log otherwise.
pub async fn post_token(
    token_url: &str,
    mint_secret: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, ClientError> {
    let backend_url = token_url.trim_end_matches("/token");
    const SEE_LOG: &str = "`hero_livekit health` shows lk-backend's state and `hero_livekit logs lk-backend` its log";
    let refused = |kind: &'static str, message: String, hint: &str| ClientError::Refused {
        kind,
        message,
        hint: hint.to_string(),
    };
    let url: http::Uri = token_url
        .parse()
        .map_err(|e| refused("transport", format!("bad backend url {backend_url}: {e}"), SEE_LOG))?;
    let host = url.host().unwrap_or("127.0.0.1").to_string();
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| {
            refused(
                "backend_unavailable",
                format!("lk-backend at {backend_url} does not answer ({e})"),
                "start it with `hero_livekit start`, then check `hero_livekit health`",
            )
        })?;
    let broken = |e: &dyn std::fmt::Display| refused("transport", format!("lk-backend at {backend_url}: {e}"), SEE_LOG);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| broken(&e))?;
    tokio::spawn(async move {
        // Ends with the exchange; its error, if any, is the request's.
        let _ = conn.await;
    });
    let req = http::Request::post(url.path())
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {mint_secret}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| broken(&e))?;
    let resp = send.send_request(req).await.map_err(|e| broken(&e))?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(|e| broken(&e))?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            "transport",
            format!("lk-backend answered HTTP {status} with non-JSON: {e}"),
            SEE_LOG,
        )
    })?;
    if !status.is_success() {
        let kind = v.get("error").and_then(|k| k.as_str()).unwrap_or("");
        let hint = match kind {
            "invalid_value" | "missing_field" | "invalid_type" | "unknown_field" => {
                "fix the value the message names (--room, --identity, --name, --ttl-seconds, --metadata) and run the command again"
            }
            _ if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN => {
                "the mint secret changed while the token was asked for (a credential rotation): run the command again; `hero_livekit health` shows the key in force"
            }
            _ => SEE_LOG,
        };
        return Err(refused(
            "backend_refused",
            format!(
                "lk-backend refused: HTTP {status}: {}",
                v.get("message").and_then(|m| m.as_str()).unwrap_or("no message")
            ),
            hint,
        ));
    }
    Ok(v)
}

/// The FILE table of `health`: each file of the triple.
pub fn files_table(h: &Health) -> Table {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut t = Table::new(&["FILE", "PRESENT", "MATCHES", "SHA256"]);
    for (name, f) in &h.files {
        t.row(vec![
            name.as_str().into(),
            yes_no(f.present).into(),
            yes_no(f.matches).into(),
            f.sha256.as_deref().map(short).unwrap_or("-").into(),
        ]);
    }
    t
}

/// The PROCESS table of `health`: one row per child, in the document's order.
pub fn process_table(h: &Health) -> Table {
    let mut t = Table::new(&["PROCESS", "STATE", "PID", "READY", "RESTARTS", "UPTIME"]);
    for (name, p) in &h.processes {
        let state = match p.state {
            ProcessState::Running => Cell::colored("running", "32"),
            ProcessState::Failed => Cell::colored("failed", "31"),
            other => Cell::plain(other.to_string()),
        };
        t.row(vec![
            name.to_string().into(),
            state,
            p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()).into(),
            if p.ready { "yes" } else { "no" }.into(),
            p.restarts.to_string().into(),
            human_duration(Duration::from_millis(p.uptime_ms)).into(),
        ]);
    }
    t
}

/// The node table of `cluster status`.
pub fn nodes_table(c: &proto::ClusterHealth) -> Table {
    let mut t = Table::new(&["NODE", "GENERATION", "SEEN", "LIVEKIT URL"]);
    for n in &c.nodes {
        let me = if c.node_id.as_deref() == Some(n.id.as_str()) {
            " (this node)"
        } else {
            ""
        };
        let behind = if n.generation < c.generation { " behind" } else { "" };
        t.row(vec![
            n.id.as_str().into(),
            format!("{}{behind}", n.generation).into(),
            format!("{:.1}s ago", n.last_seen_ms as f64 / 1000.0).into(),
            format!("{}{me}", n.livekit_url).into(),
        ]);
    }
    t
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 if d.is_zero() => "-".into(),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::columns_line_up;

    #[test]
    fn the_cluster_node_table_lines_up_with_its_header() {
        let node = |id: &str, generation, url: &str, ms| proto::ClusterNode {
            id: id.into(),
            generation,
            livekit_url: url.into(),
            last_seen_ms: ms,
        };
        let c = proto::ClusterHealth {
            name: Some("media".into()),
            state: proto::ClusterState::Joined,
            generation: 12,
            node_id: Some("node-a".into()),
            nodes: vec![
                node("node-a", 12, "ws://10.0.0.1:7880", 400),
                node(
                    "a-much-longer-node-identifier-0123",
                    3,
                    "ws://media-b.example.org:7880",
                    123_456,
                ),
                node("n", 12, "ws://h:1", 0),
            ],
            error: None,
        };
        for color in [false, true] {
            let lines: Vec<String> = nodes_table(&c)
                .lines(color)
                .iter()
                .map(|l| l.replace("\x1b[32m", "").replace("\x1b[31m", "").replace("\x1b[0m", ""))
                .collect();
            columns_line_up(&lines).unwrap_or_else(|e| panic!("{e}\n{}", lines.join("\n")));
            assert_eq!(lines.len(), 4);
        }
    }
}
