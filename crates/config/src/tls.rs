//! `[tls]`: TLS towards clients (certificate, key, whether plaintext is refused) and towards the
//! Postgres nodes (`[tls.upstream]` defaults, overridden per node by `nodes[].sslmode` and
//! `nodes[].ssl_ca_file`).

use serde::Deserialize;

use crate::ConfigError;

/// `[tls]`: TLS on client connections and on Meridian's own server connections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain shown to clients (leaf first). With `key`,
    /// Meridian answers SSLRequest with `S`; without them it answers `N` (no TLS).
    pub cert: Option<String>,
    /// PEM file with the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
    /// Refuse clients that do not use TLS: a plaintext StartupMessage gets FATAL 28000.
    /// Needs `cert` and `key`. CancelRequests are accepted either way (libpq sends them
    /// unencrypted).
    pub require_client_tls: bool,
    /// Oldest TLS version offered to clients: `"1.2"` (default) or `"1.3"`.
    pub min_protocol_version: TlsVersion,
    /// Defaults for server connections; every node may override them.
    pub upstream: UpstreamTlsConfig,
}

/// `[tls.upstream]`: how Meridian connects to the nodes unless a node says otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`, as libpq's
    /// `sslmode`.
    pub sslmode: SslMode,
    /// PEM file with the CA certificates that `verify-ca`/`verify-full` trust (libpq's
    /// `sslrootcert`).
    pub ca_file: Option<String>,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// libpq's `sslmode`, for Meridian's connections to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, plaintext otherwise; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked.
    Require,
    /// TLS, with a certificate chain that leads to a CA in the CA file.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the node's `host`.
    VerifyFull,
}

impl SslMode {
    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server certificate is checked against a CA.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The TLS setting in force for one node, after applying its overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTlsSetting {
    /// The mode.
    pub sslmode: SslMode,
    /// The CA file, if any.
    pub ca_file: Option<String>,
    /// The key that set `ca_file` (for error messages), e.g. `nodes[1].ssl_ca_file`.
    pub ca_key: String,
}

impl crate::Config {
    /// The TLS setting for node `index`: its own `sslmode`/`ssl_ca_file`, else `[tls.upstream]`.
    pub fn node_tls(&self, index: usize) -> NodeTlsSetting {
        let node = self.nodes.get(index);
        let sslmode = node
            .and_then(|n| n.sslmode)
            .unwrap_or(self.tls.upstream.sslmode);
        let (ca_file, ca_key) = match node.and_then(|n| n.ssl_ca_file.clone()) {
            Some(f) => (Some(f), format!("nodes[{index}].ssl_ca_file")),
            None => (
                self.tls.upstream.ca_file.clone(),
                "tls.upstream.ca_file".to_string(),
            ),
        };
        NodeTlsSetting {
            sslmode,
            ca_file,
            ca_key,
        }
    }
}

impl TlsConfig {
    /// Whether clients are offered TLS.
    pub fn client_tls(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }
}

/// Checks the `[tls]` keys and the per-node overrides: pairs that must go together and files
/// that must be readable. Whether the files hold usable PEM is checked when the TLS
/// configurations are built (at start and by `meridian check-config`).
pub(crate) fn validate(config: &crate::Config) -> Result<(), ConfigError> {
    let tls = &config.tls;
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            readable("tls.cert", cert)?;
            readable("tls.key", key)?;
        }
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "tls.key",
                "missing: tls.cert is set, so tls.key must be too",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "tls.cert",
                "missing: tls.key is set, so tls.cert must be too",
            ))
        }
        (None, None) => {}
    }
    if tls.require_client_tls && !tls.client_tls() {
        return Err(ConfigError::invalid(
            "tls.require_client_tls",
            "needs tls.cert and tls.key",
        ));
    }
    if let Some(ca) = &tls.upstream.ca_file {
        readable("tls.upstream.ca_file", ca)?;
    }
    for (i, node) in config.nodes.iter().enumerate() {
        if let Some(ca) = &node.ssl_ca_file {
            readable(&format!("nodes[{i}].ssl_ca_file"), ca)?;
        }
        let setting = config.node_tls(i);
        if setting.sslmode.verifies() && setting.ca_file.is_none() {
            let key = if node.sslmode.is_some() {
                format!("nodes[{i}].sslmode")
            } else {
                "tls.upstream.sslmode".to_string()
            };
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{} needs a CA file: set nodes[{i}].ssl_ca_file or tls.upstream.ca_file",
                    setting.sslmode.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn readable(key: &str, path: &str) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::{Config, SslMode, TlsVersion};

    const BASE: &str = r#"
[[users]]
name = "app"
password = "app-secret"

[monitor]
user = "postgres"
password = "pw"

[[nodes]]
name = "pg1"
host = "127.0.0.1"

[[nodes]]
name = "pg2"
host = "127.0.0.1"
"#;

    fn err(text: &str) -> String {
        match Config::from_toml(text) {
            Ok(_) => panic!("config should be rejected: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tls_defaults_offer_nothing_to_clients_and_prefer_upstream() {
        let c = Config::from_toml(BASE).expect("valid");
        assert!(!c.tls.client_tls());
        assert!(!c.tls.require_client_tls);
        assert_eq!(c.tls.min_protocol_version, TlsVersion::Tls12);
        assert_eq!(c.node_tls(0).sslmode, SslMode::Prefer);
    }

    #[test]
    fn node_settings_override_the_upstream_defaults() {
        let ca =
            std::env::temp_dir().join(format!("meridian-config-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked here").expect("write");
        let ca = ca.display().to_string();
        let text = BASE.replace(
            "name = \"pg2\"",
            &format!("name = \"pg2\"\nsslmode = \"verify-full\"\nssl_ca_file = \"{ca}\""),
        ) + "\n[tls.upstream]\nsslmode = \"require\"\n";
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(c.node_tls(0).sslmode, SslMode::Require);
        assert_eq!(c.node_tls(0).ca_file, None);
        let n1 = c.node_tls(1);
        assert_eq!(n1.sslmode, SslMode::VerifyFull);
        assert_eq!(n1.ca_file.as_deref(), Some(ca.as_str()));
        assert_eq!(n1.ca_key, "nodes[1].ssl_ca_file");
        let _ = std::fs::remove_file(&ca);
    }

    #[test]
    fn tls_errors_name_the_key() {
        let e = err(&format!("{BASE}\n[tls]\ncert = \"/nonexistent/c.pem\"\n"));
        assert!(e.starts_with("tls.key"), "{e}");
        let e = err(&format!("{BASE}\n[tls]\nkey = \"/nonexistent/k.pem\"\n"));
        assert!(e.starts_with("tls.cert"), "{e}");
        let e = err(&format!(
            "{BASE}\n[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n"
        ));
        assert!(
            e.starts_with("tls.cert: cannot read /nonexistent/c.pem"),
            "{e}"
        );
        let e = err(&format!("{BASE}\n[tls]\nrequire_client_tls = true\n"));
        assert!(e.starts_with("tls.require_client_tls"), "{e}");
        let e = err(&format!("{BASE}\n[tls]\nmin_protocol_version = \"1.1\"\n"));
        assert!(e.contains("min_protocol_version"), "{e}");
        let e = err(&format!(
            "{BASE}\n[tls.upstream]\nsslmode = \"verify-ca\"\n"
        ));
        assert!(
            e.starts_with("tls.upstream.sslmode: verify-ca needs a CA file"),
            "{e}"
        );
        let e = err(&BASE.replace(
            "name = \"pg2\"",
            "name = \"pg2\"\nsslmode = \"verify-full\"",
        ));
        assert!(e.starts_with("nodes[1].sslmode"), "{e}");
        let e = err(&BASE.replace(
            "name = \"pg2\"",
            "name = \"pg2\"\nssl_ca_file = \"/nonexistent/ca.pem\"",
        ));
        assert!(e.starts_with("nodes[1].ssl_ca_file"), "{e}");
        let e = err(&BASE.replace("name = \"pg2\"", "name = \"pg2\"\nsslmode = \"sometimes\""));
        assert!(e.contains("sslmode"), "{e}");
    }
}
