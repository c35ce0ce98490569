//! The `meridian` command: run the proxy, check a configuration, or start a local demo cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_config::Config;

mod ctl;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "PostgreSQL proxy with read/write routing, read-your-writes and failover"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file.
    Run {
        /// Path to the TOML configuration.
        #[arg(long, short, env = "MERIDIAN_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (non-zero with an error naming the key on failure).
    CheckConfig {
        /// Path to the TOML configuration.
        path: PathBuf,
    },
    /// Start a local primary + 2 streaming replicas and Meridian in front of them.
    Demo {
        /// Port for Meridian to listen on (falls back to a free port if taken).
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Number of replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
    },
    /// Operate a running Meridian through its admin API (proxy.admin_listen).
    Ctl {
        /// Base URL of the admin API.
        #[arg(
            long,
            global = true,
            env = "MERIDIAN_ADMIN_URL",
            default_value = "http://127.0.0.1:9930"
        )]
        admin: String,
        /// Bearer token for mutating calls (proxy.admin_token).
        #[arg(
            long,
            global = true,
            env = "MERIDIAN_ADMIN_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
        /// Print the API's JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: ctl::Action,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { path } => match Config::load(&path)
            .map_err(anyhow::Error::from)
            .and_then(|c| meridian::check_tls(&c).map(|()| c))
        {
            Ok(c) => {
                println!(
                    "{}: ok ({} nodes, {} users)",
                    path.display(),
                    c.nodes.len(),
                    c.users.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            meridian::logging::init(config.proxy.log_format);
            // Sessions run on their own worker threads (`proxy.worker_threads`); this runtime
            // carries the listener, the health loop and the admin API.
            runtime_run_with(1, async move {
                let running = meridian::start_from(config, Some(path)).await?;
                reload_on_sighup(&running);
                wait_for_signal().await;
                // Read now: a reload may have changed it.
                let timeout = std::time::Duration::from_millis(
                    running.state.live.load().proxy.shutdown_timeout_ms,
                );
                tracing::info!("shutting down: draining sessions (a second signal exits at once)");
                tokio::select! {
                    _ = running.drain(timeout) => {}
                    _ = wait_for_signal() => tracing::warn!("second signal: exiting now"),
                }
                running.stop().await;
                Ok(())
            })
        }
        Command::Ctl {
            admin,
            token,
            json,
            action,
        } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(ctl::run(&admin, token.as_deref(), json, action))
        }
        Command::Demo { port, replicas } => {
            meridian::logging::init(meridian_config::LogFormat::Text);
            runtime_run(meridian::demo::run(port, replicas))
        }
    }
}

fn runtime_run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    runtime_run_with(0, fut)
}

/// Runs `fut` on a multi-threaded runtime with `threads` workers (0: one per core).
fn runtime_run_with(
    threads: usize,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP re-reads the configuration file and applies it (the outcome is logged: the changed
/// keys, the keys that need a restart, or the errors that kept the running configuration).
fn reload_on_sighup(running: &meridian::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Some(reloader) = running.state.reloader.get().cloned() else {
            return;
        };
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let r = reloader.clone();
                    // The outcome is logged by the reloader itself.
                    let _ = tokio::task::spawn_blocking(move || r.reload()).await;
                }
            });
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
