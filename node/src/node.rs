//! A running node: what every actor shares ([`NodeContext`]), start-up and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use piazza_protocol::close_code;
use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actors::relay::{Relay, RelayMsg, SessionId};
use crate::actors::supervisor::Supervisor;
use crate::auth::{AuthError, TokenAuthority};
use crate::cluster::placement::Placement;
use crate::config::Config;
use crate::storage::{EmbeddedStorage, Storage, StorageError};
use crate::transport::{self, tls};

/// What every actor and connection of a node shares.
#[derive(Debug)]
pub(crate) struct NodeContext {
    pub(crate) config: Config,
    /// Distinguishes node instances in one process (tests run several) in the actor registry.
    pub(crate) instance: u64,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) media: Arc<crate::media::Media>,
    pub(crate) tokens: TokenAuthority,
    pub(crate) relay: ActorRef<RelayMsg>,
    /// Parent of every conversation and session actor.
    pub(crate) supervisor: ActorCell,
    pub(crate) placement: Placement,
    next_session: AtomicU64,
    /// Live conversation actors, bounded by `limits.conversations_active_max`.
    pub(crate) conversations_active: std::sync::atomic::AtomicUsize,
    /// False while starting and once shutdown begins.
    pub(crate) ready: AtomicBool,
    /// Wakes the scheduler of channel posts when a post is scheduled.
    pub(crate) scheduler: Arc<tokio::sync::Notify>,
    /// Shops: staff rosters, the payment provider, the event sinks.
    pub(crate) shops: crate::actors::shop::Shops,
}

impl NodeContext {
    pub(crate) fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn group_members_max(&self) -> usize {
        self.config.limits.group_members_max
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.storage.is_healthy()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material could not be generated or loaded.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The token key could not be loaded or generated.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
    /// The store could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The media directories could not be opened.
    #[error("media: {0}")]
    Media(String),
    /// An actor could not be started.
    #[error("actor: {0}")]
    Actor(String),
}

/// A started node. Dropping it does not stop it; call [`NodeHandle::shutdown`].
#[derive(Debug)]
pub struct NodeHandle {
    ctx: Arc<NodeContext>,
    endpoint: transport::Endpoint,
    client_addr: SocketAddr,
    admin_addr: SocketAddr,
    ca_file: Option<PathBuf>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts a node with `config`: storage, TLS, actors, the QUIC endpoint and the admin server.
pub async fn start(config: Config) -> Result<NodeHandle, StartError> {
    tls::install_crypto_provider();
    // Install the metrics recorder before anything records a metric.
    let _ = crate::telemetry::prometheus();
    std::fs::create_dir_all(&config.node.data_dir)
        .map_err(|e| StartError::Storage(StorageError::Engine(format!("data dir: {e}"))))?;
    let (certs, key, ca_file) = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => (tls::load_certs(cert)?, tls::load_key(key)?, None),
        _ => {
            let paths = tls::ensure_dev_material(&config.tls_dir(), &[])?;
            (
                tls::load_certs(&paths.server_cert)?,
                tls::load_key(&paths.server_key)?,
                Some(paths.ca_cert),
            )
        }
    };
    let tokens = match &config.auth.public_key_file {
        Some(public) => TokenAuthority::load_public(public)?,
        None => TokenAuthority::load_or_generate(&config.signing_key_path())?,
    };
    let storage: Arc<dyn Storage> = Arc::new(EmbeddedStorage::open(
        &config.node.data_dir,
        config.limits.storage_queue_max,
        config.limits.commit_batch_records_max,
    )?);
    let media = crate::media::Media::open(&config.node.data_dir, &config.media)
        .map(Arc::new)
        .map_err(|e| StartError::Media(e.to_string()))?;
    let (supervisor, _) = Actor::spawn(None, Supervisor, ())
        .await
        .map_err(|e| StartError::Actor(e.to_string()))?;
    let (relay, _) = Actor::spawn_linked(None, Relay, (), supervisor.get_cell())
        .await
        .map_err(|e| StartError::Actor(e.to_string()))?;
    static INSTANCES: AtomicU64 = AtomicU64::new(1);
    let ctx = Arc::new(NodeContext {
        placement: Placement::single(&config.node.name),
        instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        storage,
        media,
        tokens,
        relay,
        supervisor: supervisor.get_cell(),
        next_session: AtomicU64::new(1),
        conversations_active: std::sync::atomic::AtomicUsize::new(0),
        ready: AtomicBool::new(false),
        scheduler: Arc::new(tokio::sync::Notify::new()),
        shops: crate::actors::shop::Shops::default(),
        config,
    });
    let (inbound_tx, inbound_rx) = tokio::sync::mpsc::channel(crate::payments::INBOUND_QUEUE_MAX);
    let provider = crate::payments::build(&ctx.config.payments, inbound_tx.clone())
        .map_err(|e| StartError::Actor(format!("payments: {e:#}")))?;
    let _ = ctx.shops.provider.set(provider.clone());
    let payments = crate::payments::PaymentsHandle {
        provider,
        inbound: inbound_tx,
    };

    let server_tls = tls::server_config(certs, key, piazza_protocol::ALPN)?;
    let listen = ctx.config.server.listen;
    let endpoint = transport::bind_endpoint(
        &ctx.config.server,
        ctx.config.media.upload_streams_max,
        server_tls,
    )
    .map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let client_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let admin_listen = ctx.config.server.admin_listen;
    let admin_listener = tokio::net::TcpListener::bind(admin_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: admin_listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| StartError::Bind {
            addr: admin_listen,
            source,
        })?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let sinks = crate::sinks::start(&ctx.config.sinks, ctx.storage.clone(), shutdown_rx.clone())
        .map_err(|e| StartError::Actor(format!("sinks: {e:#}")))?;
    let _ = ctx.shops.sinks.set(sinks);
    let tasks = vec![
        tokio::spawn(transport::serve(
            endpoint.clone(),
            ctx.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(crate::admin::serve(
            admin_listener,
            ctx.clone(),
            Some(payments),
            shutdown_rx.clone(),
        )),
        tokio::spawn(crate::actors::shop::run_waker(
            ctx.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(crate::actors::shop::route_notifications(
            ctx.clone(),
            inbound_rx,
            shutdown_rx.clone(),
        )),
        tokio::spawn(crate::actors::scheduler::run(
            ctx.clone(),
            shutdown_rx.clone(),
        )),
        tokio::spawn(crate::media::run_gc(ctx.media.clone(), shutdown_rx)),
    ];
    ctx.ready.store(true, Ordering::Release);
    tracing::info!(node = %ctx.config.node.name, %client_addr, %admin_addr, "node started");
    Ok(NodeHandle {
        ctx,
        endpoint,
        client_addr,
        admin_addr,
        ca_file,
        shutdown_tx,
        tasks,
    })
}

impl NodeHandle {
    /// The bound QUIC address (useful with port 0).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The generated dev CA certificate clients should trust, if the node generated its TLS
    /// material.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// Conversation actors alive on this node right now (the metric of the same name is
    /// process-wide; this is this node's own count).
    pub fn conversations_active(&self) -> usize {
        self.ctx.conversations_active.load(Ordering::Relaxed)
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.ctx.config
    }

    /// Mints a client token with the node's key (for tests and tools).
    pub fn mint_token(
        &self,
        user: &piazza_protocol::UserId,
        ttl_s: u64,
    ) -> Result<String, AuthError> {
        self.ctx.tokens.mint(user, now_ms() / 1000, ttl_s)
    }

    /// Graceful shutdown: stop accepting, close every connection with a reason, flush storage.
    pub async fn shutdown(self) {
        tracing::info!(node = %self.ctx.config.node.name, "shutting down");
        self.ctx.ready.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        self.endpoint.set_server_config(None);
        self.endpoint
            .close(close_code::SHUTDOWN.into(), b"shutting down");
        let timeout = Duration::from_millis(self.ctx.config.server.shutdown_timeout_ms);
        let _ = tokio::time::timeout(timeout, self.endpoint.wait_idle()).await;
        for task in self.tasks {
            task.abort();
        }
        // The event sinks read and write storage: they stop before it closes.
        if let Some(sinks) = self.ctx.shops.sinks.get() {
            let _ = tokio::time::timeout(timeout, sinks.stopped()).await;
        }
        // Sessions and conversations stop (queued messages are dropped; their senders see errors and
        // retry elsewhere) before storage closes, so nothing submits after the final commit.
        self.ctx
            .supervisor
            .stop_children_and_wait(Some("shutdown".into()), Some(timeout))
            .await;
        // Commits everything already queued; acks that could not be delivered are recovered by
        // clients retrying with the same client_msg_id.
        let storage = self.ctx.storage.clone();
        match tokio::task::spawn_blocking(move || storage.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "storage did not close cleanly"),
            Err(e) => tracing::error!(error = %e, "storage close task failed"),
        }
        self.ctx.supervisor.stop(None);
        tracing::info!(node = %self.ctx.config.node.name, "stopped");
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random 64-bit number from the OS.
pub(crate) fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The OS random source failing is not recoverable in any useful way; fall back to the clock so
    // callers (error ids, group ids which are checked for collisions) still get a value.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return now_ms() ^ 0x9e37_79b9_7f4a_7c15;
    }
    u64::from_be_bytes(bytes)
}
