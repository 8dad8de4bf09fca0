//! Whether the Redis that `livekit.yaml` names answers (SPEC section 11).
//!
//! livekit-server connects to Redis at startup and exits when it cannot, so
//! an operator who set `redis_address` needs to see in `health` whether
//! that address answers, before blaming the supervisor. The check is one
//! inline `PING` (RESP allows commands as a plain line) on a fresh
//! connection, bounded by a timeout, run by a background task: `health`
//! only reads its last result and never waits on the network.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest reply line read; `+PONG` and Redis's error lines are far
/// shorter, and a peer that is not Redis must not make us buffer more.
const MAX_REPLY: usize = 256;

/// Pings the Redis at `address` (`host:port`). `Ok` when it answers
/// `+PONG`; otherwise a sentence saying what happened, naming the address.
pub(crate) async fn ping(address: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, exchange(address)).await {
        Ok(Ok(reply)) => verdict(&reply).map_err(|why| format!("redis at {address} {why}")),
        Ok(Err(e)) => Err(format!("redis at {address}: {e}")),
        Err(_) => Err(format!("redis at {address} did not answer PING within {timeout:?}")),
    }
}

/// Connects, sends `PING`, and reads the first reply line.
async fn exchange(address: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !reply.windows(2).any(|w| w == b"\r\n") && reply.len() < MAX_REPLY {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}

/// What a reply to `PING` says about the server behind it.
fn verdict(reply: &[u8]) -> Result<(), String> {
    let line = reply.split(|b| *b == b'\r' || *b == b'\n').next().unwrap_or_default();
    // Only printable ASCII of a foreign reply goes into a message.
    let shown: String = line
        .iter()
        .take(80)
        .map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                *b as char
            } else {
                '?'
            }
        })
        .collect();
    if line == b"+PONG" {
        Ok(())
    } else if line.starts_with(b"-NOAUTH") || line.starts_with(b"-WRONGPASS") {
        Err("answers but requires a password, which livekit.yaml does not carry (hero_livekit configures only an address)".into())
    } else if line.starts_with(b"-") {
        Err(format!("answered PING with an error: {shown}"))
    } else if reply.is_empty() {
        Err("closed the connection without answering PING".into())
    } else {
        Err(format!("does not answer PING like Redis: {shown:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_judged_by_their_first_line() {
        assert_eq!(verdict(b"+PONG\r\n"), Ok(()));
        let auth = verdict(b"-NOAUTH Authentication required.\r\n").expect_err("auth");
        assert!(auth.contains("requires a password"), "{auth}");
        assert!(verdict(b"-WRONGPASS invalid username-password pair\r\n").is_err());
        assert_eq!(
            verdict(b"-LOADING Redis is loading the dataset in memory\r\n"),
            Err("answered PING with an error: -LOADING Redis is loading the dataset in memory".into())
        );
        assert_eq!(verdict(b""), Err("closed the connection without answering PING".into()));
        assert_eq!(
            verdict(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            Err("does not answer PING like Redis: \"HTTP/1.1 400 Bad Request\"".into())
        );
        // A hostile peer's bytes are not copied into the message as they are.
        let odd = verdict(b"\x1b[2J\x00junk").expect_err("not redis");
        assert!(odd.is_ascii() && !odd.contains('\u{1b}'), "{odd}");
    }

    #[tokio::test]
    async fn a_closed_port_and_a_silent_peer_are_reported_with_the_address() {
        // A port bound but not listening: nobody else can take it while the
        // test runs, and a connection to it is refused. (A listener closed
        // again could live on for a moment in a parallel test's fork.)
        let bound = tokio::net::TcpSocket::new_v4().expect("socket");
        bound.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = bound.local_addr().expect("addr").to_string();
        let e = ping(&addr, Duration::from_secs(5)).await.expect_err("refused");
        assert!(
            e.starts_with(&format!("redis at {addr}: ")) && e.contains("refused"),
            "{e}"
        );

        // A peer that accepts and never answers: the timeout bounds the check.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr").to_string();
        let hold = tokio::spawn(async move { silent.accept().await.map(|(s, _)| s) });
        let e = ping(&addr, Duration::from_millis(200)).await.expect_err("silent");
        assert_eq!(e, format!("redis at {addr} did not answer PING within 200ms"));
        hold.abort();
    }
}
