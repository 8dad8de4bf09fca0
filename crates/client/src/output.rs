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
use serde::Serialize;

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

    fn emit<T: Serialize>(&self, v: &T) -> bool {
        if self.json {
            match serde_json::to_string_pretty(v) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("hero_livekit: cannot encode output: {e}"),
            }
        }
        self.json
    }

    pub fn json_value(&self, v: &serde_json::Value) {
        match serde_json::to_string_pretty(v) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("hero_livekit: cannot encode output: {e}"),
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
        eprintln!("{} {e}", self.bad("error:"));
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
    }

    pub fn install(&self, r: &proto::InstallResult) {
        if self.emit(r) {
            return;
        }
        if r.changed {
            println!(
                "installed livekit-server {} at {} (sha256 {})",
                r.version,
                r.path,
                short(&r.sha256)
            );
        } else {
            println!(
                "livekit-server {} already installed at {}: nothing to do",
                r.version, r.path
            );
        }
        self.heal(&r.heal);
    }

    fn heal(&self, h: &proto::HealReport) {
        if h.written.is_empty() {
            println!("config triple consistent: no file written");
        } else {
            println!("healed: wrote {}", h.written.join(", "));
            for d in &h.drift {
                println!("  was: {d}");
            }
        }
        if h.minted {
            println!("minted a new API key and secret");
        }
        if !h.restarted.is_empty() {
            let names: Vec<&str> = h.restarted.iter().map(|p| p.as_str()).collect();
            println!("restarted: {}", names.join(", "));
        }
        if !h.pending.is_empty() {
            println!(
                "{} {} (the daemon retries every few seconds)",
                self.bad("pending:"),
                h.pending.join(", ")
            );
            if let Some(e) = &h.write_error {
                println!("  because: {e}");
            }
        }
    }

    pub fn configure(&self, r: &proto::ConfigureResult) {
        if self.emit(r) {
            return;
        }
        if r.changed_fields.is_empty() {
            println!("configuration unchanged");
        } else {
            println!("changed: {}", r.changed_fields.join(", "));
        }
        println!("api key: {}", r.api_key);
        if let Some(c) = &r.cluster {
            let how = if c.published {
                "published this node's credential"
            } else if c.credential_replaced {
                "adopted the cluster's credential, replacing this node's own"
            } else {
                "already held the cluster's credential"
            };
            println!(
                "cluster {} joined as node {} (generation {}): {how}",
                c.name, c.node_id, c.generation
            );
        }
        self.heal(&r.heal);
    }

    pub fn config_show(&self, r: &proto::ConfigShowResult) {
        if self.emit(r) {
            return;
        }
        crate::settings_args::print_show(r);
    }

    pub fn cluster_status(&self, c: &proto::ClusterHealth) {
        if self.emit(c) {
            return;
        }
        let Some(name) = &c.name else {
            println!("not in a cluster (join one with `hero_livekit configure --cluster NAME`)");
            return;
        };
        let state = match c.state {
            proto::ClusterState::Joined => self.good("joined"),
            other => self.bad(&other.to_string()),
        };
        println!("cluster           {name}");
        println!("state             {state}");
        println!("generation        {}", c.generation);
        if let Some(e) = &c.error {
            println!("                  {e}");
        }
        println!();
        println!("{:<18} {:<11} {:<10} LIVEKIT URL", "NODE", "GENERATION", "SEEN");
        for n in &c.nodes {
            let me = if c.node_id.as_deref() == Some(n.id.as_str()) {
                " (this node)"
            } else {
                ""
            };
            let behind = if n.generation < c.generation { " behind" } else { "" };
            println!(
                "{:<18} {:<11} {:<10} {}{me}",
                n.id,
                format!("{}{behind}", n.generation),
                format!("{:.1}s ago", n.last_seen_ms as f64 / 1000.0),
                n.livekit_url
            );
        }
    }

    pub fn cluster_token(&self, t: &proto::ClusterTokenResult) {
        if self.emit(t) {
            return;
        }
        println!("{}", t.cluster_token);
        eprintln!(
            "join the next node with: hero_livekit configure --redis-address ADDR --cluster {} --cluster-token <the line above>",
            t.cluster
        );
    }

    pub fn start(&self, r: &proto::StartResult) {
        if self.emit(r) {
            return;
        }
        if let Some(i) = &r.install {
            println!("installed livekit-server {}", i.version);
        }
        if r.rotated {
            println!("credential rotated (--reset)");
        }
        self.heal(&r.heal);
        for (name, outcome) in &r.processes {
            let what = match outcome {
                proto::StartOutcome::Started => "started",
                proto::StartOutcome::Restarted => "restarted",
                proto::StartOutcome::AlreadyRunning => "already running",
            };
            println!("{name}: {what}");
        }
        println!("ready for tokens: {}", self.yes_no(r.ready_for_tokens));
        println!("livekit: {}   backend: {}", r.livekit_url, r.backend_url);
    }

    pub fn stop(&self, r: &proto::StopResult) {
        if self.emit(r) {
            return;
        }
        if r.stopped.is_empty() {
            println!("nothing was running");
        }
        for p in &r.stopped {
            let how = if r.killed.contains(p) {
                "killed with SIGKILL at the drain deadline"
            } else {
                "exited on SIGTERM"
            };
            println!("{p}: stopped ({how})");
        }
    }

    pub fn restart(&self, r: &proto::RestartResult) {
        if self.emit(r) {
            return;
        }
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
            println!("{p}: restarted{how}");
        }
    }

    pub fn health(&self, h: &Health) {
        if self.emit(h) {
            return;
        }
        let status = match h.status {
            proto::OverallStatus::Ok => self.good("ok"),
            proto::OverallStatus::Degraded => self.paint("degraded", "33"),
            proto::OverallStatus::Down => self.bad("down"),
        };
        println!("status            {status}");
        println!("ready for tokens  {}", self.yes_no(h.ready_for_tokens));
        println!("consistent        {}", self.yes_no(h.consistent));
        let chain = &h.token_chain;
        if chain.ok {
            println!("token chain       {} ({} ms)", self.good("proven"), chain.latency_ms);
        } else {
            println!(
                "token chain       {}",
                self.bad(chain.error.as_deref().unwrap_or("not proven yet"))
            );
        }
        println!("api key           {}", h.api_key);
        println!("livekit url       {}", h.livekit_url);
        println!("backend url       {}", h.backend_url);
        let b = &h.binary;
        if b.installed {
            println!(
                "livekit-server    {} {}",
                b.path,
                b.version.as_deref().map(|v| format!("({v})")).unwrap_or_default()
            );
        } else {
            println!("livekit-server    {} ({})", b.path, self.bad("not installed"));
        }
        if let Some(r) = &h.redis {
            println!(
                "redis             {} reachable: {}",
                r.address,
                self.yes_no(r.reachable)
            );
            if let Some(e) = &r.error {
                println!("                  {e}");
            }
        }
        if let Some(name) = &h.cluster.name {
            println!(
                "cluster           {name} {} generation {} ({} nodes)",
                h.cluster.state,
                h.cluster.generation,
                h.cluster.nodes.len()
            );
            if let Some(e) = &h.cluster.error {
                println!("                  {e}");
            }
        }
        println!();
        println!("{:<14} {:<8} {:<8} SHA256", "FILE", "PRESENT", "MATCHES");
        for (name, f) in &h.files {
            println!(
                "{:<14} {:<8} {:<8} {}",
                name,
                if f.present { "yes" } else { "no" },
                if f.matches { "yes" } else { "no" },
                f.sha256.as_deref().map(short).unwrap_or("-")
            );
        }
        println!();
        println!(
            "{:<15} {:<9} {:<8} {:<6} {:<9} UPTIME",
            "PROCESS", "STATE", "PID", "READY", "RESTARTS"
        );
        for (name, p) in &h.processes {
            let state = match p.state {
                ProcessState::Running => self.good("running "),
                ProcessState::Failed => self.bad("failed  "),
                // The state's Display ignores width: pad its text.
                other => format!("{:<8}", other.to_string()),
            };
            println!(
                "{:<15} {} {:<8} {:<6} {:<9} {}",
                name,
                state,
                p.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                if p.ready { "yes" } else { "no" },
                p.restarts,
                human_duration(Duration::from_millis(p.uptime_ms))
            );
            if let Some(c) = &p.port_conflict {
                println!("  {} {c}", self.bad("port conflict:"));
            }
            if let Some(r) = &p.reason {
                println!("  {} {r}", self.bad("reason:"));
            }
            if let Some(e) = &p.last_exit {
                println!("  last exit: {e}");
            }
            if let Some(tail) = &p.log_tail {
                for l in tail {
                    println!("  | {l}");
                }
            }
        }
        if !h.drift.is_empty() {
            println!();
            println!("{}", self.bad("drift:"));
            for d in &h.drift {
                println!("  - {d}");
            }
        }
    }

    pub fn logs(&self, r: &proto::LogsResult) {
        if self.emit(r) {
            return;
        }
        for l in &r.lines {
            println!("{l}");
        }
    }

    pub fn event(&self, m: &EventMessage) {
        if self.json {
            match serde_json::to_string(m) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("hero_livekit: cannot encode event: {e}"),
            }
            return;
        }
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
        };
        println!("#{} {text}", m.seq);
    }

    /// The token on stdout (so that `$(hero_livekit token ...)` is the
    /// token), the URL clients connect to with it on stderr.
    pub fn token(&self, v: &serde_json::Value) {
        if self.json {
            self.json_value(v);
        } else {
            println!("{}", v.get("token").and_then(|t| t.as_str()).unwrap_or_default());
            eprintln!("url: {}", v.get("url").and_then(|t| t.as_str()).unwrap_or_default());
        }
    }

    /// The mint secret alone on stdout (for `$(hero_livekit backend-token)`),
    /// how to use it on stderr.
    pub fn backend_token(&self, t: &proto::BackendTokenResult) {
        if self.json {
            self.json_value(&serde_json::json!({"mint_secret": t.mint_secret, "token_url": t.token_url}));
            return;
        }
        println!("{}", t.mint_secret);
        eprintln!(
            "mint with: curl -H \"Authorization: Bearer <the line above>\" -H 'Content-Type: application/json' -d '{{\"room\":\"r1\",\"identity\":\"alice\"}}' {}",
            t.token_url
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
                bar.set_message(phase);
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
        eprintln!(
            "{} the daemon is older than this client: it speaks protocol {} (version {}), this client protocol {} (version {}). {}.",
            out.bad("warning:"),
            h.protocol,
            h.version,
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
            stdout.write_all(&buf).await?;
            stdout.flush().await?;
            pos = len;
        }
    }
}

/// `POST <token_url>` with a JSON body and `mint_secret` as the bearer;
/// returns the JSON response or a message naming the backend and its error.
pub async fn post_token(
    token_url: &str,
    mint_secret: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let backend_url = token_url.trim_end_matches("/token");
    let url: http::Uri = token_url
        .parse()
        .map_err(|e| format!("bad backend url {token_url}: {e}"))?;
    let host = url.host().unwrap_or("127.0.0.1").to_string();
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("lk-backend at {backend_url} does not answer ({e}): run `hero_livekit start`"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("lk-backend at {backend_url}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(url.path())
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {mint_secret}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("lk-backend at {backend_url}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("lk-backend at {backend_url}: {e}"))?
        .to_bytes();
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("lk-backend answered HTTP {status} with non-JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "lk-backend refused: HTTP {status}: {}",
            v.get("message").and_then(|m| m.as_str()).unwrap_or("no message")
        ));
    }
    Ok(v)
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
