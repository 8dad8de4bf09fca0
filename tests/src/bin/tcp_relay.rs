//! `tcp-relay LISTEN_PORT TARGET`: relays every TCP connection accepted on
//! 127.0.0.1:LISTEN_PORT to TARGET, byte for byte. A process of its own,
//! so that a test can cut a node's path to Redis with SIGSTOP (connections
//! hang as on a partition) and restore it with SIGCONT.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(target)) = (args.get(1), args.get(2).cloned()) else {
        eprintln!("usage: tcp-relay LISTEN_PORT TARGET");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind(format!("127.0.0.1:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tcp-relay: bind 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    for client in listener.incoming().flatten() {
        let Ok(upstream) = TcpStream::connect(&target) else {
            continue;
        };
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        std::thread::spawn(move || pump(client, upstream));
        std::thread::spawn(move || pump(u2, c2));
    }
    ExitCode::SUCCESS
}
