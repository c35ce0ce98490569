//! Startup-phase packets: untagged, length-prefixed, identified by a 4-byte
//! code (a protocol version or a special request code).

use bytes::{BufMut, BytesMut};

use crate::codec::{self, Reader};
use crate::WireError;

/// Protocol version 3.0 as sent on the wire.
pub const PROTOCOL_3_0: i32 = 196_608;
/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Maximum number of key/value parameters accepted in a StartupMessage.
pub const MAX_STARTUP_PARAMS: usize = 64;
/// Prefix of protocol-extension options (`_pq_.name`), which are not
/// run-time parameters and must be reported back in NegotiateProtocolVersion.
pub const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage. `protocol` is what the client requested; any 3.x is
    /// accepted and served as 3.0 (see [`StartupPacket::needs_negotiation`]).
    /// `params` keeps wire order, including `_pq_.` options.
    Startup {
        /// Requested `(major, minor)` protocol version; major is always 3.
        protocol: (u16, u16),
        /// Key/value parameters in wire order (`user` is guaranteed present
        /// and non-empty).
        params: Vec<(String, String)>,
    },
    /// SSLRequest. Before starting TLS, the caller must make sure no further
    /// bytes are already buffered (they were sent in plaintext and must not
    /// be treated as if they arrived over TLS).
    SslRequest,
    /// GSSENCRequest (same buffering caveat as [`StartupPacket::SslRequest`]).
    GssEncRequest,
    /// CancelRequest for the backend identified by `pid`/`secret`.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
}

impl StartupPacket {
    /// The value of parameter `k` (the last occurrence wins, as in
    /// PostgreSQL); `None` for non-Startup packets.
    pub fn param(&self, k: &str) -> Option<&str> {
        match self {
            StartupPacket::Startup { params, .. } => params
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// The `user` parameter.
    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// The `database` parameter, defaulting to the user name like PostgreSQL.
    pub fn database(&self) -> Option<&str> {
        self.param("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }

    /// The requested protocol minor version (Startup packets only).
    pub fn requested_minor(&self) -> Option<u16> {
        match self {
            StartupPacket::Startup { protocol, .. } => Some(protocol.1),
            _ => None,
        }
    }

    /// Names of the `_pq_.` protocol options the client asked for; this proxy
    /// supports none of them.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        let params = match self {
            StartupPacket::Startup { params, .. } => params.as_slice(),
            _ => &[],
        };
        params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with(PROTOCOL_OPTION_PREFIX))
    }

    /// Whether the proxy must answer with NegotiateProtocolVersion (the client
    /// asked for 3.x with x > 0, or sent `_pq_.` options).
    pub fn needs_negotiation(&self) -> bool {
        self.requested_minor().is_some_and(|m| m > 0) || self.protocol_options().next().is_some()
    }

    /// Appends NegotiateProtocolVersion (newest minor 0, listing every `_pq_.`
    /// option) to `buf` if [`needs_negotiation`](Self::needs_negotiation);
    /// returns whether it did.
    pub fn write_negotiation(&self, buf: &mut BytesMut) -> bool {
        if !self.needs_negotiation() {
            return false;
        }
        let at = codec::begin(buf, crate::tag::backend::NEGOTIATE_PROTOCOL_VERSION);
        buf.put_i32(0);
        let n_at = buf.len();
        buf.put_i32(0);
        let mut n = 0usize;
        for opt in self.protocol_options() {
            codec::put_cstr(buf, opt.as_bytes());
            n += 1;
        }
        if let Some(slot) = buf.get_mut(n_at..n_at + 4) {
            slot.copy_from_slice(&codec::len_i32(n).to_be_bytes());
        }
        codec::finish(buf, at);
        true
    }
}

/// Decodes one startup-phase packet from the front of `buf`.
///
/// Returns `Ok(None)` (consuming nothing) until the whole packet is buffered.
/// The length is validated as soon as its 4 bytes are present: below 8 or
/// above `max_len` is an 08P01 error. On success exactly the packet's bytes
/// are consumed. Any error is fatal for the connection.
pub fn decode_startup(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<StartupPacket>, WireError> {
    let Some((len, _)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
    if len < 8 {
        return Err(WireError::InvalidLength { len });
    }
    if len > max_len {
        return Err(WireError::MessageTooLong { len, max: max_len });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    parse_packet(packet.get(4..).unwrap_or_default()).map(Some)
}

fn parse_packet(body: &[u8]) -> Result<StartupPacket, WireError> {
    let mut r = Reader::new(body);
    let code = r.i32()?;
    match code {
        SSL_REQUEST_CODE => r.finish().map(|()| StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => r.finish().map(|()| StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let pid = r.i32()?;
            let secret = r.i32()?;
            r.finish()?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        _ => {
            let major = (code as u32 >> 16) as u16;
            let minor = (code as u32 & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            let params = parse_params(r)?;
            let pkt = StartupPacket::Startup {
                protocol: (major, minor),
                params,
            };
            if !matches!(pkt.user(), Some(u) if !u.is_empty()) {
                return Err(WireError::MissingUser);
            }
            Ok(pkt)
        }
    }
}

fn parse_params(mut r: Reader<'_>) -> Result<Vec<(String, String)>, WireError> {
    const LAYOUT: WireError =
        WireError::Malformed("invalid startup packet layout: expected terminator as last byte");
    let mut params = Vec::new();
    loop {
        let key = r.cstr_bytes().map_err(|_| LAYOUT)?;
        if key.is_empty() {
            break;
        }
        if params.len() >= MAX_STARTUP_PARAMS {
            return Err(WireError::TooManyParams {
                limit: MAX_STARTUP_PARAMS,
            });
        }
        let value = r.cstr_bytes().map_err(|_| LAYOUT)?;
        params.push((utf8(key)?, utf8(value)?));
    }
    r.finish().map_err(|_| LAYOUT)?;
    Ok(params)
}

fn utf8(b: &[u8]) -> Result<String, WireError> {
    core::str::from_utf8(b)
        .map(str::to_owned)
        .map_err(|_| WireError::InvalidUtf8("startup packet"))
}

/// Appends a protocol 3.0 StartupMessage with `params` (e.g. `user`,
/// `database`, `application_name`) to `buf`.
pub fn encode_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = codec::begin_untagged(buf);
    buf.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        codec::put_cstr(buf, k.as_bytes());
        codec::put_cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    codec::finish(buf, at);
}

/// Appends a CancelRequest to `buf`.
pub fn encode_cancel(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(CANCEL_REQUEST_CODE);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// Appends an SSLRequest to `buf`.
pub fn encode_ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

/// Appends a GSSENCRequest to `buf`.
pub fn encode_gssenc_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(GSSENC_REQUEST_CODE);
}

#[cfg(test)]
mod tests;
