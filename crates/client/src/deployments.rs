//! Other hero_livekit deployments on this host, seen through `/proc`: the
//! daemons that run (and the root each serves), and the deployment a
//! process holding a port belongs to. So that a CLI pointed at one root can
//! say that a daemon runs with another, and `up` can refuse to start a
//! second deployment onto the ports of the first.
//!
//! Only this user's processes are fully visible (another user's environ and
//! fd table are not): what cannot be read is simply not reported.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// A running `hero_livekit_server` and the root it serves.
pub struct DaemonSeen {
    pub pid: i32,
    pub root: PathBuf,
}

/// Every `hero_livekit_server` process this user can see, with its root.
pub fn running_daemons() -> Vec<DaemonSeen> {
    pids()
        .filter_map(|pid| {
            let argv = cmdline(pid)?;
            let exe = argv.first()?;
            if Path::new(exe).file_name()? != "hero_livekit_server" {
                return None;
            }
            Some(DaemonSeen {
                pid,
                root: daemon_root(pid, &argv)?,
            })
        })
        .collect()
}

/// The root a daemon serves: its `--root`, else its `PATH_ROOT`, else its
/// `HOME`'s `hero` (the resolution of SPEC section 3, read from its side).
fn daemon_root(pid: i32, argv: &[OsString]) -> Option<PathBuf> {
    let flag = argv.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        if a == "--root" {
            argv.get(i + 1).map(PathBuf::from)
        } else {
            a.strip_prefix("--root=").map(PathBuf::from)
        }
    });
    let root = match flag {
        Some(r) => r,
        None => {
            let env = environ(pid)?;
            let get = |k: &str| {
                env.iter()
                    .find_map(|(name, v)| (name == k && !v.is_empty()).then(|| PathBuf::from(v)))
            };
            get("PATH_ROOT").or_else(|| get("HOME").map(|h| h.join("hero")))?
        }
    };
    if root.is_relative() {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        return Some(cwd.join(root));
    }
    Some(root)
}

/// The root of the hero_livekit deployment `pid` belongs to, when it is a
/// child a daemon started: livekit-server reads `<root>/var/hero_livekit/
/// livekit.yaml`, lk-backend `<root>/var/hero_livekit/backend.env`.
pub fn deployment_of(pid: i32) -> Option<(String, PathBuf)> {
    let argv = cmdline(pid)?;
    let name = Path::new(argv.first()?).file_name()?.to_string_lossy().into_owned();
    argv.iter().skip(1).find_map(|a| {
        let p = Path::new(a);
        let file = p.file_name()?;
        if file != "livekit.yaml" && file != "backend.env" {
            return None;
        }
        let state = p.parent()?;
        if !state.ends_with("var/hero_livekit") {
            return None;
        }
        Some((name.clone(), state.parent()?.parent()?.to_path_buf()))
    })
}

/// The pid of a process listening on TCP `port` (IPv4 or IPv6), when this
/// user can see it.
pub fn port_holder(port: u16) -> Option<i32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    pids().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
            })
        })
    })
}

/// The socket inodes of the listeners on `port` in a `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let listens = *cols.get(3)? == LISTEN;
            (listens && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| cols.get(9).map(|i| i.to_string()))?
        })
        .collect()
}

fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

fn cmdline(pid: i32) -> Option<Vec<OsString>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<OsString> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    (!argv.is_empty()).then_some(argv)
}

fn environ(pid: i32) -> Option<Vec<(String, OsString)>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter_map(|kv| {
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((
                    String::from_utf8_lossy(&kv[..eq]).into_owned(),
                    OsString::from_vec(kv[eq + 1..].to_vec()),
                ))
            })
            .collect(),
    )
}

/// Whether two roots name the same directory (symlinks and `..` aside).
pub fn same_root(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_found_by_its_port_and_only_it() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: 00000000:1EC8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n   \
             1: 0100007F:1EC8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 7880), vec!["4242".to_string()]);
        assert!(listening_inodes(table, 7881).is_empty());
    }

    #[test]
    fn this_process_is_found_holding_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        assert_eq!(port_holder(port), Some(std::process::id() as i32));
    }
}
