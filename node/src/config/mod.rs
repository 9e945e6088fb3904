//! Node configuration: defaults, a TOML file, `PIAZZA__SECTION__KEY` environment variables and
//! command-line flags, merged in that order (later wins).
//!
//! Every operational limit is a field here with a named default and a why-comment; wire limits live
//! in `piazza_protocol::limits` instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::payments::{PaymentsSection, ProviderKind};
pub use crate::sinks::{NatsSink, SinksSection, WebhookSink};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key is unknown or a value has the wrong type or range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole node configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`
    pub node: NodeSection,
    /// `[server]`
    pub server: ServerSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[auth]`
    pub auth: AuthSection,
    /// `[tls]`
    pub tls: TlsSection,
    /// `[media]`
    pub media: MediaSection,
    /// `[payments]`: the payment provider (the built-in sandbox by default).
    pub payments: PaymentsSection,
    /// `[sinks]`: webhooks and NATS JetStream receiving the commerce events (none by default).
    #[serde(default)]
    pub sinks: SinksSection,
    /// `[commerce]`: shops.
    pub commerce: CommerceSection,
}

/// `[node]`: identity and data.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Name of this node in logs, metrics and `Welcome`.
    pub name: String,
    /// Where the embedded store, TLS material and the token key live.
    pub data_dir: PathBuf,
}

/// `[server]`: sockets and transport.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// UDP address for client QUIC connections.
    pub listen: SocketAddr,
    /// TCP address for the admin HTTP server (health, readiness, metrics).
    pub admin_listen: SocketAddr,
    /// Requested UDP socket send and receive buffer size. Fan-out to many connections collapses with
    /// the kernel's default (~208 KiB); the kernel may clamp it (see `net.core.rmem_max`).
    pub udp_buffer_bytes: usize,
    /// A connection with no traffic for this long is closed. Clients keep alive every 10 s.
    pub idle_timeout_ms: u64,
    /// Concurrent bidirectional streams per connection, which is also the bound on in-flight
    /// requests per connection. Each open stream costs memory in quinn, so this is kept small.
    pub max_concurrent_requests: u32,
    /// Most client connections at once; the next one is refused.
    pub max_connections: u32,
    /// How long a new connection has to authenticate with `Hello`.
    pub hello_timeout_ms: u64,
    /// How long shutdown waits for connections to close and storage to flush.
    pub shutdown_timeout_ms: u64,
}

/// `[limits]`: operational bounds.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Sustained sends per second per connection (token bucket refill rate).
    pub send_rate_per_s: u32,
    /// Burst of sends per connection (token bucket capacity).
    pub send_burst: u32,
    /// Sustained requests of any kind per second per connection (sends also count here).
    pub request_rate_per_s: u32,
    /// Burst of requests per connection.
    pub request_burst: u32,
    /// Most conversation actors alive on this node; activating one more is refused with
    /// `Unavailable` (idle ones passivate, so this bounds memory, not users).
    pub conversations_active_max: usize,
    /// Events queued for one connection before it is told to resync instead of being waited for.
    pub session_outbound_queue_max: usize,
    /// Write batches queued for the storage writer; beyond this sends get `Unavailable`.
    pub storage_queue_max: usize,
    /// Most records committed in one group commit (one fsync).
    pub commit_batch_records_max: usize,
    /// Recent `client_msg_id`s remembered per conversation for deduplicating retries.
    pub dedup_window_max: usize,
    /// An idle conversation actor is passivated after this long.
    pub conversation_idle_ms: u64,
    /// Most conversations considered in one `Sync`.
    pub user_conversations_max: usize,
    /// How long a session waits for the actor that owns the data to answer.
    pub actor_call_timeout_ms: u64,
    /// Most members of one group.
    pub group_members_max: usize,
    /// Above this many members a group is "large": typing indicators, receipts and presence are
    /// suppressed.
    pub group_large_members: usize,
    /// Most subscribers of one channel (each costs ~100 bytes of memory while the channel is
    /// active).
    pub channel_subscribers_max: usize,
    /// How long after sending a message its sender may edit or delete it (owners of a group may
    /// delete any message at any time).
    pub edit_window_ms: u64,
}

/// `[auth]`: client tokens.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Ed25519 PKCS#8 private key used to sign tokens (`piazza-node token`) and to verify them.
    /// Empty: `<data_dir>/token-key.pk8`, generated on first start.
    pub signing_key_file: Option<PathBuf>,
    /// A raw 32-byte Ed25519 public key file. When set, the node only verifies tokens (a production
    /// deployment keeps the signing key elsewhere) and never generates a key.
    pub public_key_file: Option<PathBuf>,
    /// Default lifetime of tokens minted by `piazza-node token`.
    pub token_ttl_secs: u64,
}

/// `[tls]`: the server certificate.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain. Empty: `<data_dir>/tls/server.pem`, generated with a dev CA.
    pub cert_file: Option<PathBuf>,
    /// PEM private key. Empty: `<data_dir>/tls/server-key.pem`.
    pub key_file: Option<PathBuf>,
}

/// Default sustained send rate per connection: well above a human, low enough that one connection
/// cannot monopolise a node's commit budget (tens of thousands per second).
pub const SEND_RATE_PER_S_DEFAULT: u32 = 1000;
/// Default burst: two seconds' worth.
pub const SEND_BURST_DEFAULT: u32 = 2000;
/// Default request rate per connection: reads and receipts are cheaper than sends, so twice the
/// send rate.
pub const REQUEST_RATE_PER_S_DEFAULT: u32 = 2000;
/// Two seconds' worth.
pub const REQUEST_BURST_DEFAULT: u32 = 4000;
/// A conversation actor with a full dedup window is tens of KiB; a million fits in tens of GiB only
/// if idle ones did not passivate, so this is a safety net far above normal use.
pub const CONVERSATIONS_ACTIVE_MAX_DEFAULT: usize = 1_000_000;
/// One second of a busy group's traffic; beyond that the client catches up with `Sync`.
pub const SESSION_OUTBOUND_QUEUE_MAX_DEFAULT: usize = 1024;
/// About a second of appends at the target rate; bounds memory held for unwritten messages.
pub const STORAGE_QUEUE_MAX_DEFAULT: usize = 65_536;
/// The group-commit bench flattens out well before this; it bounds one transaction's size.
pub const COMMIT_BATCH_RECORDS_MAX_DEFAULT: usize = 4096;
/// Clients retry within seconds; a few thousand recent ids per conversation covers that.
pub const DEDUP_WINDOW_MAX_DEFAULT: usize = 4096;
/// One minute idle: re-activation costs one storage read.
pub const CONVERSATION_IDLE_MS_DEFAULT: u64 = 60_000;
/// A user in more conversations syncs the most recent ones first... (bounds one Sync's work).
pub const USER_CONVERSATIONS_MAX_DEFAULT: usize = 10_000;
/// Ten seconds: far above a commit (~ms); reaching it means the node is in trouble.
pub const ACTOR_CALL_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Telegram's supergroup limit; membership is held in memory by the group's actor.
pub const GROUP_MEMBERS_MAX_DEFAULT: usize = 200_000;
/// Typing and receipts to more than a thousand members cost more than they tell anyone.
pub const GROUP_LARGE_MEMBERS_DEFAULT: usize = 1000;
/// Default of [`Limits::channel_subscribers_max`].
pub const CHANNEL_SUBSCRIBERS_MAX_DEFAULT: usize = 10_000_000;
/// Two days, like Telegram's edit window in groups.
pub const EDIT_WINDOW_MS_DEFAULT: u64 = 48 * 3600 * 1000;
/// Four MiB, see `ServerSection::udp_buffer_bytes`.
pub const UDP_BUFFER_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// quinn's own default; clients send keep-alives at a third of it.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// 64 concurrent requests per connection is plenty for a device and keeps per-connection memory low.
pub const MAX_CONCURRENT_REQUESTS_DEFAULT: u32 = 64;
/// Memory per idle connection is tens of KiB; 100k connections fit comfortably in a few GiB.
pub const MAX_CONNECTIONS_DEFAULT: u32 = 100_000;
/// Ten seconds to send `Hello`.
pub const HELLO_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Ten seconds to shut down cleanly.
pub const SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// A day.
pub const TOKEN_TTL_SECS_DEFAULT: u64 = 24 * 3600;

const _: () = assert!(SEND_BURST_DEFAULT >= SEND_RATE_PER_S_DEFAULT);
const _: () = assert!(REQUEST_RATE_PER_S_DEFAULT >= SEND_RATE_PER_S_DEFAULT);
const _: () = assert!(COMMIT_BATCH_RECORDS_MAX_DEFAULT <= STORAGE_QUEUE_MAX_DEFAULT);

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            name: "piazza-1".into(),
            data_dir: PathBuf::from("./piazza-data"),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            udp_buffer_bytes: UDP_BUFFER_BYTES_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            hello_timeout_ms: HELLO_TIMEOUT_MS_DEFAULT,
            shutdown_timeout_ms: SHUTDOWN_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            send_rate_per_s: SEND_RATE_PER_S_DEFAULT,
            send_burst: SEND_BURST_DEFAULT,
            request_rate_per_s: REQUEST_RATE_PER_S_DEFAULT,
            request_burst: REQUEST_BURST_DEFAULT,
            conversations_active_max: CONVERSATIONS_ACTIVE_MAX_DEFAULT,
            session_outbound_queue_max: SESSION_OUTBOUND_QUEUE_MAX_DEFAULT,
            storage_queue_max: STORAGE_QUEUE_MAX_DEFAULT,
            commit_batch_records_max: COMMIT_BATCH_RECORDS_MAX_DEFAULT,
            dedup_window_max: DEDUP_WINDOW_MAX_DEFAULT,
            conversation_idle_ms: CONVERSATION_IDLE_MS_DEFAULT,
            user_conversations_max: USER_CONVERSATIONS_MAX_DEFAULT,
            actor_call_timeout_ms: ACTOR_CALL_TIMEOUT_MS_DEFAULT,
            edit_window_ms: EDIT_WINDOW_MS_DEFAULT,
            group_members_max: GROUP_MEMBERS_MAX_DEFAULT,
            group_large_members: GROUP_LARGE_MEMBERS_DEFAULT,
            channel_subscribers_max: CHANNEL_SUBSCRIBERS_MAX_DEFAULT,
        }
    }
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            signing_key_file: None,
            public_key_file: None,
            token_ttl_secs: TOKEN_TTL_SECS_DEFAULT,
        }
    }
}

/// `[media]`: uploads, downloads and blobs.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// Largest blob this node accepts, in bytes; at most the protocol's hard limit of 2 GiB.
    pub max_bytes: u64,
    /// An upload untouched for this long is abandoned: its bytes and metadata are deleted.
    pub upload_ttl_secs: u64,
    /// How often abandoned uploads are looked for (also once at start-up), 1..=86400.
    pub gc_interval_secs: u64,
    /// Uploads one user may have in progress at once; `BeginUpload` of one more is `TooLarge`.
    pub uploads_per_user_max: usize,
    /// Uploads being written, finished or collected at once on this node (each holds a lock and
    /// a running hash in memory); beyond it, uploads get `Unavailable`.
    pub uploads_active_max: usize,
    /// Concurrent upload streams (QUIC unidirectional streams) a connection may open.
    pub upload_streams_max: u32,
}

/// 100 MiB: photos, voice notes and short videos; large files need a deliberate setting.
pub const MEDIA_MAX_BYTES_DEFAULT: u64 = 100 * 1024 * 1024;
/// A day: a phone that lost its network overnight can still resume in the morning.
pub const UPLOAD_TTL_SECS_DEFAULT: u64 = 24 * 3600;
/// Ten minutes: garbage lives at most TTL plus this long, and a sweep is one directory walk.
pub const MEDIA_GC_INTERVAL_SECS_DEFAULT: u64 = 600;
/// Upper bound of `media.gc_interval_secs`: the GC must run at least daily.
pub const MEDIA_GC_INTERVAL_SECS_MAX: u64 = 24 * 3600;
/// A device uploads an album at a time; 16 covers that without letting one user fill the disk.
pub const UPLOADS_PER_USER_MAX_DEFAULT: usize = 16;
/// A slot is a few hundred bytes; 4096 concurrent uploads is far beyond one node's disk bandwidth.
pub const UPLOADS_ACTIVE_MAX_DEFAULT: usize = 4096;
/// An upload sends its streams one after another; four lets the next start while the last ends.
pub const UPLOAD_STREAMS_MAX_DEFAULT: u32 = 4;
/// Upper bound of `media.upload_streams_max`: each open stream costs receive-buffer memory.
pub const UPLOAD_STREAMS_MAX_MAX: u32 = 64;

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            max_bytes: MEDIA_MAX_BYTES_DEFAULT,
            upload_ttl_secs: UPLOAD_TTL_SECS_DEFAULT,
            gc_interval_secs: MEDIA_GC_INTERVAL_SECS_DEFAULT,
            uploads_per_user_max: UPLOADS_PER_USER_MAX_DEFAULT,
            uploads_active_max: UPLOADS_ACTIVE_MAX_DEFAULT,
            upload_streams_max: UPLOAD_STREAMS_MAX_DEFAULT,
        }
    }
}

/// `[commerce]`: shops.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommerceSection {
    /// Users who operate the node: only they may set a shop's verified badge.
    pub operators: Vec<String>,
    /// How long an unpaid order holds its stock, from placement (default a day).
    pub unpaid_order_ttl_secs: u64,
    /// How long a final order (completed, refunded, closed) stays in memory after its last
    /// change before it is archived to storage, where it can still be read but no longer
    /// changed (default 30 days). Memory pressure archives the oldest earlier.
    pub archive_after_secs: u64,
}

/// Default of `commerce.archive_after_secs`: 30 days.
pub const ARCHIVE_AFTER_SECS_DEFAULT: u64 = 30 * 24 * 60 * 60;

/// Default of `commerce.unpaid_order_ttl_secs`: a day.
pub const UNPAID_ORDER_TTL_SECS_DEFAULT: u64 = 24 * 60 * 60;

impl Default for CommerceSection {
    fn default() -> Self {
        CommerceSection {
            operators: Vec::new(),
            unpaid_order_ttl_secs: UNPAID_ORDER_TTL_SECS_DEFAULT,
            archive_after_secs: ARCHIVE_AFTER_SECS_DEFAULT,
        }
    }
}

/// Values given on the command line; they override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`
    pub admin_listen: Option<SocketAddr>,
}

/// Prefix of environment variables that set configuration keys: `PIAZZA__SERVER__LISTEN`.
pub const ENV_PREFIX: &str = "PIAZZA__";

impl Config {
    /// Loads the configuration: defaults, then the TOML file (if any), then `PIAZZA__SECTION__KEY`
    /// variables from `env`, then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (key, value) in env {
            let Some(path) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let [section, field] = parts.as_slice() else {
                return Err(ConfigError::Invalid(format!(
                    "{key}: expected {ENV_PREFIX}SECTION__KEY"
                )));
            };
            set_key(&mut table, section, field, env_value(&value));
        }
        let str_value = |v: String| toml::Value::String(v);
        if let Some(dir) = &overrides.data_dir {
            set_key(
                &mut table,
                "node",
                "data_dir",
                str_value(dir.display().to_string()),
            );
        }
        if let Some(addr) = overrides.listen {
            set_key(&mut table, "server", "listen", str_value(addr.to_string()));
        }
        if let Some(addr) = overrides.admin_listen {
            set_key(
                &mut table,
                "server",
                "admin_listen",
                str_value(addr.to_string()),
            );
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let nonzero = [
            ("limits.send_rate_per_s", u64::from(l.send_rate_per_s)),
            ("limits.send_burst", u64::from(l.send_burst)),
            ("limits.request_rate_per_s", u64::from(l.request_rate_per_s)),
            ("limits.request_burst", u64::from(l.request_burst)),
            (
                "limits.conversations_active_max",
                l.conversations_active_max as u64,
            ),
            (
                "limits.session_outbound_queue_max",
                l.session_outbound_queue_max as u64,
            ),
            ("limits.storage_queue_max", l.storage_queue_max as u64),
            (
                "limits.commit_batch_records_max",
                l.commit_batch_records_max as u64,
            ),
            ("limits.dedup_window_max", l.dedup_window_max as u64),
            (
                "limits.user_conversations_max",
                l.user_conversations_max as u64,
            ),
            (
                "server.max_concurrent_requests",
                u64::from(self.server.max_concurrent_requests),
            ),
            (
                "server.max_connections",
                u64::from(self.server.max_connections),
            ),
        ];
        for (name, value) in nonzero {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        self.media.validate()?;
        self.payments.validate().map_err(ConfigError::Invalid)?;
        self.sinks.validate().map_err(ConfigError::Invalid)?;
        if self.commerce.unpaid_order_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "commerce.unpaid_order_ttl_secs must be at least 1".into(),
            ));
        }
        for operator in &self.commerce.operators {
            if operator.parse::<piazza_protocol::UserId>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "commerce.operators: {operator:?} is not a user id"
                )));
            }
        }
        if self.node.name.is_empty() {
            return Err(ConfigError::Invalid("node.name must not be empty".into()));
        }
        Ok(())
    }

    /// Path of the token signing key.
    pub fn signing_key_path(&self) -> PathBuf {
        self.auth
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("token-key.pk8"))
    }

    /// Directory of generated TLS material.
    pub fn tls_dir(&self) -> PathBuf {
        self.node.data_dir.join("tls")
    }
}

impl MediaSection {
    fn validate(&self) -> Result<(), ConfigError> {
        use piazza_protocol::limits::MEDIA_BYTES_HARD_MAX;
        let in_range = [
            ("media.max_bytes", self.max_bytes, MEDIA_BYTES_HARD_MAX),
            ("media.upload_ttl_secs", self.upload_ttl_secs, u64::MAX),
            (
                "media.gc_interval_secs",
                self.gc_interval_secs,
                MEDIA_GC_INTERVAL_SECS_MAX,
            ),
            (
                "media.uploads_per_user_max",
                self.uploads_per_user_max as u64,
                u64::MAX,
            ),
            (
                "media.uploads_active_max",
                self.uploads_active_max as u64,
                u64::MAX,
            ),
            (
                "media.upload_streams_max",
                u64::from(self.upload_streams_max),
                u64::from(UPLOAD_STREAMS_MAX_MAX),
            ),
        ];
        for (name, value, max) in in_range {
            if value == 0 || value > max {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between 1 and {max}"
                )));
            }
        }
        Ok(())
    }
}

/// Environment values are typed by their look: integers and booleans become TOML integers and
/// booleans, everything else a string (so `PIAZZA__SERVER__LISTEN=127.0.0.1:5000` works).
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn set_key(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(inner) = entry {
        inner.insert(key.to_owned(), value);
    } else {
        // A scalar where a section belongs: replace it so deserialization reports the real key.
        let mut inner = toml::Table::new();
        inner.insert(key.to_owned(), value);
        *entry = toml::Value::Table(inner);
    }
}

#[cfg(test)]
mod tests;
