//! Failover: when the health loop loses the primary, promote the most caught-up replica without
//! giving up any write Meridian acknowledged, fence the old primary, and re-point the other
//! replicas. The same machinery serves manual `failover` and planned `switchover`.
//!
//! ```text
//!   Healthy ──primary down (failure_threshold checks)──▶ Suspect
//!   Suspect ──replicas still stream from it (witness)──▶ report "proxy cut off", keep waiting
//!   Suspect ──replicas lost it too──▶ pick candidate ──has every acknowledged LSN?──▶ Promote
//!          (no, and allow_data_loss = false) ──▶ refuse, report, keep waiting
//!   Promote ──pg_promote + validating write──▶ fence old primary, re-point replicas ──▶ Healthy
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_config::ConfigHandle;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::{Lsn, Role, Topology, TopologyHandle};

/// Most events kept in memory.
const MAX_EVENTS: usize = 500;

/// One entry of the failover/fencing history.
#[derive(Debug, Clone)]
pub struct HaEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `failover`, `switchover`, `fence`, `refused`, `witness`, `split_brain`, `repoint`, ...
    pub kind: &'static str,
    /// The node concerned, if one.
    pub node: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// What a completed promotion did.
#[derive(Debug, Clone)]
pub struct HaReport {
    /// The node promoted.
    pub new_primary: String,
    /// The node fenced, if any.
    pub fenced: Option<String>,
    /// Time from start of the promotion to the validated write, in milliseconds.
    pub duration_ms: u64,
    /// WAL given up, when `allow_data_loss` let a promotion go ahead without every
    /// acknowledged write: (candidate's position, highest acknowledged position).
    pub lost_range: Option<(Lsn, Lsn)>,
}

/// Failover counters for metrics.
#[derive(Debug, Default)]
pub struct HaCounters {
    /// Promotions that completed.
    pub succeeded: AtomicU64,
    /// Promotions attempted that failed or were refused.
    pub failed: AtomicU64,
    /// Duration of the last completed promotion, milliseconds.
    pub last_duration_ms: AtomicU64,
}

/// The failover controller.
pub struct Ha {
    config: ConfigHandle,
    topology: TopologyHandle,
    /// Highest commit position acknowledged to any client (from session tokens).
    acked: AtomicU64,
    events: Mutex<VecDeque<HaEvent>>,
    /// One promotion at a time.
    busy: tokio::sync::Mutex<()>,
    /// Nodes that were synchronous standbys at the last look at the primary.
    sync_standbys: Mutex<Vec<usize>>,
    /// Counters.
    pub counters: HaCounters,
    last_auto: Mutex<Option<Instant>>,
}

impl Ha {
    /// A controller for this configuration and topology.
    pub fn new(config: ConfigHandle, topology: TopologyHandle) -> Self {
        Ha {
            config,
            topology,
            acked: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            busy: tokio::sync::Mutex::new(()),
            sync_standbys: Mutex::new(Vec::new()),
            counters: HaCounters::default(),
            last_auto: Mutex::new(None),
        }
    }

    /// Records that a client was told its write committed at or before `lsn`.
    pub fn acknowledge(&self, lsn: Lsn) {
        self.acked.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The highest acknowledged position.
    pub fn acked_lsn(&self) -> Lsn {
        Lsn(self.acked.load(Ordering::Relaxed))
    }

    /// The event history, oldest first.
    pub fn events(&self) -> Vec<HaEvent> {
        lock(&self.events).iter().cloned().collect()
    }

    fn event(&self, kind: &'static str, node: Option<&str>, message: String) {
        match kind {
            "refused" | "witness" | "split_brain" | "error" => {
                warn!(kind, node = node.unwrap_or(""), "{message}")
            }
            _ => info!(kind, node = node.unwrap_or(""), "{message}"),
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut events = lock(&self.events);
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(HaEvent {
            at_ms,
            kind,
            node: node.map(str::to_string),
            message,
        });
    }

    /// The health-loop side: watches the topology and fails over automatically when the primary
    /// is lost (and `automatic` is on); fences a second node claiming to be primary.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.topology.subscribe();
        let mut last_primary: Option<usize> = None;
        let mut reported_episode = false;
        let mut last_sync_check = Instant::now() - Duration::from_secs(60);
        loop {
            let topo = self.topology.load();
            match topo.primary {
                Some(p) => {
                    last_primary = Some(p);
                    reported_episode = false;
                    // During a promotion two nodes are briefly writable: that is not split-brain.
                    if let Ok(_idle) = self.busy.try_lock() {
                        self.fence_rival_primaries(&topo, p).await;
                    }
                    if last_sync_check.elapsed() > Duration::from_secs(2) {
                        last_sync_check = Instant::now();
                        self.refresh_sync_standbys(&topo, p).await;
                    }
                }
                None if last_primary.is_some() && self.config.load().failover.automatic => {
                    let cooled = lock(&self.last_auto).is_none_or(|t| {
                        t.elapsed() >= Duration::from_secs(self.config.load().failover.cooldown_s)
                    });
                    if cooled {
                        match self
                            .promote(None, last_primary, true, !reported_episode)
                            .await
                        {
                            Ok(report) => {
                                *lock(&self.last_auto) = Some(Instant::now());
                                info!(
                                    new_primary = %report.new_primary,
                                    ms = report.duration_ms,
                                    "automatic failover completed"
                                );
                            }
                            Err(_) => reported_episode = true,
                        }
                    } else if !reported_episode {
                        self.event(
                            "refused",
                            None,
                            "primary lost, but the failover cooldown has not passed".into(),
                        );
                        reported_episode = true;
                    }
                }
                None => {}
            }
            let tick = Duration::from_millis(self.config.load().failover.check_interval_ms);
            let _ = tokio::time::timeout(tick, changes.changed()).await;
        }
    }

    /// Manual failover (`meridian ctl failover [--to NODE]`): promotes `to` (or the best
    /// candidate) even if the current primary still answers, which is then fenced.
    pub async fn failover(&self, to: Option<&str>) -> Result<HaReport, String> {
        let topo = self.topology.load();
        let target = match to {
            Some(name) => Some(
                topo.nodes
                    .iter()
                    .position(|n| n.name == name && !n.removed)
                    .ok_or_else(|| format!("no node named {name:?}"))?,
            ),
            None => None,
        };
        self.promote(target, topo.primary, false, true).await
    }

    /// Planned switchover to `to` with no write lost: holds writes, makes the old primary
    /// read-only, waits until `to` has replayed everything, promotes it.
    pub async fn switchover(&self, to: &str) -> Result<HaReport, String> {
        let topo = self.topology.load();
        let target = topo
            .nodes
            .iter()
            .position(|n| n.name == to && !n.removed)
            .ok_or_else(|| format!("no node named {to:?}"))?;
        let old = topo.primary.ok_or("no primary to switch over from")?;
        if old == target {
            return Err(format!("{to} is already the primary"));
        }
        let client = self.connect(old).await?;
        // New statements that need the primary wait in Meridian from here on: clients see a
        // pause, not read-only errors.
        self.topology.update(|prev| Topology {
            writes_held: true,
            ..prev.clone()
        });
        let result = self.switch_held(&client, old, target, to).await;
        self.topology.update(|prev| Topology {
            writes_held: false,
            ..prev.clone()
        });
        if result.is_err() {
            // Give the old primary its writes back.
            let _ = client
                .batch_execute("ALTER SYSTEM RESET default_transaction_read_only")
                .await;
            let _ = client.batch_execute("SELECT pg_reload_conf()").await;
        }
        result
    }

    async fn switch_held(
        &self,
        client: &Client,
        old: usize,
        target: usize,
        to: &str,
    ) -> Result<HaReport, String> {
        let topo = self.topology.load();
        let old_node = &topo.nodes[old];
        // Writes are held in Meridian; what was already sent finishes, and open transactions
        // get until the deadline to commit. Then the old primary turns read-only, so nothing
        // can write there behind Meridian's back.
        let deadline =
            Instant::now() + Duration::from_secs(self.config.load().failover.promote_timeout_s);
        wait_for_quiet(client, deadline).await?;
        // ALTER SYSTEM cannot share a (multi-statement, hence implicit) transaction.
        let read_only = async {
            client
                .batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
                .await?;
            client.batch_execute("SELECT pg_reload_conf()").await
        };
        read_only
            .await
            .map_err(|e| format!("cannot make {} read-only: {}", old_node.name, pg_err(&e)))?;
        wait_for_quiet(client, deadline).await?;
        // The insert position covers every token a session was given (they are insert positions).
        let final_lsn = lsn_query(client, "SELECT pg_current_wal_insert_lsn()::text")
            .await?
            .max(self.acked_lsn());
        self.acknowledge(final_lsn);
        self.event(
            "switchover",
            Some(&old_node.name),
            format!(
                "{} read-only at {final_lsn}; switching to {to}",
                old_node.name
            ),
        );
        // The target must have every byte the old primary wrote before it is promoted.
        let target_client = self.connect(target).await?;
        loop {
            let received = lsn_query(
                &target_client,
                "SELECT COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
            )
            .await
            .unwrap_or_default();
            if received >= final_lsn {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{to} did not receive the old primary's final position {final_lsn} in time"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.promote(Some(target), Some(old), false, true).await
    }

    async fn promote(
        &self,
        target: Option<usize>,
        old: Option<usize>,
        automatic: bool,
        report: bool,
    ) -> Result<HaReport, String> {
        let _busy = self.busy.lock().await;
        let result = self.promote_locked(target, old, automatic).await;
        match &result {
            Ok(r) => {
                self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .last_duration_ms
                    .store(r.duration_ms, Ordering::Relaxed);
            }
            Err(("noop", _)) => {}
            Err((kind, message)) => {
                // Automatic attempts repeat every check: report each distinct outcome once.
                let repeated = lock(&self.events)
                    .iter()
                    .rev()
                    .find(|e| e.kind == *kind)
                    .is_some_and(|e| e.message == *message);
                if report || !repeated {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    self.event(kind, None, message.clone());
                }
            }
        }
        result.map_err(|(_, m)| m)
    }

    async fn promote_locked(
        &self,
        target: Option<usize>,
        old: Option<usize>,
        automatic: bool,
    ) -> Result<HaReport, (&'static str, String)> {
        let started = Instant::now();
        let topo = self.topology.load();
        if automatic && topo.primary.is_some() {
            return Err(("noop", "the primary is back; nothing to do".into()));
        }
        let replicas: Vec<usize> = (0..topo.nodes.len())
            .filter(|&i| {
                let n = &topo.nodes[i];
                n.healthy && n.role == Role::Replica && !n.fenced && !n.removed && Some(i) != old
            })
            .collect();
        if replicas.is_empty() {
            return Err(("refused", "no healthy replica to promote".into()));
        }
        // Witness: replicas that still stream from the old primary prove it alive.
        if automatic && self.config.load().failover.require_witness {
            for &r in &replicas {
                if let Ok(c) = self.connect(r).await {
                    let streaming = c
                        .query_opt(
                            "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming' \
                             AND last_msg_receipt_time > now() - interval '30 seconds'",
                            &[],
                        )
                        .await
                        .map(|row| row.is_some())
                        .unwrap_or(false);
                    if streaming {
                        return Err((
                            "witness",
                            format!(
                                "the primary is unreachable from Meridian, but replica {} still streams from it: not promoting (Meridian may be the one cut off)",
                                topo.nodes[r].name
                            ),
                        ));
                    }
                }
            }
        }
        // Fresh positions from every candidate.
        let mut best: Option<(usize, Lsn, Lsn, Client)> = None;
        for &r in &replicas {
            if target.is_some_and(|t| t != r) {
                continue;
            }
            let Ok(c) = self.connect(r).await else {
                continue;
            };
            let Ok(receive) = lsn_query(
                &c,
                "SELECT COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
            )
            .await
            else {
                continue;
            };
            let replay = lsn_query(&c, "SELECT pg_last_wal_replay_lsn()::text")
                .await
                .unwrap_or_default();
            let better = match &best {
                None => true,
                Some((b, brecv, brepl, _)) => {
                    (receive, replay) > (*brecv, *brepl)
                        || ((receive, replay) == (*brecv, *brepl)
                            && topo.nodes[r].region == self.config.load().proxy.region
                            && topo.nodes[*b].region != self.config.load().proxy.region)
                }
            };
            if better {
                best = Some((r, receive, replay, c));
            }
        }
        let Some((cand, receive, _, client)) = best else {
            return Err(("refused", "no reachable candidate replica".into()));
        };
        let name = topo.nodes[cand].name.clone();
        // No acknowledged write may be lost.
        let acked = self.acked_lsn();
        let mut lost_range = None;
        if receive < acked {
            let sync = lock(&self.sync_standbys).clone();
            let sync_all_here = !sync.is_empty()
                && sync.iter().all(|s| replicas.contains(s))
                && sync.contains(&cand);
            if sync_all_here {
                info!(candidate = %name, "candidate is a synchronous standby with the most WAL");
            } else if self.config.load().failover.allow_data_loss {
                lost_range = Some((receive, acked));
                self.event(
                    "data_loss",
                    Some(&name),
                    format!("promoting {name} at {receive} although writes were acknowledged up to {acked}: WAL {receive}..{acked} is lost (allow_data_loss = true)"),
                );
            } else {
                return Err((
                    "refused",
                    format!("not promoting {name}: it has received WAL up to {receive}, but writes were acknowledged up to {acked}; set failover.allow_data_loss = true to promote anyway"),
                ));
            }
        }
        // Let it replay what it received, then promote and prove it takes writes.
        let deadline = started + Duration::from_secs(self.config.load().failover.promote_timeout_s);
        while Instant::now() < deadline {
            let replay = lsn_query(&client, "SELECT pg_last_wal_replay_lsn()::text")
                .await
                .unwrap_or_default();
            if replay >= receive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Fence the old primary before the candidate becomes writable, so that no moment has two
        // unfenced writable nodes.
        self.topology.update(|prev| {
            let mut next = prev.clone();
            if let Some(o) = old {
                if let Some(n) = next.nodes.get_mut(o) {
                    n.fenced = true;
                }
            }
            if let Some(n) = next.nodes.get_mut(cand) {
                n.fenced = false;
            }
            if prev.primary == old {
                next.primary = None;
            }
            next
        });
        let wait_s = self
            .config
            .load()
            .failover
            .promote_timeout_s
            .min(i32::MAX as u64) as i32;
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, $1)", &[&wait_s])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| {
                (
                    "error",
                    format!("pg_promote on {name} failed: {}", pg_err(&e)),
                )
            })?;
        if !promoted {
            return Err(("error", format!("{name} did not finish promotion in time")));
        }
        client
            .batch_execute("SELECT pg_current_xact_id()")
            .await
            .map_err(|e| {
                (
                    "error",
                    format!("validating write on {name} failed: {}", pg_err(&e)),
                )
            })?;
        // The old primary (fenced above) is on a timeline that ends here.
        let fenced = old.map(|o| topo.nodes[o].name.clone());
        let duration_ms = started.elapsed().as_millis() as u64;
        self.event(
            if automatic { "failover" } else { "promote" },
            Some(&name),
            format!(
                "promoted {name} (received {receive}, acknowledged {acked}) in {duration_ms} ms{}",
                fenced
                    .as_ref()
                    .map(|f| format!("; fenced {f}"))
                    .unwrap_or_default()
            ),
        );
        if let (Some(o), Some(f)) = (old, &fenced) {
            self.run_fence_command(o, f, &name);
        }
        self.repoint(cand, old).await;
        // Writes resume once the monitor sees the promoted node writable (one check).
        let _ = self
            .topology
            .wait_for(Duration::from_secs(5), |t| t.primary == Some(cand))
            .await;
        Ok(HaReport {
            new_primary: name,
            fenced,
            duration_ms,
            lost_range,
        })
    }

    /// Points every other replica at the new primary (with a replication slot there) by
    /// rewriting its `primary_conninfo` and reloading: no restart needed.
    async fn repoint(&self, new_primary: usize, old: Option<usize>) {
        let topo = self.topology.load();
        let Some(np) = topo.nodes.get(new_primary) else {
            return;
        };
        let Ok(primary_client) = self.connect(new_primary).await else {
            return;
        };
        for (i, n) in topo.nodes.iter().enumerate() {
            if i == new_primary || Some(i) == old || n.fenced || !n.healthy {
                continue;
            }
            let Ok(c) = self.connect(i).await else {
                continue;
            };
            let conninfo: String = match c.query_one("SHOW primary_conninfo", &[]).await {
                Ok(r) => r.try_get(0).unwrap_or_default(),
                Err(_) => continue,
            };
            let slot: String = match c.query_one("SHOW primary_slot_name", &[]).await {
                Ok(r) => r.try_get(0).unwrap_or_default(),
                Err(_) => String::new(),
            };
            if !slot.is_empty() {
                let _ = primary_client
                    .execute(
                        "SELECT pg_create_physical_replication_slot($1) WHERE NOT EXISTS \
                         (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                        &[&slot],
                    )
                    .await;
            }
            let rewritten = rewrite_conninfo(&conninfo, &np.host, np.port);
            let sql = format!(
                "ALTER SYSTEM SET primary_conninfo = '{}'",
                rewritten.replace('\'', "''")
            );
            let result = async {
                c.batch_execute(&sql).await?;
                c.batch_execute("SELECT pg_reload_conf()").await
            }
            .await;
            match result {
                Ok(()) => self.event(
                    "repoint",
                    Some(&n.name),
                    format!("{} now follows {}", n.name, np.name),
                ),
                Err(e) => self.event(
                    "error",
                    Some(&n.name),
                    format!(
                        "could not re-point {} to {}: {}",
                        n.name,
                        np.name,
                        pg_err(&e)
                    ),
                ),
            }
        }
    }

    /// A second writable node while a primary is in charge: fence it.
    async fn fence_rival_primaries(&self, topo: &Topology, primary: usize) {
        let rivals: Vec<usize> = topo
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != primary && n.healthy && n.role == Role::Primary && !n.fenced)
            .map(|(i, _)| i)
            .collect();
        if rivals.is_empty() {
            return;
        }
        let pname = topo.nodes[primary].name.clone();
        for r in &rivals {
            let name = topo.nodes[*r].name.clone();
            self.event(
                "split_brain",
                Some(&name),
                format!("{name} claims to be primary while {pname} is in charge: fenced, it gets no traffic"),
            );
            self.run_fence_command(*r, &name, &pname);
        }
        self.topology.update(|prev| {
            let mut next = prev.clone();
            for r in &rivals {
                if let Some(n) = next.nodes.get_mut(*r) {
                    n.fenced = true;
                }
            }
            next
        });
    }

    /// Lifts the fence on `node` (after an operator rejoined it as a replica).
    pub fn unfence(&self, node: &str) -> Result<(), String> {
        let topo = self.topology.load();
        let i = topo
            .nodes
            .iter()
            .position(|n| n.name == node && !n.removed)
            .ok_or_else(|| format!("no node named {node:?}"))?;
        self.topology.update(|prev| {
            let mut next = prev.clone();
            if let Some(n) = next.nodes.get_mut(i) {
                n.fenced = false;
            }
            next
        });
        self.event(
            "unfence",
            Some(node),
            format!("{node} unfenced by an operator"),
        );
        Ok(())
    }

    async fn refresh_sync_standbys(&self, topo: &Topology, primary: usize) {
        let Ok(c) = self.connect(primary).await else {
            return;
        };
        let rows = c
            .query(
                "SELECT application_name FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                &[],
            )
            .await
            .unwrap_or_default();
        let names: Vec<String> = rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
        let sync: Vec<usize> = topo
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| names.contains(&n.name))
            .map(|(i, _)| i)
            .collect();
        *lock(&self.sync_standbys) = sync;
    }

    fn run_fence_command(&self, node: usize, name: &str, new_primary: &str) {
        let Some(cmd) = self.config.load().failover.fence_command.clone() else {
            return;
        };
        let topo = self.topology.load();
        let (host, port) = topo
            .nodes
            .get(node)
            .map(|n| (n.host.clone(), n.port.to_string()))
            .unwrap_or_default();
        let name = name.to_string();
        let new_primary = new_primary.to_string();
        tokio::spawn(async move {
            let out = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&cmd)
                .env("MERIDIAN_FENCED_NODE", &name)
                .env("MERIDIAN_FENCED_HOST", &host)
                .env("MERIDIAN_FENCED_PORT", &port)
                .env("MERIDIAN_NEW_PRIMARY", &new_primary)
                .output()
                .await;
            match out {
                Ok(o) if o.status.success() => info!(node = %name, "fence_command succeeded"),
                Ok(o) => warn!(node = %name, status = %o.status, "fence_command failed"),
                Err(e) => warn!(node = %name, error = %e, "fence_command could not run"),
            }
        });
    }

    /// A fresh monitor-credentials connection to `node`.
    async fn connect(&self, node: usize) -> Result<Client, String> {
        let topo = self.topology.load();
        let n = topo.nodes.get(node).ok_or("no such node")?;
        let config = self.config.load_full();
        let m = &config.monitor;
        let mut pg = tokio_postgres::Config::new();
        pg.host(&n.host)
            .port(n.port)
            .user(&m.user)
            .password(m.password.as_deref().unwrap_or_default())
            .dbname(&m.database)
            .application_name("meridian-failover")
            .connect_timeout(Duration::from_millis(m.timeout_ms));
        let tls = crate::NodeTls::for_host(&config, &n.host, n.port)
            .map_err(|e| e.to_string())?
            .configure(&mut pg);
        let (client, conn) = pg.connect(tls).await.map_err(|e| pg_err(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

/// Waits (until `deadline`) for client backends on a primary to be idle outside transactions.
async fn wait_for_quiet(client: &Client, deadline: Instant) -> Result<(), String> {
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction', \
                 'idle in transaction (aborted)') AND application_name NOT LIKE 'meridian-%'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        if row.get::<_, i64>(0) == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server error's SQLSTATE and message (tokio-postgres' Display says only "db error").
fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

async fn lsn_query(c: &Client, sql: &str) -> Result<Lsn, String> {
    let row = c.query_one(sql, &[]).await.map_err(|e| pg_err(&e))?;
    let text: Option<String> = row.try_get(0).map_err(|e| e.to_string())?;
    text.unwrap_or_default()
        .parse()
        .map_err(|_| "not an LSN".to_string())
}

/// `primary_conninfo` with `host` and `port` replaced (other keywords kept).
pub fn rewrite_conninfo(conninfo: &str, host: &str, port: u16) -> String {
    let mut parts: Vec<String> = conninfo
        .split_whitespace()
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or("");
            k != "host" && k != "port" && k != "hostaddr"
        })
        .map(str::to_string)
        .collect();
    parts.insert(0, format!("port={port}"));
    parts.insert(0, format!("host={host}"));
    parts.join(" ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::rewrite_conninfo;

    #[test]
    fn conninfo_keeps_credentials_and_changes_the_address() {
        let c =
            "user=replicator password=repl-secret host=127.0.0.1 port=5433 application_name=pg3";
        assert_eq!(
            rewrite_conninfo(c, "10.0.0.2", 5434),
            "host=10.0.0.2 port=5434 user=replicator password=repl-secret application_name=pg3"
        );
    }
}
