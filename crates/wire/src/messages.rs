//! Encoders for the messages the proxy generates itself.
//!
//! Every function appends one complete frame to a `&mut BytesMut` without
//! any intermediate allocation. Strings are written as C strings; anything
//! from an embedded NUL on is dropped so a frame can never be corrupted.
//! Backend messages (sent to clients) and frontend messages (sent upstream)
//! are re-exported flat from this module.

mod backend;
mod frontend;

pub use backend::*;
pub use frontend::*;

#[cfg(test)]
mod tests;
