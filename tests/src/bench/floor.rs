//! What a notification costs the kernel on this machine, whatever the
//! server: the CPU one thread spends writing a payload-sized message to
//! each of many loopback TCP connections (plain TCP, no TLS, no XMPP), one
//! write per connection per round, as a server writes one notification to
//! each subscriber. On loopback the writing thread also runs the receiving
//! socket's TCP input, as every server measured here does; a server's CPU
//! per notification can be compared with this floor.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncReadExt;

use crate::measure::{clock_ticks_per_second, cpu_ticks};

/// The CPU time of one `payload_bytes` write to a loopback TCP connection,
/// averaged over `rounds` rounds of one write to each of `connections`.
pub fn tcp_write_cpu(
    connections: usize,
    payload_bytes: usize,
    rounds: usize,
) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let readers = std::thread::spawn(move || drain(listener, connections));
    let mut streams = (0..connections)
        .map(|_| {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
        .collect::<std::io::Result<Vec<_>>>()
        .context("connecting to the loopback listener")?;
    let payload = vec![b'x'; payload_bytes];
    let before = cpu_ticks("thread-self")?;
    for _ in 0..rounds {
        for stream in &mut streams {
            stream.write_all(&payload)?;
        }
    }
    let ticks = cpu_ticks("thread-self")? - before;
    drop(streams);
    readers
        .join()
        .map_err(|_| anyhow::anyhow!("a loopback reader panicked"))??;
    let writes = (connections * rounds).max(1) as f64;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64 / writes,
    ))
}

/// Accepts `connections` connections and reads each to its end, on one
/// thread with epoll (tokio), as the load generator reads its sessions.
fn drain(listener: TcpListener, connections: usize) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().await?;
            readers.spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
        while readers.join_next().await.is_some() {}
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_write_costs_some_cpu_and_not_a_millisecond() {
        let cpu = tcp_write_cpu(8, 2048, 2_000).unwrap();
        assert!(
            cpu > Duration::ZERO && cpu < Duration::from_millis(1),
            "{cpu:?}"
        );
    }
}
