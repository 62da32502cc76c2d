//! `coffer server`: storage, core and listeners brought up in order, and torn down gracefully on
//! SIGINT/SIGTERM (in-flight requests finish; new connections are refused).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use coffer_core::{Core, CoreConfig, Registry, SecretString};
use coffer_storage::{
    Backend, CachedBackend, MemoryBackend, PostgresBackend, SqliteBackend, SqliteOptions,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;

use crate::config::{ListenerConfig, LogFormat, ServerConfig, StorageConfig};
use crate::http::{self, ConnInfo, Lifeline};

pub(crate) struct DevOptions {
    pub root_token_id: Option<String>,
}

pub(crate) fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,rustls=warn"))
    });
    use std::io::IsTerminal as _;
    // Colour only for a person at a terminal, never into files or the journal.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Standard => b.try_init(),
    };
}

/// The storage, and its HA lock when HA mode is on.
type Storage = (Arc<dyn Backend>, Option<Arc<dyn coffer_storage::ha::HaLock>>);

async fn open_storage(cfg: &StorageConfig) -> Result<Storage> {
    if let StorageConfig::Postgresql(opts) = cfg
        && opts.ha.is_some()
    {
        let db = PostgresBackend::connect(opts).await.context("cannot open postgresql storage")?;
        tracing::info!(target = db.target(), table = %opts.table, "postgresql storage open, HA mode");
        let lock: Option<Arc<dyn coffer_storage::ha::HaLock>> =
            db.ha_lock().map(|l| l as Arc<dyn coffer_storage::ha::HaLock>);
        // No read cache: other nodes write the same table.
        return Ok((Arc::new(db), lock));
    }
    let backend: Arc<dyn Backend> = match cfg {
        StorageConfig::Inmem => Arc::new(MemoryBackend::new()),
        StorageConfig::Sqlite { path, synchronous } => {
            let mut opts = SqliteOptions::new(path);
            opts.synchronous = SqliteOptions::parse_synchronous(synchronous)?;
            let db = SqliteBackend::open(&opts)
                .with_context(|| format!("cannot open sqlite storage at {}", path.display()))?;
            // This process is the file's only writer, so a cache of its (encrypted) values is
            // exact: reads of hot keys skip SQLite.
            Arc::new(CachedBackend::new(Arc::new(db), READ_CACHE_ENTRIES))
        }
        StorageConfig::Postgresql(opts) => {
            // The error names host:port/database and the server's reason, never the password.
            let db =
                PostgresBackend::connect(opts).await.context("cannot open postgresql storage")?;
            tracing::info!(target = db.target(), table = %opts.table, "postgresql storage open");
            // Single node: this process is the table's only writer, so the cache is exact, as
            // for sqlite. HA mode (above) has none.
            Arc::new(CachedBackend::new(Arc::new(db), READ_CACHE_ENTRIES))
        }
    };
    Ok((backend, None))
}

/// The seal stanza's key material, read now (a key file readable by group or others is
/// refused, as TLS keys are).
fn load_seal(s: &crate::config::SealStanza) -> Result<Arc<dyn coffer_barrier::KeyWrapper>> {
    use crate::config::{KeySource, SealStanza};
    use base64::Engine as _;
    let read = |(id, src): &(String, KeySource)| -> Result<(String, zeroize::Zeroizing<Vec<u8>>)> {
        let text = |t: &str| -> Result<zeroize::Zeroizing<Vec<u8>>> {
            let t = t.trim();
            coffer_core::hex::unhex(t)
                .or_else(|| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .map(zeroize::Zeroizing::new)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "static seal key {id:?} is neither 32 raw bytes, hex nor base64"
                    )
                })
        };
        let key = match src {
            KeySource::File(p) => {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(p)
                    .with_context(|| format!("cannot read static seal key file {}", p.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    anyhow::bail!(
                        "static seal key file {} is readable by group or others (mode {:o}); run: chmod 600 {}",
                        p.display(),
                        mode & 0o777,
                        p.display()
                    );
                }
                let raw = zeroize::Zeroizing::new(
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
                );
                if raw.len() == 32 { raw } else { text(&String::from_utf8_lossy(&raw))? }
            }
            KeySource::Env(var) => {
                let v = zeroize::Zeroizing::new(std::env::var(var).with_context(|| {
                    format!("static seal key {id:?}: environment variable {var} is not set")
                })?);
                text(&v)?
            }
            KeySource::Inline(v) => text(v)?,
        };
        Ok((id.clone(), key))
    };
    match s {
        SealStanza::Static { current, previous } => {
            let (id, key) = read(current)?;
            let previous = previous.as_ref().map(read).transpose()?;
            Ok(Arc::new(coffer_barrier::StaticSeal::new(id, key, previous)?))
        }
        SealStanza::Transit(t) => {
            let seal = crate::seal_transit::TransitSeal::new(t)?;
            seal.start_renewal();
            Ok(seal)
        }
    }
}

/// The seal type the enabled seal stanza names.
fn new_seal_type(cfg: &ServerConfig) -> &'static str {
    match &cfg.seal {
        Some(crate::config::SealStanza::Static { .. }) => "static",
        Some(crate::config::SealStanza::Transit(_)) => "transit",
        None => "shamir",
    }
}

/// Until the first success: auto-unseal as soon as the storage is initialized (by this node or,
/// in HA, another). A seal after that stays until a restart, as in Vault.
///
/// Never silent: each new error is logged (the same one again at most once a minute), a try
/// that has not finished after [`AUTO_UNSEAL_SLOW`] is logged as still waiting (the seal's own
/// calls are bounded, see `seal_transit`; this also covers the storage), and success after
/// failures says so.
async fn auto_unseal_loop(core: Arc<Core>) {
    let mut failures = 0u32;
    let mut last: Option<(String, std::time::Instant)> = None;
    loop {
        let started = std::time::Instant::now();
        let attempt = core.auto_unseal();
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                r = &mut attempt => break r,
                _ = tokio::time::sleep(AUTO_UNSEAL_SLOW) => tracing::warn!(
                    waiting_seconds = started.elapsed().as_secs(),
                    "auto-unseal is still waiting for its seal or its storage to answer"
                ),
            }
        };
        match result {
            Ok(true) => {
                if failures > 0 {
                    tracing::info!(failures, "auto-unseal succeeded after failed tries");
                }
                return;
            }
            Ok(false) => {}
            Err(e) => {
                failures += 1;
                let error = e.to_string();
                let repeat = last
                    .as_ref()
                    .is_some_and(|(m, at)| *m == error && at.elapsed() < Duration::from_secs(60));
                if !repeat {
                    tracing::error!(%error, failures, "auto-unseal failed; retrying every 5 s");
                    last = Some((error, std::time::Instant::now()));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(if failures > 0 { 5 } else { 1 })).await;
    }
}

/// How long one auto-unseal try runs before the log says it is still waiting.
const AUTO_UNSEAL_SLOW: Duration = Duration::from_secs(10);

/// What this node says of itself: to the others in HA mode, and in `sys/ha-status`.
fn advert(
    cfg: &ServerConfig,
    bound: &[(TcpListener, Option<Arc<rustls::ServerConfig>>, ListenerConfig)],
) -> coffer_storage::ha::Advert {
    let api_addr = cfg.api_addr.clone().unwrap_or_else(|| {
        bound
            .first()
            .and_then(|(s, tls, _)| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                s.local_addr().ok().map(|a| format!("{scheme}://{a}"))
            })
            .unwrap_or_default()
    });
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    coffer_storage::ha::Advert {
        api_addr,
        cluster_addr: cfg.cluster_addr.clone().unwrap_or_default(),
        hostname,
    }
}

/// Entries per cache generation (two generations at most are held).
const READ_CACHE_ENTRIES: usize = 16 * 1024;

pub(crate) async fn run(cfg: ServerConfig, dev: Option<DevOptions>) -> Result<()> {
    // Bind every listener before announcing anything, so a port conflict fails the start.
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        let tls = match &l.tls {
            Some(t) => Some(crate::tls::server_config(t)?),
            None => None,
        };
        let sock = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("cannot listen on {}", l.address))?;
        bound.push((sock, tls, l.clone()));
    }

    // Storage last: a bad TLS file or a busy port must not leave a fresh database behind.
    let (storage, ha_lock) = open_storage(&cfg.storage).await?;
    // Identity tokens name this as their issuer; without `api_addr`, the first listener.
    let api_addr = match (&cfg.api_addr, bound.first()) {
        (Some(a), _) => a.clone(),
        (None, Some((sock, tls, _))) => {
            format!("{}://{}", if tls.is_some() { "https" } else { "http" }, sock.local_addr()?)
        }
        (None, None) => String::new(),
    };
    let node = advert(&cfg, &bound);
    let mut registry = Registry::new();
    coffer_engines::register_builtins(&mut registry);
    coffer_auth::register_builtins(&mut registry);
    let core = Core::new(
        storage,
        registry,
        CoreConfig {
            default_lease_ttl: cfg.default_lease_ttl,
            max_lease_ttl: cfg.max_lease_ttl,
            login_limit: cfg.login_limit,
            chaos: cfg.chaos.clone(),
            api_addr,
            prometheus_retention: cfg.prometheus_retention,
            sanitized_config: cfg.sanitized(),
            node: node.clone(),
            detect: cfg.detect.clone(),
        },
    );
    core.set_webhook_sender(crate::webhook::Sender::from_config(&cfg.detect)?);
    match &cfg.seal {
        // `disabled = true`: the seal only opens the storage once more, to migrate away from it.
        Some(seal) if cfg.seal_disabled => core.set_migration_from_seal(load_seal(seal)?),
        Some(seal) => {
            core.set_auto_seal(load_seal(seal)?);
            // Two stanzas: `unseal -migrate` moves the storage from the disabled one to this one.
            if let Some(from) = &cfg.seal_from {
                core.set_migration_from_seal(load_seal(from)?);
            }
        }
        None => {}
    }
    // HA: the election, and (with cluster_addr) the listener standbys forward requests to.
    let mut cluster_listener = None;
    if let Some(lock) = ha_lock {
        core.enable_ha(lock, node);
        // Standby reads: a replica kept current by the change feed of the same database.
        if let StorageConfig::Postgresql(o) = &cfg.storage
            && let Some(bound) = o.ha.as_ref().and_then(|h| h.standby_max_staleness)
        {
            let (url, table) = (o.connection_url.clone(), o.table.clone());
            let open: coffer_core::ha::replica::FeedOpener = Arc::new(move |on_change| {
                let (url, table) = (url.clone(), table.clone());
                Box::pin(
                    async move { coffer_storage::ChangeFeed::open(&url, &table, on_change).await },
                )
            });
            core.enable_standby_reads(bound, open);
        }
        if let Some(addr) = &cfg.cluster_addr {
            let at = crate::cluster::socket_addr(addr)?;
            let sock = TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on cluster_addr {at}"))?;
            let max = cfg.listeners.iter().map(|l| l.max_request_size).max().unwrap_or_default();
            cluster_listener = Some((sock, crate::cluster::Cluster::new(core.clone(), max)));
        }
    }

    let dev_init = match &dev {
        Some(d) => {
            let init = core.dev_setup(d.root_token_id.clone().map(SecretString::new)).await?;
            core.mount_secrets("secret", "kv", "key/value secret storage", &[("version", "2")])
                .await?;
            Some(init)
        }
        None => None,
    };

    println!("==> Coffer server configuration:\n");
    println!(
        "{:>20}: {}",
        "Storage",
        match &cfg.storage {
            StorageConfig::Inmem => "inmem".to_owned(),
            StorageConfig::Sqlite { path, .. } =>
                format!("sqlite (path: {:?})", path.display().to_string()),
            StorageConfig::Postgresql(o) => format!(
                "postgresql (target: {:?}, table: {:?})",
                o.target().unwrap_or_default(),
                o.table
            ),
        }
    );
    for (i, (sock, tls, _)) in bound.iter().enumerate() {
        let addr = sock.local_addr()?;
        println!(
            "{:>20}: tcp (addr: \"{addr}\", tls: \"{}\")",
            format!("Listener {}", i + 1),
            if tls.is_some() { "enabled" } else { "disabled" }
        );
    }
    if let StorageConfig::Postgresql(o) = &cfg.storage
        && let Some(h) = &o.ha
    {
        println!(
            "{:>20}: postgresql (ha_table: {:?}, lock ttl: {}s)",
            "HA Storage",
            h.table,
            h.lock_ttl.as_secs()
        );
    }
    println!("{:>20}: {}", "Version", env!("CARGO_PKG_VERSION"));
    if let Some(init) = &dev_init {
        use base64::Engine as _;
        let addr = bound
            .first()
            .map(|(s, _, _)| s.local_addr().map(|a| a.to_string()).unwrap_or_default())
            .unwrap_or_default();
        println!(
            "\nWARNING! dev mode is enabled! In this mode, Coffer runs entirely in-memory,\n\
             starts unsealed with a single unseal key, and prints its root token.\n\
             Everything is lost when it stops. NEVER use dev mode in production.\n\n\
             You may need to set the following environment variable:\n\n    \
             $ export COFFER_ADDR='http://{addr}'\n\n\
             The unseal key and root token are displayed below in case you want to\n\
             seal/unseal the server or re-authenticate.\n\n\
             Unseal Key: {}\nRoot Token: {}\n\n\
             Development mode should NOT be used in production installations!\n",
            base64::engine::general_purpose::STANDARD
                .encode(init.keys.first().map(|k| k.as_slice()).unwrap_or_default()),
            init.root_token.expose(),
        );
    } else {
        let st = core.seal_status().await?;
        if cfg.seal_from.is_some() && st.migration {
            println!(
                "\nSeal migration: the storage's seal stanza is disabled; run `coffer operator unseal -migrate` with {} recovery key shares to move it to the {} seal.",
                st.threshold,
                new_seal_type(&cfg)
            );
        } else if cfg.seal_disabled {
            println!(
                "\nSeal migration: the seal stanza is disabled; run `coffer operator unseal -migrate` with {} recovery key shares to move to Shamir shares.",
                st.threshold
            );
        } else if st.seal_type != "shamir" {
            println!(
                "\nAuto-unseal ({}): the server unseals itself once initialized (sys/init with recovery_shares and recovery_threshold).",
                st.seal_type
            );
        } else if !st.initialized {
            println!("\nThe server is not initialized: run `coffer operator init`.");
        } else {
            println!(
                "\nThe server is sealed: run `coffer operator unseal` with {} of {} key shares.",
                st.threshold, st.shares
            );
        }
    }
    // Handlers first: a supervisor may signal as soon as the pid file or the banner appears, and
    // an unhandled SIGTERM or SIGHUP would end the process without its clean stop.
    let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    if let Some(p) = &cfg.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid_file {}", p.display()))?;
    }
    println!("\n==> Coffer server started! Log data will stream in below:\n");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let forwarder = cluster_listener.as_ref().map(|(_, c)| c.clone());
    for (sock, tls, l) in bound {
        tasks.push(tokio::spawn(serve(
            sock,
            tls,
            l,
            core.clone(),
            forwarder.clone(),
            stop_rx.clone(),
        )));
    }
    if let Some((sock, cluster)) = cluster_listener {
        let limits = cfg.listeners.first().map(|l| {
            http::BodyLimits::new(l.max_request_size, l.read_timeout, l.max_buffered_request_bytes)
        });
        if let Some(limits) = limits {
            let app = http::router(core.clone(), limits);
            tasks.push(tokio::spawn(crate::cluster::serve(sock, cluster, app, stop_rx.clone())));
        }
    }
    if cfg.seal.is_some() && !cfg.seal_disabled {
        tokio::spawn(auto_unseal_loop(core.clone()));
    }
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::warn!(
                "SIGHUP received: Coffer has nothing to reload; restart it to apply configuration changes"
            );
        }
    });
    shutdown.await;
    tracing::info!("shutdown signal received; finishing in-flight requests");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let sealed = core.seal().await;
    if let Some(p) = &cfg.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(sealed?)
}

/// Resolves on Ctrl-C or SIGTERM; both are handled from the moment this returns.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
    })
}

async fn serve(
    sock: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    cfg: ListenerConfig,
    core: Arc<Core>,
    forwarder: Option<Arc<crate::cluster::Cluster>>,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection (and WebSocket) holds a sender; when all are gone, the listener is done.
    let (alive, mut all_gone) = mpsc::channel::<()>(1);
    let app = http::router(
        core,
        http::BodyLimits::new(
            cfg.max_request_size,
            cfg.read_timeout,
            cfg.max_buffered_request_bytes,
        ),
    );
    // HA standbys hand requests to the active node (cluster.rs).
    let app = match forwarder {
        Some(f) => app.layer(axum::middleware::from_fn_with_state(f, crate::cluster::forward)),
        None => app,
    };
    // Outside the forwarding: a standby takes the client's address from the proxy's header
    // before it hands the request on.
    let app = match &cfg.forwarded_for {
        Some(x) => app.layer(axum::middleware::from_fn_with_state(
            Arc::new(x.clone()),
            http::forwarded_for_layer,
        )),
        None => app,
    };
    let header_timeout = cfg.read_header_timeout;
    let unauthenticated_metrics = cfg.unauthenticated_metrics_access;
    let unauthed = cfg.unauthed;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, remote_addr) = tokio::select! {
            r = sock.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let lifeline = Lifeline::new(stop.clone(), alive.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
            match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote_addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let chain = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.to_vec()).collect())
                        .unwrap_or_default();
                    let info = ConnInfo {
                        remote_addr,
                        client_cert_chain: chain,
                        lifeline,
                        unauthenticated_metrics,
                        unauthed,
                        token_memo: Some(Arc::default()),
                    };
                    serve_conn(TokioIo::new(tls), info, app, &builder).await;
                }
                None => {
                    let info = ConnInfo {
                        remote_addr,
                        client_cert_chain: Vec::new(),
                        lifeline,
                        unauthenticated_metrics,
                        unauthed,
                        token_memo: Some(Arc::default()),
                    };
                    serve_conn(TokioIo::new(stream), info, app, &builder).await;
                }
            }
        });
    }
    drop(sock);
    drop(alive);
    if tokio::time::timeout(Duration::from_secs(30), all_gone.recv()).await.is_err() {
        tracing::warn!("connections still open after 30 s; closing them");
    }
}

/// Serves one connection, with what is known of its peer attached to every request on it, until
/// it ends or is upgraded (a WebSocket then lives on in its own task); when the listener stops,
/// in-flight requests finish and the connection closes.
async fn serve_conn<I>(
    io: I,
    info: ConnInfo,
    app: axum::Router,
    builder: &hyper::server::conn::http1::Builder,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let lifeline = info.lifeline.clone();
    let svc = app.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
        r.extensions_mut().insert(info.clone());
        r
    });
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = lifeline.stopping() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
