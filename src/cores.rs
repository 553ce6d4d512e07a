//! Thread-per-core: one OS thread per core, each running its own
//! current-thread tokio runtime and its own SO_REUSEPORT listeners. Nothing
//! is work-stolen: a connection lives and dies on the core whose socket the
//! kernel handed it to. Cross-core hand-offs are explicit channels (to the
//! engine's writer threads, from the fan-out to subscribers).

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog per listener.
const BACKLOG: i32 = 1024;

/// One listening socket per core, all bound to the same address with
/// SO_REUSEPORT so the kernel spreads connections across cores. Binding port
/// 0 gives each socket its own port, so the first socket picks the port and
/// the others bind to it.
pub fn reuseport_listeners(addr: SocketAddr, cores: usize) -> std::io::Result<Vec<TcpListener>> {
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
