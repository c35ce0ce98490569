//! Framing of tagged v3 protocol messages: `tag:u8, len:i32 (incl. itself), body`.
//!
//! [`peek_frame`] only looks at the header; [`split_frame`] detaches a whole
//! frame (header included) from a `BytesMut` read buffer as `Bytes`, which
//! shares the buffer's allocation, so forwarding costs no copy and no
//! allocation per message.

pub mod tag;

use bytes::{Bytes, BytesMut};

use crate::WireError;

/// Size of a frame header: tag byte plus the 4-byte length field.
pub const HEADER_LEN: usize = 5;

/// The header of one tagged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message type byte (see [`tag`]).
    pub tag: u8,
    /// Total number of bytes of the frame, including the tag byte
    /// (i.e. the length field's value plus one).
    pub len: usize,
}

impl FrameHeader {
    /// Number of body bytes (after the 5-byte header).
    pub fn body_len(&self) -> usize {
        self.len.saturating_sub(HEADER_LEN)
    }
}

/// Reads the header at the start of `buf`.
///
/// Returns `Ok(None)` if fewer than 5 bytes are buffered. The header is
/// validated as soon as it is available, even if the body is not: a length
/// field below 4 is [`WireError::InvalidLength`], and one above
/// `max_message_bytes` (compared with the length field's value, which counts
/// itself but not the tag) is [`WireError::MessageTooLong`].
pub fn peek_frame(buf: &[u8], max_message_bytes: usize) -> Result<Option<FrameHeader>, WireError> {
    let Some((&tag, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let Some((len, _)) = rest.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*len);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len < 4 {
        return Err(WireError::InvalidLength { len });
    }
    if len > max_message_bytes {
        return Err(WireError::MessageTooLong {
            len,
            max: max_message_bytes,
        });
    }
    Ok(Some(FrameHeader {
        tag,
        len: len.saturating_add(1),
    }))
}

/// Detaches the first complete frame from `buf`.
///
/// Returns `(tag, frame)` where `frame` is the whole message including the
/// tag and length field, ready to be forwarded verbatim. Returns `Ok(None)`
/// (leaving `buf` untouched) when the frame is not complete yet. Errors are
/// those of [`peek_frame`]; after an error the connection must be dropped.
pub fn split_frame(
    buf: &mut BytesMut,
    max_message_bytes: usize,
) -> Result<Option<(u8, Bytes)>, WireError> {
    match peek_frame(buf, max_message_bytes)? {
        Some(hdr) if buf.len() >= hdr.len => Ok(Some((hdr.tag, buf.split_to(hdr.len).freeze()))),
        _ => Ok(None),
    }
}

/// The body of a whole frame (everything after the 5-byte header); empty if
/// `frame` is shorter than a header.
pub fn body(frame: &[u8]) -> &[u8] {
    frame.get(HEADER_LEN..).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::BufMut;

    const MAX: usize = 1 << 20;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frame_split_across_reads() {
        let f = frame(b'Q', b"select 1\0");
        let mut buf = BytesMut::new();
        for (i, b) in f.iter().enumerate() {
            assert_eq!(split_frame(&mut buf, MAX).unwrap(), None, "byte {i}");
            buf.put_u8(*b);
        }
        let (tag, out) = split_frame(&mut buf, MAX).unwrap().unwrap();
        assert_eq!(tag, b'Q');
        assert_eq!(&out[..], &f[..]);
        assert_eq!(body(&out), b"select 1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn header_known_before_body() {
        let f = frame(b'D', &[7u8; 100]);
        let hdr = peek_frame(&f[..7], MAX).unwrap().unwrap();
        assert_eq!(
            hdr,
            FrameHeader {
                tag: b'D',
                len: 105
            }
        );
        assert_eq!(hdr.body_len(), 100);
        assert_eq!(peek_frame(&f[..4], MAX).unwrap(), None);
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        buf.put_slice(&frame(b'P', b"\0select $1\0\0\0"));
        buf.put_slice(&frame(b'S', b""));
        buf.put_slice(&frame(b'X', b""));
        buf.put_slice(&frame(b'Q', b"partial")[..6]);
        let tags: Vec<u8> = std::iter::from_fn(|| split_frame(&mut buf, MAX).unwrap())
            .map(|(t, _)| t)
            .collect();
        assert_eq!(tags, b"PSX");
        assert_eq!(buf.len(), 6);
    }

    #[test]
    fn length_below_four_is_error() {
        for len in 0u32..4 {
            let mut buf = BytesMut::from(&[b'Q'][..]);
            buf.put_u32(len);
            let err = split_frame(&mut buf, MAX).unwrap_err();
            assert_eq!(err, WireError::InvalidLength { len: len as usize });
            assert_eq!(err.sqlstate(), "08P01");
        }
    }

    #[test]
    fn length_above_max_is_error_before_body_arrives() {
        let mut buf = BytesMut::from(&[b'd'][..]);
        buf.put_u32(u32::MAX);
        let err = split_frame(&mut buf, MAX).unwrap_err();
        assert!(matches!(err, WireError::MessageTooLong { max: MAX, .. }));
        assert_eq!(err.sqlstate(), "08P01");
        // Exactly max is fine.
        assert!(peek_frame(&frame(b'd', &[0; 12]), 16).unwrap().is_some());
        assert!(peek_frame(&frame(b'd', &[0; 13]), 16).is_err());
    }

    #[test]
    fn body_of_short_slice_is_empty() {
        assert_eq!(body(b"Q\0\0"), b"");
    }
}
