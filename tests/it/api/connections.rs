//! The HTTP connection bounds through real sockets: a client trickling its
//! request head is cut off, an idle keep-alive connection is closed, and
//! past the per-address or the total cap a new connection is answered `503`
//! with `Retry-After` and closed, until an open one goes away.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Api;

/// Longest any wait here may take before the test fails (a hang, not a speed).
const BOUND: Duration = Duration::from_secs(60);

/// True once the server has closed `stream` (EOF or reset), reading and
/// discarding whatever comes before; false if it is still open after `step`.
fn closed_within(stream: &mut TcpStream, step: Duration) -> bool {
    stream.set_read_timeout(Some(step)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// `GET path` on `stream` (keep-alive) and the whole response head + body.
fn get(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    read_response(stream)
}

/// One response with a `content-length` body.
fn read_response(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = stream.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// A connection from `source` (a loopback address of the 127/8 range).
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    socket.into()
}

/// The refusal a client sees past a cap.
fn assert_refused(stream: &mut TcpStream, what: &str) {
    let text = read_response(stream);
    assert!(text.starts_with("HTTP/1.1 503"), "{what}: {text}");
    let head = text.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1\r\n"), "{what}: {text}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{what}: {text}"
    );
    assert!(
        closed_within(stream, BOUND),
        "{what}: still open after the 503"
    );
}

/// Poll (bounded) until a new connection from `source` is served again.
fn served_again(source: [u8; 4], to: SocketAddr) {
    let deadline = Instant::now() + BOUND;
    loop {
        let mut s = connect_from(source, to);
        if get(&mut s, "/health").starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_trickling_its_request_head_is_cut_off() {
    let api = Api::start_with(|c| {
        c.http.header_read_timeout_secs = 1;
        // Only the head deadline can close this connection.
        c.http.idle_timeout_secs = 3600;
    });
    let mut slow = TcpStream::connect(api.server.http).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    // One header byte at a time, never the line end that would finish it.
    let deadline = Instant::now() + BOUND;
    loop {
        assert!(
            Instant::now() < deadline,
            "a trickling client was never cut off"
        );
        if slow.write_all(b"a").is_err() || closed_within(&mut slow, Duration::from_millis(100)) {
            break;
        }
    }
    // Closed without an answer to the unfinished request; others are served.
    let mut fresh = TcpStream::connect(api.server.http).unwrap();
    assert!(get(&mut fresh, "/health").starts_with("HTTP/1.1 200"));
    let metrics = get(&mut fresh, "/metrics");
    assert!(
        metrics.contains("uncorreo_http_connections_cut_total{reason=\"header_timeout\"}"),
        "header_timeout cut not counted"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let api = Api::start_with(|c| {
        c.http.idle_timeout_secs = 1;
        c.http.header_read_timeout_secs = 3600;
    });
    let mut idle = TcpStream::connect(api.server.http).unwrap();
    assert!(get(&mut idle, "/health").starts_with("HTTP/1.1 200"));
    let deadline = Instant::now() + BOUND;
    while !closed_within(&mut idle, Duration::from_millis(100)) {
        assert!(
            Instant::now() < deadline,
            "an idle connection was never closed"
        );
    }
}

#[test]
fn past_the_per_address_cap_a_new_connection_gets_503_until_one_closes() {
    let api = Api::start_with(|c| c.http.max_connections_per_ip = 2);
    let server = api.server.http;
    // Two open connections from 127.0.0.1, each served (so each was admitted).
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 1], server);
            assert!(get(&mut s, "/health").starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    let mut third = connect_from([127, 0, 0, 1], server);
    assert_refused(&mut third, "third connection from one address");
    // Another address is not affected.
    let mut other = connect_from([127, 0, 0, 2], server);
    assert!(get(&mut other, "/health").starts_with("HTTP/1.1 200"));
    let metrics = get(&mut other, "/metrics");
    assert!(
        metrics.contains("uncorreo_http_connections_refused_total{reason=\"per_ip\"}"),
        "per_ip refusal not counted"
    );
    // Closing one frees its place.
    drop(held.pop());
    served_again([127, 0, 0, 1], server);
}

#[test]
fn past_the_total_cap_a_new_connection_gets_503_until_one_closes() {
    let api = Api::start_with(|c| {
        c.http.max_connections = 3;
        c.http.max_connections_per_ip = 2;
    });
    let server = api.server.http;
    let mut held: Vec<TcpStream> = [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 3]]
        .into_iter()
        .map(|source| {
            let mut s = connect_from(source, server);
            assert!(get(&mut s, "/health").starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    // An address with no connection yet: only the total is full.
    let mut fourth = connect_from([127, 0, 0, 4], server);
    assert_refused(&mut fourth, "fourth connection in all");
    let freed = held.pop();
    drop(freed);
    served_again([127, 0, 0, 4], server);
    let mut s = held.pop().unwrap();
    let metrics = get(&mut s, "/metrics");
    assert!(
        metrics.contains("uncorreo_http_connections_refused_total{reason=\"total\"}"),
        "total refusal not counted"
    );
}
