//! The reload hook: the binary installs a `Reloader` in the shared state so that the admin API
//! (`POST /api/v1/reload`) and SIGHUP reach the same code.

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changed keys now in force.
    pub changed: Vec<String>,
    /// Changed keys that keep their running value until Meridian is restarted.
    pub restart_required: Vec<String>,
}

/// Why a reload was refused; the running configuration stays in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRefused {
    /// One message per problem, each naming the key at fault (or the file).
    pub errors: Vec<String>,
}

impl std::fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.errors.join("; "))
    }
}

/// Re-reads the configuration and applies it to the running proxy.
pub trait Reloader: Send + Sync {
    /// Reloads; on refusal nothing changed.
    fn reload(&self) -> Result<ReloadReport, ReloadRefused>;
}
