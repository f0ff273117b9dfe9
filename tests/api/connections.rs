//! What a client may hold of the real server: slow or idle connections are closed, the
//! number of connections is capped, and the open-file limit is raised at start.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::process::ExaiProcess;

/// How long a test waits for what should happen within about a second.
const PATIENCE: Duration = Duration::from_secs(10);

fn server(env: &[(&str, &str)]) -> (ExaiProcess, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    (ExaiProcess::start(data.path(), env), data)
}

/// Reads until the server closes the connection or `within` passes: what arrived, and
/// whether the connection was closed.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&received).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), true),
        }
    }
}

#[test]
fn a_client_sending_partial_headers_is_cut_off() {
    let (exai, _data) = server(&[("EXAI_HEADER_TIMEOUT_SECS", "1")]);
    let mut slow = TcpStream::connect(exai.addr).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: exai\r\n").unwrap();
    let (_, closed) = read_until_closed(&mut slow, PATIENCE);
    assert!(closed, "a connection with half its headers stayed open");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the header timeout");
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let (exai, _data) = server(&[("EXAI_HEADER_TIMEOUT_SECS", "1")]);
    let mut idle = TcpStream::connect(exai.addr).unwrap();
    // Two requests on one connection: it is kept alive, and closed only once idle.
    let request = "GET /livez HTTP/1.1\r\nHost: exai\r\n\r\n";
    idle.write_all(request.repeat(2).as_bytes()).unwrap();
    let (answer, closed) = read_until_closed(&mut idle, PATIENCE);
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(closed, "an idle kept-alive connection stayed open");
}

#[test]
fn a_trickling_body_is_cut_off() {
    let (exai, _data) = server(&[("EXAI_BODY_TIMEOUT_SECS", "1")]);
    let mut slow = TcpStream::connect(exai.addr).unwrap();
    let head = "POST /v1/threads HTTP/1.1\r\nHost: exai\r\ncontent-type: application/json\r\n\
                content-length: 100000\r\n\r\n{";
    slow.write_all(head.as_bytes()).unwrap();
    let mut trickle = slow.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let give_up = Instant::now() + PATIENCE;
        // One byte every 50 ms: never idle long, never done.
        while Instant::now() < give_up && trickle.write_all(b" ").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (answer, closed) = read_until_closed(&mut slow, PATIENCE);
    assert!(closed, "a trickling body kept its connection open: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    drop(slow);
    writer.join().unwrap();
}

fn request_livez(addr: std::net::SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"GET /livez HTTP/1.1\r\nHost: exai\r\nconnection: close\r\n\r\n").unwrap();
    client
}

#[test]
fn connections_over_the_cap_wait_for_a_free_slot() {
    let (exai, _data) = server(&[("EXAI_MAX_CONNECTIONS", "2")]);
    let first = TcpStream::connect(exai.addr).unwrap();
    let _second = TcpStream::connect(exai.addr).unwrap();
    let mut third = request_livez(exai.addr);
    let (nothing, closed) = read_until_closed(&mut third, Duration::from_millis(500));
    assert!(nothing.is_empty() && !closed, "a third connection was served over a cap of two: {nothing}");

    drop(first);
    let (answer, _) = read_until_closed(&mut third, PATIENCE);
    assert!(answer.starts_with("HTTP/1.1 200"), "the waiting client was not served: {answer:?}");
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let data = tempfile::tempdir().unwrap();
    let exai = ExaiProcess::start_with_file_limit(data.path(), &[], 256);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", exai.pid())).unwrap();
    let line = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "soft and hard limits differ: {line}");
    assert_ne!(numbers[0], "256", "{line}");
    // Still serves.
    let (answer, _) = read_until_closed(&mut request_livez(exai.addr), PATIENCE);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
