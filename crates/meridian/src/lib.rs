//! Meridian as a library: start the proxy (listener + monitor) from a validated configuration.
//! The binary, the demo, the integration tests and the benchmarks all start it through here.

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_config::Config;
use meridian_session::ProxyState;
use meridian_upstream::{monitor, FunctionCatalog, Ha, ReplayTracker, TopologyHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod demo;
pub mod logging;
mod memory;
pub mod reload;

/// A running proxy. Dropping it stops the listener and the monitor.
pub struct Running {
    /// Where clients connect.
    pub listen_addr: SocketAddr,
    /// The Unix-domain socket clients may connect through (`proxy.unix_socket_dir`); removed
    /// when the proxy stops.
    pub unix_socket: Option<std::path::PathBuf>,
    /// The topology the proxy sees.
    pub topology: TopologyHandle,
    /// Shared state (configuration, users, cancel keys).
    pub state: Arc<ProxyState>,
    /// The failover controller.
    pub ha: Arc<Ha>,
    /// Where the admin API (metrics, status, dashboard) listens, if `proxy.admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    ha_task: tokio::task::JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    listener_task: tokio::task::JoinHandle<()>,
    /// The session threads; dropped (closing what is left) after the listener, when `Running` is.
    _workers: Arc<meridian_session::Workers>,
    catalog_task: tokio::task::JoinHandle<()>,
    trim_task: tokio::task::JoinHandle<()>,
    _monitor: Arc<monitor::MonitorTasks>,
}

impl Running {
    /// Graceful shutdown: stops accepting clients, lets sessions finish their transactions (each
    /// closes with 57P01 once idle), and after `timeout` closes whatever is left.
    pub async fn drain(&self, timeout: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let _ = self.shutdown.send(true);
        self.state
            .drain
            .send_replace(meridian_session::Drain::Draining);
        let live = || self.state.live_sessions.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + timeout;
        while live() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if live() > 0 {
            tracing::warn!(
                sessions = live(),
                "shutdown timeout reached; closing sessions"
            );
            self.state
                .drain
                .send_replace(meridian_session::Drain::Closing);
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
            while live() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    /// Re-reads the configuration file and applies it (what SIGHUP does). Refused when the
    /// proxy was started without a file (`start` rather than `start_from`).
    pub fn reload(
        &self,
    ) -> Result<meridian_session::ReloadReport, meridian_session::ReloadRefused> {
        match self.state.reloader.get() {
            Some(r) => r.reload(),
            None => Err(meridian_session::ReloadRefused {
                errors: vec!["Meridian was started without a configuration file to reload".into()],
            }),
        }
    }

    /// Stops accepting clients and waits for the listener to finish.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = (&mut self.listener_task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.state.close_pools();
        self.listener_task.abort();
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        self.catalog_task.abort();
        self.trim_task.abort();
        self.ha_task.abort();
        if let Some(t) = &self.admin_task {
            t.abort();
        }
    }
}

/// Binds `<dir>/.s.PGSQL.<port>` for local clients, as Postgres names its socket. A socket
/// file left by a proxy that is gone is replaced; one that answers is in use and is an error.
fn bind_unix(
    dir: &str,
    port: u16,
) -> anyhow::Result<(tokio::net::UnixListener, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let path = meridian_upstream::unix_socket_path(dir, port)
        .ok_or_else(|| anyhow::anyhow!("proxy.unix_socket_dir: {dir:?} is not an absolute path"))?;
    let err = |e: std::io::Error| {
        anyhow::anyhow!(
            "proxy.unix_socket_dir: cannot listen on {}: {e}",
            path.display()
        )
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(err(std::io::ErrorKind::AddrInUse.into()));
        }
        std::fs::remove_file(&path).map_err(err)?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(err)?;
    // Like Postgres' default `unix_socket_permissions`: the directory decides who gets in.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).map_err(err)?;
    Ok((listener, path))
}

/// Loads every TLS file the configuration names (client certificate and key, CA files), as
/// `start` does, so that `meridian check-config` reports a bad file by its key.
pub fn check_tls(config: &Config) -> anyhow::Result<()> {
    meridian_session::ClientTls::from_config(&config.tls)?;
    meridian_upstream::UpstreamTls::from_config(config)?;
    Ok(())
}

/// Binds the listener and starts the monitor and the accept loop on the current runtime.
/// Without a file to re-read, reloads are refused; see `start_from`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_from(config, None).await
}

/// `start`, with the file `config` was loaded from: SIGHUP (`Running::reload`) and
/// `POST /api/v1/reload` re-read it.
pub async fn start_from(
    config: Config,
    path: Option<std::path::PathBuf>,
) -> anyhow::Result<Running> {
    let live = meridian_config::ConfigHandle::new(config);
    let config = live.load_full();
    let listener = TcpListener::bind(&config.proxy.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "proxy.listen: cannot listen on {}: {e}",
            config.proxy.listen
        )
    })?;
    let listen_addr = listener.local_addr()?;
    let unix = config
        .proxy
        .unix_socket_dir
        .as_deref()
        .map(|dir| bind_unix(dir, listen_addr.port()))
        .transpose()?;
    let admin_listener = bind_admin(&config).await?;
    let topology = TopologyHandle::new(monitor::initial_topology(&config));
    // Room for every node slot a reload may add.
    let replay = Arc::new(ReplayTracker::new(meridian_config::MAX_NODES));
    let monitor = Arc::new(monitor::spawn(
        live.clone(),
        topology.clone(),
        replay.clone(),
    ));
    let functions = Arc::new(FunctionCatalog::default());
    let catalog_task =
        meridian_upstream::spawn_function_loader(live.clone(), topology.clone(), functions.clone());
    let ha = Arc::new(Ha::new(live.clone(), topology.clone()));
    let ha_task = tokio::spawn(ha.clone().run());
    let state = Arc::new(
        ProxyState::new(live, topology.clone(), functions, replay, ha.clone())?.with_tls()?,
    );
    if let Some(path) = path {
        let reloader = reload::ConfigReloader::new(path, &state, &monitor)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let _ = state.reloader.set(Arc::new(reloader));
    }
    let trim_task = memory::spawn_trimmer(state.clone());
    let (shutdown, rx) = watch::channel(false);
    let (admin_addr, admin_task) = spawn_admin(admin_listener, &state, rx.clone())?;
    let workers = Arc::new(
        meridian_session::Workers::start(state.config.proxy.worker_threads)
            .map_err(|e| anyhow::anyhow!("proxy.worker_threads: cannot start workers: {e}"))?,
    );
    let (unix_listener, unix_socket) = unix.unzip();
    let listeners = meridian_session::Listeners {
        tcp: listener,
        unix: unix_listener,
    };
    let listener_task = tokio::spawn(meridian_session::serve(
        listeners,
        state.clone(),
        workers.clone(),
        rx,
    ));
    tracing::info!(%listen_addr, unix_socket = ?unix_socket, "meridian listening");
    Ok(Running {
        listen_addr,
        unix_socket,
        topology,
        state,
        ha,
        admin_addr,
        admin_task,
        ha_task,
        shutdown,
        listener_task,
        _workers: workers,
        catalog_task,
        trim_task,
        _monitor: monitor,
    })
}

/// Binds `proxy.admin_listen`, when set (before anything is spawned, so that a bad address
/// leaves nothing running).
async fn bind_admin(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = config.proxy.admin_listen.as_deref() else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("proxy.admin_listen: cannot listen on {addr}: {e}"))?;
    Ok(Some(listener))
}

/// Serves the admin API (metrics, JSON API, dashboard) on the bound admin listener.
fn spawn_admin(
    listener: Option<TcpListener>,
    state: &Arc<ProxyState>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Option<SocketAddr>, Option<tokio::task::JoinHandle<()>>)> {
    let Some(listener) = listener else {
        return Ok((None, None));
    };
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() && state.config.proxy.admin_token.is_none() {
        tracing::warn!(%local, "the admin API listens beyond loopback without proxy.admin_token: status and metrics are readable by anyone who can reach it");
    }
    let admin = meridian_admin::Admin::new(state.clone())
        .map_err(|e| anyhow::anyhow!("admin metrics: {e}"))?;
    let task = tokio::spawn(meridian_admin::serve(listener, admin, shutdown));
    Ok((Some(local), Some(task)))
}
