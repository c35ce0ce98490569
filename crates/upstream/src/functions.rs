//! The function volatility catalog: `pg_proc.provolatile` loaded from the primary with the monitor
//! credentials, refreshed periodically (and on demand when a statement names a function the last
//! load did not have). Reads are lock-free through an `ArcSwap`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use meridian_config::{Config, ConfigHandle};
use tokio::sync::Notify;
use tracing::{debug, info};

use crate::TopologyHandle;

/// How a function may behave, per `pg_proc.provolatile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatility {
    /// `i`: same result for the same arguments, no side effects.
    Immutable,
    /// `s`: no side effects, stable within a statement.
    Stable,
    /// `v`: may have side effects (may write).
    Volatile,
}

const CATALOG_SQL: &str = "SELECT lower(n.nspname), lower(p.proname), p.provolatile::text \
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
    WHERE n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg_toast%'";

/// One database's functions. Keys are `schema.name` and bare `name`; a bare name maps to the
/// most volatile of its overloads in any schema (the session's search_path is not known to the
/// proxy).
type Functions = HashMap<String, Volatility>;

/// The loaded catalogs (one per database clients use), shared by all sessions.
#[derive(Default)]
pub struct FunctionCatalog {
    by_db: ArcSwap<HashMap<String, Arc<Functions>>>,
    wanted: Mutex<HashSet<String>>,
    wake: Notify,
}

impl FunctionCatalog {
    /// Makes sure `database` is loaded (sessions call this at connect).
    pub fn register(&self, database: &str) {
        let added = match self.wanted.lock() {
            Ok(mut w) => w.insert(database.to_string()),
            Err(p) => p.into_inner().insert(database.to_string()),
        };
        if added {
            self.wake.notify_one();
        }
    }

    /// The volatility of `name` (`name` or `schema.name`, lowercased unless quoted) in
    /// `database`, if known.
    pub fn lookup(&self, database: &str, name: &str) -> Option<Volatility> {
        let all = self.by_db.load();
        let map = all.get(database)?;
        let key = name.trim_matches('"');
        if let Some(v) = map.get(key) {
            return Some(*v);
        }
        // `"public"."f"` style names: drop quotes around parts.
        let unquoted: String = key.chars().filter(|c| *c != '"').collect();
        map.get(&unquoted).copied()
    }

    /// Whether `database` has been loaded at least once.
    pub fn is_loaded(&self, database: &str) -> bool {
        self.by_db.load().contains_key(database)
    }

    /// Asks the loader to refresh soon (a statement named a function the catalog lacks).
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// Installs `database`'s catalog (used by the loader and by tests).
    pub fn install(
        &self,
        database: &str,
        entries: impl IntoIterator<Item = (String, String, Volatility)>,
    ) {
        let mut map: Functions = HashMap::new();
        for (schema, name, vol) in entries {
            // Overloads share a name: the most volatile one decides.
            let qualified = map.entry(format!("{schema}.{name}")).or_insert(vol);
            *qualified = worst(*qualified, vol);
            let bare = map.entry(name).or_insert(vol);
            *bare = worst(*bare, vol);
        }
        let mut all: HashMap<String, Arc<Functions>> = (**self.by_db.load()).clone();
        all.insert(database.to_string(), Arc::new(map));
        self.by_db.store(Arc::new(all));
    }

    fn wanted(&self) -> Vec<String> {
        match self.wanted.lock() {
            Ok(w) => w.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        }
    }
}

fn worst(a: Volatility, b: Volatility) -> Volatility {
    use Volatility::*;
    match (a, b) {
        (Volatile, _) | (_, Volatile) => Volatile,
        (Stable, _) | (_, Stable) => Stable,
        _ => Immutable,
    }
}

/// Spawns the loader; it reloads every `routing.function_refresh_s` seconds or when asked
/// (both the interval and the monitor credentials are read anew each round).
pub fn spawn_loader(
    config: ConfigHandle,
    topology: TopologyHandle,
    catalog: Arc<FunctionCatalog>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let config = config.load_full();
            let every = Duration::from_secs(config.routing.function_refresh_s);
            let mut missing = false;
            for db in catalog.wanted() {
                match load(&config, &topology, &db).await {
                    Ok(entries) => {
                        let n = entries.len();
                        let first = !catalog.is_loaded(&db);
                        catalog.install(&db, entries);
                        if first {
                            info!(database = %db, functions = n, "function catalog loaded");
                        } else {
                            debug!(database = %db, functions = n, "function catalog refreshed");
                        }
                    }
                    Err(e) => {
                        missing |= !catalog.is_loaded(&db);
                        debug!(database = %db, error = %e, "function catalog load failed");
                    }
                }
            }
            let wait = if missing {
                Duration::from_millis(500)
            } else {
                every
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = catalog.wake.notified() => {
                    // Coalesce bursts of requests.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
}

async fn load(
    config: &Config,
    topology: &TopologyHandle,
    database: &str,
) -> Result<Vec<(String, String, Volatility)>, String> {
    let topo = topology.load();
    let node = topo.primary_node().ok_or("no primary known")?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&node.host)
        .port(node.port)
        .user(&config.monitor.user)
        .password(config.monitor.password.as_deref().unwrap_or_default())
        .dbname(database)
        .application_name("meridian-catalog")
        .connect_timeout(Duration::from_millis(config.monitor.timeout_ms));
    let tls = crate::NodeTls::for_host(config, &node.host, node.port)
        .map_err(|e| e.to_string())?
        .configure(&mut pg);
    let (client, connection) = pg.connect(tls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let rows = client
        .query(CATALOG_SQL, &[])
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.try_get(0).map_err(|e| e.to_string())?;
        let name: String = row.try_get(1).map_err(|e| e.to_string())?;
        let vol: String = row.try_get(2).map_err(|e| e.to_string())?;
        let vol = match vol.as_str() {
            "i" => Volatility::Immutable,
            "s" => Volatility::Stable,
            _ => Volatility::Volatile,
        };
        out.push((schema, name, vol));
    }
    Ok(out)
}
