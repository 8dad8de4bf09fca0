//! HTTP downloads: bounded in size, hashed while they stream, written to a
//! temporary file rather than held in memory (a release binary is tens of
//! MiB, the daemon's own budget is 10 MiB).

use std::time::Duration;

use reqwest::{redirect, Client, Response, Url};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};

use super::error::{cause_chain, InstallError};
use super::plan::display_url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A stalled transfer fails instead of hanging the serialized install forever.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;

/// The client for one install. GitHub answers release downloads with a
/// redirect to its object store, so redirects are followed, but never from
/// https down to plain http, which would drop the transport's authentication.
///
/// # Errors
/// [`InstallError::Internal`] when the TLS stack cannot be set up.
pub(crate) fn client() -> Result<Client, InstallError> {
    let policy = redirect::Policy::custom(|attempt| match redirect_verdict(attempt.url(), attempt.previous()) {
        Ok(()) => attempt.follow(),
        Err(why) => attempt.error(why),
    });
    Client::builder()
        .user_agent(concat!("hero_livekit/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(policy)
        .build()
        .map_err(|e| {
            InstallError::Internal(format!(
                "cannot build the HTTP client: {}",
                cause_chain(&e.without_url())
            ))
        })
}

/// Whether a redirect to `next`, after visiting `previous`, is followed.
/// Once any hop was https, plain http is refused: the chain must not lose
/// the transport's authentication on the way to the binary.
fn redirect_verdict(next: &Url, previous: &[Url]) -> Result<(), &'static str> {
    if next.scheme() == "http" && previous.iter().any(|u| u.scheme() == "https") {
        Err("refusing a redirect from https to plain http")
    } else if previous.len() > MAX_REDIRECTS {
        Err("too many redirects")
    } else {
        Ok(())
    }
}

fn network_error(url: &Url, err: reqwest::Error) -> InstallError {
    InstallError::Network {
        url: display_url(url),
        cause: cause_chain(&err.without_url()),
    }
}

async fn get(client: &Client, url: &Url) -> Result<Response, InstallError> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| network_error(url, e))?;
    let status = response.status();
    if status.is_success() {
        Ok(response)
    } else {
        Err(InstallError::Http {
            url: display_url(url),
            status,
        })
    }
}

/// GETs a small document (a checksums file), refusing more than `limit` bytes.
///
/// # Errors
/// [`InstallError::Http`] for a non-success status (callers look for 404),
/// [`InstallError::Network`], [`InstallError::TooLarge`].
pub(crate) async fn get_small(client: &Client, url: &Url, limit: u64) -> Result<String, InstallError> {
    let mut response = get(client, url).await?;
    let too_large = || InstallError::TooLarge {
        what: display_url(url),
        limit,
    };
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(url, e))? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Streams `url` into `file`, at most `limit` bytes, hashing on the way;
/// `on_progress` gets bytes done and the announced length. The file is
/// flushed and fsynced before this returns. Returns sha256 (hex) and length.
///
/// # Errors
/// [`InstallError::Http`], [`InstallError::Network`] (also for a connection
/// that drops before the announced length), [`InstallError::TooLarge`],
/// [`InstallError::Write`] naming `file_label`.
pub(crate) async fn download(
    client: &Client,
    url: &Url,
    file: tokio::fs::File,
    file_label: &str,
    limit: u64,
    on_progress: &mut (dyn FnMut(u64, Option<u64>) + Send),
) -> Result<(String, u64), InstallError> {
    let mut response = get(client, url).await?;
    let total = response.content_length();
    let too_large = || InstallError::TooLarge {
        what: display_url(url),
        limit,
    };
    if total.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let write_error = |cause| InstallError::Write {
        path: file_label.to_string(),
        cause,
    };
    // Each tokio file write is a hop to the blocking pool: batch them.
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut hasher = Sha256::new();
    let mut done: u64 = 0;
    on_progress(0, total);
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(InstallError::Network {
                    url: display_url(url),
                    cause: format!("connection lost after {done} bytes: {}", cause_chain(&e.without_url())),
                })
            }
        };
        done += chunk.len() as u64;
        if done > limit {
            return Err(too_large());
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await.map_err(write_error)?;
        on_progress(done, total);
    }
    if total.is_some_and(|len| len != done) {
        return Err(InstallError::Network {
            url: display_url(url),
            cause: format!("received {done} of {} announced bytes", total.unwrap_or_default()),
        });
    }
    out.flush().await.map_err(write_error)?;
    out.into_inner().sync_all().await.map_err(write_error)?;
    Ok((hex::encode(hasher.finalize()), done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<Url> {
        list.iter().map(|u| Url::parse(u).expect("test url")).collect()
    }

    #[test]
    fn a_redirect_never_drops_from_https_to_http() {
        let next = |u: &str| Url::parse(u).expect("test url");
        let cases: [(&[&str], &str, Result<(), &str>); 6] = [
            // GitHub's release download: https to its object store.
            (&["https://github.com/a"], "https://objects.example/b", Ok(())),
            (&["http://mirror.lan/a"], "http://mirror.lan/b", Ok(())),
            (&["http://mirror.lan/a"], "https://mirror.lan/b", Ok(())),
            (
                &["https://github.com/a"],
                "http://objects.example/b",
                Err("refusing a redirect from https to plain http"),
            ),
            // Back to http after an upgrade is still a downgrade.
            (
                &["http://mirror.lan/a", "https://mirror.lan/b"],
                "http://mirror.lan/c",
                Err("refusing a redirect from https to plain http"),
            ),
            (&[], "http://mirror.lan/a", Ok(())),
        ];
        for (previous, to, want) in cases {
            assert_eq!(
                redirect_verdict(&next(to), &urls(previous)),
                want,
                "{previous:?} -> {to}"
            );
        }
    }

    #[test]
    fn a_redirect_chain_is_bounded() {
        let hop = "https://objects.example/x";
        let within = urls(&[hop; MAX_REDIRECTS]);
        assert_eq!(redirect_verdict(&Url::parse(hop).expect("url"), &within), Ok(()));
        let beyond = urls(&[hop; MAX_REDIRECTS + 1]);
        assert_eq!(
            redirect_verdict(&Url::parse(hop).expect("url"), &beyond),
            Err("too many redirects")
        );
    }
}
