//! Client frames: each is classified (through the cache) and routed at a statement boundary. A
//! simple Query is a boundary by itself; extended-protocol frames are held until Sync or Flush and
//! then sent together to one backend, with any prepared statement they use re-prepared there.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use meridian_classify::{Classification, DiscardScope, StatementKind};
use meridian_config::Consistency;
use meridian_wire::tag::frontend;
use meridian_wire::{frame, messages, parse};

use super::auto::Auto;
use super::backend::Owner;
use super::route::Need;
use super::state::{quote_ident, Change, Prepared};
use super::switch::Switched;
use super::{Flow, Session, HIGH_WATER};
use crate::SessionError;

/// Whether a step could complete now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Done,
    /// Must wait for the active backend to finish before switching.
    Stall,
}

impl Session {
    /// Routes every complete client frame that can be routed now.
    pub(super) async fn drain_client(&mut self) -> Result<Flow, SessionError> {
        self.stalled = false;
        loop {
            let Some((tag, len)) = self.peek_client()? else {
                return Ok(Flow::Continue);
            };
            if self.broken {
                if !self.owners.is_empty() || !self.to_backend.is_empty() {
                    self.stalled = true;
                    return Ok(Flow::Continue);
                }
                self.answer_broken(tag, len)?;
                continue;
            }
            if self.discard_until_sync {
                if tag == frontend::SYNC {
                    self.discard_until_sync = false;
                    messages::ready_for_query(&mut self.to_client, self.tx_status);
                }
                self.crbuf.advance(len);
                continue;
            }
            let step = match tag {
                frontend::QUERY => self.on_query(len).await?,
                frontend::FUNCTION_CALL => self.on_function_call(len).await?,
                frontend::PARSE
                | frontend::BIND
                | frontend::DESCRIBE
                | frontend::EXECUTE
                | frontend::CLOSE => self.on_extended(tag, len).await?,
                frontend::SYNC | frontend::FLUSH => self.on_sync(tag, len).await?,
                frontend::COPY_DATA | frontend::COPY_DONE | frontend::COPY_FAIL => {
                    // Copy-in data belongs to whichever backend started the COPY. Outside copy
                    // mode Postgres ignores these too.
                    if self.active.is_some() {
                        self.forward_client(len);
                    } else {
                        self.crbuf.advance(len);
                    }
                    Step::Done
                }
                frontend::TERMINATE => {
                    self.crbuf.advance(len);
                    self.terminating = true;
                    return Ok(Flow::Close);
                }
                other => {
                    return Err(SessionError::Protocol(format!(
                        "invalid frontend message type {other}"
                    )))
                }
            };
            if step == Step::Stall {
                self.stalled = true;
                return Ok(Flow::Continue);
            }
        }
    }

    /// The next complete client frame's tag and length, if one is buffered.
    fn peek_client(&self) -> Result<Option<(u8, usize)>, SessionError> {
        match frame::peek_frame(&self.crbuf, self.max_message)? {
            Some(h) if h.len <= self.crbuf.len() => Ok(Some((h.tag, h.len))),
            _ => Ok(None),
        }
    }

    /// Moves `len` bytes of client frames to the active backend's queue.
    pub(super) fn forward_client(&mut self, len: usize) {
        self.to_backend.extend_from_slice(&self.crbuf[..len]);
        self.crbuf.advance(len);
    }

    fn classify(&mut self, sql: &str) -> Arc<Classification> {
        classify_with(&self.state, &mut self.shape, sql)
    }

    async fn on_query(&mut self, len: usize) -> Result<Step, SessionError> {
        if self.preparing {
            // This Query waits for its statement's preparation (see `auto`).
            return Ok(Step::Stall);
        }
        // Extended-protocol frames buffered before this Query must reach the server first.
        if !self.batch.is_empty() {
            match self.dispatch_batch(None).await? {
                Step::Done => {}
                Step::Stall => return Ok(Step::Stall),
            }
        }
        let class = match parse::query_sql(frame::body(&self.crbuf[..len])) {
            Ok(sql) => classify_with(&self.state, &mut self.shape, sql),
            // Not UTF-8: let the server judge it (it answers 22021).
            Err(_) => Arc::new(Classification::unparsable()),
        };
        if class.kind.is_meridian() {
            if !self.owners.is_empty() || !self.to_backend.is_empty() {
                return Ok(Step::Stall);
            }
            self.crbuf.advance(len);
            self.answer_locally(&class);
            return Ok(Step::Done);
        }
        if self.pool.is_some() && self.deallocates_pooled(&class) {
            if !self.owners.is_empty() || !self.to_backend.is_empty() {
                return Ok(Step::Stall);
            }
            self.crbuf.advance(len);
            if let StatementKind::Deallocate { name: Some(name) } = &class.kind {
                self.sstate.pooled_names.remove(name);
                self.sstate.prepared.remove(name);
            }
            messages::command_complete(&mut self.to_client, "DEALLOCATE");
            messages::ready_for_query(&mut self.to_client, self.tx_status);
            return Ok(Step::Done);
        }
        let mut need = Need::default();
        need.add(self.want(&class));
        let target = match self.batch_target {
            Some(t) => Ok((t, "batch")),
            None => self.resolve(need).await,
        };
        let node = match self.switch_to(target).await {
            Switched::Ready(node) => node,
            Switched::Stall => return Ok(Step::Stall),
            Switched::Failed(e) => {
                self.crbuf.advance(len);
                self.queue_upstream_error(&e);
                messages::ready_for_query(&mut self.to_client, self.tx_status);
                return Ok(Step::Done);
            }
        };
        let auto = self.auto_plan(node, &class, len);
        if let Auto::Prepare = auto {
            return Ok(Step::Stall);
        }
        let change = self.note_session_state(&class, node, len);
        if class.pins_session {
            self.sstate.pinned = true;
        }
        if let Some(b) = self.backends[node].as_mut() {
            // A simple Query discards the unnamed prepared statement.
            b.unnamed = 0;
        }
        self.arm_retry(node, matches!(class.kind, StatementKind::Read), &[len]);
        let mut owner = Owner::query(change);
        if let Auto::Run(key) = auto {
            // Kept in case the server refuses the statement at Bind (see `auto_stale`).
            self.auto_query.clear();
            self.auto_query.extend_from_slice(&self.crbuf[..len]);
            self.emit_auto(key, len);
            if let Owner::Client { rewritten, .. } = &mut owner {
                *rewritten = Some(key);
            }
        } else {
            self.forward_client(len);
        }
        self.owners.push_back(owner);
        let leaves_idle = match &class.kind {
            StatementKind::TxEnd => true,
            StatementKind::TxBegin { .. } | StatementKind::Empty => false,
            k if k.is_session_state() => false,
            _ => self.tx_status == b'I',
        };
        self.maybe_probe(node, leaves_idle, class.reason == "copy from");
        Ok(Step::Done)
    }

    /// Arms the retry of a read sent to replica `node` when it is the only request in flight.
    /// `query_len`: for a simple Query, its frame length (the bytes are copied from `crbuf`);
    /// empty for a batch, whose bytes are already in `retry_buf`.
    fn arm_retry(&mut self, node: usize, read: bool, query_len: &[usize]) {
        let eligible = read
            && self.owners.is_empty()
            && self.tx_status == b'I'
            && self.state.topology.load().primary != Some(node);
        self.retry_armed = eligible;
        if eligible {
            if let Some(&len) = query_len.first() {
                self.retry_buf.clear();
                self.retry_buf.extend_from_slice(&self.crbuf[..len]);
            }
        }
    }

    /// Behind a request that leaves the session idle on the primary, asks for the WAL insert
    /// position: once the request has committed, that position covers everything it wrote (and
    /// everything it read), and becomes the session's token.
    /// `copy_in`: the request may put the server in copy-in mode, where a pipelined query would
    /// be a protocol violation; the probe is then sent once the request has finished.
    fn maybe_probe(&mut self, node: usize, leaves_idle: bool, copy_in: bool) {
        if !leaves_idle
            || self.consistency == Consistency::Eventual
            || self.state.live.load().routing.passthrough
            || self.state.topology.load().primary != Some(node)
        {
            return;
        }
        if let Some(Owner::Client {
            probe, probe_later, ..
        }) = self.owners.back_mut()
        {
            *probe = true;
            if copy_in {
                *probe_later = true;
            } else {
                self.queue_probe(Some(node));
                self.owners.push_back(Owner::Probe);
            }
        }
    }

    /// Queues the write-position probe for `node` (see `Backend::own_query`).
    pub(super) fn queue_probe(&mut self, node: Option<usize>) {
        match node.and_then(|i| self.backends[i].as_mut()) {
            Some(b) => b.own_query(&mut self.to_backend, PROBE_SQL),
            None => messages::query(&mut self.to_backend, PROBE_SQL),
        }
    }

    async fn on_function_call(&mut self, len: usize) -> Result<Step, SessionError> {
        let target = match (self.tx_status, self.active) {
            (b'I', _) | (_, None) => self.primary().await.map(|p| (p, "function call")),
            (_, Some(a)) => Ok((a, "transaction")),
        };
        match self.switch_to(target).await {
            Switched::Ready(_) => {
                self.forward_client(len);
                self.owners.push_back(Owner::query(None));
            }
            Switched::Stall => return Ok(Step::Stall),
            Switched::Failed(e) => {
                self.crbuf.advance(len);
                self.queue_upstream_error(&e);
                messages::ready_for_query(&mut self.to_client, self.tx_status);
            }
        }
        Ok(Step::Done)
    }

    /// Buffers one extended-protocol frame (or sends it on if its batch already went out),
    /// noting what it needs.
    async fn on_extended(&mut self, tag: u8, len: usize) -> Result<Step, SessionError> {
        let buf = std::mem::take(&mut self.crbuf);
        let result = self.note_extended(tag, &buf[..len]);
        if result.is_ok() {
            match self.batch_target {
                Some(node) => self.emit_extended(node, &buf[..len]),
                None => self.batch.extend_from_slice(&buf[..len]),
            }
        }
        self.crbuf = buf;
        self.crbuf.advance(len);
        result?;
        // A client that never sends Sync cannot make the proxy buffer without bound: past the
        // high-water mark the batch goes out as if flushed (the server holds replies until Sync).
        if self.batch.len() > HIGH_WATER && self.batch_target.is_none() {
            return self.dispatch_batch(None).await;
        }
        Ok(Step::Done)
    }

    /// Classifies a Parse (remembering the statement) or a Bind (by its statement).
    fn note_extended(&mut self, tag: u8, frame: &[u8]) -> Result<(), SessionError> {
        let body = frame::body(frame);
        match tag {
            frontend::PARSE => {
                let msg = parse::parse_parse(body)?;
                if msg.name.is_empty() {
                    // Drivers re-send the same unnamed Parse for every execution: keep the stored
                    // copy (and its version) when nothing changed.
                    if let Some(p) = &self.sstate.unnamed {
                        if p.parse[..] == *frame {
                            let class = p.class.clone();
                            self.note_class(&class, msg.sql);
                            return Ok(());
                        }
                    }
                }
                let class = self.classify(msg.sql);
                self.note_class(&class, msg.sql);
                let prepared = Prepared {
                    parse: Bytes::copy_from_slice(frame),
                    class,
                };
                if msg.name.is_empty() {
                    self.sstate.unnamed_version += 1;
                    self.sstate.unnamed = Some(prepared);
                } else {
                    self.sstate.prepared.insert(msg.name.to_string(), prepared);
                }
            }
            frontend::BIND => {
                let (_portal, stmt) = parse::bind_names(body)?;
                let class = if stmt.is_empty() {
                    self.sstate.unnamed.as_ref().map(|p| p.class.clone())
                } else {
                    self.sstate.prepared.get(stmt).map(|p| p.class.clone())
                };
                if let Some(class) = class {
                    if let StatementKind::Execute { name } = &class.kind {
                        self.batch_sql_exec.push(name.clone());
                    }
                    let want = self.want(&class);
                    self.batch_route.add(want);
                    match &class.kind {
                        StatementKind::TxBegin { .. } => self.batch_exec.begin = true,
                        StatementKind::TxEnd => self.batch_exec.end = true,
                        StatementKind::Empty => {}
                        k if k.is_session_state() => {}
                        _ => self.batch_exec.work = true,
                    }
                    self.batch_exec.copy_in |= class.reason == "copy from";
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn note_class(&mut self, class: &Classification, sql: &str) {
        if let StatementKind::Execute { name } = &class.kind {
            self.batch_sql_exec.push(name.clone());
        }
        let want = self.want(class);
        self.batch_route.add(want);
        self.batch_pins |= class.pins_session;
        if let Some(change) = setting_change(class, sql) {
            self.batch_change = Some(change);
        }
    }

    async fn on_sync(&mut self, tag: u8, len: usize) -> Result<Step, SessionError> {
        if tag == frontend::FLUSH && self.batch.is_empty() && self.batch_target.is_none() {
            // A bare Flush: pass it to whoever is active, if anyone.
            if self.active.is_some() {
                self.forward_client(len);
            } else {
                self.crbuf.advance(len);
            }
            return Ok(Step::Done);
        }
        if tag == frontend::SYNC
            && self.pool.is_some()
            && self.batch_target.is_none()
            && self.answer_parses()
        {
            self.crbuf.advance(len);
            return Ok(Step::Done);
        }
        // A whole read batch (up to Sync) bound for a replica can be sent again if the replica
        // goes away before answering: keep its bytes.
        let whole = tag == frontend::SYNC && self.batch_target.is_none();
        if whole {
            self.retry_buf.clear();
            self.retry_buf.extend_from_slice(&self.batch);
            self.retry_buf.extend_from_slice(&self.crbuf[..len]);
        }
        let read_only = self.batch_route.primary.is_none() && !self.batch_route.stay;
        let sync_len = (tag == frontend::SYNC && self.batch_target.is_none()).then_some(len);
        let node = match self.dispatch_batch(sync_len).await? {
            Step::Done => self.batch_target,
            Step::Stall => return Ok(Step::Stall),
        };
        if let (true, Some(n)) = (whole, node) {
            self.arm_retry(n, read_only, &[]);
        }
        let Some(node) = node else {
            // The batch failed; the error is queued.
            self.crbuf.advance(len);
            if tag == frontend::SYNC {
                self.discard_until_sync = false;
                messages::ready_for_query(&mut self.to_client, self.tx_status);
            }
            return Ok(Step::Done);
        };
        self.forward_client(len);
        if tag == frontend::SYNC && std::mem::take(&mut self.copy_sync_absorbed) {
            self.batch_target = None;
            self.batch_route = Need::default();
        } else if tag == frontend::SYNC {
            let change = self.batch_change.take();
            let mut owner = Owner::sync(change);
            if let Owner::Client { unparsed, .. } = &mut owner {
                *unparsed = self.unparsed.take();
            }
            self.owners.push_back(owner);
            self.batch_target = None;
            self.batch_route = Need::default();
            let exec = std::mem::take(&mut self.batch_exec);
            let leaves_idle = exec.end || (exec.work && !exec.begin && self.tx_status == b'I');
            self.maybe_probe(node, leaves_idle, exec.copy_in);
        }
        let _ = node;
        Ok(Step::Done)
    }

    /// Sends the buffered batch to its backend (deciding it if not yet decided) and leaves
    /// `batch_target` set so that the rest of the batch follows. On failure the error is queued,
    /// the batch dropped, `batch_target` left empty and `discard_until_sync` set. `sync_len`:
    /// the batch is whole, closed by the Sync of that length at the head of `crbuf` (it may then
    /// run as an auto-prepared statement, see `auto_extended`).
    async fn dispatch_batch(&mut self, sync_len: Option<usize>) -> Result<Step, SessionError> {
        let target = match self.batch_target {
            Some(t) => Ok((t, "batch")),
            None => self.resolve(self.batch_route).await,
        };
        let node = match self.switch_to(target).await {
            Switched::Ready(node) => node,
            Switched::Stall => return Ok(Step::Stall),
            Switched::Failed(e) => {
                self.batch.clear();
                self.batch_target = None;
                self.batch_route = Need::default();
                self.batch_change = None;
                self.batch_exec = ExecFlags::default();
                self.queue_upstream_error(&e);
                self.discard_until_sync = true;
                return Ok(Step::Done);
            }
        };
        if self.batch_pins {
            self.sstate.pinned = true;
            self.batch_pins = false;
        }
        // SQL-level prepared statements the batch EXECUTEs must exist on this node first.
        for name in std::mem::take(&mut self.batch_sql_exec) {
            let mut injected = Vec::new();
            if let Some(b) = self.backends[node].as_mut() {
                let mut out = BytesMut::new();
                self.sstate
                    .ensure_sql_prepared(&name, b, &mut out, &mut injected);
                self.to_backend.extend_from_slice(&out);
            }
            self.owners.extend(injected);
        }
        let batch = std::mem::take(&mut self.batch);
        self.unparsed = sync_len.and_then(|n| self.auto_extended(node, &batch, n));
        if self.unparsed.is_none() {
            let mut rest = &batch[..];
            while let Ok(Some(h)) = frame::peek_frame(rest, usize::MAX) {
                if h.len > rest.len() {
                    break;
                }
                self.emit_extended(node, &rest[..h.len]);
                rest = &rest[h.len..];
            }
        }
        self.batch = batch;
        self.batch.clear();
        self.batch_target = Some(node);
        Ok(Step::Done)
    }

    /// Appends one extended-protocol frame for `node`, first re-preparing any statement it uses
    /// that `node` lacks.
    fn emit_extended(&mut self, node: usize, frame: &[u8]) {
        if self.pool.is_some() {
            return self.emit_pooled(node, frame);
        }
        let Some(b) = self.backends[node].as_mut() else {
            return;
        };
        let tag = frame.first().copied().unwrap_or(0);
        let body = frame::body(frame);
        let uses = match tag {
            frontend::BIND => parse::bind_names(body).ok().map(|(_, s)| s),
            frontend::DESCRIBE => match parse::describe_target(body) {
                Ok((b'S', s)) => Some(s),
                _ => None,
            },
            _ => None,
        };
        if let Some(stmt) = uses {
            if stmt.is_empty() {
                if b.unnamed != self.sstate.unnamed_version {
                    if let Some(p) = &self.sstate.unnamed {
                        self.to_backend.extend_from_slice(&p.parse);
                        b.swallow_parse += 1;
                        b.unnamed = self.sstate.unnamed_version;
                    }
                }
            } else if !b.statements.contains(stmt) {
                if let Some(p) = self.sstate.prepared.get(stmt) {
                    self.to_backend.extend_from_slice(&p.parse);
                    b.swallow_parse += 1;
                    b.statements.insert(stmt.to_string());
                }
            }
        }
        match tag {
            frontend::PARSE => {
                if let Ok(msg) = parse::parse_parse(body) {
                    if msg.name.is_empty() {
                        b.unnamed = self.sstate.unnamed_version;
                    } else {
                        b.statements.insert(msg.name.to_string());
                    }
                }
            }
            frontend::CLOSE => {
                if let Ok((b'S', name)) = parse::close_target(body) {
                    let name = name.to_string();
                    b.statements.remove(&name);
                    self.sstate.prepared.remove(&name);
                    for (i, other) in self.backends.iter_mut().enumerate() {
                        if let Some(o) = other {
                            if i != node && o.statements.remove(&name) {
                                o.close_later.push(name.clone());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        self.to_backend.extend_from_slice(frame);
    }

    /// Records what a simple Query does to session state; returns the change to keep if it
    /// succeeds.
    fn note_session_state(
        &mut self,
        class: &Classification,
        node: usize,
        len: usize,
    ) -> Option<Change> {
        let text = match &class.kind {
            StatementKind::SessionSet { .. }
            | StatementKind::SessionReset { .. }
            | StatementKind::Prepare { .. } => parse::query_sql(frame::body(&self.crbuf[..len]))
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        match &class.kind {
            StatementKind::SessionSet { .. } | StatementKind::SessionReset { .. } => {
                // Hot standbys refuse SERIALIZABLE: a session that makes it its default stays
                // on the primary.
                if text.to_ascii_lowercase().contains("serializable") {
                    self.sstate.pinned = true;
                }
                setting_change(class, &text)
            }
            StatementKind::Discard {
                scope: DiscardScope::All,
            } => {
                // Everything the session had is gone: other backends are closed rather than
                // scrubbed, and will reconnect clean when needed.
                for (i, slot) in self.backends.iter_mut().enumerate() {
                    if i != node {
                        *slot = None;
                    }
                }
                self.sstate.prepared.clear();
                self.sstate.pooled_names.clear();
                self.sstate.sql_prepared.clear();
                if let Some(b) = self.backends[node].as_mut() {
                    b.statements.clear();
                    b.sql_prepared.clear();
                    b.unnamed = 0;
                    b.auto.clear();
                }
                Some(Change::ResetAll)
            }
            StatementKind::Prepare { name, inner } => {
                self.sstate
                    .sql_prepared
                    .insert(name.clone(), (text, Arc::new((**inner).clone())));
                if let Some(b) = self.backends[node].as_mut() {
                    b.sql_prepared.insert(name.clone());
                }
                None
            }
            StatementKind::Execute { name } => {
                let mut injected = Vec::new();
                if let Some(b) = self.backends[node].as_mut() {
                    let mut out = BytesMut::new();
                    self.sstate
                        .ensure_sql_prepared(name, b, &mut out, &mut injected);
                    self.to_backend.extend_from_slice(&out);
                }
                self.owners.extend(injected);
                None
            }
            StatementKind::Deallocate { name } => {
                let names: Vec<String> = match name {
                    Some(n) => vec![n.clone()],
                    None => self.sstate.sql_prepared.keys().cloned().collect(),
                };
                for n in &names {
                    self.sstate.sql_prepared.remove(n);
                }
                if let (None, Some(b)) = (name, self.backends[node].as_mut()) {
                    // DEALLOCATE ALL drops protocol-level statements too: auto-prepared ones, and
                    // under transaction pooling the shared ones.
                    b.auto.clear();
                    if self.pool.is_some() {
                        b.statements.clear();
                    }
                }
                for (i, slot) in self.backends.iter_mut().enumerate() {
                    if let Some(b) = slot {
                        for n in &names {
                            if b.sql_prepared.remove(n) && i != node {
                                b.deallocate_later.push(n.clone());
                            }
                        }
                    }
                }
                None
            }
            _ => None,
        }
    }
}

/// The classification of `sql` (through the cache, keyed by shape; `shape` is scratch space).
pub(super) fn classify_with(
    state: &crate::ProxyState,
    shape: &mut String,
    sql: &str,
) -> Arc<Classification> {
    if state.live.load().routing.passthrough {
        return state.passthrough.clone();
    }
    state
        .cache
        .get_or_classify_shape(sql, &state.overrides.load(), shape)
}

/// The write-position probe sent behind requests on the primary.
pub(super) const PROBE_SQL: &str = "SELECT pg_current_wal_insert_lsn()";

/// What the statements a batch executes (its Binds) do to the transaction.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ExecFlags {
    /// Starts a transaction.
    pub begin: bool,
    /// Ends one.
    pub end: bool,
    /// Does something other than transaction control or session state.
    pub work: bool,
    /// May enter copy-in mode.
    pub copy_in: bool,
}

/// The settings change a `SET`/`RESET` statement makes, if it is session-level.
fn setting_change(class: &Classification, sql: &str) -> Option<Change> {
    match &class.kind {
        StatementKind::SessionSet { name, local: false } if class.statements == 1 => {
            Some(Change::Set {
                name: name.clone(),
                sql: sql.trim().trim_end_matches(';').to_string(),
            })
        }
        StatementKind::SessionReset { name: Some(name) } => Some(Change::Set {
            name: name.clone(),
            sql: format!("RESET {}", quote_ident(name)),
        }),
        StatementKind::SessionReset { name: None } => Some(Change::ResetAll),
        _ => None,
    }
}
