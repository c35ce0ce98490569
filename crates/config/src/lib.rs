//! Meridian's configuration: a TOML file deserialized with serde (`deny_unknown_fields`), filled with
//! defaults, then validated so that every error names the offending key.
//!
//! Every field here is documented for users in `docs/configuration.md` and
//! `config/meridian.example.toml`; keep the three in step.

mod model;
mod reload;
mod tls;
mod validate;

pub use model::*;
pub use reload::{changes, is_live, Changes, ConfigHandle, LIVE_KEYS};
pub use tls::{NodeTlsSetting, SslMode, TlsConfig, TlsVersion, UpstreamTlsConfig};

use std::path::Path;

/// Why a configuration could not be loaded. The message always names the key (or the file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (unknown key, wrong type).
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `users[0].password_env`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse(msg) => ConfigError::Parse(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()
    }
}
