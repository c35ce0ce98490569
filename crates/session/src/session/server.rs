//! One server connection of a session, with what the proxy knows is set up on it: statements,
//! settings applied, replies to its own messages still to drop, and (under transaction
//! pooling) its place in the pool.

use std::collections::HashSet;

use meridian_upstream::BackendConn;

/// Counts a server connection for metrics while it lives.
pub(crate) struct ServerGuard {
    state: std::sync::Arc<crate::ProxyState>,
    node: usize,
}

impl ServerGuard {
    pub fn new(state: std::sync::Arc<crate::ProxyState>, node: usize) -> Self {
        state.stats.server_opened(node);
        ServerGuard { state, node }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.state.stats.server_closed(self.node);
    }
}

impl std::fmt::Debug for ServerGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerGuard({})", self.node)
    }
}

/// One server connection of a session, with what the proxy knows is set up on it.
#[derive(Debug)]
pub(crate) struct Backend {
    pub conn: BackendConn,
    _guard: ServerGuard,
    /// Sequence number of the last session setting applied here.
    pub applied: u64,
    /// Protocol-level named statements prepared here (by the client or replayed).
    pub statements: HashSet<String>,
    /// Version of the unnamed statement prepared here (0: none).
    pub unnamed: u64,
    /// SQL-level `PREPARE`d names present here.
    pub sql_prepared: HashSet<String>,
    /// Statements to Close here before the next use (closed by the client elsewhere).
    pub close_later: Vec<String>,
    /// SQL-level names to `DEALLOCATE` here before the next use.
    pub deallocate_later: Vec<String>,
    /// ParseComplete replies to injected Parses still to drop.
    pub swallow_parse: u32,
    /// Closes Meridian sent here and not yet answered, each with how many ReadyForQuery come
    /// before its own: their CloseComplete is dropped. One still unanswered when its
    /// ReadyForQuery arrives was skipped after an error. (Exact where a counter would not be,
    /// as for `parses`.)
    pub closes: std::collections::VecDeque<usize>,
    /// Transaction pooling: the connection's place in its pool (`None` in session mode).
    pub ticket: Option<crate::pool::Ticket>,
    /// Transaction pooling: SQL that clears what an earlier session left on this connection,
    /// sent before the next session uses it.
    pub reset: Option<String>,
    /// Transaction pooling: every Parse sent and not yet answered, in order, with the named
    /// server statement it creates, how many ReadyForQuery come before its own, and whether
    /// Meridian sent it (its ParseComplete is dropped). One that has no ParseComplete when its
    /// ReadyForQuery arrives failed or was skipped after an error, so the statement does not
    /// exist on the server. (Exact where a counter would not be: a pipelining client's next
    /// batch may already carry a Parse Meridian added when the previous ReadyForQuery arrives.)
    pub parses: std::collections::VecDeque<(Option<String>, usize, bool)>,
    /// Transaction pooling: when each server statement was last used (a counter), so that the
    /// least recently used are closed beyond `MAX_POOLED_STATEMENTS`.
    pub used: std::collections::HashMap<String, u64>,
    /// The counter behind `used`.
    pub clock: u64,
    /// Transaction pooling: when each server statement was prepared here, on the parse clock
    /// (see `pooled::parse_clock`). A session whose own Parse of it came later has it prepared
    /// afresh here first, so that it never runs a plan older than its Parse.
    pub fresh: std::collections::HashMap<String, u64>,
    /// Auto-prepared statements (`proxy.auto_prepare`) on this connection.
    pub auto: super::auto::AutoStatements,
}

/// Transaction pooling: named statements kept prepared per server connection. Beyond this, the
/// least recently used are closed when the connection goes back to its pool.
pub(crate) const MAX_POOLED_STATEMENTS: usize = 1000;

impl Backend {
    /// Whether an idle connection still looks usable: nothing may have arrived on it since its
    /// last ReadyForQuery (a server that ends a session sends an ErrorResponse and closes).
    pub fn idle_and_alive(&mut self) -> bool {
        if !self.conn.rbuf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.conn.rd.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    pub fn new(conn: BackendConn, guard: ServerGuard) -> Self {
        Backend {
            conn,
            _guard: guard,
            applied: 0,
            statements: HashSet::new(),
            unnamed: 0,
            sql_prepared: HashSet::new(),
            close_later: Vec::new(),
            deallocate_later: Vec::new(),
            swallow_parse: 0,
            closes: std::collections::VecDeque::new(),
            ticket: None,
            reset: None,
            parses: std::collections::VecDeque::new(),
            used: std::collections::HashMap::new(),
            clock: 0,
            fresh: std::collections::HashMap::new(),
            auto: Default::default(),
        }
    }

    /// Transaction pooling: notes a use of server statement `name`.
    pub fn touch(&mut self, name: &str) {
        self.clock += 1;
        match self.used.get_mut(name) {
            Some(t) => *t = self.clock,
            None => {
                self.used.insert(name.to_string(), self.clock);
            }
        }
    }

    /// Transaction pooling: forgets what belonged to the session that used this connection,
    /// noting what must be cleared on the server before the next session uses it.
    pub fn detach(&mut self) {
        let mut sql = String::new();
        if self.applied > 0 {
            // Settings the session replayed or made here (SET): back to the connection's
            // defaults (those of its startup parameters).
            sql.push_str("SET SESSION AUTHORIZATION DEFAULT;\nRESET ALL;\n");
        }
        for name in self.sql_prepared.drain() {
            sql.push_str("DEALLOCATE ");
            sql.push_str(&super::state::quote_ident(&name));
            sql.push_str(";\n");
        }
        if !sql.is_empty() {
            self.reset.get_or_insert_with(String::new).push_str(&sql);
        }
        self.applied = 0;
        self.unnamed = 0;
        self.close_later.clear();
        if self.statements.len() > MAX_POOLED_STATEMENTS {
            // Closed before the next session's first statement (CloseComplete dropped).
            let mut by_age: Vec<(u64, String)> = self
                .statements
                .iter()
                .map(|n| (self.used.get(n).copied().unwrap_or(0), n.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = self.statements.len() - MAX_POOLED_STATEMENTS;
            for (_, name) in by_age.into_iter().take(excess) {
                self.statements.remove(&name);
                self.used.remove(&name);
                self.fresh.remove(&name);
                self.close_later.push(name);
            }
        }
        self.deallocate_later.clear();
        self.swallow_parse = 0;
        self.closes.clear();
        self.parses.clear();
    }

    /// Queues a Close of statement `name` (its CloseComplete dropped) behind `before` requests
    /// in flight.
    pub fn close(&mut self, out: &mut bytes::BytesMut, name: &str, before: usize) {
        super::switch::close_statement(out, name);
        self.closes.push_back(before);
    }

    /// Transaction pooling: queues `parse`, the Parse of server statement `server`, closing the
    /// copy this connection has first (if any), and notes it prepared at `at` on the parse
    /// clock. `order`: how many ReadyForQuery come before its own, and whether Meridian sent
    /// it on its own (its ParseComplete is dropped), as in `parses`.
    pub fn prepare_fresh(
        &mut self,
        out: &mut bytes::BytesMut,
        server: &str,
        parse: &[u8],
        order: (usize, bool),
        at: u64,
    ) {
        let (before, ours) = order;
        if self.statements.contains(server) {
            self.close(out, server, before);
        }
        out.extend_from_slice(parse);
        self.statements.insert(server.to_string());
        self.fresh.insert(server.to_string(), at);
        self.parses
            .push_back((Some(server.to_string()), before, ours));
    }

    /// Queues a simple Query of Meridian's own (a probe, a replay, a reset) for this connection.
    /// Postgres drops the unnamed statement on every simple Query, so the client's is sent
    /// again before its next use here.
    pub fn own_query(&mut self, out: &mut bytes::BytesMut, sql: &str) {
        meridian_wire::messages::query(out, sql);
        self.unnamed = 0;
    }

    /// A ReadyForQuery arrived: Parses that belong to it and got no ParseComplete failed (or
    /// were skipped after an error), so their statements do not exist on the server.
    pub fn settle_parses(&mut self) {
        while let Some((name, 0, _)) = self.parses.front() {
            if let Some(name) = name {
                self.statements.remove(name);
            }
            self.parses.pop_front();
        }
        for (_, before, _) in self.parses.iter_mut() {
            *before = before.saturating_sub(1);
        }
    }

    /// A ReadyForQuery arrived: Closes that belong to it and got no CloseComplete were skipped.
    pub fn settle_closes(&mut self) {
        while self.closes.front() == Some(&0) {
            self.closes.pop_front();
        }
        for before in self.closes.iter_mut() {
            *before = before.saturating_sub(1);
        }
    }
}
