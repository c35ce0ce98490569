//! Message type bytes. Frontend and backend letters collide (e.g. `b'S'` is
//! Sync from a client but ParameterStatus from a server), so they live in
//! separate modules.

/// Tags of messages sent by the client (frontend).
pub mod frontend {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Extended protocol: Parse.
    pub const PARSE: u8 = b'P';
    /// Extended protocol: Bind.
    pub const BIND: u8 = b'B';
    /// Extended protocol: Describe.
    pub const DESCRIBE: u8 = b'D';
    /// Extended protocol: Execute.
    pub const EXECUTE: u8 = b'E';
    /// Extended protocol: Sync.
    pub const SYNC: u8 = b'S';
    /// Extended protocol: Flush.
    pub const FLUSH: u8 = b'H';
    /// Extended protocol: Close.
    pub const CLOSE: u8 = b'C';
    /// COPY data.
    pub const COPY_DATA: u8 = b'd';
    /// COPY done.
    pub const COPY_DONE: u8 = b'c';
    /// COPY failure.
    pub const COPY_FAIL: u8 = b'f';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
    /// Function call (legacy fast-path).
    pub const FUNCTION_CALL: u8 = b'F';
    /// PasswordMessage, SASLInitialResponse, SASLResponse, GSSResponse.
    pub const PASSWORD: u8 = b'p';
}

/// Tags of messages sent by the server (backend).
pub mod backend {
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// Authentication* family.
    pub const AUTHENTICATION: u8 = b'R';
    /// CopyInResponse.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// CommandComplete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// NoData.
    pub const NO_DATA: u8 = b'n';
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY: u8 = b'I';
    /// NotificationResponse.
    pub const NOTIFICATION: u8 = b'A';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// CopyData (same letter in both directions).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (same letter in both directions).
    pub const COPY_DONE: u8 = b'c';
}
