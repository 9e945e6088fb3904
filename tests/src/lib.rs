//! Harness for Piazza's black-box integration tests: real nodes (in-process, or as a separate
//! process that can be killed with SIGKILL) on loopback with real QUIC and TLS, real clients, and a
//! raw QUIC connection for sending bad bytes. The tests themselves are in `it/`.
//!
//! Every test calls [`init`] first (crypto provider, logging) and [`assert_no_warnings`] last: a
//! WARN or ERROR line from the node during a test fails it, unless the test expected it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]

pub mod swarm;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use piazza_client::{Client, ClientConfig, ClientEvent, EventStart};
use piazza_node::auth::TokenAuthority;
use piazza_node::{Config, NodeHandle};
use piazza_protocol::{Message, UserId, codec};
use tempfile::TempDir;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static INIT: Once = Once::new();
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the ring crypto provider and a log subscriber that also records WARN and ERROR lines.
pub fn init() {
    INIT.call_once(|| {
        piazza_client::install_crypto_provider();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .with(WarnCapture)
            .try_init();
    });
}

/// Fails if any WARN or ERROR line was logged since the last call (neon's rule).
pub fn assert_no_warnings() {
    let lines = std::mem::take(&mut *WARNINGS.lock().unwrap());
    assert!(
        lines.is_empty(),
        "unexpected WARN/ERROR log lines:\n{}",
        lines.join("\n")
    );
}

/// Takes the WARN and ERROR lines logged so far (for tests that expect some).
pub fn take_warnings() -> Vec<String> {
    std::mem::take(&mut *WARNINGS.lock().unwrap())
}

struct WarnCapture;

impl<S: Subscriber> Layer<S> for WarnCapture {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        // The rule is about the node's log; client-side warnings (a reconnect during shutdown) are
        // expected behaviour of the SDK.
        if *event.metadata().level() <= tracing::Level::WARN
            && event.metadata().target().starts_with("piazza_node")
        {
            let mut text = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    use std::fmt::Write as _;
                    let _ = write!(text, "{}={:?} ", field.name(), value);
                },
            );
            WARNINGS.lock().unwrap().push(format!(
                "{} {}: {text}",
                event.metadata().level(),
                event.metadata().target()
            ));
        }
    }
}

/// A node running in this process on ephemeral loopback ports.
pub struct TestNode {
    handle: Option<NodeHandle>,
    dir: TempDir,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub ca: PathBuf,
}

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_with(|_| {}).await
    }

    /// Starts a node in a fresh data directory after letting `tweak` adjust its configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestNode {
        TestNode::start_in(tempfile::tempdir().unwrap(), tweak).await
    }

    /// Starts a node on the data directory of a stopped one.
    pub async fn start_in_dir(dir: TempDir) -> TestNode {
        TestNode::start_in(dir, |_| {}).await
    }

    /// Starts a node on the data directory of a stopped one, with `tweak` adjusting its
    /// configuration.
    pub async fn start_in_dir_with(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestNode {
        TestNode::start_in(dir, tweak).await
    }

    async fn start_in(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestNode {
        init();
        let mut config = Config::default();
        config.node.data_dir = dir.path().to_owned();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
        tweak(&mut config);
        let handle = piazza_node::start(config).await.expect("start node");
        TestNode {
            addr: handle.client_addr(),
            admin: handle.admin_addr(),
            ca: handle.ca_file().unwrap().to_owned(),
            handle: Some(handle),
            dir,
        }
    }

    /// Conversation actors alive on this node.
    pub fn conversations_active(&self) -> usize {
        self.handle.as_ref().unwrap().conversations_active()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn token(&self, user: &str) -> String {
        self.handle
            .as_ref()
            .unwrap()
            .mint_token(&user.parse().unwrap(), 3600)
            .unwrap()
    }

    /// A client for `user` that receives only new events.
    pub async fn client(&self, user: &str) -> Client {
        self.client_with(user, "test", EventStart::Now).await
    }

    pub async fn client_with(&self, user: &str, device: &str, events: EventStart) -> Client {
        self.client_config(user, device, events, |_| {}).await
    }

    /// A client whose configuration `tweak` adjusts (for example a longer request timeout in
    /// tests that load the machine with thousands of connections).
    pub async fn client_config(
        &self,
        user: &str,
        device: &str,
        events: EventStart,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> Client {
        let mut config = ClientConfig::new(
            self.addr.to_string(),
            &self.ca,
            self.token(user),
            device.parse().unwrap(),
        );
        config.events = events;
        tweak(&mut config);
        Client::connect(config).await.expect("connect")
    }

    /// Graceful shutdown; returns the data directory so the node can be started again on it.
    pub async fn stop(mut self) -> TempDir {
        self.handle.take().unwrap().shutdown().await;
        self.dir
    }

    /// Shuts down and starts again on the same data directory (new ports).
    pub async fn restart(self) -> TestNode {
        let dir = self.stop().await;
        TestNode::start_in(dir, |_| {}).await
    }

    /// GETs a path from the admin server; returns (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }
}

/// A minimal HTTP/1.1 GET over TCP (the admin server speaks HTTP/1.1); returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("admin HTTP timed out");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A `piazza-node` process (the real binary), for tests that kill it.
pub struct NodeProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
}

impl NodeProcess {
    /// Starts the binary on `data_dir` with ephemeral ports and waits until it reports them.
    /// `bin` is the node binary: `env!("CARGO_BIN_EXE_piazza-test-node")` in an integration test.
    pub fn spawn(bin: &str, data_dir: &Path) -> NodeProcess {
        init();
        let mut child = Command::new(bin)
            .args(["--data-dir", data_dir.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn piazza-test-node");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = lines
                .next()
                .expect("node exited before reporting its ports")
                .unwrap();
            if let Some(rest) = line.trim().strip_prefix("clients (QUIC, ALPN piazza/1):") {
                addr = Some(rest.trim().parse().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("admin HTTP:") {
                let url = rest.split_whitespace().next().unwrap();
                let host = url
                    .trim_start_matches("http://")
                    .trim_end_matches("/healthz");
                admin = Some(host.parse().unwrap());
            }
        }
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        NodeProcess {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            data_dir: data_dir.to_owned(),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("tls/ca.pem")
    }

    pub fn token(&self, user: &str) -> String {
        let authority =
            TokenAuthority::load_or_generate(&self.data_dir.join("token-key.pk8")).unwrap();
        authority
            .mint(&user.parse().unwrap(), unix_now_s(), 3600)
            .unwrap()
    }

    pub async fn client(&self, user: &str, events: EventStart) -> Client {
        let mut config = ClientConfig::new(
            self.addr.to_string(),
            self.ca(),
            self.token(user),
            "proc".parse().unwrap(),
        );
        config.events = events;
        Client::connect(config)
            .await
            .expect("connect to node process")
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn user(name: &str) -> UserId {
    name.parse().unwrap()
}

/// Waits for the next message event, skipping others, or fails after `timeout`.
pub async fn next_message(client: &Client, timeout: Duration) -> Message {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .expect("timed out waiting for a message")
            .expect("event stream ended");
        if let ClientEvent::Message(message) = event {
            return message;
        }
    }
}

/// Collects message events until `n` arrived or `timeout` passed.
pub async fn collect_messages(client: &Client, n: usize, timeout: Duration) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    while messages.len() < n {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(ClientEvent::Message(m))) => messages.push(m),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    messages
}

pub fn text(message: &Message) -> &str {
    match &message.body {
        piazza_protocol::MessageBody::Text(t) => t,
        piazza_protocol::MessageBody::System(_) => "<system>",
        piazza_protocol::MessageBody::Update(_) => "<update>",
        piazza_protocol::MessageBody::Deleted => "<deleted>",
        piazza_protocol::MessageBody::Commerce(_) => "<commerce>",
        piazza_protocol::MessageBody::Media { caption, .. } => caption,
    }
}

/// A bare QUIC connection with the right ALPN and TLS, for sending arbitrary bytes.
pub struct RawConnection {
    pub connection: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl RawConnection {
    pub async fn connect(addr: SocketAddr, ca: &Path) -> RawConnection {
        RawConnection::connect_alpn(addr, ca, piazza_protocol::ALPN)
            .await
            .unwrap()
    }

    pub async fn connect_alpn(
        addr: SocketAddr,
        ca: &Path,
        alpn: &[u8],
    ) -> Result<RawConnection, String> {
        let crypto = client_crypto(ca, alpn);
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint
            .connect(addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(RawConnection {
            connection,
            _endpoint: endpoint,
        })
    }

    /// Opens a stream, writes `bytes`, finishes, and reads the response frame (None if the node
    /// sent none).
    pub async fn exchange(&self, bytes: &[u8]) -> Option<piazza_protocol::Response> {
        let (mut send, mut recv) = self.connection.open_bi().await.unwrap();
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        let body = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(4 << 20))
            .await
            .ok()?
            .ok()?;
        let mut decoder =
            piazza_protocol::FrameDecoder::new(piazza_protocol::limits::FRAME_BYTES_MAX);
        decoder.extend(&body);
        decoder.next_value().ok().flatten()
    }

    /// Sends one well-formed request.
    pub async fn request(
        &self,
        request: &piazza_protocol::Request,
    ) -> Option<piazza_protocol::Response> {
        self.exchange(&codec::encode_frame(request).unwrap()).await
    }
}

/// TLS for a bare QUIC client that trusts the node's CA and offers `alpn`.
pub fn client_crypto(ca: &Path, alpn: &[u8]) -> quinn::crypto::rustls::QuicClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()
}

/// A count from the environment variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A node for the thousands-of-connections tests (rate limits out of the way) and its owner-side
/// client, whose answers may queue behind a whole fan-out on two cores: it waits up to 60 s.
pub async fn swarm_node(owner: &str) -> (TestNode, Client) {
    let node = TestNode::start_with(|c| {
        c.limits.send_rate_per_s = 100_000;
        c.limits.send_burst = 100_000;
        c.limits.request_rate_per_s = 100_000;
        c.limits.request_burst = 100_000;
    })
    .await;
    let client = node
        .client_config(owner, "d", EventStart::Off, |c| {
            c.request_timeout = Duration::from_secs(60);
        })
        .await;
    (node, client)
}

/// The value of an unlabelled metric in Prometheus text, or 0 when absent.
pub fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
