//! Borrowing decoders for the frames the proxy inspects.
//!
//! Every function takes a message *body* (see [`crate::body`]) and returns
//! views into it; nothing allocates except [`auth_request`] for the SASL
//! mechanism list. Strings must be UTF-8 ([`WireError::InvalidUtf8`]
//! otherwise); messages must be consumed exactly (trailing bytes are
//! [`WireError::Malformed`]), as PostgreSQL itself requires.

mod auth;
mod error_fields;

pub use auth::{auth_request, password_message, sasl_initial_response, sasl_response, AuthRequest};
pub use error_fields::{error_fields, ErrorFields};

use crate::codec::{split_cstr, Reader};
use crate::WireError;

/// Splits a NUL-terminated UTF-8 string off the front of `buf`:
/// `(string without terminator, rest after the terminator)`.
pub fn read_cstr(buf: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let (s, rest) = split_cstr(buf)?;
    let s = core::str::from_utf8(s).map_err(|_| WireError::InvalidUtf8("string"))?;
    Ok((s, rest))
}

/// Like [`read_cstr`] without the UTF-8 check (for clients whose
/// `client_encoding` is not UTF-8).
pub fn read_cstr_bytes(buf: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    split_cstr(buf)
}

/// The SQL text of a Query message.
pub fn query_sql(body: &[u8]) -> Result<&str, WireError> {
    let mut r = Reader::new(body);
    let sql = r.cstr("query")?;
    r.finish()?;
    Ok(sql)
}

/// Parameter type OIDs of a Parse message, decoded lazily from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamTypes<'a>(&'a [u8]);

impl<'a> ParamTypes<'a> {
    /// Number of declared parameter types.
    pub fn len(&self) -> usize {
        self.0.len() / 4
    }

    /// Whether no parameter types were declared.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `i`-th type OID (0 = unspecified).
    pub fn get(&self, i: usize) -> Option<u32> {
        let at = i.checked_mul(4)?;
        let b = self.0.get(at..)?.first_chunk::<4>()?;
        Some(u32::from_be_bytes(*b))
    }

    /// Iterates over the type OIDs.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.0
            .chunks_exact(4)
            .filter_map(|c| c.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)))
    }
}

/// A decoded Parse message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    /// Prepared statement name (empty = unnamed statement).
    pub name: &'a str,
    /// Query text.
    pub sql: &'a str,
    /// Declared parameter type OIDs.
    pub param_types: ParamTypes<'a>,
}

/// Decodes a Parse message body.
pub fn parse_parse(body: &[u8]) -> Result<ParseMsg<'_>, WireError> {
    let mut r = Reader::new(body);
    let name = r.cstr("statement name")?;
    let sql = r.cstr("query")?;
    let n = r.i16()?;
    let n = usize::try_from(n).map_err(|_| WireError::Malformed("negative parameter count"))?;
    let types = r.bytes(n * 4)?;
    r.finish()?;
    Ok(ParseMsg {
        name,
        sql,
        param_types: ParamTypes(types),
    })
}

/// `(portal, statement)` names of a Bind message (the rest is not decoded).
pub fn bind_names(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("portal name")?;
    let statement = r.cstr("statement name")?;
    Ok((portal, statement))
}

fn kind_and_name(body: &[u8]) -> Result<(u8, &str), WireError> {
    let mut r = Reader::new(body);
    let kind = r.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(WireError::Malformed(
            "invalid target kind (expected 'S' or 'P')",
        ));
    }
    let name = r.cstr("name")?;
    r.finish()?;
    Ok((kind, name))
}

/// `(kind, name)` of a Describe message; kind is `b'S'` (statement) or
/// `b'P'` (portal).
pub fn describe_target(body: &[u8]) -> Result<(u8, &str), WireError> {
    kind_and_name(body)
}

/// `(kind, name)` of a Close message; kind is `b'S'` or `b'P'`.
pub fn close_target(body: &[u8]) -> Result<(u8, &str), WireError> {
    kind_and_name(body)
}

/// `(portal, max_rows)` of an Execute message (`max_rows` 0 = no limit).
pub fn execute_portal(body: &[u8]) -> Result<(&str, i32), WireError> {
    let mut r = Reader::new(body);
    let portal = r.cstr("portal name")?;
    let max_rows = r.i32()?;
    r.finish()?;
    Ok((portal, max_rows))
}

/// Transaction status of a ReadyForQuery message: `b'I'`, `b'T'` or `b'E'`.
pub fn ready_status(body: &[u8]) -> Result<u8, WireError> {
    match body {
        [s @ (b'I' | b'T' | b'E')] => Ok(*s),
        _ => Err(WireError::Malformed("invalid ReadyForQuery")),
    }
}

/// `(name, value)` of a ParameterStatus message.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body);
    let k = r.cstr("parameter name")?;
    let v = r.cstr("parameter value")?;
    r.finish()?;
    Ok((k, v))
}

/// `(pid, secret)` of a protocol 3.0 BackendKeyData message.
pub fn backend_key_data(body: &[u8]) -> Result<(i32, i32), WireError> {
    let mut r = Reader::new(body);
    let pid = r.i32()?;
    let secret = r.i32()?;
    r.finish()?;
    Ok((pid, secret))
}

/// The command tag of a CommandComplete message (e.g. `"INSERT 0 1"`).
pub fn command_complete(body: &[u8]) -> Result<&str, WireError> {
    let mut r = Reader::new(body);
    let t = r.cstr("command tag")?;
    r.finish()?;
    Ok(t)
}

#[cfg(test)]
mod tests;
