//! The result types: [`StatementKind`], [`Classification`] and friends.

/// A routing hint given by a leading comment (`/* meridian:primary */`,
/// `-- meridian:replica`); see [`crate::detect_hint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `meridian:primary`: run this statement on the primary, whatever it is.
    Primary,
    /// `meridian:replica`: the statement may run on a replica although it
    /// would otherwise be sent to the primary because it could not be parsed
    /// or calls functions of unknown volatility. It never moves a statement
    /// known to write (that could only fail on a replica), transaction control
    /// or session state.
    Replica,
}

/// A transaction isolation level named by `BEGIN`/`START TRANSACTION`/`SET TRANSACTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsolationLevel {
    /// `READ UNCOMMITTED` (behaves as `READ COMMITTED` in PostgreSQL).
    ReadUncommitted,
    /// `READ COMMITTED`.
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`: refused by hot standbys, so it needs the primary.
    Serializable,
}

/// What a `DISCARD` statement throws away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscardScope {
    /// `DISCARD ALL`: the whole session state (like a fresh connection).
    All,
    /// `DISCARD PLANS`: cached query plans.
    Plans,
    /// `DISCARD SEQUENCES`: cached sequence state (`currval`/`lastval`).
    Sequences,
    /// `DISCARD TEMP`/`TEMPORARY`: the session's temporary tables.
    Temp,
}

/// The class of one statement (or, in [`Classification::kind`], of a whole
/// query string: see the crate docs for how several statements combine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: fine on a replica (unless `unknown_functions` resolve to
    /// volatile functions, see [`Classification::needs_function_lookup`]).
    Read,
    /// Writes or otherwise needs the primary (DML, DDL, locking reads,
    /// writing built-in functions, `VACUUM`, `CALL`, ...).
    Write,
    /// `BEGIN` / `START TRANSACTION`.
    TxBegin {
        /// `Some(true)` for `READ ONLY`, `Some(false)` for `READ WRITE`, `None` if not given.
        read_only: Option<bool>,
        /// The isolation level, if given.
        isolation: Option<IsolationLevel>,
    },
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT` (also `... AND CHAIN`).
    TxEnd,
    /// `SAVEPOINT`, `RELEASE [SAVEPOINT]`, `ROLLBACK TO [SAVEPOINT]`.
    TxOther,
    /// Two-phase commit: `PREPARE TRANSACTION`, `COMMIT PREPARED`,
    /// `ROLLBACK PREPARED`. Always the primary.
    TwoPhase,
    /// `SET TRANSACTION ...` for the current transaction.
    SetTransaction {
        /// `Some(true)` for `READ ONLY`, `Some(false)` for `READ WRITE`, `None` if not given.
        read_only: Option<bool>,
        /// The isolation level, if given.
        isolation: Option<IsolationLevel>,
    },
    /// `SET [SESSION | LOCAL] name ...`, `SET ROLE`, `SET SESSION AUTHORIZATION`,
    /// `SET TIME ZONE`, `SET NAMES`, `SET SESSION CHARACTERISTICS ...`, `SET CONSTRAINTS`.
    SessionSet {
        /// The parameter, lowercased: `search_path`, `timezone` (for `SET TIME ZONE`),
        /// `role`, `session_authorization`, `client_encoding` (for `SET NAMES`),
        /// `xmloption`, `session_characteristics`, `constraints`, ...
        name: String,
        /// `true` for `SET LOCAL` (and `SET CONSTRAINTS`): it lasts until the
        /// end of the current transaction only.
        local: bool,
    },
    /// `RESET name` / `RESET ALL` (`name: None`).
    SessionReset {
        /// The parameter, lowercased; `None` for `RESET ALL`.
        name: Option<String>,
    },
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`.
    Discard {
        /// What is discarded.
        scope: DiscardScope,
    },
    /// `SET meridian.x = value`: a Meridian setting, answered by the proxy.
    MeridianSet {
        /// The full setting name, lowercased, e.g. `meridian.consistency`.
        name: String,
        /// The value as text (string literals unquoted, identifiers lowercased
        /// unless quoted, several values joined by `", "`).
        value: String,
    },
    /// `SHOW meridian.x`: answered by the proxy.
    MeridianShow {
        /// The full setting name, lowercased, e.g. `meridian.lsn`.
        name: String,
    },
    /// `RESET meridian.x` or `SET meridian.x TO DEFAULT`: answered by the proxy.
    MeridianReset {
        /// The full setting name, lowercased.
        name: String,
    },
    /// `EXECUTE name (...)`: the class is that of the prepared statement,
    /// which the session has to look up.
    Execute {
        /// The prepared statement's name (lowercased unless quoted).
        name: String,
    },
    /// `PREPARE name [(types)] AS statement`.
    Prepare {
        /// The prepared statement's name (lowercased unless quoted).
        name: String,
        /// The classification of the prepared statement: what `EXECUTE name`
        /// will do.
        inner: Box<Classification>,
    },
    /// `DEALLOCATE [PREPARE] name | ALL` (`name: None` for `ALL`).
    Deallocate {
        /// The prepared statement's name (lowercased unless quoted); `None` for `ALL`.
        name: Option<String>,
    },
    /// `FETCH`, `MOVE`, `CLOSE`: must go wherever the cursor lives.
    CursorOp,
    /// `LISTEN` / `UNLISTEN`: primary, and pins the session.
    Listen,
    /// Nothing but whitespace, comments and semicolons.
    Empty,
    /// Could not be parsed nor recognised: primary.
    Unparsable,
}

impl StatementKind {
    /// True for transaction control: `TxBegin`, `TxEnd`, `TxOther`,
    /// `TwoPhase`, `SetTransaction`.
    pub fn is_transaction_control(&self) -> bool {
        matches!(
            self,
            Self::TxBegin { .. }
                | Self::TxEnd
                | Self::TxOther
                | Self::TwoPhase
                | Self::SetTransaction { .. }
        )
    }

    /// True for session state the proxy must track or replay: `SessionSet`,
    /// `SessionReset`, `Discard`, `Prepare`, `Deallocate`.
    pub fn is_session_state(&self) -> bool {
        matches!(
            self,
            Self::SessionSet { .. }
                | Self::SessionReset { .. }
                | Self::Discard { .. }
                | Self::Prepare { .. }
                | Self::Deallocate { .. }
        )
    }

    /// True for `MeridianSet`/`MeridianShow`/`MeridianReset`: the proxy
    /// answers these itself and never forwards them.
    pub fn is_meridian(&self) -> bool {
        matches!(
            self,
            Self::MeridianSet { .. } | Self::MeridianShow { .. } | Self::MeridianReset { .. }
        )
    }

    /// True if this kind on its own must go to the primary: writes,
    /// `LISTEN`, two-phase commit, read-write or serializable transactions
    /// (hot standbys refuse both), and unparsable SQL (unsure, so primary).
    pub fn requires_primary(&self) -> bool {
        match self {
            Self::Write | Self::Listen | Self::TwoPhase | Self::Unparsable => true,
            Self::TxBegin {
                read_only,
                isolation,
            }
            | Self::SetTransaction {
                read_only,
                isolation,
            } => *read_only == Some(false) || *isolation == Some(IsolationLevel::Serializable),
            _ => false,
        }
    }
}

/// The result of [`crate::classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// The class of the statement (the combined class for several statements).
    pub kind: StatementKind,
    /// After this runs, the session must stay on the primary backend that ran
    /// it (session advisory locks, `LISTEN`, temporary tables, `WITH HOLD`
    /// cursors, `set_config(.., false)`, `LOAD`, session state inside a
    /// multi-statement string ...). Implies [`Self::needs_primary`].
    pub pins_session: bool,
    /// A routing hint from a leading comment.
    pub hint: Option<Hint>,
    /// Functions called by the statement that are neither in the built-in
    /// catalog nor in the [`crate::FunctionOverrides`]: names as written,
    /// schema-qualified if they were, lowercased unless quoted (a quoted part
    /// containing `.` or `"` is re-quoted). Deduplicated, in order of
    /// appearance. The caller resolves them in `pg_proc`: a `VOLATILE` one
    /// sends the statement to the primary.
    pub unknown_functions: Vec<String>,
    /// A short reason for logs and metrics labels: `"select"`, `"insert"`,
    /// `"for update"`, `"writable cte"`, `"nextval"`, `"unparsable"`, ...
    pub reason: &'static str,
    /// How many statements the string holds (empty ones not counted).
    pub statements: usize,
}

impl Classification {
    /// A classification with no pin, hint or unknown functions.
    pub fn new(kind: StatementKind, reason: &'static str) -> Self {
        Self {
            kind,
            pins_session: false,
            hint: None,
            unknown_functions: Vec::new(),
            reason,
            statements: 1,
        }
    }

    /// A read (`StatementKind::Read`).
    pub fn read(reason: &'static str) -> Self {
        Self::new(StatementKind::Read, reason)
    }

    /// A write (`StatementKind::Write`).
    pub fn write(reason: &'static str) -> Self {
        Self::new(StatementKind::Write, reason)
    }

    /// An unparsable statement (`StatementKind::Unparsable`, reason `"unparsable"`).
    pub fn unparsable() -> Self {
        Self::new(StatementKind::Unparsable, "unparsable")
    }

    /// Sets [`Self::pins_session`] (builder style).
    pub fn pinned(mut self) -> Self {
        self.pins_session = true;
        self
    }

    /// True if the statement must not run on a replica:
    ///
    /// * never for `Meridian*` kinds (the proxy answers them, nothing is forwarded);
    /// * always with a `meridian:primary` hint or when it pins the session;
    /// * for `Write`, `Listen`, `TwoPhase`, and `READ WRITE` or `SERIALIZABLE`
    ///   transaction starts/settings (hot standbys refuse these);
    /// * for `Unparsable`, unless a `meridian:replica` hint says otherwise.
    ///
    /// `false` does not mean "any replica": transaction control, cursor
    /// operations and session state still follow the session's transaction
    /// or cursor, and a `Read` with [`Self::unknown_functions`] still needs
    /// [`Self::needs_function_lookup`].
    pub fn needs_primary(&self) -> bool {
        if self.kind.is_meridian() {
            return false;
        }
        if self.hint == Some(Hint::Primary) || self.pins_session {
            return true;
        }
        match self.kind {
            StatementKind::Unparsable => self.hint != Some(Hint::Replica),
            ref k => k.requires_primary(),
        }
    }

    /// True if the route depends on the volatility of
    /// [`Self::unknown_functions`]: the statement would otherwise be fine on a
    /// replica, it calls functions the catalog does not know, and no
    /// `meridian:replica` hint waives the check.
    pub fn needs_function_lookup(&self) -> bool {
        !self.unknown_functions.is_empty()
            && !self.needs_primary()
            && self.hint != Some(Hint::Replica)
    }

    /// A rough size of this value in bytes, for cache accounting.
    pub fn approx_bytes(&self) -> usize {
        let mut n = std::mem::size_of::<Self>();
        n += self
            .unknown_functions
            .iter()
            .map(|f| f.len() + std::mem::size_of::<String>())
            .sum::<usize>();
        n += match &self.kind {
            StatementKind::SessionSet { name, .. }
            | StatementKind::MeridianShow { name }
            | StatementKind::MeridianReset { name }
            | StatementKind::Execute { name } => name.len(),
            StatementKind::SessionReset { name } | StatementKind::Deallocate { name } => {
                name.as_ref().map_or(0, String::len)
            }
            StatementKind::MeridianSet { name, value } => name.len() + value.len(),
            StatementKind::Prepare { name, inner } => name.len() + inner.approx_bytes(),
            _ => 0,
        };
        n
    }
}
