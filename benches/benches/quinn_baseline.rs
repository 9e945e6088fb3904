//! Raw quinn on this machine: what QUIC itself costs, with no Piazza logic, so the node's figures
//! can be read against a floor. Loopback, rustls 0.23 on the ring provider (installed explicitly),
//! TLS 1.3, a self-signed certificate from rcgen, UDP sockets with 4 MiB buffers requested through
//! socket2 (as `node/src/transport/mod.rs` does; the kernel may clamp them, the granted sizes are
//! printed). Every message is a 104-byte frame: the 4-byte big-endian length Piazza uses, then a
//! 100-byte body whose first 8 bytes number it.
//!
//! - `quinn/one_stream/100B`: one connection, one unidirectional stream; the client writes 10,000
//!   frames (one `write_all` each, as a writer of frames does) and the server reads them with two
//!   `read_exact`s each (header, body: the node's `read_frame` without decoding). One iteration =
//!   10,000 frames, timed from the first write until the server has read the last.
//!   Elements/s = messages/s.
//! - `quinn/fanout/<N>`: N connections to one server (the clients spread over one client endpoint
//!   per 100 connections); the server holds one unidirectional stream to each (like the node's
//!   event stream) and writes one frame to every stream from one task. One iteration = one frame
//!   to all N, timed until every client task has read it. Elements/s = deliveries/s.
//!
//! Both sides run in this process on the same tokio runtime (2 workers), so the 2 cores are shared
//! between sender and receivers, as they are between node and load generator in
//! `piazza-loadtest`. Every frame is checked (its number must be the expected one); a bench that
//! lost, reordered or duplicated a frame panics.
//!
//! Run: `cargo bench -p piazza-benches --bench quinn_baseline` (figures in benches/README.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// ALPN of the bench protocol.
const ALPN: &[u8] = b"piazza-bench";
/// Message body bytes.
const BODY_BYTES: usize = 100;
/// Frame header bytes (Piazza's `u32` length).
const HEADER_BYTES: usize = 4;
/// Requested UDP socket buffers (the node's default `server.udp_buffer_bytes`).
const UDP_BUFFER_BYTES: usize = 4 << 20;
/// Frames per iteration of the one-stream bench.
const STREAM_BATCH: u64 = 10_000;
/// Connections of the fan-out benches.
const FANOUT_CONNECTIONS: [usize; 2] = [100, 1_000];
/// Connections per client endpoint (UDP socket) in the fan-out benches.
const CONNECTIONS_PER_CLIENT_ENDPOINT: usize = 100;
/// Connections being set up at once.
const CONNECT_CONCURRENCY: usize = 32;
/// Longest wait for anything (a batch, a fan-out round, the set-up); it takes milliseconds.
const WAIT: Duration = Duration::from_secs(30);
/// Frames one reader reads at most: far more than any run, it only bounds the loop.
const FRAMES_MAX: u64 = 1 << 40;

fn main_runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("cannot build the tokio runtime: {e}"),
    }
}

/// A frame numbered `n`.
fn frame(n: u64) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_BYTES + BODY_BYTES);
    frame.extend_from_slice(&(BODY_BYTES as u32).to_be_bytes());
    frame.extend_from_slice(&n.to_be_bytes());
    frame.resize(HEADER_BYTES + BODY_BYTES, b'x');
    frame
}

/// Reads one frame and returns its number; `None` when the stream ended cleanly before a frame.
async fn read_frame(recv: &mut quinn::RecvStream) -> BenchResult<Option<u64>> {
    let mut header = [0u8; HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header) as usize;
    if len != BODY_BYTES {
        return Err(format!("frame of {len} bytes, expected {BODY_BYTES}").into());
    }
    let mut body = [0u8; BODY_BYTES];
    recv.read_exact(&mut body).await?;
    let mut number = [0u8; 8];
    number.copy_from_slice(&body[..8]);
    Ok(Some(u64::from_be_bytes(number)))
}

fn udp_socket(buffers: &mut Option<(usize, usize)>) -> BenchResult<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(UDP_BUFFER_BYTES)?;
    socket.set_send_buffer_size(UDP_BUFFER_BYTES)?;
    *buffers = Some((socket.recv_buffer_size()?, socket.send_buffer_size()?));
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    Ok(socket.into())
}

/// A server endpoint and a function making client endpoints that trust it.
struct Quic {
    server: quinn::Endpoint,
    client_config: quinn::ClientConfig,
}

impl Quic {
    fn new() -> BenchResult<Quic> {
        // Explicitly, so nothing depends on which provider another crate's features picked.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));

        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)?;
        let server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![ALPN.to_vec()];
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)?;
        let mut transport = quinn::TransportConfig::default();
        // Criterion pauses between benchmarks; keep-alives stop idle connections timing out.
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(Arc::new(transport));

        let mut buffers = None;
        let socket = udp_socket(&mut buffers)?;
        let runtime = quinn::default_runtime().ok_or("no async runtime for quinn")?;
        let server = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            runtime,
        )?;
        if let Some((recv, send)) = buffers {
            println!(
                "quinn_baseline: UDP buffers requested {UDP_BUFFER_BYTES} B, granted receive \
                 {recv} B, send {send} B"
            );
        }
        Ok(Quic {
            server,
            client_config,
        })
    }

    fn client_endpoint(&self) -> BenchResult<quinn::Endpoint> {
        let socket = udp_socket(&mut None)?;
        let runtime = quinn::default_runtime().ok_or("no async runtime for quinn")?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)?;
        endpoint.set_default_client_config(self.client_config.clone());
        Ok(endpoint)
    }

    async fn connect(&self, client: &quinn::Endpoint) -> BenchResult<quinn::Connection> {
        let addr = self.server.local_addr()?;
        Ok(client.connect(addr, "localhost")?.await?)
    }
}

// ------------------------------------------------------------------ one stream

/// One connection with one unidirectional stream, client → server, and a server task reading it.
struct OneStream {
    _quic: Quic,
    _client_endpoint: quinn::Endpoint,
    _connection: quinn::Connection,
    send: quinn::SendStream,
    /// Frames the server has read, after each full batch.
    batches: mpsc::Receiver<u64>,
    reader: tokio::task::JoinHandle<BenchResult<u64>>,
    sent: u64,
}

impl OneStream {
    async fn start() -> BenchResult<OneStream> {
        let quic = Quic::new()?;
        let client_endpoint = quic.client_endpoint()?;
        let server = quic.server.clone();
        let accept = tokio::spawn(async move {
            let incoming = server.accept().await.ok_or("server endpoint closed")?;
            let connection = incoming.await?;
            let recv = connection.accept_uni().await?;
            BenchResult::Ok((connection, recv))
        });
        let connection = quic.connect(&client_endpoint).await?;
        let mut send = connection.open_uni().await?;
        // The server only sees the stream once something was sent on it.
        send.write_all(&frame(0)).await?;
        let (server_connection, mut recv) = tokio::time::timeout(WAIT, accept).await???;
        if read_frame(&mut recv).await? != Some(0) {
            return Err("the first frame did not arrive".into());
        }
        let (batch_tx, batches) = mpsc::channel(4);
        let reader = tokio::spawn(async move {
            // Held so the server side of the connection lives as long as the reader.
            let _connection = server_connection;
            let mut read = 0u64;
            for _ in 0..FRAMES_MAX {
                match read_frame(&mut recv).await? {
                    None => return Ok(read),
                    Some(n) if n != read + 1 => {
                        return Err(format!("frame {n} arrived where {} was due", read + 1).into());
                    }
                    Some(_) => read += 1,
                }
                if read.is_multiple_of(STREAM_BATCH) && batch_tx.send(read).await.is_err() {
                    return Ok(read);
                }
            }
            Ok(read)
        });
        Ok(OneStream {
            _quic: quic,
            _client_endpoint: client_endpoint,
            _connection: connection,
            send,
            batches,
            reader,
            sent: 0,
        })
    }

    /// Writes one batch and waits until the server has read it.
    async fn batch(&mut self) -> BenchResult<Duration> {
        let start = Instant::now();
        for _ in 0..STREAM_BATCH {
            self.sent += 1;
            self.send.write_all(&frame(self.sent)).await?;
        }
        let read = tokio::time::timeout(WAIT, self.batches.recv())
            .await?
            .ok_or("the server reader stopped")?;
        if read != self.sent {
            return Err(format!("server read {read} frames, {} sent", self.sent).into());
        }
        Ok(start.elapsed())
    }

    /// Finishes the stream and returns how many frames the server read in all.
    async fn finish(mut self) -> BenchResult<(u64, u64)> {
        self.send.finish()?;
        let read = tokio::time::timeout(WAIT, self.reader).await???;
        Ok((read, self.sent))
    }
}

fn one_stream(c: &mut Criterion) {
    let rt = main_runtime();
    let mut stream = match rt.block_on(OneStream::start()) {
        Ok(s) => s,
        Err(e) => panic!("set up the one-stream bench: {e}"),
    };
    let mut group = c.benchmark_group("quinn/one_stream");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(STREAM_BATCH));
    group.bench_function("100B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    match stream.batch().await {
                        Ok(elapsed) => total += elapsed,
                        Err(e) => panic!("one-stream batch: {e}"),
                    }
                }
                total
            })
        });
    });
    group.finish();
    match rt.block_on(stream.finish()) {
        Ok((read, sent)) => assert!(
            read == sent && sent > 0,
            "server read {read} of {sent} frames"
        ),
        Err(e) => panic!("finish the one-stream bench: {e}"),
    }
}

// ------------------------------------------------------------------ fan-out

/// State shared by the fan-out readers.
struct Round {
    /// The number of the frame of the current round.
    expected: AtomicU64,
    /// Readers that have not read the current round's frame yet.
    pending: AtomicUsize,
    /// Notified by the reader that brings `pending` to zero.
    done: Notify,
}

/// N connections, each with a server → client stream and a client task reading it.
struct Fanout {
    _quic: Quic,
    _client_endpoints: Vec<quinn::Endpoint>,
    _connections: Vec<quinn::Connection>,
    sends: Vec<quinn::SendStream>,
    readers: JoinSet<BenchResult<u64>>,
    round: Arc<Round>,
    rounds: u64,
}

impl Fanout {
    async fn start(n: usize) -> BenchResult<Fanout> {
        let quic = Quic::new()?;
        let client_endpoints = (0..n.div_ceil(CONNECTIONS_PER_CLIENT_ENDPOINT))
            .map(|_| quic.client_endpoint())
            .collect::<BenchResult<Vec<_>>>()?;

        // The server accepts n connections and opens a stream to each, announced by frame 0.
        let server = quic.server.clone();
        let acceptor = tokio::spawn(async move {
            let mut accepted = Vec::with_capacity(n);
            for _ in 0..n {
                let incoming = server.accept().await.ok_or("server endpoint closed")?;
                let connection = incoming.await?;
                let mut send = connection.open_uni().await?;
                send.write_all(&frame(0)).await?;
                accepted.push((connection, send));
            }
            BenchResult::Ok(accepted)
        });

        let round = Arc::new(Round {
            expected: AtomicU64::new(0),
            pending: AtomicUsize::new(n),
            done: Notify::new(),
        });
        let mut connections = Vec::with_capacity(n);
        let mut readers = JoinSet::new();
        let mut connecting = JoinSet::new();
        let mut next = 0;
        // Bounded: each turn starts one of n connects or finishes one.
        while next < n || !connecting.is_empty() {
            while next < n && connecting.len() < CONNECT_CONCURRENCY {
                let endpoint = client_endpoints[next % client_endpoints.len()].clone();
                let addr = quic.server.local_addr()?;
                connecting.spawn(async move {
                    BenchResult::Ok(endpoint.connect(addr, "localhost")?.await?)
                });
                next += 1;
            }
            let Some(joined) = connecting.join_next().await else {
                break;
            };
            let connection = joined??;
            let round = round.clone();
            let reader_connection = connection.clone();
            readers.spawn(async move { read_rounds(reader_connection, round).await });
            connections.push(connection);
        }
        let accepted = tokio::time::timeout(WAIT, acceptor).await???;
        // Every reader counts down once it has read frame 0: then all streams are up.
        tokio::time::timeout(WAIT, round.done.notified()).await?;
        let (server_connections, sends): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
        connections.extend(server_connections);
        Ok(Fanout {
            _quic: quic,
            _client_endpoints: client_endpoints,
            _connections: connections,
            sends,
            readers,
            round,
            rounds: 0,
        })
    }

    /// Writes the next frame to every stream and waits until every reader has read it.
    async fn deliver(&mut self) -> BenchResult<Duration> {
        let number = self.rounds + 1;
        let bytes = frame(number);
        self.round.expected.store(number, Ordering::Release);
        self.round
            .pending
            .store(self.sends.len(), Ordering::Release);
        let start = Instant::now();
        for send in &mut self.sends {
            send.write_all(&bytes).await?;
        }
        tokio::time::timeout(WAIT, self.round.done.notified())
            .await
            .map_err(|_| {
                format!(
                    "{} of {} readers did not get frame {number}",
                    self.round.pending.load(Ordering::Acquire),
                    self.sends.len()
                )
            })?;
        self.rounds = number;
        Ok(start.elapsed())
    }

    /// Finishes every stream and returns the frames all readers read, and the frames owed.
    async fn finish(mut self) -> BenchResult<(u64, u64)> {
        for send in &mut self.sends {
            send.finish()?;
        }
        let mut read = 0;
        // Bounded: one turn per reader.
        while let Some(joined) = tokio::time::timeout(WAIT, self.readers.join_next()).await? {
            read += joined??;
        }
        // Frame 0 (the announcement) is read by every reader too.
        Ok((read, (self.rounds + 1) * self.sends.len() as u64))
    }
}

/// One client's reader: frame 0, then one frame per round, each checked to be the round's.
async fn read_rounds(connection: quinn::Connection, round: Arc<Round>) -> BenchResult<u64> {
    let mut recv = connection.accept_uni().await?;
    let mut read = 0u64;
    for _ in 0..FRAMES_MAX {
        let Some(number) = read_frame(&mut recv).await? else {
            return Ok(read);
        };
        let expected = round.expected.load(Ordering::Acquire);
        if number != expected {
            return Err(format!("read frame {number} while frame {expected} was due").into());
        }
        read += 1;
        if round.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            round.done.notify_one();
        }
    }
    Ok(read)
}

fn fanout(c: &mut Criterion) {
    let rt = main_runtime();
    let mut group = c.benchmark_group("quinn/fanout");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n in FANOUT_CONNECTIONS {
        let mut fan = match rt.block_on(Fanout::start(n)) {
            Ok(f) => f,
            Err(e) => panic!("set up {n} connections: {e}"),
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        match fan.deliver().await {
                            Ok(elapsed) => total += elapsed,
                            Err(e) => panic!("fan-out to {n}: {e}"),
                        }
                    }
                    total
                })
            });
        });
        match rt.block_on(fan.finish()) {
            Ok((read, owed)) => assert!(read == owed, "{n} readers read {read} of {owed} frames"),
            Err(e) => panic!("finish the fan-out to {n}: {e}"),
        }
    }
    group.finish();
}

criterion_group!(benches, one_stream, fanout);
criterion_main!(benches);
