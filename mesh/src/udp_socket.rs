//! The kernel's buffers of the mesh's UDP socket, and the datagrams it drops.
//!
//! QUIC carries the whole mesh over one UDP socket per node, and UDP has no
//! flow control of its own: when datagrams arrive faster than the node's
//! receive task drains them, the kernel drops what does not fit the
//! socket's receive buffer. QUIC takes a dropped datagram for congestion:
//! it retransmits after a round trip and shrinks its window, so an append
//! or a forwarded batch waits. Linux gives a socket 208 KiB by default
//! (`net.core.rmem_default`), about 150 full datagrams; a leader's appends
//! to two followers and their forwarded batches overflow that whenever the
//! receiving site is busy on its other core (three sites on loopback at
//! `16 × 32` dropped 1,855 datagrams in a 10-second run, none with 4 MiB).
//! So the node asks for `udp_buffer_bytes` each way, as quic-go and
//! Cloudflare's quiche do, and says so when the kernel grants less (it caps
//! the request at `net.core.rmem_max` / `wmem_max` unless the process has
//! `CAP_NET_ADMIN`).
//!
//! What the kernel still drops is counted per socket in `/proc/net/udp`
//! (and `udp6`), found by the socket's inode: the node exports it as
//! `vomesh_mesh_udp_receive_drops_total`, the figure that tells an operator
//! to raise the buffer.

use std::io;
use std::net::UdpSocket;

use rustix::net::sockopt;

/// Asks the kernel for `bytes` of receive and of send buffer on `socket`
/// (0: leave the kernel's defaults), and records what it granted in
/// `vomesh_mesh_udp_buffer_bytes{direction}`.
pub(crate) fn size_buffers(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
    if bytes > 0 {
        sockopt::set_socket_recv_buffer_size(socket, bytes)?;
        sockopt::set_socket_send_buffer_size(socket, bytes)?;
    }
    let granted = [
        ("receive", sockopt::socket_recv_buffer_size(socket)?, "rmem"),
        ("send", sockopt::socket_send_buffer_size(socket)?, "wmem"),
    ];
    for (direction, size, sysctl) in granted {
        metrics::gauge!("vomesh_mesh_udp_buffer_bytes", "direction" => direction).set(size as f64);
        if granted_for_data(size) < bytes {
            tracing::warn!(
                direction,
                asked = bytes,
                granted = granted_for_data(size),
                "mesh: the kernel capped the UDP socket's buffer below udp_buffer_bytes; \
                 raise net.core.{sysctl}_max to the value asked"
            );
        }
    }
    Ok(())
}

/// What a reported buffer size grants to data: Linux doubles the size asked
/// for (the other half is its own bookkeeping) and reports the double.
fn granted_for_data(reported: usize) -> usize {
    if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    }
}

/// Follows the kernel's count of datagrams dropped on one socket.
#[derive(Debug)]
pub(crate) struct DropCount {
    inode: u64,
    exported: u64,
}

impl DropCount {
    pub(crate) fn of(socket: &UdpSocket) -> io::Result<Self> {
        Ok(Self {
            inode: rustix::fs::fstat(socket)?.st_ino,
            exported: 0,
        })
    }

    /// Adds the drops since the last call to
    /// `vomesh_mesh_udp_receive_drops_total`. Where the kernel keeps no
    /// such table (not Linux), nothing is counted.
    pub(crate) fn export(&mut self) {
        let drops = ["/proc/net/udp", "/proc/net/udp6"]
            .into_iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .find_map(|table| drops_in(&table, self.inode));
        if let Some(drops) = drops {
            metrics::counter!("vomesh_mesh_udp_receive_drops_total")
                .increment(drops.saturating_sub(self.exported));
            self.exported = drops;
        }
    }
}

/// The `drops` column of the row for socket `inode` in a `/proc/net/udp`
/// table: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref
/// pointer drops`.
fn drops_in(table: &str, inode: u64) -> Option<u64> {
    const INODE: usize = 9;
    const DROPS: usize = 12;
    table.lines().skip(1).find_map(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let row_inode: u64 = fields.get(INODE)?.parse().ok()?;
        if row_inode != inode {
            return None;
        }
        fields.get(DROPS)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  312: 0100007F:1B59 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48211 2 00000000b8f0d3c1 0
14927: 0100007F:E2E0 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 21237 2 0000000033516384 1855
";

    #[test]
    fn the_drops_of_the_socket_are_read_from_its_row() {
        assert_eq!(drops_in(TABLE, 21237), Some(1855));
        assert_eq!(drops_in(TABLE, 48211), Some(0));
        assert_eq!(drops_in(TABLE, 1), None);
        assert_eq!(drops_in("", 21237), None);
    }

    #[test]
    fn the_buffers_asked_for_are_granted_up_to_the_kernel_cap() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let small = 64 * 1024;
        size_buffers(&socket, small).unwrap();
        // No kernel caps below 64 KiB.
        let received = sockopt::socket_recv_buffer_size(&socket).unwrap();
        assert_eq!(granted_for_data(received), small);
        let sent = sockopt::socket_send_buffer_size(&socket).unwrap();
        assert_eq!(granted_for_data(sent), small);
    }

    /// A real overflow: datagrams sent to a socket that never reads them,
    /// with a small buffer, are dropped by the kernel and counted.
    #[test]
    #[cfg(target_os = "linux")]
    fn datagrams_the_kernel_drops_are_counted() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        sockopt::set_socket_recv_buffer_size(&receiver, 4096).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = [0u8; 1200];
        for _ in 0..200 {
            sender
                .send_to(&datagram, receiver.local_addr().unwrap())
                .unwrap();
        }
        let count = DropCount::of(&receiver).unwrap();
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        let drops = drops_in(&table, count.inode).expect("the socket has a row");
        assert!(drops > 100, "{drops} drops of 200 datagrams into 4 KiB");
    }
}
