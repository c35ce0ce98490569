//! PostgreSQL md5 password authentication.

use md5::{Digest, Md5};

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("md5");
    for b in digest.iter() {
        for nibble in [b >> 4, b & 0xf] {
            out.extend(char::from_digit(u32::from(nibble), 16));
        }
    }
    out
}

/// The stored form of an md5 password as in `pg_authid.rolpassword`:
/// `"md5" + hex(md5(password + user))`.
pub fn md5_stored_hash(user: &str, password: impl AsRef<[u8]>) -> String {
    md5_hex(&[password.as_ref(), user.as_bytes()])
}

/// The response a client sends to AuthenticationMD5Password:
/// `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
pub fn md5_password_hash(user: &str, password: impl AsRef<[u8]>, salt: [u8; 4]) -> String {
    let stored = md5_stored_hash(user, password);
    md5_hex(&[stored.as_bytes().get(3..).unwrap_or_default(), &salt])
}

/// The expected client response computed from a stored `md5...` hash (so the
/// plaintext password is not needed). `None` if `stored` is not of the form
/// `md5` followed by 32 hex digits.
pub fn md5_salted_from_stored(stored: &str, salt: [u8; 4]) -> Option<String> {
    let hex = stored.strip_prefix("md5")?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(md5_hex(&[hex.to_ascii_lowercase().as_bytes(), &salt]))
}
