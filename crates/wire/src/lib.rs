//! PostgreSQL v3 wire protocol support for the Meridian proxy.
//!
//! This crate is on the proxy's hot path. Everything here is designed so that
//! frames can be forwarded without re-encoding:
//!
//! * [`frame`] finds message boundaries in a `BytesMut` read buffer and splits
//!   whole frames off as `Bytes` (no per-message heap allocation).
//! * [`startup`] decodes the untagged startup-phase packets (StartupMessage,
//!   SSLRequest, GSSENCRequest, CancelRequest) and encodes them for the
//!   upstream side.
//! * [`messages`] appends the backend (and the few frontend) messages the proxy
//!   generates itself directly into a `BytesMut`.
//! * [`parse`] decodes, by borrowing, the frames the proxy needs to inspect.
//! * [`auth`] implements SCRAM-SHA-256 (server and client side) and md5
//!   password hashing.
//!
//! No function in this crate panics on untrusted input; every failure is a
//! [`WireError`], which maps to a SQLSTATE through [`WireError::sqlstate`].

#![warn(missing_docs)]
// The no-panic contract, enforced for library code (tests may unwrap).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

mod codec;
mod error;

pub mod auth;
pub mod frame;
pub mod messages;
pub mod parse;
pub mod startup;

/// Fuzz-target bodies shared by `fuzz/` and the corpus replay tests; not API.
#[doc(hidden)]
pub mod fuzzing;

pub use error::WireError;
pub use frame::{body, peek_frame, split_frame, tag, FrameHeader};
pub use startup::{decode_startup, StartupPacket};

/// Default upper bound for a single protocol message (value of the length
/// field), mirroring PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` (1 GiB - 1).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 0x3fff_ffff;

/// Default upper bound for a startup packet, mirroring PostgreSQL's
/// `MAX_STARTUP_PACKET_LENGTH` (10000 bytes).
pub const DEFAULT_MAX_STARTUP_BYTES: usize = 10_000;

/// Convenience alias for results carrying a [`WireError`].
pub type Result<T, E = WireError> = core::result::Result<T, E>;

#[cfg(test)]
mod fuzz_tests;
