//! Named prepared statements under transaction pooling.
//!
//! A pooled server connection serves many sessions, so a client's statement names cannot be
//! used on it: two clients may both call their statement `s0`, with different text. Each named
//! Parse is renamed to a server name derived from its text and parameter types
//! (`meridian_<128-bit hash>`), so the same statement prepared by any client is one statement
//! on a server connection, and stays there for the next client. Bind and Describe of the
//! client's name are renamed the same way; when the connection that runs them lacks the
//! statement, its Parse is sent first and its ParseComplete dropped.
//!
//! A client's Parse always prepares the statement afresh on the connection it runs on (closing
//! the copy there first), as Postgres would: a copy prepared earlier may hold a plan from before
//! a change of its result type, which Postgres refuses to run (0A000, "cached plan must not
//! change result type"). Each statement carries the time of the client's Parse on a
//! process-wide clock, and a connection whose copy is older than that prepares it afresh before
//! running it for that client. A statement a client prepared before such a change keeps
//! failing with 0A000, as on Postgres, until the client prepares it again.
//!
//! A client's Close goes to the server under the client's own name, which the server does not
//! have: Postgres answers CloseComplete (closing a missing statement is not an error) and the
//! shared statement stays.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use meridian_wire::tag::frontend;
use meridian_wire::{frame, parse};

use super::Session;

/// The server-side name of a statement whose Parse body, after the name, is `rest` (query text
/// and parameter types).
pub(crate) fn server_name(rest: &[u8]) -> String {
    format!("meridian_{:032x}", hash128(1, |h| rest.hash(h)))
}

/// A 128-bit hash of what `feed` writes: two 64-bit hashes, seeded `seed` and `seed + 1`.
pub(super) fn hash128(seed: u8, feed: impl Fn(&mut DefaultHasher)) -> u128 {
    let half = |seed: u8| {
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        feed(&mut h);
        h.finish()
    };
    (u128::from(half(seed)) << 64) | u128::from(half(seed.wrapping_add(1)))
}

/// A client's named statement under transaction pooling.
#[derive(Debug)]
pub(crate) struct Named {
    /// Its server name ([`server_name`]).
    pub server: String,
    /// Its Parse under that name.
    pub parse: Bytes,
    /// When the client prepared it, on the parse clock.
    pub at: u64,
}

/// Ticks of a process-wide clock that orders Parses: a server statement prepared before a
/// client's Parse of the same text may have a plan older than that Parse.
pub(crate) fn parse_clock() -> u64 {
    static CLOCK: AtomicU64 = AtomicU64::new(0);
    CLOCK.fetch_add(1, Ordering::Relaxed) + 1
}

/// One frame with `tag` and a body made of `parts`.
fn build(tag: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(1 + len);
    out.put_u8(tag);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}

/// The body after its first NUL-terminated string: (that string, the rest).
pub(super) fn split_cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = body.iter().position(|&c| c == 0)?;
    Some((&body[..nul], &body[nul + 1..]))
}

impl Session {
    /// Appends one extended-protocol frame for pooled `node`, renaming named statements to their
    /// server names and preparing any the connection lacks.
    pub(super) fn emit_pooled(&mut self, node: usize, frame: &[u8]) {
        let Some(b) = self.backends[node].as_mut() else {
            return;
        };
        // ReadyForQuery the server owes before the one that closes this frame's batch.
        let before = self.owners.len();
        let tag = frame.first().copied().unwrap_or(0);
        let body = frame::body(frame);
        match tag {
            frontend::PARSE => {
                let Some((name, rest)) = split_cstr(body) else {
                    self.to_backend.extend_from_slice(frame);
                    return;
                };
                if name.is_empty() {
                    b.unnamed = self.sstate.unnamed_version;
                    b.parses.push_back((None, before, false));
                    self.to_backend.extend_from_slice(frame);
                    return;
                }
                let server = server_name(rest);
                let renamed = build(frontend::PARSE, &[server.as_bytes(), b"\0", rest]);
                let client = String::from_utf8_lossy(name).into_owned();
                let at = parse_clock();
                b.touch(&server);
                // A client's Parse gets a statement planned now, as on Postgres itself: one
                // this connection prepared earlier may predate a change of its result type.
                b.prepare_fresh(&mut self.to_backend, &server, &renamed, (before, false), at);
                self.sstate.pooled_names.insert(
                    client,
                    Named {
                        server,
                        parse: renamed,
                        at,
                    },
                );
            }
            frontend::BIND | frontend::DESCRIBE => {
                let stmt = if tag == frontend::BIND {
                    parse::bind_names(body).ok().map(|(_, s)| s)
                } else {
                    match parse::describe_target(body) {
                        Ok((b'S', s)) => Some(s),
                        _ => None,
                    }
                };
                match stmt {
                    Some("") => {
                        if b.unnamed != self.sstate.unnamed_version {
                            if let Some(p) = &self.sstate.unnamed {
                                self.to_backend.extend_from_slice(&p.parse);
                                b.parses.push_back((None, before, true));
                                b.unnamed = self.sstate.unnamed_version;
                            }
                        }
                        self.to_backend.extend_from_slice(frame);
                    }
                    Some(client) => {
                        let Some(Named { server, parse, at }) =
                            self.sstate.pooled_names.get(client)
                        else {
                            // Unknown here: the server says so (26000), under the client's name.
                            self.to_backend.extend_from_slice(frame);
                            return;
                        };
                        b.touch(server);
                        // Prepared here before the client's own Parse (by another session, or
                        // before that Parse was answered locally): prepared afresh.
                        let older = b.statements.contains(server)
                            && b.fresh.get(server).is_some_and(|t| t < at);
                        if older || !b.statements.contains(server) {
                            let now = parse_clock();
                            b.prepare_fresh(
                                &mut self.to_backend,
                                server,
                                parse,
                                (before, true),
                                now,
                            );
                        }
                        let renamed = if tag == frontend::BIND {
                            let Some((portal, after)) = split_cstr(body) else {
                                self.to_backend.extend_from_slice(frame);
                                return;
                            };
                            let Some((_, rest)) = split_cstr(after) else {
                                self.to_backend.extend_from_slice(frame);
                                return;
                            };
                            build(tag, &[portal, b"\0", server.as_bytes(), b"\0", rest])
                        } else {
                            build(tag, &[b"S", server.as_bytes(), b"\0"])
                        };
                        self.to_backend.extend_from_slice(&renamed);
                    }
                    None => self.to_backend.extend_from_slice(frame),
                }
            }
            frontend::CLOSE => {
                if let Ok((b'S', name)) = parse::close_target(body) {
                    if !name.is_empty() {
                        self.sstate.pooled_names.remove(name);
                        self.sstate.prepared.remove(name);
                    }
                }
                self.to_backend.extend_from_slice(frame);
            }
            _ => self.to_backend.extend_from_slice(frame),
        }
    }
}

impl Session {
    /// Transaction pooling: `DEALLOCATE name` (alone in its Query) of a protocol-level statement
    /// of this client. Its server name is shared, and the client's own name does not exist on
    /// the server, so Meridian forgets the name and answers itself (as some drivers deallocate
    /// their protocol-level statements with SQL).
    pub(super) fn deallocates_pooled(&self, class: &meridian_classify::Classification) -> bool {
        match &class.kind {
            meridian_classify::StatementKind::Deallocate { name: Some(name) } => {
                class.statements == 1
                    && self.tx_status != b'E'
                    && self.sstate.pooled_names.contains_key(name)
                    && !self.sstate.sql_prepared.contains_key(name)
            }
            _ => false,
        }
    }

    /// Transaction pooling: a batch of named Parses and its Sync, outside a transaction, whose
    /// statements a server of this pool has already accepted, is answered here (ParseComplete
    /// each, then ReadyForQuery) and prepared on a server connection when first executed. A
    /// client that prepares synchronously while its other work holds every pooled connection
    /// (pgbench `-M prepared` with more clients per thread than connections) therefore never
    /// waits for a connection just to prepare. Returns false (nothing done) otherwise.
    pub(super) fn answer_parses(&mut self) -> bool {
        let Some(pool) = &self.pool else {
            return false;
        };
        if self.tx_status != b'I'
            || self.active.is_some()
            || !self.owners.is_empty()
            || self.batch_pins
            || self.batch_change.is_some()
            || !self.batch_sql_exec.is_empty()
        {
            return false;
        }
        let mut parses = Vec::new();
        let mut rest = &self.batch[..];
        while !rest.is_empty() {
            let Ok(Some(h)) = frame::peek_frame(rest, usize::MAX) else {
                return false;
            };
            if h.tag != frontend::PARSE || h.len > rest.len() {
                return false;
            }
            let Some((name, after)) = split_cstr(frame::body(&rest[..h.len])) else {
                return false;
            };
            if name.is_empty() {
                return false;
            }
            parses.push((name, after, server_name(after)));
            rest = &rest[h.len..];
        }
        if parses.is_empty()
            || !self
                .state
                .pools
                .all_known(&pool.key, parses.iter().map(|(_, _, s)| s.as_str()))
        {
            return false;
        }
        for (name, after, server) in parses {
            let renamed = build(frontend::PARSE, &[server.as_bytes(), b"\0", after]);
            let client = String::from_utf8_lossy(name).into_owned();
            let named = Named {
                server,
                parse: renamed,
                at: parse_clock(),
            };
            self.sstate.pooled_names.insert(client, named);
            meridian_wire::messages::parse_complete(&mut self.to_client);
        }
        meridian_wire::messages::ready_for_query(&mut self.to_client, b'I');
        self.batch.clear();
        self.batch_route = super::route::Need::default();
        self.batch_exec = super::frontend::ExecFlags::default();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_and_types_share_a_server_name() {
        let a = server_name(b"SELECT $1\0\0\x01\0\0\0\x17");
        let b = server_name(b"SELECT $1\0\0\x01\0\0\0\x17");
        let other_types = server_name(b"SELECT $1\0\0\x01\0\0\0\x19");
        assert_eq!(a, b);
        assert_ne!(a, other_types);
        assert!(a.len() < 63, "fits NAMEDATALEN");
    }

    #[test]
    fn renamed_parse_is_a_valid_frame() {
        let rest = b"SELECT 1\0\0\0";
        let f = build(frontend::PARSE, &[b"meridian_x", b"\0", rest]);
        let msg = parse::parse_parse(frame::body(&f)).expect("parses");
        assert_eq!(msg.name, "meridian_x");
        assert_eq!(msg.sql, "SELECT 1");
    }
}
