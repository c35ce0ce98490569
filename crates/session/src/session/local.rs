//! Meridian's own settings, answered by the proxy without a server: `SET meridian.x = ...`,
//! `SHOW meridian.x`, `RESET meridian.x`.

use meridian_classify::{Classification, StatementKind};
use meridian_wire::messages;

use super::Session;

/// Settings a client may read or change.
const SETTINGS: &[&str] = &["meridian.consistency", "meridian.min_lsn", "meridian.lsn"];

impl Session {
    /// Queues the complete reply (through ReadyForQuery) to a Meridian command.
    pub(super) fn answer_locally(&mut self, class: &Classification) {
        match &class.kind {
            StatementKind::MeridianShow { name } => match self.meridian_setting(name) {
                Some(value) => {
                    messages::row_description_text(&mut self.to_client, &[name.as_str()]);
                    messages::data_row_text(&mut self.to_client, &[Some(value.as_str())]);
                    messages::command_complete(&mut self.to_client, "SHOW");
                }
                None => self.unknown_setting(name),
            },
            StatementKind::MeridianSet { name, value } => {
                match self.set_meridian_setting(name, Some(value)) {
                    Ok(()) => messages::command_complete(&mut self.to_client, "SET"),
                    Err((code, message)) => self.queue_error("ERROR", code, &message),
                }
            }
            StatementKind::MeridianReset { name } => match self.set_meridian_setting(name, None) {
                Ok(()) => messages::command_complete(&mut self.to_client, "RESET"),
                Err((code, message)) => self.queue_error("ERROR", code, &message),
            },
            _ => messages::empty_query_response(&mut self.to_client),
        }
        let status = self.tx_status;
        messages::ready_for_query(&mut self.to_client, status);
    }

    fn unknown_setting(&mut self, name: &str) {
        self.queue_error(
            "ERROR",
            "42704",
            &format!("unrecognized configuration parameter \"{name}\""),
        );
    }

    /// The current value of a Meridian setting, if it exists.
    fn meridian_setting(&self, name: &str) -> Option<String> {
        match name {
            "meridian.consistency" => Some(self.consistency.as_str().to_string()),
            "meridian.min_lsn" => Some(self.min_lsn.to_string()),
            "meridian.lsn" => Some(self.token.to_string()),
            _ => None,
        }
    }

    /// Changes (or with `None`, resets) a Meridian setting.
    pub(super) fn set_meridian_setting(
        &mut self,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        match name {
            "meridian.consistency" => {
                self.consistency = match value {
                    None => self.state.live.load().consistency.mode,
                    Some(v) => v.parse().map_err(|_| {
                        (
                            "22023",
                            format!(
                                "invalid value for parameter \"meridian.consistency\": \"{v}\" (expected session, eventual or strong)"
                            ),
                        )
                    })?,
                };
                Ok(())
            }
            "meridian.min_lsn" => {
                self.min_lsn = match value {
                    None => meridian_upstream::Lsn::ZERO,
                    Some(v) => v.parse().map_err(|_| {
                        (
                            "22023",
                            format!(
                                "invalid value for parameter \"meridian.min_lsn\": \"{v}\" (expected an LSN such as 0/3000148)"
                            ),
                        )
                    })?,
                };
                Ok(())
            }
            "meridian.lsn" => Err((
                "55P02",
                "parameter \"meridian.lsn\" is read-only: it reports the session's last write"
                    .into(),
            )),
            other if SETTINGS.contains(&other) => Ok(()),
            other => Err((
                "42704",
                format!("unrecognized configuration parameter \"{other}\""),
            )),
        }
    }
}
