//! ErrorResponse / NoticeResponse field parsing.

use crate::codec::{split_cstr, Reader};
use crate::WireError;

/// A validated view of the fields of an ErrorResponse or NoticeResponse body.
/// Lookups scan the borrowed body; nothing is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    body: &'a [u8],
}

/// Parses an ErrorResponse/NoticeResponse body; same as [`ErrorFields::parse`].
pub fn error_fields(body: &[u8]) -> Result<ErrorFields<'_>, WireError> {
    ErrorFields::parse(body)
}

impl<'a> ErrorFields<'a> {
    /// Validates the layout (`(code:u8, value:cstr)*, 0`) of `body`.
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        loop {
            if r.u8()? == 0 {
                break;
            }
            r.cstr_bytes()?;
        }
        r.finish()?;
        Ok(ErrorFields { body })
    }

    /// Iterates over `(field code, raw value)` pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut rest = self.body;
        core::iter::from_fn(move || {
            let (&code, tail) = rest.split_first()?;
            if code == 0 {
                return None;
            }
            let (value, tail) = split_cstr(tail).ok()?;
            rest = tail;
            Some((code, value))
        })
    }

    /// The first field with the given code, if present and valid UTF-8.
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.iter()
            .find(|(c, _)| *c == code)
            .and_then(|(_, v)| core::str::from_utf8(v).ok())
    }

    /// Field `S`: localized severity (`ERROR`, `FATAL`, `WARNING`, ...).
    pub fn severity(&self) -> Option<&'a str> {
        self.get(b'S')
    }

    /// Field `V`: non-localized severity (servers ≥ 9.6), falling back to `S`.
    pub fn severity_nonlocalized(&self) -> Option<&'a str> {
        self.get(b'V').or_else(|| self.severity())
    }

    /// Field `C`: SQLSTATE code.
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C')
    }

    /// Field `M`: primary message.
    pub fn message(&self) -> Option<&'a str> {
        self.get(b'M')
    }

    /// Field `D`: detail.
    pub fn detail(&self) -> Option<&'a str> {
        self.get(b'D')
    }

    /// Field `H`: hint.
    pub fn hint(&self) -> Option<&'a str> {
        self.get(b'H')
    }
}
