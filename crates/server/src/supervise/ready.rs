//! The HTTP readiness probe: `GET http://127.0.0.1:<port><path>` must answer
//! 200. One fresh connection per attempt, so a probe never depends on the
//! state a previous attempt left behind.

use std::time::Duration;

use tokio::time::Instant;

use super::spec::ReadyProbe;

/// First pause between attempts. Short, because the start overhead target is
/// 10 ms beyond the child's own time to ready.
const FIRST_INTERVAL: Duration = Duration::from_millis(2);
/// Longest pause between attempts. Half of it is the expected delay between
/// the child listening and us noticing; an attempt against a port nobody
/// listens on is refused in microseconds, so polling this often is cheap.
const MAX_INTERVAL: Duration = Duration::from_millis(5);
/// Bound on one attempt, so a child that accepts but never answers cannot
/// hold a probe past its deadline by much.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// One attempt: whether the child answered 200 before `deadline`.
pub(crate) async fn probe_once(probe: &ReadyProbe, deadline: Instant) -> bool {
    let ReadyProbe::Http { port, path } = probe;
    let limit = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
    matches!(
        crate::loopback::request(*port, http::Method::GET, path, None, limit).await,
        Ok((200, _))
    )
}

/// One attempt: the status the child answered with before `deadline`, if
/// it answered (livekit-server's 406 means its node stats are stale).
pub(crate) async fn status_once(probe: &ReadyProbe, deadline: Instant) -> Option<u16> {
    let ReadyProbe::Http { port, path } = probe;
    let limit = deadline.min(Instant::now() + ATTEMPT_TIMEOUT);
    crate::loopback::request(*port, http::Method::GET, path, None, limit)
        .await
        .ok()
        .map(|(status, _)| status)
}

/// Polls until the child answers 200 (`true`) or `deadline` passes
/// (`false`), with a short growing pause between attempts. Cancel-safe: the
/// caller races it against the child's exit.
pub(crate) async fn wait_until_ready(probe: &ReadyProbe, deadline: Instant) -> bool {
    let mut pause = FIRST_INTERVAL;
    loop {
        if probe_once(probe, deadline).await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep_until((now + pause).min(deadline)).await;
        pause = (pause * 3 / 2).min(MAX_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn serve_once(listener: TcpListener, status_line: &'static str) {
        if let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(format!("HTTP/1.1 {status_line}\r\ncontent-length: 2\r\n\r\nok").as_bytes())
                .await;
        }
    }

    #[tokio::test]
    async fn only_200_counts_as_ready() {
        for (status, want) in [("200 OK", true), ("406 Not Ready", false), ("500 Oops", false)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let server = tokio::spawn(serve_once(listener, status));
            let probe = ReadyProbe::Http { port, path: "/".into() };
            let deadline = Instant::now() + Duration::from_secs(5);
            assert_eq!(probe_once(&probe, deadline).await, want, "{status}");
            server.await.expect("server task");
        }
    }

    #[tokio::test]
    async fn nobody_listening_is_not_ready_by_the_deadline() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let probe = ReadyProbe::Http { port, path: "/".into() };
        let started = Instant::now();
        assert!(!wait_until_ready(&probe, started + Duration::from_millis(100)).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
