//! Crate-private, panic-free primitives for reading and writing protocol
//! fields.

use bytes::{BufMut, BytesMut};

use crate::WireError;

/// A cursor over a borrowed message body. All reads are bounds-checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not consumed yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(TRUNCATED)?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (b, rest) = self.buf.split_first_chunk::<N>().ok_or(TRUNCATED)?;
        self.buf = rest;
        Ok(*b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        self.array().map(i32::from_be_bytes)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let head = self.buf.get(..n).ok_or(TRUNCATED)?;
        self.buf = self.buf.get(n..).unwrap_or_default();
        Ok(head)
    }

    /// A NUL-terminated byte string, without its terminator.
    pub(crate) fn cstr_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let (s, rest) = split_cstr(self.buf)?;
        self.buf = rest;
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string, without its terminator.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let s = self.cstr_bytes()?;
        core::str::from_utf8(s).map_err(|_| WireError::InvalidUtf8(what))
    }

    /// Fails unless the whole body was consumed.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed("trailing bytes after message"))
        }
    }
}

const TRUNCATED: WireError = WireError::Malformed("message truncated");

/// Splits `buf` at its first NUL: `(string, rest after the NUL)`.
pub(crate) fn split_cstr(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::Malformed("missing string terminator"))?;
    let s = buf.get(..nul).unwrap_or_default();
    let rest = buf.get(nul + 1..).unwrap_or_default();
    Ok((s, rest))
}

/// Writes `s` as a C string. Anything from the first NUL on is dropped so the
/// frame can never be corrupted by an embedded terminator.
pub(crate) fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    buf.put_slice(s.get(..end).unwrap_or_default());
    buf.put_u8(0);
}

/// Starts a tagged message; returns the offset of its length field.
pub(crate) fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    begin_untagged(buf)
}

/// Starts an untagged (startup-phase) packet; returns the offset of its
/// length field.
pub(crate) fn begin_untagged(buf: &mut BytesMut) -> usize {
    let at = buf.len();
    buf.put_u32(0);
    at
}

/// Back-patches the length field written by [`begin`]/[`begin_untagged`].
///
/// Lengths that do not fit an `i32` cannot be represented on the wire; they
/// saturate (the peer will reject the message) instead of panicking.
pub(crate) fn finish(buf: &mut BytesMut, at: usize) {
    let len = buf.len().saturating_sub(at);
    let len = u32::try_from(len).unwrap_or(u32::MAX).min(i32::MAX as u32);
    if let Some(slot) = buf.get_mut(at..at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
}

/// Saturating `usize` → `i16` for element counts.
pub(crate) fn count_i16(n: usize) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
}

/// Saturating `usize` → `i32` for lengths and counts.
pub(crate) fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
