//! The appliance starts on port 0 and answers liveness over real HTTP.

use std::io::{Read, Write};

#[test]
fn serves_health_on_its_http_port() {
    let server = crate::support::TestServer::start();
    let mut s = std::net::TcpStream::connect(server.http).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
