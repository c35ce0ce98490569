//! The server side of a session: scanning server frames, whose reply each is, and what happens
//! when a server connection breaks.

use bytes::Buf;
use meridian_wire::tag::backend;
use meridian_wire::{frame, messages, parse};
use tracing::warn;

use meridian_upstream::Lsn;

use super::state::Change;
use super::{Flow, Session};
use crate::Stats;

/// Whether an ErrorResponse frame says the server is going away (admin shutdown, crash
/// shutdown, or not accepting connections).
fn is_shutdown(frame: &[u8]) -> bool {
    parse::ErrorFields::parse(frame::body(frame))
        .is_ok_and(|f| matches!(f.code(), Some("57P01") | Some("57P02") | Some("57P03")))
}

/// The first column of a DataRow as text (for the probe's single value).
fn first_text_column(body: &[u8]) -> Option<&str> {
    let count = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    if count < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    std::str::from_utf8(body.get(6..6 + len)?).ok()
}

/// Whether an ErrorResponse frame ends the connection (FATAL or PANIC).
fn is_fatal(frame: &[u8]) -> bool {
    parse::ErrorFields::parse(frame::body(frame)).is_ok_and(|f| {
        matches!(
            f.severity_nonlocalized().or(f.severity()),
            Some("FATAL") | Some("PANIC")
        )
    })
}

/// What a scanned server frame means for the session.
enum Event {
    Ready(u8),
    /// `stale`: a prepared statement is missing (26000) or no longer fits its plan (0A000).
    Error {
        fatal: bool,
        stale: bool,
    },
    Command(Option<&'static str>),
    CopyIn,
    ProbeRow(Option<Lsn>),
    Other,
}

/// Whose reply a pending ReadyForQuery closes.
#[derive(Debug)]
pub(crate) enum Owner {
    /// The client's own request; `change` is session state to keep if it succeeds.
    Client {
        change: Option<Change>,
        error: bool,
        /// Opened by a Sync (extended protocol) rather than a Query.
        sync: bool,
        /// A write-position probe follows: hold this ReadyForQuery until it answers.
        probe: bool,
        /// The probe is sent only once this request has finished (COPY FROM STDIN).
        probe_later: bool,
        /// When the request went out, for the duration histogram.
        sent: std::time::Instant,
        /// A simple Query sent as Bind/Describe/Execute/Sync of this auto-prepared statement:
        /// BindComplete and NoData are not forwarded.
        rewritten: Option<u128>,
        /// A one-shot extended batch sent without its Parse, binding this auto-prepared
        /// statement: ParseComplete goes to the client just before BindComplete, and an error
        /// before BindComplete runs the batch again as it came (see `auto_retry`).
        unparsed: Option<u128>,
    },
    /// Meridian preparing a statement for auto-preparation (Parse, Sync): its replies are not
    /// forwarded; `ok` once ParseComplete arrived.
    Prepare { key: u128, ok: bool },
    /// `SELECT pg_current_wal_insert_lsn()` sent behind a request on the primary: its answer
    /// becomes the session's token.
    Probe,
    /// A request Meridian made on the client's behalf (replaying settings or statements): its
    /// replies are not forwarded.
    Silent,
}

impl Owner {
    /// The owner of a simple Query's reply.
    pub fn query(change: Option<Change>) -> Self {
        Owner::Client {
            change,
            error: false,
            sync: false,
            probe: false,
            probe_later: false,
            sent: std::time::Instant::now(),
            rewritten: None,
            unparsed: None,
        }
    }

    /// The owner of an extended-protocol batch's reply (closed by its Sync).
    pub fn sync(change: Option<Change>) -> Self {
        Owner::Client {
            change,
            error: false,
            sync: true,
            probe: false,
            probe_later: false,
            sent: std::time::Instant::now(),
            rewritten: None,
            unparsed: None,
        }
    }
}

impl Session {
    /// Scans complete frames from the active backend, tracks protocol state and queues the
    /// client's frames unchanged.
    pub(super) fn scan_backend(&mut self) -> Result<(), String> {
        let Some(node) = self.active else {
            return Ok(());
        };
        loop {
            let Some(b) = self.backends[node].as_mut() else {
                return Ok(());
            };
            // A reply whose request is followed by a probe is held from its first byte (not for
            // COPY FROM STDIN, whose CopyInResponse the client must see to send its data; there
            // only the ReadyForQuery waits).
            if self.hold_mark.is_none()
                && matches!(
                    self.owners.front(),
                    Some(Owner::Client {
                        probe: true,
                        probe_later: false,
                        ..
                    })
                )
            {
                self.hold_mark = Some(self.to_client.len());
            }
            // Forward runs of frames that belong to the client in one copy.
            let mut off = 0;
            let mut stop = None;
            // The stopping frame answers Meridian's own replay of session state.
            let mut replaying = false;
            // The stopping frame says an auto-prepared statement is stale (its SQLSTATE).
            let mut stale_code = None;
            // The stopping frame is an error to answer by running a one-shot batch again
            // (`auto_retry`): the statement's key and whether the statement is stale.
            let mut redo_key = None;
            // The stopping frame of a batch sent without its Parse must come after the client's
            // ParseComplete.
            let mut parse_complete_first = false;
            loop {
                let rest = &b.conn.rbuf[off..];
                let h = match frame::peek_frame(rest, self.max_message) {
                    Ok(Some(h)) if h.len <= rest.len() => h,
                    Ok(_) => break,
                    Err(e) => return Err(format!("invalid message from server: {e}")),
                };
                let silent = matches!(
                    self.owners.front(),
                    Some(Owner::Silent | Owner::Probe | Owner::Prepare { .. })
                );
                // Frames of an auto-prepared statement's reply that a simple Query has not.
                let extra = matches!(h.tag, backend::BIND_COMPLETE | backend::NO_DATA)
                    && matches!(
                        self.owners.front(),
                        Some(Owner::Client {
                            rewritten: Some(_),
                            ..
                        })
                    );
                let held = h.tag == backend::READY_FOR_QUERY
                    && matches!(self.owners.front(), Some(Owner::Client { probe: true, .. }));
                // A server that ends an idle session (shutdown, pg_terminate_backend) says why
                // in an ErrorResponse nobody asked for: the client is not in a transaction
                // and loses nothing, so it is not told; the next statement goes elsewhere.
                let unsolicited = h.tag == backend::ERROR_RESPONSE && self.owners.is_empty();
                // A replica shutting down under a read that has had no answer yet: the read is
                // sent again elsewhere (see `backend_lost`) instead of failing. An immediate
                // shutdown says so in a NoticeResponse (WARNING 57P01) before the connection
                // drops, a smart or fast one in an ErrorResponse.
                let retrying = self.retry_armed
                    && matches!(h.tag, backend::ERROR_RESPONSE | backend::NOTICE_RESPONSE)
                    && is_shutdown(&rest[..h.len]);
                // An auto-prepared statement refused at Bind: run again as it came.
                let stale = if h.tag == backend::ERROR_RESPONSE
                    && super::auto::retryable(&self.owners, self.auto_bound, self.tx_status)
                {
                    super::auto::is_stale(&rest[..h.len])
                } else {
                    None
                };
                // The reply to a one-shot batch sent without its Parse, before its BindComplete:
                // an error there (not one that ends the connection) is not shown, and the batch
                // runs again as it came.
                let unparsed = match self.owners.front() {
                    Some(Owner::Client {
                        unparsed: Some(key),
                        ..
                    }) if !self.auto_bound => Some(*key),
                    _ => None,
                };
                let redo = unparsed.filter(|_| {
                    h.tag == backend::ERROR_RESPONSE
                        && super::auto::alone(&self.owners)
                        && !is_fatal(&rest[..h.len])
                });
                let swallow = silent
                    || extra
                    || held
                    || unsolicited
                    || retrying
                    || stale.is_some()
                    || redo.is_some()
                    || (h.tag == backend::PARSE_COMPLETE && b.swallow_parse > 0)
                    || (h.tag == backend::PARSE_COMPLETE
                        && b.parses.front().is_some_and(|(_, _, ours)| *ours))
                    || (h.tag == backend::CLOSE_COMPLETE && b.closes.front() == Some(&0));
                let interesting = matches!(
                    h.tag,
                    backend::READY_FOR_QUERY
                        | backend::ERROR_RESPONSE
                        | backend::COMMAND_COMPLETE
                        | backend::COPY_IN_RESPONSE
                ) || (h.tag == backend::PARSE_COMPLETE && !b.parses.is_empty())
                    || (h.tag == backend::BIND_COMPLETE && unparsed.is_some());
                if swallow || interesting {
                    stop = Some((h.tag, h.len, swallow));
                    stale_code = stale;
                    redo_key = redo;
                    // Before BindComplete, or before an error that is shown (one that ends
                    // the connection, or behind which other requests are in flight, so that the
                    // batch cannot run again in its place): Postgres would have answered the
                    // Parse first.
                    parse_complete_first = unparsed.is_some()
                        && redo.is_none()
                        && matches!(h.tag, backend::BIND_COMPLETE | backend::ERROR_RESPONSE);
                    if redo.is_some() {
                        stale_code = super::auto::is_stale(&rest[..h.len]);
                    }
                    replaying =
                        silent && !matches!(self.owners.front(), Some(Owner::Prepare { .. }));
                    break;
                }
                off += h.len;
            }
            if off > 0 || stop.is_some_and(|(_, _, swallow)| !swallow) {
                self.retry_armed = false;
            }
            self.to_client.extend_from_slice(&b.conn.rbuf[..off]);
            b.conn.rbuf.advance(off);
            // A large reply is not held back in full (that would buffer without bound and stop
            // reading the server before the probe's answer): past the high-water mark it flows,
            // and only its ReadyForQuery waits for the probe.
            if self
                .hold_mark
                .is_some_and(|m| self.to_client.len() - m > super::HIGH_WATER)
            {
                self.hold_mark = None;
            }
            let Some((tag, len, swallow)) = stop else {
                return Ok(());
            };
            let event = {
                let body = frame::body(&b.conn.rbuf[..len]);
                match tag {
                    backend::READY_FOR_QUERY => {
                        Event::Ready(parse::ready_status(body).unwrap_or(b'I'))
                    }
                    backend::ERROR_RESPONSE => match parse::ErrorFields::parse(body) {
                        Ok(f) => {
                            let severity = f.severity_nonlocalized().or(f.severity());
                            if swallow && replaying {
                                warn!(
                                    code = f.code().unwrap_or_default(),
                                    message = f.message().unwrap_or_default(),
                                    "replaying session state on a server failed"
                                );
                            }
                            Event::Error {
                                fatal: matches!(severity, Some("FATAL") | Some("PANIC")),
                                stale: super::auto::stale_code(f.code()).is_some(),
                            }
                        }
                        Err(_) => Event::Error {
                            fatal: false,
                            stale: false,
                        },
                    },
                    backend::COMMAND_COMPLETE => {
                        Event::Command(match parse::command_complete(body) {
                            Ok("COMMIT") => Some("COMMIT"),
                            Ok("ROLLBACK") => Some("ROLLBACK"),
                            _ => None,
                        })
                    }
                    backend::DATA_ROW if matches!(self.owners.front(), Some(Owner::Probe)) => {
                        Event::ProbeRow(first_text_column(body).and_then(|t| t.parse().ok()))
                    }
                    backend::COPY_IN_RESPONSE => Event::CopyIn,
                    _ => Event::Other,
                }
            };
            if parse_complete_first {
                // The ParseComplete of the Parse Meridian did not send.
                messages::parse_complete(&mut self.to_client);
            }
            if !swallow {
                self.to_client.extend_from_slice(&b.conn.rbuf[..len]);
            }
            b.conn.rbuf.advance(len);
            if tag == backend::BIND_COMPLETE {
                // Past Bind, an error is the statement's own.
                self.auto_bound = true;
            }
            if tag == backend::PARSE_COMPLETE {
                if let Some(Owner::Prepare { ok, .. }) = self.owners.front_mut() {
                    *ok = true;
                }
            }
            if tag == backend::PARSE_COMPLETE && b.swallow_parse > 0 {
                b.swallow_parse -= 1;
            } else if tag == backend::CLOSE_COMPLETE && b.closes.front() == Some(&0) {
                b.closes.pop_front();
            }
            if tag == backend::PARSE_COMPLETE {
                if let Some((Some(name), _, _)) = b.parses.pop_front() {
                    if let Some(pool) = b.ticket.as_ref().and_then(|t| t.pool()) {
                        self.state.pools.note_known(&pool.key, &name);
                    }
                }
            }
            match event {
                Event::Ready(status) => {
                    b.swallow_parse = 0;
                    if !b.parses.is_empty() {
                        b.settle_parses();
                    }
                    if !b.closes.is_empty() {
                        b.settle_closes();
                    }
                    self.ready(status);
                }
                Event::Error { .. } if redo_key.is_some() => {
                    if let Some(key) = redo_key {
                        self.auto_retry(key, stale_code);
                    }
                }
                Event::Error { .. } if stale_code.is_some() => {
                    if let (
                        Some(code),
                        Some(Owner::Client {
                            rewritten: Some(key),
                            ..
                        }),
                    ) = (stale_code, self.owners.front())
                    {
                        let key = *key;
                        self.auto_stale(key, code);
                    }
                }
                Event::Error { fatal, stale } => {
                    self.fatal_seen |= fatal && !swallow;
                    if let Some(Owner::Client {
                        error,
                        rewritten,
                        unparsed,
                        ..
                    }) = self.owners.front_mut()
                    {
                        *error = true;
                        if let (true, Some(key)) = (stale, rewritten.or(*unparsed)) {
                            // An auto-prepared statement the server lost (a client's DISCARD
                            // Meridian did not see) or whose result type changed: prepared
                            // afresh next time.
                            b.auto.forget(key);
                        }
                    }
                }
                Event::Command(tag) => {
                    self.sstate.last_command_commit = tag == Some("COMMIT");
                    self.last_command_rollback = tag == Some("ROLLBACK");
                }
                Event::ProbeRow(lsn) => self.probe_lsn = lsn,
                Event::CopyIn => {
                    // Postgres ignores Sync while in copy-in mode: the Sync that closed this batch
                    // brings no ReadyForQuery; the one the client sends after CopyDone does, and
                    // it belongs to this same request.
                    if let Some(Owner::Client { sync: true, .. }) = self.owners.front() {
                        self.copy_sync_absorbed = true;
                    }
                }
                Event::Other => {}
            }
        }
    }

    /// A ReadyForQuery closes the oldest outstanding request.
    fn ready(&mut self, status: u8) {
        let was = self.tx_status;
        self.auto_bound = false;
        match self.owners.pop_front() {
            Some(Owner::Client {
                change,
                error,
                probe,
                probe_later,
                sent,
                ..
            }) => {
                self.tx_status = status;
                let role = self.role_of(self.active);
                self.state
                    .stats
                    .query_done(role, sent.elapsed().as_secs_f64());
                if probe {
                    self.held_ready = Some(status);
                    self.probe_ok = !error && status == b'I' && !self.last_command_rollback;
                    if probe_later {
                        // Nothing can be pipelined behind a COPY FROM STDIN, so the probe's
                        // answer is the next thing the server sends.
                        self.queue_probe(self.active);
                        self.owners.push_front(Owner::Probe);
                    }
                }
                let before = self.sstate.seq();
                if let (Some(change), false) = (change, error) {
                    self.sstate.succeeded(change, status != b'I');
                }
                if was != b'I' && status == b'I' {
                    self.sstate.transaction_ended();
                }
                // The backend that ran the settings has them already: no replay there.
                let after = self.sstate.seq();
                if let Some(b) = self.active.and_then(|i| self.backends[i].as_mut()) {
                    if b.applied == before {
                        b.applied = after;
                    }
                }
            }
            Some(Owner::Probe) => {
                let lsn = self.probe_lsn.take();
                if let (true, Some(lsn)) = (std::mem::take(&mut self.probe_ok), lsn) {
                    self.state.ha.acknowledge(lsn);
                    if lsn > self.token {
                        self.token = lsn;
                        Stats::inc(&self.state.stats.tokens_recorded);
                        let text = lsn.to_string();
                        messages::parameter_status(&mut self.to_client, "meridian.lsn", &text);
                    }
                }
                if let Some(held) = self.held_ready.take() {
                    messages::ready_for_query(&mut self.to_client, held);
                }
                self.hold_mark = None;
            }
            Some(Owner::Prepare { key, ok }) => self.auto_settled(key, ok),
            Some(Owner::Silent) | None => {}
        }
    }

    /// `primary` or `replica`, for metrics labels.
    pub(super) fn role_of(&self, node: Option<usize>) -> &'static str {
        if node.is_some() && self.state.topology.load().primary == node {
            "primary"
        } else {
            "replica"
        }
    }

    /// The active backend broke. Tells the client in the way that keeps its protocol state
    /// consistent, and decides whether the session can go on.
    pub(super) fn backend_lost(&mut self, detail: &str) -> Flow {
        let Some(node) = self.active else {
            return Flow::Continue;
        };
        self.backends[node] = None;
        self.deactivate();
        self.preparing = false;
        self.auto_bound = false;
        if std::mem::take(&mut self.retry_armed) {
            // A read on a replica that went away before answering: route it again.
            tracing::info!(node, %detail, "replica lost under a read; sending it elsewhere");
            self.state.chooser.suspect(node);
            self.read_replica = None;
            self.owners.clear();
            self.to_backend.clear();
            super::route_again(&mut self.crbuf, &self.retry_buf);
            return Flow::Continue;
        }
        self.to_backend.clear();
        let name = self
            .state
            .config
            .nodes
            .get(node)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        let front_error = matches!(self.owners.front(), Some(Owner::Client { error: true, .. }));
        let mut client_waiting = self
            .owners
            .iter()
            .filter(|o| matches!(o, Owner::Client { .. }))
            .count();
        self.owners.clear();
        // A reply held for its probe: the request completed on the server, but its WAL position
        // is unknown, so Meridian cannot vouch for it surviving a failover. Say so.
        // A reply held for its probe never reached the client: the request completed on the
        // server, but Meridian could not record its position, so it is not acknowledged. The
        // client gets an error instead (its outcome is unknown, as with any connection lost
        // during a commit) and keeps its session.
        let held_success = if self.held_ready.is_some() {
            self.probe_ok
        } else {
            !front_error
        };
        if let (Some(mark), true) = (self.hold_mark, held_success) {
            self.hold_mark = None;
            self.to_client.truncate(mark);
            if self.held_ready.take().is_some() {
                client_waiting += 1;
            }
            self.queue_error(
                "ERROR",
                "08006",
                "server connection lost before the statement's commit position could be confirmed; it may or may not have been committed",
            );
            messages::ready_for_query(&mut self.to_client, b'I');
            client_waiting = client_waiting.saturating_sub(1);
        } else {
            // A failed request (the server said why, e.g. 57P01) is released as it stands.
            self.hold_mark = None;
            if let Some(held) = self.held_ready.take() {
                messages::ready_for_query(&mut self.to_client, held);
            }
        }
        self.probe_ok = false;
        self.probe_lsn = None;
        let flushed = self.batch_target.take().is_some();
        if flushed {
            // A flushed batch was waiting for results: it gets the error, and its Sync the
            // ReadyForQuery.
            client_waiting += 1;
            self.discard_until_sync = true;
        }
        warn!(node = name, %detail, client_waiting, "server connection lost");
        if self.fatal_seen {
            // The server already told the client why (e.g. 57P01 admin_shutdown); mirror Postgres
            // and close the client connection too.
            return Flow::Close;
        }
        if self.tx_status != b'I' {
            // The transaction is gone with its server. The session stays: requests in flight
            // get the reason now, and the client's next statements see an aborted transaction
            // until it rolls back.
            self.broken = true;
            self.broken_notice = client_waiting == 0;
            self.broken_batch.clear();
            self.broken_batch_ends = false;
            self.discard_until_sync = false;
            for i in 0..client_waiting {
                self.queue_error(
                    "ERROR",
                    "08006",
                    &format!(
                        "server connection lost during a transaction ({detail}); the transaction was rolled back"
                    ),
                );
                if i + usize::from(flushed) < client_waiting {
                    messages::ready_for_query(&mut self.to_client, b'E');
                }
            }
            if flushed {
                // The flushed batch's Sync is still to come; it is answered as broken.
                self.broken_batch.push(0);
            }
            self.tx_status = b'E';
            return Flow::Continue;
        }
        // Every request still waiting gets an error of its own, then its ReadyForQuery (a flushed
        // batch gets its ReadyForQuery when its Sync arrives).
        let ready_now = client_waiting - usize::from(flushed);
        for i in 0..client_waiting {
            self.queue_error(
                "ERROR",
                "08006",
                &format!("server connection lost: {detail}"),
            );
            if i < ready_now {
                messages::ready_for_query(&mut self.to_client, b'I');
            }
        }
        Flow::Continue
    }
}
