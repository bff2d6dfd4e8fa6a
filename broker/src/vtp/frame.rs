//! VTP framing (VOEvent Transport Protocol 2.0 §3): every message is a
//! 4-byte big-endian length followed by that many bytes of XML.
//!
//! The length comes from the peer, so it is checked against the configured
//! `max_message_bytes` before anything is allocated for the body; a peer
//! that announces more is refused (Comet calls this `lengthLimitExceeded`,
//! and most often it is a little-endian prefix).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix.
pub const PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message of {len} bytes announced; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("empty message")]
    Empty,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The metric label of the error.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "too-large",
            FrameError::Empty => "malformed",
            FrameError::Io(_) => "io",
        }
    }
}

/// The body length a prefix announces, if it is within `max_bytes`.
pub fn body_len(prefix: [u8; PREFIX_BYTES], max_bytes: usize) -> Result<usize, FrameError> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_bytes,
        });
    }
    Ok(len)
}

/// The prefix of a body of `len` bytes, or `None` if it does not fit in 32
/// bits (never for bodies under `max_message_bytes`).
pub fn prefix(len: usize) -> Option<[u8; PREFIX_BYTES]> {
    u32::try_from(len).ok().map(u32::to_be_bytes)
}

/// Reads one message body. `Ok(None)`: the peer closed the connection
/// cleanly between messages.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let len = body_len(prefix, max_bytes)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Writes one message (prefix and body) and flushes it. Prefix and body go
/// out in one write: as two, the body of a small message would wait for
/// the peer's delayed ACK of the prefix (Nagle), tens of milliseconds per
/// message.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let prefix = prefix(body.len()).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "message over 4 GiB")
    })?;
    let mut message = Vec::with_capacity(PREFIX_BYTES + body.len());
    message.extend_from_slice(&prefix);
    message.extend_from_slice(body);
    writer.write_all(&message).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_frame_reads_back() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"<a/>").await.unwrap();
        assert_eq!(wire, b"\0\0\0\x04<a/>");
        let mut reader = wire.as_slice();
        assert_eq!(
            read_frame(&mut reader, 100).await.unwrap(),
            Some(b"<a/>".to_vec())
        );
        assert_eq!(read_frame(&mut reader, 100).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_length_over_the_limit_is_refused_before_reading_the_body() {
        // A little-endian prefix for 4 bytes reads as 64 MiB big-endian.
        let mut reader: &[u8] = b"\x04\0\0\0<a/>";
        let error = read_frame(&mut reader, 1024 * 1024).await.unwrap_err();
        assert!(matches!(
            error,
            FrameError::TooLarge {
                len: 0x0400_0000,
                max: 1_048_576
            }
        ));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_not_a_message() {
        let mut reader: &[u8] = b"\0\0\0\x10<a/>";
        assert!(matches!(
            read_frame(&mut reader, 100).await,
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn empty_messages_are_refused() {
        assert!(matches!(body_len([0; 4], 10), Err(FrameError::Empty)));
    }
}
