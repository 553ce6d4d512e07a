//! Thread-per-core: one OS thread per core, each running its own
//! current-thread tokio runtime and its own SO_REUSEPORT listeners. Nothing
//! is work-stolen: a connection lives and dies on the core whose socket the
//! kernel handed it to. Cross-core hand-offs are explicit channels (to the
//! engine's writer threads, from the fan-out to subscribers).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog per listener.
const BACKLOG: i32 = 1024;

/// Why the listeners for one address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another socket (another uncorreo, or any other process) holds the
    /// address. Joining its SO_REUSEPORT group would silently split its
    /// connections with us, so we refuse to start instead.
    #[error("address {0} is already in use by another process")]
    InUse(SocketAddr),
    /// Creating, configuring or binding a socket failed otherwise.
    #[error("binding {addr}: {source}")]
    Io {
        /// The address being bound.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// One listening socket per core, all bound to the same address with
/// SO_REUSEPORT so the kernel spreads connections across cores. The address
/// is first claimed by a probe socket without SO_REUSEPORT, which fails
/// whenever anyone already holds it (reuseport or not), so a second server on
/// the same port refuses to start instead of taking half of the first one's
/// connections. Port 0 is resolved by the probe, and every core binds the
/// port it picked.
pub fn reuseport_listeners(addr: SocketAddr, cores: usize) -> Result<Vec<TcpListener>, BindError> {
    let bind_to = claim(addr)?;
    bind_group(bind_to, cores).map_err(|source| match source.kind() {
        // The port was taken between the probe and the group (a narrow race).
        io::ErrorKind::AddrInUse => BindError::InUse(bind_to),
        _ => BindError::Io {
            addr: bind_to,
            source,
        },
    })
}

/// Binds (without listening) a socket that may share the address with no one,
/// and returns the address it got; the socket is closed on return.
fn claim(addr: SocketAddr) -> Result<SocketAddr, BindError> {
    let fail = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse(addr),
        _ => BindError::Io { addr, source },
    };
    let probe =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // SO_REUSEADDR only lets the probe past our own closed connections in
    // TIME_WAIT; it never lets two sockets share a listening port on Linux.
    probe.set_reuse_address(true).map_err(fail)?;
    probe.bind(&addr.into()).map_err(fail)?;
    probe
        .local_addr()
        .map_err(fail)?
        .as_socket()
        .ok_or_else(|| {
            fail(io::Error::other(
                "bound address is not an IP socket address",
            ))
        })
}

fn bind_group(addr: SocketAddr, cores: usize) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(cores);
    let mut bind_to = addr;
    for _ in 0..cores.max(1) {
        let socket = Socket::new(
            Domain::for_address(bind_to),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind_to.into())?;
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        bind_to = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Cores to use: `configured`, or every available core when 0.
pub fn effective_cores(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn every_core_listens_on_the_port_the_probe_picked() {
        let listeners = reuseport_listeners(loopback_any_port(), 3).expect("binds");
        let first = listeners[0].local_addr().expect("addr");
        assert_ne!(first.port(), 0);
        assert_eq!(listeners.len(), 3);
        for l in &listeners {
            assert_eq!(l.local_addr().expect("addr"), first);
        }
    }

    #[test]
    fn a_second_group_on_the_same_port_is_refused_and_named() {
        let ours = reuseport_listeners(loopback_any_port(), 2).expect("binds");
        let addr = ours[0].local_addr().expect("addr");
        match reuseport_listeners(addr, 2) {
            Err(BindError::InUse(named)) => assert_eq!(named, addr),
            other => panic!("expected InUse({addr}), got {other:?}"),
        }
    }

    #[test]
    fn a_strangers_reuseport_socket_is_never_joined() {
        // What a stranger of the same user can do: listen with SO_REUSEPORT,
        // which a plain reuseport bind of ours would silently join.
        let stranger = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        stranger.set_reuse_port(true).unwrap();
        stranger.bind(&loopback_any_port().into()).unwrap();
        stranger.listen(16).unwrap();
        let addr = stranger.local_addr().unwrap().as_socket().unwrap();
        let err = reuseport_listeners(addr, 2).expect_err("must refuse a shared port");
        assert!(matches!(err, BindError::InUse(a) if a == addr), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn the_port_is_free_again_once_our_listeners_close() {
        let addr = {
            let ours = reuseport_listeners(loopback_any_port(), 2).expect("binds");
            ours[0].local_addr().expect("addr")
        };
        reuseport_listeners(addr, 2).expect("rebinds after close");
    }
}
