//! What a [`crate::Client`] needs to know before it connects.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use piazza_protocol::{DeviceId, SyncCursor};

/// Default deadline of one request (and of the connect and `Hello` of one connection attempt).
/// Ten seconds is long for a loopback or LAN round trip and short enough that a user waiting on
/// the CLI notices a dead node.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How to reach a node and who to be there.
///
/// Build it with [`ClientConfig::new`] and adjust the public fields. The `Debug` output hides the
/// token.
#[derive(Clone)]
pub struct ClientConfig {
    /// The node's client address, `host:port` (`127.0.0.1:4433`, `localhost:4433`, `[::1]:4433`).
    pub server: String,
    /// PEM file with the certificate authority that signed the node's certificate (a node writes
    /// its dev CA to `<data-dir>/tls/ca.pem`).
    pub ca_file: PathBuf,
    /// The signed token naming the user (`piazza-node token --user NAME`).
    pub token: String,
    /// Which of the user's devices this client is.
    pub device: DeviceId,
    /// The TLS server name to verify the node's certificate against. `None`: the host part of
    /// `server` (an IP address is verified as an IP address).
    pub server_name: Option<String>,
    /// Deadline of every request, and of the QUIC handshake plus `Hello` of each connection.
    pub request_timeout: Duration,
    /// How hard to try to get a lost connection back.
    pub reconnect: ReconnectPolicy,
    /// Which messages [`crate::Client::next_event`] delivers.
    pub events: EventStart,
    /// The local address to send from (port chosen by the OS). `None`: the unspecified address of
    /// the server's family. A load generator spreads many connections over several loopback
    /// addresses with it, past one address's ephemeral ports.
    pub local_ip: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// A configuration with the defaults: 10 s request timeout, the default
    /// [`ReconnectPolicy`], and [`EventStart::Now`].
    pub fn new(
        server: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        token: impl Into<String>,
        device: DeviceId,
    ) -> ClientConfig {
        ClientConfig {
            server: server.into(),
            ca_file: ca_file.into(),
            token: token.into(),
            device,
            server_name: None,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            reconnect: ReconnectPolicy::default(),
            events: EventStart::Now,
            local_ip: None,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a bearer credential: it must not end up in logs through `{:?}`.
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("ca_file", &self.ca_file)
            .field("token", &"<redacted>")
            .field("device", &self.device)
            .field("server_name", &self.server_name)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect", &self.reconnect)
            .field("events", &self.events)
            .finish()
    }
}

/// Reconnect backoff: wait `initial_delay`, double it after every failed attempt up to
/// `max_delay`, and give up once `give_up_after` has passed since the connection was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Wait before the first attempt. 100 ms: a restarting node is rarely back sooner, and a
    /// user hardly notices the delay.
    pub initial_delay: Duration,
    /// Longest wait between attempts. 5 s keeps a reconnect prompt once the node is back
    /// without hammering a node that is down.
    pub max_delay: Duration,
    /// Total time to keep trying. After it, the client is closed: requests fail with
    /// [`crate::ClientError::ConnectionLost`] and [`crate::Client::next_event`] returns `None`.
    /// Zero disables reconnecting.
    pub give_up_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// Which messages the event stream ([`crate::Client::next_event`]) delivers.
///
/// Whatever the choice, each message is delivered at most once, in sequence order within its
/// conversation, and — except with [`EventStart::Off`] — without gaps: a gap in the live stream,
/// a `Resync` from the node or a reconnect makes the client `Sync` first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EventStart {
    /// Only messages stored after [`crate::Client::connect`] returns. Connecting costs one `Sync`
    /// pass over the user's stored messages (discarded) to learn every conversation's newest seq,
    /// so that a later reconnect knows where to resume each of them.
    #[default]
    Now,
    /// Every stored message first (a full `Sync` from the beginning), then live ones.
    Beginning,
    /// Messages after these cursors (saved earlier from [`crate::Client::cursors`]), then live
    /// ones. Conversations not named are delivered from the beginning.
    After(Vec<SyncCursor>),
    /// No messages: the node's events are read and dropped, and no `Sync` is ever run. For
    /// one-shot tools that only make requests. Receipts and typing are dropped too; only
    /// [`crate::ClientEvent::Reconnected`] is reported.
    Off,
}
