//! A transaction whose server died. Postgres would have closed the connection; Meridian keeps the
//! client's session and plays the aborted transaction's part itself: the next statement gets the
//! reason (08006), later ones `25P02 in_failed_sql_transaction`, and `ROLLBACK`/`COMMIT`
//! (answered `ROLLBACK`) ends it, after which the session runs on whatever node is current.

use bytes::Buf;
use meridian_classify::StatementKind;
use meridian_wire::tag::frontend;
use meridian_wire::{frame, messages, parse};

use super::Session;
use crate::SessionError;

impl Session {
    /// Answers one client frame while the transaction is broken. Returns `false` if the frame
    /// is not complete yet.
    pub(super) fn answer_broken(&mut self, tag: u8, len: usize) -> Result<(), SessionError> {
        match tag {
            frontend::QUERY => {
                let ends = match parse::query_sql(frame::body(&self.crbuf[..len])) {
                    Ok(sql) => matches!(
                        super::frontend::classify_with(&self.state, &mut self.shape, sql).kind,
                        StatementKind::TxEnd
                    ),
                    Err(_) => false,
                };
                self.crbuf.advance(len);
                if ends {
                    self.end_broken_transaction(false);
                } else {
                    self.broken_error();
                    messages::ready_for_query(&mut self.to_client, b'E');
                }
            }
            frontend::PARSE | frontend::BIND => {
                let body = frame::body(&self.crbuf[..len]);
                let ends = if tag == frontend::PARSE {
                    let sql = parse::parse_parse(body)?.sql;
                    matches!(
                        super::frontend::classify_with(&self.state, &mut self.shape, sql).kind,
                        StatementKind::TxEnd
                    )
                } else {
                    let (_, stmt) = parse::bind_names(body)?;
                    let class = if stmt.is_empty() {
                        self.sstate.unnamed.as_ref().map(|p| p.class.clone())
                    } else {
                        self.sstate.prepared.get(stmt).map(|p| p.class.clone())
                    };
                    class.is_some_and(|c| matches!(c.kind, StatementKind::TxEnd))
                };
                self.broken_batch_ends |= ends;
                self.broken_batch.push(tag);
                self.crbuf.advance(len);
            }
            frontend::DESCRIBE | frontend::EXECUTE | frontend::CLOSE | frontend::FLUSH => {
                self.broken_batch.push(tag);
                self.crbuf.advance(len);
            }
            frontend::SYNC => {
                self.crbuf.advance(len);
                let batch = std::mem::take(&mut self.broken_batch);
                if std::mem::take(&mut self.broken_batch_ends) {
                    // Reply as Postgres would to a ROLLBACK sent through the extended protocol.
                    for t in batch {
                        match t {
                            frontend::PARSE => messages::parse_complete(&mut self.to_client),
                            frontend::BIND => messages::bind_complete(&mut self.to_client),
                            frontend::DESCRIBE => messages::no_data(&mut self.to_client),
                            frontend::CLOSE => messages::close_complete(&mut self.to_client),
                            frontend::EXECUTE => {
                                messages::command_complete(&mut self.to_client, "ROLLBACK")
                            }
                            _ => {}
                        }
                    }
                    self.end_broken_transaction(true);
                } else {
                    self.broken_error();
                    messages::ready_for_query(&mut self.to_client, b'E');
                }
            }
            _ => {
                // COPY data and the like: nothing can use them; drop.
                self.crbuf.advance(len);
            }
        }
        Ok(())
    }

    fn broken_error(&mut self) {
        if std::mem::take(&mut self.broken_notice) {
            self.queue_error(
                "ERROR",
                "08006",
                "the server running this transaction was lost (failover or crash); the transaction was rolled back",
            );
        } else {
            self.queue_error(
                "ERROR",
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            );
        }
    }

    fn end_broken_transaction(&mut self, extended: bool) {
        if !extended {
            messages::command_complete(&mut self.to_client, "ROLLBACK");
        }
        self.broken = false;
        self.broken_notice = false;
        self.tx_status = b'I';
        messages::ready_for_query(&mut self.to_client, b'I');
    }
}
