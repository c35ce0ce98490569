//! Configuration reload (SIGHUP, `POST /api/v1/reload`, `meridian ctl reload`): re-read the file,
//! validate it, and apply what can change live (users, nodes, routing lists, limits, timeouts,
//! lag thresholds, failover and monitor settings) without touching client sessions. An invalid
//! file, or a node change the running cluster cannot take, is refused as a whole and the
//! running configuration stays. Keys that need a restart keep their running value; they are
//! reported and logged.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use meridian_config::{Config, ConfigError, MAX_NODES};
use meridian_session::{ProxyState, ReloadRefused, ReloadReport, Reloader};
use meridian_upstream::monitor::{self, MonitorTasks};
use meridian_upstream::{Role, Topology};
use tracing::{info, warn};

/// Reloads from the file the proxy was started with.
pub struct ConfigReloader {
    path: PathBuf,
    state: Weak<ProxyState>,
    monitor: Weak<MonitorTasks>,
    /// The file as parsed at start (restart-only keys are compared against it).
    started: toml::Value,
    /// The file as parsed at the last successful reload (live keys are compared against it);
    /// the lock also serializes reloads.
    last: Mutex<toml::Value>,
}

impl ConfigReloader {
    /// A reloader for the proxy whose shared state and monitor are given, reading `path`.
    pub fn new(
        path: PathBuf,
        state: &Arc<ProxyState>,
        monitor: &Arc<MonitorTasks>,
    ) -> Result<Self, ReloadRefused> {
        let (started, _) = read(&path)?;
        Ok(ConfigReloader {
            path,
            state: Arc::downgrade(state),
            monitor: Arc::downgrade(monitor),
            last: Mutex::new(started.clone()),
            started,
        })
    }
}

fn refused(message: impl Into<String>) -> ReloadRefused {
    ReloadRefused {
        errors: vec![message.into()],
    }
}

/// Reads and validates the file: its parsed TOML and the validated configuration.
fn read(path: &std::path::Path) -> Result<(toml::Value, Config), ReloadRefused> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| refused(format!("cannot read {}: {e}", path.display())))?;
    let raw: toml::Value =
        toml::from_str(&text).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    let config = Config::from_toml(&text).map_err(|e| match e {
        ConfigError::Parse(m) => refused(format!("{}: {m}", path.display())),
        other => refused(other.to_string()),
    })?;
    Ok((raw, config))
}

impl Reloader for ConfigReloader {
    fn reload(&self) -> Result<ReloadReport, ReloadRefused> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(state), Some(monitor)) = (self.state.upgrade(), self.monitor.upgrade()) else {
            return Err(refused("Meridian is shutting down"));
        };
        let result = read(&self.path).and_then(|(raw, next)| {
            let running = state.live.load_full();
            let changes = meridian_config::changes(&self.started, &last, &raw, &running, &next);
            apply(&state, &monitor, &running, next)?;
            *last = raw;
            Ok(ReloadReport {
                changed: changes.changed,
                restart_required: changes.restart_required,
            })
        });
        match &result {
            Ok(report) => {
                info!(changed = ?report.changed, "configuration reloaded");
                if !report.restart_required.is_empty() {
                    warn!(
                        keys = ?report.restart_required,
                        "changed keys need a restart to apply; their running values stay"
                    );
                }
            }
            Err(e) => {
                warn!(errors = %e, "configuration reload refused; the running configuration stays")
            }
        }
        result
    }
}

/// Applies `next` to the running proxy, or refuses without changing anything.
pub fn apply(
    state: &ProxyState,
    monitor: &MonitorTasks,
    running: &Config,
    mut next: Config,
) -> Result<(), ReloadRefused> {
    let topo = state.topology.load_full();
    check_nodes(&topo, &next)?;
    // Restart-only keys keep the values the process runs with.
    next.proxy.listen.clone_from(&running.proxy.listen);
    next.proxy
        .admin_listen
        .clone_from(&running.proxy.admin_listen);
    next.proxy.worker_threads = running.proxy.worker_threads;
    next.proxy.log_format = running.proxy.log_format;
    next.routing.cache_max_entries = running.routing.cache_max_entries;
    next.routing.cache_max_bytes = running.routing.cache_max_bytes;
    // Server connections opened from now on follow the new TLS settings; a CA file that does
    // not parse refuses the reload. Client-side TLS (certificate, key) needs a restart.
    let upstream_tls =
        meridian_upstream::UpstreamTls::from_config(&next).map_err(|e| refused(e.to_string()))?;
    // Users last of the steps that can fail (deriving SCRAM verifiers): they are swapped in
    // here, so nothing that can refuse the reload may come after.
    state
        .reload_users(&next)
        .map_err(|e| refused(format!("users: {e}")))?;
    let lists_changed = running.routing.read_only_functions != next.routing.read_only_functions
        || running.routing.write_functions != next.routing.write_functions;
    next.tls.cert.clone_from(&running.tls.cert);
    next.tls.key.clone_from(&running.tls.key);
    next.tls.require_client_tls = running.tls.require_client_tls;
    next.tls.min_protocol_version = running.tls.min_protocol_version;
    let nodes = next.nodes.clone();
    state.upstream_tls.store(Arc::new(upstream_tls));
    state.live.store(next);
    if lists_changed {
        state.reload_function_lists(&state.live.load());
    }
    state.topology.update(|prev| with_nodes(prev, &nodes));
    monitor.sync();
    Ok(())
}

/// Refuses node changes the running cluster cannot take: removing (or re-addressing) the
/// current primary, or more node slots than a process can hold.
fn check_nodes(topo: &Topology, next: &Config) -> Result<(), ReloadRefused> {
    if let Some(p) = topo.primary_node() {
        match next.nodes.iter().position(|n| n.name == p.name) {
            None => {
                return Err(refused(format!(
                    "nodes: cannot remove node {:?}: it is the current primary (switch over to another node first)",
                    p.name
                )))
            }
            Some(i) if next.nodes[i].host != p.host || next.nodes[i].port != p.port => {
                return Err(refused(format!(
                    "nodes[{i}].host: cannot change the address of node {:?}: it is the current primary (switch over to another node first)",
                    p.name
                )))
            }
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = topo.nodes.iter().map(|n| n.name.as_str()).collect();
    let added = next
        .nodes
        .iter()
        .filter(|n| !known.contains(n.name.as_str()))
        .count();
    if topo.nodes.len() + added > MAX_NODES {
        return Err(refused(format!(
            "nodes: a running Meridian keeps a slot for every node it has known (removed ones included) and holds at most {MAX_NODES}; restart to add more"
        )));
    }
    Ok(())
}

/// The topology with the configured node list: a node keeps its slot (by name), removed nodes
/// are marked removed and down, new nodes are appended as unknown. Node indices never change.
fn with_nodes(prev: &Topology, nodes: &[meridian_config::NodeConfig]) -> Topology {
    let mut next = prev.clone();
    for n in next.nodes.iter_mut() {
        if !n.removed && !nodes.iter().any(|c| c.name == n.name) {
            info!(node = %n.name, "node removed from the configuration");
            n.removed = true;
            n.healthy = false;
        }
    }
    for c in nodes {
        match next.nodes.iter_mut().find(|n| n.name == c.name) {
            Some(n) => {
                let moved = n.host != c.host || n.port != c.port;
                if n.removed || moved {
                    info!(node = %c.name, "node (re)configured; it takes traffic once healthy");
                    // A fence is lifted only by an operator (unfence), never by a reload.
                    let fenced = n.fenced;
                    *n = monitor::unknown_node(c);
                    n.fenced = fenced;
                } else {
                    n.region.clone_from(&c.region);
                }
            }
            None => {
                info!(node = %c.name, "node added; it takes traffic once healthy");
                next.nodes.push(monitor::unknown_node(c));
            }
        }
    }
    if next.primary.is_some_and(|p| {
        next.nodes
            .get(p)
            .is_none_or(|n| n.removed || n.role != Role::Primary)
    }) {
        next.primary = None;
    }
    next
}
