//! Auto-preparation (`proxy.auto_prepare`): a simple-protocol statement seen often enough on a
//! server connection is prepared there, its literals turned into typed parameters
//! (`meridian_classify::parameterize`), and from then on runs as Bind/Describe/Execute/Sync of
//! that statement. Postgres then skips parsing and, once it settles on a generic plan, planning.
//!
//! The client sees exactly the reply of its simple Query: BindComplete and NoData are dropped,
//! RowDescription (text formats, from Describe) and the rest pass unchanged.
//!
//! A statement is prepared in a request of its own (Close, Parse, Sync), only outside a
//! transaction and with nothing else in flight, and the client's Query waits for the answer. A
//! Parse the server refuses therefore costs the client nothing: the Query runs unprepared, as it
//! came, and the statement is not tried again on that connection. No Parse is sent inside a
//! transaction (a refused one would abort it): statements seen there are prepared at the
//! connection's next idle moment. Outside a transaction, a statement the server refuses at Bind
//! (gone, or its result type changed) is forgotten and the Query runs again as it came.
//!
//! The extended protocol's one-shot form (a Parse of the unnamed statement, its Bind, maybe a
//! Describe of the portal, Execute and Sync: what libpq's `PQexecParams`, `pgbench -M extended`
//! and many drivers send for every parameterized query) is prepared the same way, keyed by the
//! Parse's text and parameter types. Outside a transaction, with nothing else in flight, the
//! batch then goes out without its Parse and with its Bind naming the prepared statement; the
//! client's ParseComplete is sent just before the BindComplete. An error before BindComplete
//! (the statement is stale, or a parameter does not fit its type) is not shown: the batch runs
//! again exactly as the client sent it, so the client sees what Postgres would have said.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use bytes::{BufMut, BytesMut};
use meridian_classify::{Classification, Parameterized, StatementKind};
use meridian_wire::tag::frontend;
use meridian_wire::{frame, parse};

use super::backend::Owner;
use super::pooled::{hash128, split_cstr};
use super::Session;
use crate::Stats;

/// What becomes of a simple Query.
pub(super) enum Auto {
    /// Sent as it came.
    Plain,
    /// Its statement is being prepared first: the Query waits.
    Prepare,
    /// Run as the connection's prepared statement with this key.
    Run(u128),
}

/// Shapes counted per connection before the counts are dropped (bounds memory for clients that
/// send ever-new statements).
const MAX_SEEN: usize = 4096;

/// Statements waiting for an idle moment to be prepared, per connection.
const MAX_PENDING: usize = 32;

/// Maps keyed by an auto-prepared statement's key, itself a hash: no hashing again.
pub(crate) type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;
pub(crate) type KeySet = HashSet<u128, BuildHasherDefault<KeyHasher>>;

/// Hashes a `u128` key by taking its low bits.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// What a server connection knows of auto-prepared statements.
#[derive(Debug, Default)]
pub(crate) struct AutoStatements {
    /// Prepared here, with when each was last used (a counter).
    prepared: KeyMap<u64>,
    /// Times each shape not yet prepared was seen here.
    seen: KeyMap<u32>,
    /// The server refused to prepare these (or kept refusing them at Bind).
    failed: KeySet,
    /// Times each was found stale at Bind (see `Session::auto_stale`).
    stale: KeyMap<u8>,
    /// Seen often enough inside transactions: prepared at the next idle moment (key and Parse).
    pending: Vec<(u128, bytes::Bytes)>,
    clock: u64,
}

impl AutoStatements {
    /// Forgets every prepared statement (`DISCARD ALL`, `DEALLOCATE ALL`).
    pub fn clear(&mut self) {
        self.prepared.clear();
        self.pending.clear();
    }

    /// Forgets one that the server no longer has or must not use any more.
    pub fn forget(&mut self, key: u128) {
        self.prepared.remove(&key);
    }

    /// `key` was refused at Bind as stale: forgotten, and after the second time not prepared
    /// again on this connection.
    fn stale(&mut self, key: u128) {
        self.prepared.remove(&key);
        if self.stale.len() >= MAX_SEEN {
            self.stale.clear();
        }
        let n = self.stale.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        if *n >= 2 {
            if self.failed.len() >= MAX_SEEN {
                self.failed.clear();
            }
            self.failed.insert(key);
        }
    }

    /// Notes the outcome of preparing `key`.
    pub fn settle(&mut self, key: u128, ok: bool) {
        if ok {
            self.clock += 1;
            self.prepared.insert(key, self.clock);
        } else {
            if self.failed.len() >= MAX_SEEN {
                self.failed.clear();
            }
            self.failed.insert(key);
        }
    }
}

/// The statement key of a parameterized text: a 128-bit hash of the text and parameter types.
fn key_of(p: &Parameterized) -> u128 {
    hash128(3, |h| {
        p.text.hash(h);
        for param in &p.params {
            param.oid.hash(h);
        }
    })
}

/// The statement name of `key`: `meridian_auto_` and 32 hex digits (fits NAMEDATALEN).
struct AutoName([u8; 46]);

impl AutoName {
    fn of(key: u128) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut name = *b"meridian_auto_00000000000000000000000000000000";
        for (i, digit) in name[14..].iter_mut().enumerate() {
            *digit = HEX[((key >> ((31 - i) * 4)) & 0xf) as usize];
        }
        AutoName(name)
    }

    fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or("meridian_auto")
    }
}

/// Appends the statement name of `key`, NUL-terminated.
fn put_name(out: &mut BytesMut, key: u128) {
    out.put_slice(&AutoName::of(key).0);
    out.put_u8(0);
}

/// Writes the frame length of the frame that starts at `start` (its tag) into its header.
fn patch_len(out: &mut BytesMut, start: usize) {
    let len = u32::try_from(out.len() - start - 1).unwrap_or(u32::MAX);
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

const SYNC: [u8; 5] = [frontend::SYNC, 0, 0, 0, 4];

/// Whether the request at the head of `owners` runs an auto-prepared statement whose Bind the
/// server has not accepted yet (`bound`), outside a transaction (every earlier request has
/// answered, so `tx_status` is the one it ran in), with nothing sent behind it but its own
/// write-position probe. Its Query, as it came, is then the last one kept in
/// `Session::auto_query`, and it can run again (see `Session::auto_stale`).
pub(super) fn retryable(owners: &VecDeque<Owner>, bound: bool, tx_status: u8) -> bool {
    let mut owners = owners.iter();
    matches!(
        owners.next(),
        Some(Owner::Client {
            rewritten: Some(_),
            ..
        })
    ) && !bound
        && tx_status == b'I'
        && matches!(owners.next(), None | Some(Owner::Probe))
        && owners.next().is_none()
}

/// Whether the request at the head of `owners` is alone in flight (but for its write-position
/// probe): it can then run again in its own place.
pub(super) fn alone(owners: &VecDeque<Owner>) -> bool {
    let mut behind = owners.iter().skip(1);
    matches!(behind.next(), None | Some(Owner::Probe)) && behind.next().is_none()
}

/// The Parse of statement `key` for a parameterized text.
fn parse_frame(p: &Parameterized, key: u128) -> bytes::Bytes {
    let mut out = BytesMut::with_capacity(64 + p.text.len() + 4 * p.params.len());
    out.put_u8(frontend::PARSE);
    out.put_u32(0);
    put_name(&mut out, key);
    out.put_slice(p.text.as_bytes());
    out.put_u8(0);
    out.put_i16(i16::try_from(p.params.len()).unwrap_or(i16::MAX));
    for param in &p.params {
        out.put_u32(param.oid);
    }
    patch_len(&mut out, 0);
    out.freeze()
}

/// Appends a Close of statement `key`.
fn put_close(out: &mut BytesMut, key: u128) {
    super::switch::close_statement(out, AutoName::of(key).as_str());
}

/// Whether an ErrorResponse's SQLSTATE says a prepared statement cannot be used: it does not
/// exist (26000) or its result type changed since it was prepared (0A000, "cached plan must
/// not change result type").
pub(super) fn stale_code(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "26000" => Some("26000"),
        "0A000" => Some("0A000"),
        _ => None,
    }
}

/// [`stale_code`] of an ErrorResponse frame.
pub(super) fn is_stale(frame: &[u8]) -> Option<&'static str> {
    stale_code(parse::ErrorFields::parse(frame::body(frame)).ok()?.code())
}

/// The parts of a one-shot extended-protocol batch: Parse of the unnamed statement, Bind of it,
/// an optional Describe of a portal, Execute.
struct OneShot<'a> {
    /// The Parse body after the (empty) statement name: query text and parameter types.
    parse_rest: &'a [u8],
    /// The Bind's portal name and what follows the statement name.
    portal: &'a [u8],
    bind_rest: &'a [u8],
    /// The frames after the Bind (Describe, Execute), unchanged.
    tail: &'a [u8],
}

impl<'a> OneShot<'a> {
    fn of(batch: &'a [u8]) -> Option<Self> {
        let mut frames: [&[u8]; 4] = [&[]; 4];
        let mut tags = [0u8; 4];
        let mut n = 0;
        let mut rest = batch;
        while !rest.is_empty() {
            let h = frame::peek_frame(rest, usize::MAX).ok().flatten()?;
            if h.len > rest.len() || n == 4 {
                return None;
            }
            frames[n] = &rest[..h.len];
            tags[n] = h.tag;
            n += 1;
            rest = &rest[h.len..];
        }
        let shape_ok = matches!(
            tags[..n],
            [frontend::PARSE, frontend::BIND, frontend::EXECUTE]
                | [
                    frontend::PARSE,
                    frontend::BIND,
                    frontend::DESCRIBE,
                    frontend::EXECUTE
                ]
        );
        if !shape_ok {
            return None;
        }
        let (name, parse_rest) = split_cstr(frame::body(frames[0]))?;
        let (portal, after) = split_cstr(frame::body(frames[1]))?;
        let (stmt, bind_rest) = split_cstr(after)?;
        if !name.is_empty() || !stmt.is_empty() {
            return None;
        }
        Some(OneShot {
            parse_rest,
            portal,
            bind_rest,
            tail: &batch[frames[0].len() + frames[1].len()..],
        })
    }
}

/// The statement key of an unnamed Parse whose body after the name is `rest`.
fn key_of_parse(rest: &[u8]) -> u128 {
    hash128(5, |h| rest.hash(h))
}

impl Session {
    /// Decides how the simple Query of `len` bytes at the head of `crbuf`, bound for `node`,
    /// runs; queues the preparation of its statement when that is due. Statements seen inside
    /// transactions are prepared at the next moment the connection is idle, ahead of whatever
    /// the client sends then.
    pub(super) fn auto_plan(&mut self, node: usize, class: &Classification, len: usize) -> Auto {
        let cfg = self.state.live.load();
        let p = &cfg.proxy;
        if !p.auto_prepare {
            return Auto::Plain;
        }
        let idle = self.tx_status == b'I' && self.batch_target.is_none();
        if idle && self.owners.is_empty() {
            self.flush_pending(node, p.auto_prepare_max_statements);
        }
        if class.statements != 1
            || class.pins_session
            || !matches!(class.kind, StatementKind::Read | StatementKind::Write)
            || self.batch_target.is_some()
            || self.tx_status == b'E'
        {
            return Auto::Plain;
        }
        let Ok(sql) = parse::query_sql(frame::body(&self.crbuf[..len])) else {
            return Auto::Plain;
        };
        if !meridian_classify::parameterize(sql, &mut self.params) {
            return Auto::Plain;
        }
        let key = key_of(&self.params);
        let Some(b) = self.backends[node].as_mut() else {
            return Auto::Plain;
        };
        let auto = &mut b.auto;
        if let Some(used) = auto.prepared.get_mut(&key) {
            auto.clock += 1;
            *used = auto.clock;
            return Auto::Run(key);
        }
        if auto.failed.contains(&key) {
            return Auto::Plain;
        }
        let seen = auto.seen.entry(key).or_insert(0);
        *seen += 1;
        if *seen < p.auto_prepare_min_uses {
            if auto.seen.len() > MAX_SEEN {
                auto.seen.clear();
            }
            return Auto::Plain;
        }
        auto.seen.remove(&key);
        let parse = parse_frame(&self.params, key);
        // A Parse the server refuses must not abort the client's transaction or fail a request
        // pipelined ahead of it: inside a transaction, or behind other requests, the statement
        // waits for the next idle moment.
        if !idle || !self.owners.is_empty() {
            if auto.pending.len() < MAX_PENDING && !auto.pending.iter().any(|(k, _)| *k == key) {
                auto.pending.push((key, parse));
            }
            return Auto::Plain;
        }
        auto.pending.push((key, parse));
        self.flush_pending(node, p.auto_prepare_max_statements);
        self.preparing = true;
        Auto::Prepare
    }

    /// Sends the preparation of every statement waiting for an idle moment on `node` (which has
    /// nothing in flight and is outside a transaction), each as Close, Parse and Sync of its own
    /// so that one refused does not affect the others. Closes the least recently used
    /// statements beyond `max`.
    fn flush_pending(&mut self, node: usize, max: usize) {
        let Some(b) = self.backends[node].as_mut() else {
            return;
        };
        if b.auto.pending.is_empty() {
            return;
        }
        let mut out = BytesMut::new();
        let mut sent = 0;
        for (key, parse) in std::mem::take(&mut b.auto.pending) {
            let auto = &mut b.auto;
            if auto.prepared.contains_key(&key) || auto.failed.contains(&key) {
                continue;
            }
            while auto.prepared.len() + sent >= max {
                let Some(old) = auto
                    .prepared
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                auto.prepared.remove(&old);
                put_close(&mut out, old);
            }
            // A statement of that name left on the server (one found stale inside a transaction
            // is forgotten, not closed) would make the Parse fail: closing a statement that does
            // not exist is no error.
            put_close(&mut out, key);
            out.extend_from_slice(&parse);
            out.put_slice(&SYNC);
            sent += 1;
            if self.pool.is_some() {
                // Transaction pooling tracks every Parse on the connection.
                b.parses.push_back((None, self.owners.len(), true));
            }
            self.owners.push_back(Owner::Prepare { key, ok: false });
        }
        self.to_backend.extend_from_slice(&out);
    }

    /// A whole extended-protocol `batch` (its Sync, of `sync_len` bytes, at the head of `crbuf`)
    /// bound for `node`: when it is a one-shot query whose statement is auto-prepared there,
    /// queues it without its Parse and with its Bind naming that statement, keeps the batch in
    /// `auto_batch` (see `auto_retry`) and returns the statement's key. Otherwise counts the
    /// statement, queues its preparation when due (ahead of the batch, which goes out as it
    /// came) and returns `None`.
    pub(super) fn auto_extended(
        &mut self,
        node: usize,
        batch: &[u8],
        sync_len: usize,
    ) -> Option<u128> {
        let cfg = self.state.live.load();
        let p = &cfg.proxy;
        if !p.auto_prepare || std::mem::take(&mut self.auto_bypass) {
            return None;
        }
        if self.tx_status != b'I' || !self.owners.is_empty() || self.batch_exec.copy_in {
            return None;
        }
        let eligible = self.sstate.unnamed.as_ref().is_some_and(|u| {
            u.class.statements == 1
                && !u.class.pins_session
                && matches!(u.class.kind, StatementKind::Read | StatementKind::Write)
        });
        if !eligible {
            return None;
        }
        let shot = OneShot::of(batch)?;
        let key = key_of_parse(shot.parse_rest);
        self.flush_pending(node, p.auto_prepare_max_statements);
        let b = self.backends[node].as_mut()?;
        let auto = &mut b.auto;
        if let Some(used) = auto.prepared.get_mut(&key) {
            auto.clock += 1;
            *used = auto.clock;
            // The server's unnamed statement is not this one.
            b.unnamed = 0;
            let out = &mut self.to_backend;
            let start = out.len();
            out.put_u8(frontend::BIND);
            out.put_u32(0);
            out.put_slice(shot.portal);
            out.put_u8(0);
            put_name(out, key);
            out.put_slice(shot.bind_rest);
            patch_len(out, start);
            out.put_slice(shot.tail);
            self.auto_batch.clear();
            self.auto_batch.extend_from_slice(batch);
            self.auto_batch.extend_from_slice(&self.crbuf[..sync_len]);
            Stats::inc(&self.state.stats.auto_executed);
            return Some(key);
        }
        if auto.failed.contains(&key) {
            return None;
        }
        let seen = auto.seen.entry(key).or_insert(0);
        *seen += 1;
        if *seen < p.auto_prepare_min_uses {
            if auto.seen.len() > MAX_SEEN {
                auto.seen.clear();
            }
            return None;
        }
        auto.seen.remove(&key);
        let mut parse = BytesMut::with_capacity(64 + shot.parse_rest.len());
        parse.put_u8(frontend::PARSE);
        parse.put_u32(0);
        put_name(&mut parse, key);
        parse.put_slice(shot.parse_rest);
        patch_len(&mut parse, 0);
        auto.pending.push((key, parse.freeze()));
        self.flush_pending(node, p.auto_prepare_max_statements);
        None
    }

    /// An error arrived before BindComplete for a one-shot batch sent without its Parse
    /// (`auto_extended`): the reply so far is dropped and the batch runs again exactly as the
    /// client sent it. `stale` (the SQLSTATE, see [`is_stale`]) when the statement itself can no
    /// longer be used: it is forgotten, as in [`Session::auto_stale`].
    pub(super) fn auto_retry(&mut self, key: u128, stale: Option<&str>) {
        self.auto_bypass = true;
        self.retry_armed = false;
        if let Some(owner) = self.owners.front_mut() {
            *owner = Owner::Silent;
        }
        if let Some(code) = stale {
            self.forget_stale(key, code);
        }
        super::route_again(&mut self.crbuf, &self.auto_batch);
    }

    /// Queues the simple Query of `len` bytes at the head of `crbuf` as Bind/Describe/Execute/
    /// Sync of prepared statement `key`, with the literal values `auto_plan` found, and consumes
    /// it.
    pub(super) fn emit_auto(&mut self, key: u128, len: usize) {
        let out = &mut self.to_backend;
        // The Query's text (its UTF-8 was checked by `auto_plan`).
        let sql = frame::body(&self.crbuf[..len]);
        let start = out.len();
        out.put_u8(frontend::BIND);
        out.put_u32(0);
        out.put_u8(0); // the unnamed portal
        put_name(out, key);
        out.put_i16(0); // every parameter in text format
        out.put_i16(i16::try_from(self.params.params.len()).unwrap_or(i16::MAX));
        for i in 0..self.params.params.len() {
            let v = self.params.value_bytes(sql, i);
            out.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
            out.put_slice(&v);
        }
        out.put_i16(0); // every result column in text format, as a simple Query returns them
        patch_len(out, start);
        out.put_slice(&[frontend::DESCRIBE, 0, 0, 0, 6, b'P', 0]);
        out.put_slice(&[frontend::EXECUTE, 0, 0, 0, 9, 0, 0, 0, 0, 0]);
        out.put_slice(&SYNC);
        bytes::Buf::advance(&mut self.crbuf, len);
        Stats::inc(&self.state.stats.auto_executed);
    }

    /// The server refused auto-prepared statement `key` at Bind (`code`, see [`is_stale`]) for
    /// the request at the head of `owners` ([`retryable`]): nothing ran. The
    /// request's reply is dropped (its owner becomes silent, so a probe behind it records
    /// nothing and releases nothing), the statement is forgotten (and closed, if it still
    /// exists), and the client's Query is routed again as it came. The client sees only the
    /// reply to that.
    pub(super) fn auto_stale(&mut self, key: u128, code: &str) {
        self.retry_armed = false;
        if let Some(owner) = self.owners.front_mut() {
            *owner = Owner::Silent;
        }
        self.forget_stale(key, code);
        super::route_again(&mut self.crbuf, &self.auto_query);
        tracing::debug!(
            code,
            "auto-prepared statement refused at Bind; the Query runs again"
        );
    }

    /// Auto-prepared statement `key` was refused at Bind as stale (`code`): it is forgotten on
    /// the active backend, and closed there if it still exists.
    fn forget_stale(&mut self, key: u128, code: &str) {
        if let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) {
            b.auto.stale(key);
            if code == "0A000" {
                let mut out = BytesMut::new();
                put_close(&mut out, key);
                out.put_slice(&SYNC);
                self.to_backend.extend_from_slice(&out);
                self.owners.push_back(Owner::Silent);
            }
        }
    }

    /// The preparation of `key` on the active backend was answered.
    pub(super) fn auto_settled(&mut self, key: u128, ok: bool) {
        self.preparing = false;
        if let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) {
            b.auto.settle(key, ok);
        }
        let stats = &self.state.stats;
        Stats::inc(if ok {
            &stats.auto_prepared
        } else {
            &stats.auto_prepare_failed
        });
        if !ok {
            tracing::debug!("the server refused to prepare a statement; it runs unprepared");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_namedatalen_and_frames_parse() {
        let mut out = BytesMut::new();
        let key = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        put_close(&mut out, key);
        let (kind, name) = parse::close_target(frame::body(&out)).expect("valid Close");
        assert_eq!(kind, b'S');
        assert_eq!(name, format!("meridian_auto_{key:032x}"));
        assert!(name.len() < 64, "fits NAMEDATALEN");
        let h = frame::peek_frame(&out, 1 << 20)
            .expect("ok")
            .expect("frame");
        assert_eq!(h.len, out.len());
    }

    #[test]
    fn keys_differ_by_text_and_types() {
        let mut a = Parameterized::default();
        assert!(meridian_classify::parameterize("select 1", &mut a));
        let mut b = Parameterized::default();
        assert!(meridian_classify::parameterize("select 1", &mut b));
        assert_eq!(key_of(&a), key_of(&b));
        assert!(meridian_classify::parameterize("select 5000000000", &mut b));
        assert_ne!(key_of(&a), key_of(&b), "int4 and int8 parameters");
        assert!(meridian_classify::parameterize("select 'x'", &mut b));
        assert_ne!(key_of(&a), key_of(&b));
    }
}
