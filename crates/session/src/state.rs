//! State shared by every session: configuration, user secrets, topology and cancel keys.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use meridian_classify::{Classification, ClassifyCache, FunctionOverrides};
use meridian_config::{AuthMethod, Config, ConfigHandle};
use meridian_router::ReplicaChooser;
use meridian_upstream::{FunctionCatalog, Ha, ReplayTracker, TopologyHandle};

use crate::stats::Stats;
use meridian_wire::auth::ScramSecret;
use meridian_wire::WireError;

use crate::cancel::CancelRegistry;

/// SCRAM iteration count for the verifiers Meridian derives from configured passwords.
const SCRAM_ITERATIONS: u32 = 4096;

/// A configured user, ready for authentication.
#[derive(Debug)]
pub struct UserAuth {
    /// The password, also used upstream.
    pub password: String,
    /// How the client must authenticate.
    pub method: AuthMethod,
    /// SCRAM verifier derived once at startup (PBKDF2 is deliberately slow).
    pub scram: ScramSecret,
    /// `users[].max_connections`.
    pub max_connections: Option<usize>,
    /// Sessions of this user right now (shared by the user's entries across reloads).
    pub sessions: Arc<std::sync::atomic::AtomicUsize>,
    /// `pool.pool_mode`, or this user's own.
    pub pool_mode: meridian_config::PoolMode,
    /// `pool.pool_size`, or this user's own.
    pub pool_size: usize,
}

/// Everything a session needs from the rest of the proxy.
pub struct ProxyState {
    /// The configuration the process started with. Read restart-only keys (listen addresses,
    /// worker threads, pool settings, ...) here; keys a reload applies live are read through
    /// `live` (docs/operations.md, "Reloading", lists both).
    pub config: Arc<Config>,
    /// The configuration in force: swapped as a whole by every successful reload.
    pub live: ConfigHandle,
    /// Users by name (swapped by reloads).
    pub users: Users,
    /// Failed authentications per client address (`proxy.auth_failure_limit`).
    pub auth_failures: crate::ratelimit::AuthFailures,
    /// Re-reads and applies the configuration file (installed by the binary when it has one).
    pub reloader: std::sync::OnceLock<Arc<dyn crate::Reloader>>,
    /// The topology snapshot.
    pub topology: TopologyHandle,
    /// Cancel keys of live sessions.
    pub cancels: Arc<CancelRegistry>,
    /// TLS towards clients (`[tls] cert`/`key`), if configured; set by
    /// [`with_tls`](ProxyState::with_tls).
    pub client_tls: Option<Arc<crate::tls::ClientTls>>,
    /// TLS towards the nodes; set by [`with_tls`](ProxyState::with_tls) and replaced by
    /// reloads (`[tls.upstream]`, `nodes[].sslmode`, `nodes[].ssl_ca_file`).
    pub upstream_tls: ArcSwap<meridian_upstream::UpstreamTls>,
    /// Statement classifications by SQL text.
    pub cache: ClassifyCache,
    /// `routing.read_only_functions` / `routing.write_functions` (swapped by reloads).
    pub overrides: ArcSwap<FunctionOverrides>,
    /// Volatility of functions the classifier does not know, per database.
    pub functions: Arc<FunctionCatalog>,
    /// Replica choice and balance state.
    pub chooser: ReplicaChooser,
    /// Fresh replay positions, for read-your-writes waits.
    pub replay: Arc<ReplayTracker>,
    /// Counters for metrics.
    pub stats: Stats,
    /// The classification every statement gets in passthrough mode: primary, unexamined.
    pub passthrough: Arc<Classification>,
    /// Failover controller (also tracks the highest acknowledged write position).
    pub ha: Arc<Ha>,
    /// Graceful shutdown: `Running`, then `Draining` (sessions close when idle), then `Closing`
    /// (every session closes now).
    pub drain: tokio::sync::watch::Sender<Drain>,
    /// Client sessions past startup that are still running.
    pub live_sessions: std::sync::atomic::AtomicUsize,
    /// The primary's startup ParameterStatus frames per (user, database, startup parameters),
    /// so that new clients can be greeted without opening a server connection.
    pub param_cache: std::sync::Mutex<HashMap<String, bytes::Bytes>>,
    /// Transaction pooling: the pools of shared server connections.
    pub(crate) pools: crate::pool::Pools,
}

impl ProxyState {
    /// Loads the TLS settings of the configuration: the client certificate and key, and each
    /// node's `sslmode` and CA file. Errors name the key at fault.
    pub fn with_tls(mut self) -> Result<Self, crate::SessionError> {
        let config = self.config.clone();
        self.client_tls = crate::tls::ClientTls::from_config(&config.tls)?.map(Arc::new);
        self.upstream_tls =
            ArcSwap::from_pointee(meridian_upstream::UpstreamTls::from_config(&config)?);
        Ok(self)
    }
}

/// Shutdown phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Normal operation.
    Running,
    /// Stop when idle: sessions end between transactions with 57P01.
    Draining,
    /// Stop now: every session ends with 57P01.
    Closing,
}

impl ProxyState {
    /// Closes the idle pooled server connections (at shutdown; pools are not used afterwards).
    pub fn close_pools(&self) {
        self.pools.close_all();
    }

    /// (node, open, idle) for every transaction pool.
    pub fn pool_counts(&self) -> Vec<(usize, usize, usize)> {
        self.pools.counts()
    }

    /// Builds the shared state from the configuration in `live`, deriving SCRAM verifiers for
    /// every user.
    pub fn new(
        live: ConfigHandle,
        topology: TopologyHandle,
        functions: Arc<FunctionCatalog>,
        replay: Arc<ReplayTracker>,
        ha: Arc<Ha>,
    ) -> Result<Self, WireError> {
        let config = live.load_full();
        let users = Users(ArcSwap::from_pointee(build_users(&config, None)?));
        let routing = &config.routing;
        let cache = ClassifyCache::with_limits(routing.cache_max_entries, routing.cache_max_bytes);
        let overrides =
            FunctionOverrides::new(&routing.read_only_functions, &routing.write_functions);
        let chooser = ReplicaChooser::new(meridian_config::MAX_NODES);
        Ok(ProxyState {
            cache,
            overrides: ArcSwap::from_pointee(overrides),
            live,
            auth_failures: crate::ratelimit::AuthFailures::default(),
            reloader: std::sync::OnceLock::new(),
            functions,
            chooser,
            replay,
            stats: Stats::default(),
            passthrough: Arc::new(Classification::write("passthrough")),
            ha,
            drain: tokio::sync::watch::channel(Drain::Running).0,
            live_sessions: std::sync::atomic::AtomicUsize::new(0),
            param_cache: std::sync::Mutex::new(HashMap::new()),
            pools: crate::pool::Pools::default(),
            config,
            users,
            topology,
            cancels: Arc::new(CancelRegistry::default()),
            client_tls: None,
            upstream_tls: ArcSwap::from_pointee(meridian_upstream::UpstreamTls::default()),
        })
    }
}

/// The configured users by name. Reloads replace the whole map; a session keeps the entry it
/// authenticated with.
pub struct Users(ArcSwap<HashMap<String, Arc<UserAuth>>>);

impl Users {
    /// The user called `name`, as currently configured.
    pub fn get(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.0.load().get(name).cloned()
    }

    /// How many users are configured.
    pub fn len(&self) -> usize {
        self.0.load().len()
    }

    /// Whether no user is configured.
    pub fn is_empty(&self) -> bool {
        self.0.load().is_empty()
    }
}

impl ProxyState {
    /// Applies a reloaded configuration's users: new users can log in, removed ones cannot,
    /// changed passwords apply to new logins. Sessions already running keep going. An
    /// unchanged user keeps its SCRAM verifier (and its salt), and every kept user its session
    /// count.
    pub fn reload_users(&self, config: &Config) -> Result<(), WireError> {
        let next = build_users(config, Some(&self.users.0.load()))?;
        self.users.0.store(Arc::new(next));
        Ok(())
    }

    /// Applies reloaded `routing.read_only_functions` / `routing.write_functions`; the
    /// classification cache is emptied because its entries were made under the old lists.
    pub fn reload_function_lists(&self, config: &Config) {
        let r = &config.routing;
        self.overrides.store(Arc::new(FunctionOverrides::new(
            &r.read_only_functions,
            &r.write_functions,
        )));
        self.cache.clear();
    }
}

/// Derives every user's authentication data, reusing what `previous` already has for an
/// unchanged user.
fn build_users(
    config: &Config,
    previous: Option<&HashMap<String, Arc<UserAuth>>>,
) -> Result<HashMap<String, Arc<UserAuth>>, WireError> {
    let mut users = HashMap::new();
    for u in &config.users {
        let password = u.password.clone().unwrap_or_default();
        let old = previous.and_then(|p| p.get(&u.name));
        let scram = match old.filter(|o| o.password == password) {
            Some(o) => o.scram.clone(),
            None => {
                let salt: [u8; 16] = rand::random();
                ScramSecret::from_password(&password, &salt, SCRAM_ITERATIONS)?
            }
        };
        let sessions = old.map(|o| o.sessions.clone()).unwrap_or_default();
        users.insert(
            u.name.clone(),
            Arc::new(UserAuth {
                password,
                method: u.auth,
                scram,
                max_connections: u.max_connections,
                sessions,
                pool_mode: u.pool_mode.unwrap_or(config.pool.pool_mode),
                pool_size: u.pool_size.unwrap_or(config.pool.pool_size),
            }),
        );
    }
    Ok(users)
}
