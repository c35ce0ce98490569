//! Frontend (proxy → upstream server) message encoders.

use bytes::{BufMut, BytesMut};

use crate::codec::{begin, finish, len_i32, put_cstr};
use crate::tag::frontend as tag;

/// Simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, tag::QUERY);
    put_cstr(buf, sql.as_bytes());
    finish(buf, at);
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    buf.put_u8(tag::TERMINATE);
    buf.put_i32(4);
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    buf.put_u8(tag::SYNC);
    buf.put_i32(4);
}

/// Flush.
pub fn flush(buf: &mut BytesMut) {
    buf.put_u8(tag::FLUSH);
    buf.put_i32(4);
}

/// PasswordMessage for cleartext or md5 authentication. `password` is written
/// as a C string (the terminator is added here).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    let at = begin(buf, tag::PASSWORD);
    put_cstr(buf, password);
    finish(buf, at);
}

/// SASLInitialResponse: mechanism name plus the client-first message.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let at = begin(buf, tag::PASSWORD);
    put_cstr(buf, mechanism.as_bytes());
    buf.put_i32(len_i32(data.len()));
    buf.put_slice(data);
    finish(buf, at);
}

/// SASLResponse carrying `data` verbatim (the client-final message).
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, tag::PASSWORD);
    buf.put_slice(data);
    finish(buf, at);
}
