//! Backend (server → client) message encoders.

use bytes::{BufMut, BytesMut};

use crate::codec::{begin, count_i16, finish, len_i32, put_cstr};
use crate::tag::backend as tag;

/// OID of the `text` type.
pub const TEXT_OID: i32 = 25;

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

fn fields(
    buf: &mut BytesMut,
    t: u8,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let at = begin(buf, t);
    for (field, value) in [
        (b'S', Some(severity)),
        (b'V', Some(severity)),
        (b'C', Some(code)),
        (b'M', Some(message)),
        (b'D', detail),
        (b'H', hint),
    ] {
        if let Some(value) = value {
            buf.put_u8(field);
            put_cstr(buf, value.as_bytes());
        }
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// ErrorResponse with fields S and V (`severity`, e.g. `"ERROR"`/`"FATAL"`),
/// C (`code`, a SQLSTATE) and M (`message`).
pub fn error_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    fields(
        buf,
        tag::ERROR_RESPONSE,
        severity,
        code,
        message,
        None,
        None,
    );
}

/// ErrorResponse like [`error_response`] plus optional D (detail) and H (hint).
pub fn error_response_detail(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    fields(
        buf,
        tag::ERROR_RESPONSE,
        severity,
        code,
        message,
        detail,
        hint,
    );
}

/// NoticeResponse with fields S, V, C and M (severity e.g. `"WARNING"`).
pub fn notice_response(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    fields(
        buf,
        tag::NOTICE_RESPONSE,
        severity,
        code,
        message,
        None,
        None,
    );
}

/// NoticeResponse with optional detail and hint.
pub fn notice_response_detail(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    fields(
        buf,
        tag::NOTICE_RESPONSE,
        severity,
        code,
        message,
        detail,
        hint,
    );
}

/// ReadyForQuery; `status` is `b'I'` (idle), `b'T'` (in transaction) or
/// `b'E'` (failed transaction).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    buf.put_u8(tag::READY_FOR_QUERY);
    buf.put_i32(5);
    buf.put_u8(status);
}

fn auth_code(buf: &mut BytesMut, code: i32, payload: &[u8]) {
    let at = begin(buf, tag::AUTHENTICATION);
    buf.put_i32(code);
    buf.put_slice(payload);
    finish(buf, at);
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    auth_code(buf, AUTH_OK, &[]);
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    auth_code(buf, AUTH_CLEARTEXT, &[]);
}

/// AuthenticationMD5Password with the given salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    auth_code(buf, AUTH_MD5, &salt);
}

/// AuthenticationSASL listing `mechanisms` (e.g. `["SCRAM-SHA-256"]`).
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, tag::AUTHENTICATION);
    buf.put_i32(AUTH_SASL);
    for m in mechanisms {
        put_cstr(buf, m.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// AuthenticationSASLContinue carrying `data` (the SCRAM server-first message).
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    auth_code(buf, AUTH_SASL_CONTINUE, data);
}

/// AuthenticationSASLFinal carrying `data` (the SCRAM server-final message).
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    auth_code(buf, AUTH_SASL_FINAL, data);
}

/// ParameterStatus `k = v`.
pub fn parameter_status(buf: &mut BytesMut, k: &str, v: &str) {
    let at = begin(buf, tag::PARAMETER_STATUS);
    put_cstr(buf, k.as_bytes());
    put_cstr(buf, v.as_bytes());
    finish(buf, at);
}

/// BackendKeyData (protocol 3.0: 4-byte secret).
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_u8(tag::BACKEND_KEY_DATA);
    buf.put_i32(12);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// CommandComplete with the given command tag (e.g. `"SELECT 1"`).
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    let at = begin(buf, tag::COMMAND_COMPLETE);
    put_cstr(buf, command_tag.as_bytes());
    finish(buf, at);
}

/// RowDescription in which every column is `text` (OID 25) in text format.
/// At most `i16::MAX` columns are written.
pub fn row_description_text(buf: &mut BytesMut, columns: &[&str]) {
    let at = begin(buf, tag::ROW_DESCRIPTION);
    let n = count_i16(columns.len());
    buf.put_i16(n);
    for name in columns.iter().take(n as usize) {
        put_cstr(buf, name.as_bytes());
        buf.put_i32(0); // table OID
        buf.put_i16(0); // column attribute number
        buf.put_i32(TEXT_OID);
        buf.put_i16(-1); // typlen (varlena)
        buf.put_i32(-1); // typmod
        buf.put_i16(0); // text format
    }
    finish(buf, at);
}

/// DataRow of text values; `None` is SQL NULL. At most `i16::MAX` values are
/// written.
pub fn data_row_text(buf: &mut BytesMut, values: &[Option<&str>]) {
    let at = begin(buf, tag::DATA_ROW);
    let n = count_i16(values.len());
    buf.put_i16(n);
    for v in values.iter().take(n as usize) {
        match v {
            Some(v) => {
                buf.put_i32(len_i32(v.len()));
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

/// EmptyQueryResponse.
pub fn empty_query_response(buf: &mut BytesMut) {
    buf.put_u8(tag::EMPTY_QUERY);
    buf.put_i32(4);
}

/// NegotiateProtocolVersion: the newest supported minor version for the
/// requested major, and the `_pq_.` options that were not recognized.
pub fn negotiate_protocol_version(
    buf: &mut BytesMut,
    newest_minor: u16,
    unsupported_options: &[&str],
) {
    let at = begin(buf, tag::NEGOTIATE_PROTOCOL_VERSION);
    buf.put_i32(i32::from(newest_minor));
    buf.put_i32(len_i32(unsupported_options.len()));
    for opt in unsupported_options {
        put_cstr(buf, opt.as_bytes());
    }
    finish(buf, at);
}

/// ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    empty_message(buf, tag::PARSE_COMPLETE);
}

/// BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    empty_message(buf, tag::BIND_COMPLETE);
}

/// CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    empty_message(buf, tag::CLOSE_COMPLETE);
}

/// NoData.
pub fn no_data(buf: &mut BytesMut) {
    empty_message(buf, tag::NO_DATA);
}

fn empty_message(buf: &mut BytesMut, t: u8) {
    buf.put_u8(t);
    buf.put_u32(4);
}
