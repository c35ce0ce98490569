//! Decoders for authentication messages in both directions.

use crate::codec::Reader;
use crate::WireError;

/// A decoded Authentication (`'R'`) message from the upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// AuthenticationOk.
    Ok,
    /// AuthenticationCleartextPassword.
    Cleartext,
    /// AuthenticationMD5Password.
    Md5 {
        /// Salt to hash the password with.
        salt: [u8; 4],
    },
    /// AuthenticationSASL with the offered mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<&'a str>,
    },
    /// AuthenticationSASLContinue (SCRAM server-first message).
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal (SCRAM server-final message).
    SaslFinal(&'a [u8]),
    /// Any other (unsupported) authentication request code.
    Other(i32),
}

/// Decodes an Authentication message body.
pub fn auth_request(body: &[u8]) -> Result<AuthRequest<'_>, WireError> {
    let mut r = Reader::new(body);
    let code = r.i32()?;
    let req = match code {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => AuthRequest::Md5 { salt: r.array()? },
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr("SASL mechanism")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => return Ok(AuthRequest::SaslContinue(r.rest())),
        12 => return Ok(AuthRequest::SaslFinal(r.rest())),
        other => return Ok(AuthRequest::Other(other)),
    };
    r.finish()?;
    Ok(req)
}

/// The password of a PasswordMessage (cleartext or `md5...`), without its
/// terminator. The body must be exactly one C string.
pub fn password_message(body: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body);
    let pw = r.cstr_bytes()?;
    r.finish()
        .map_err(|_| WireError::Malformed("invalid password packet size"))?;
    Ok(pw)
}

/// `(mechanism, initial response)` of a SASLInitialResponse. The response is
/// `None` when the client sent length -1.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, Option<&[u8]>), WireError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr("SASL mechanism")?;
    let len = r.i32()?;
    let data = if len == -1 {
        None
    } else {
        let len = usize::try_from(len).map_err(|_| WireError::Malformed("negative SASL length"))?;
        Some(r.bytes(len)?)
    };
    r.finish()?;
    Ok((mechanism, data))
}

/// The payload of a SASLResponse (the whole body).
pub fn sasl_response(body: &[u8]) -> &[u8] {
    body
}
