//! Facts about processes and sockets read from /proc. Parsing is pure and
//! tested on sample text; the readers are thin and blocking (call them from a
//! blocking section when they scan, see [`port_holder`]).

use std::io;
use std::path::Path;

/// The fields of `/proc/<pid>/stat` the supervisor relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 22: start time in clock ticks after boot; with the pid it names
    /// one process for the lifetime of the machine.
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    // Field 6 is next; field 22 is 16 further on.
    let start_time = fields.nth(16)?.parse().ok()?;
    Some(ProcStat {
        state,
        pgrp,
        start_time,
    })
}

/// Reads and parses `/proc/<pid>/stat`.
pub(crate) fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unparsable /proc/{pid}/stat")))
}

/// Socket inodes listening on `port` in a `/proc/net/tcp{,6}` table.
pub(crate) fn parse_listen_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_ascii_whitespace().collect();
            let local = cols.get(1)?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let local_port = u16::from_str_radix(port_hex, 16).ok()?;
            if local_port != port || *cols.get(3)? != LISTEN {
                return None;
            }
            cols.get(9)?.parse::<u64>().ok().filter(|inode| *inode != 0)
        })
        .collect()
}

/// A process listening on a port we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortHolder {
    pub port: u16,
    /// The pid owning the socket, when /proc lets us see it.
    pub pid: Option<u32>,
}

/// Who listens on TCP `port` (IPv4 or IPv6) in this network namespace.
/// Blocking: it may scan every process's fd table when the port is taken.
pub(crate) fn port_holder(port: u16) -> io::Result<Option<PortHolder>> {
    if provably_free(port) {
        return Ok(None);
    }
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => inodes.extend(parse_listen_inodes(&text, port)),
            // IPv6 may be disabled: no table, no listener.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if inodes.is_empty() {
        return Ok(None);
    }
    Ok(Some(PortHolder {
        port,
        pid: socket_owner(&inodes),
    }))
}

/// Whether a bind of the wildcard addresses to `port` succeeds, which no
/// listener on any address allows. It takes microseconds, where reading
/// /proc/net/tcp and tcp6 takes milliseconds on a host with many sockets
/// (measured 3 and 5 ms here), on the path of every start and crash
/// restart; the tables are read only when this cannot prove the port free,
/// to confirm a listener and name its holder. A host without IPv6 has no
/// IPv6 listener to find.
///
/// The probe binds with `SO_REUSEADDR` and never listens. A listening probe
/// would itself hold the port: a child forked at that moment (the other
/// child's spawn, before its exec closes inherited descriptors) keeps a copy
/// of it, and the child we are about to start could fail to bind. A bound,
/// non-listening socket with `SO_REUSEADDR` still collides with any listener
/// (Linux refuses the bind when the other socket is in LISTEN, whatever its
/// options) but not with a later listener that also sets `SO_REUSEADDR`, as
/// Go's `net.Listen` (livekit-server), tokio and Rust's std all do.
fn provably_free(port: u16) -> bool {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use tokio::net::TcpSocket;
    fn bind(socket: io::Result<TcpSocket>, addr: SocketAddr) -> io::Result<()> {
        let socket = socket?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)
    }
    let v4 = bind(TcpSocket::new_v4(), (Ipv4Addr::UNSPECIFIED, port).into()).is_ok();
    v4 && match bind(TcpSocket::new_v6(), (Ipv6Addr::UNSPECIFIED, port).into()) {
        Ok(()) => true,
        Err(e) => e.kind() != io::ErrorKind::AddrInUse,
    }
}

/// The first process holding one of the socket inodes. Processes we may not
/// inspect (other users, when not root) are skipped, hence `None` is possible.
fn socket_owner(inodes: &[u64]) -> Option<u32> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(Path::new("/proc").join(entry.file_name()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_hostile_command_names() {
        let cases = [
            (
                "1234 (sleep) S 1 1234 1234 0 -1 4194560 96 0 0 0 0 0 0 0 20 0 1 0 987654 8380416 220",
                Some(ProcStat {
                    state: 'S',
                    pgrp: 1234,
                    start_time: 987654,
                }),
            ),
            (
                "77 (a) b) (c ) Z 5 70 70 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0",
                Some(ProcStat {
                    state: 'Z',
                    pgrp: 70,
                    start_time: 42,
                }),
            ),
            ("88 (truncated) S 1 2 3", None),
            ("no parenthesis at all", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_stat(text), want, "{text}");
        }
    }

    #[test]
    fn own_stat_is_readable_and_stable() {
        let a = read_stat(std::process::id()).expect("own stat");
        let b = read_stat(std::process::id()).expect("own stat again");
        assert_eq!(a.start_time, b.start_time);
        assert!(a.start_time > 0);
    }

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1EC8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0
   1: 0100007F:1EC8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 00000000:1ED2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0
   3: 0100007F:1EC8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 0 100 0 0 10 0
";
        assert_eq!(parse_listen_inodes(table, 7880), vec![111]);
        assert_eq!(parse_listen_inodes(table, 7890), vec![333]);
        assert!(parse_listen_inodes(table, 7881).is_empty());
        let v6 = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1EC8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0 100 0 0 10 0
";
        assert_eq!(parse_listen_inodes(v6, 7880), vec![444]);
    }

    #[test]
    fn a_listener_of_this_process_is_found_with_its_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let holder = port_holder(port).expect("scan").expect("held");
        assert_eq!(holder.pid, Some(std::process::id()));
        drop(listener);
        // A process a parallel test forks holds a copy of the listener
        // until its exec; the port is free once that is done.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while port_holder(port).expect("scan").is_some() {
            assert!(std::time::Instant::now() < deadline, "port {port} still held");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_listener_on_one_address_keeps_the_port_from_being_provably_free() {
        for addr in ["127.0.0.1:0", "0.0.0.0:0"] {
            let listener = std::net::TcpListener::bind(addr).expect("bind");
            let port = listener.local_addr().expect("addr").port();
            assert!(!provably_free(port), "{addr}");
            drop(listener);
            // Free again once any parallel fork holding a copy has exec'd.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !provably_free(port) {
                assert!(std::time::Instant::now() < deadline, "{addr}: free again");
                std::thread::yield_now();
            }
        }
        let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 here
        };
        let port = v6.local_addr().expect("addr").port();
        assert!(
            port_holder(port).expect("scan").is_some(),
            "an IPv6-only listener is found"
        );
    }
}
