//! Many lightweight subscribers: one authenticated QUIC connection per user, sharing a few client
//! endpoints, each recording the messages its event stream delivers (seq and arrival time). The SDK
//! client is too heavy for ten thousand users in one test process; this is the bare protocol.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use piazza_protocol::limits::FRAME_BYTES_MAX;
use piazza_protocol::{
    ConversationId, Event, FrameDecoder, PROTOCOL_VERSION, Request, Response, codec,
};
use tokio::sync::Semaphore;

/// Connections per client endpoint (UDP socket).
const CONNECTIONS_PER_ENDPOINT: usize = 100;
/// Socket buffers of the client endpoints: a burst of one packet per connection must fit, or the
/// kernel drops them and QUIC's loss recovery turns a fan-out into seconds.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Handshakes in flight at once.
const CONNECT_CONCURRENCY: usize = 64;

/// What one subscriber received: (conversation, seq, arrival) per message event.
pub type Received = Arc<Mutex<Vec<(ConversationId, u64, Instant)>>>;

/// One user's connection.
pub struct SwarmMember {
    pub user: String,
    pub connection: quinn::Connection,
    pub received: Received,
    pub resyncs: Arc<Mutex<u64>>,
}

impl SwarmMember {
    /// Sends one request on its own stream and reads the response.
    pub async fn request(&self, request: &Request) -> Option<Response> {
        request_on(&self.connection, request).await
    }

    /// The seqs of `conversation` received so far, in arrival order.
    pub fn seqs(&self, conversation: &ConversationId) -> Vec<u64> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, ..)| c == conversation)
            .map(|(_, seq, _)| *seq)
            .collect()
    }
}

/// A set of connected, authenticated users.
pub struct Swarm {
    pub members: Vec<Arc<SwarmMember>>,
    _endpoints: Vec<quinn::Endpoint>,
}

async fn request_on(connection: &quinn::Connection, request: &Request) -> Option<Response> {
    let (mut send, mut recv) = connection.open_bi().await.ok()?;
    send.write_all(&codec::encode_frame(request).ok()?)
        .await
        .ok()?;
    send.finish().ok()?;
    let body = tokio::time::timeout(Duration::from_secs(60), recv.read_to_end(4 << 20))
        .await
        .ok()?
        .ok()?;
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    decoder.extend(&body);
    decoder.next_value().ok().flatten()
}

fn client_endpoint(ca: &Path) -> quinn::Endpoint {
    let crypto = crate::client_crypto(ca, piazza_protocol::ALPN);
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    // A loaded two-core machine can stall a handshake for seconds; only a dead node should fail.
    transport.max_idle_timeout(Some(Duration::from_secs(60).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES).unwrap();
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

impl Swarm {
    /// Connects `users` to the node at `addr`, each authenticated with `token(user)`, and starts
    /// reading their event streams.
    pub async fn connect(
        addr: SocketAddr,
        ca: &Path,
        users: &[String],
        token: impl Fn(&str) -> String,
    ) -> Swarm {
        let endpoints: Vec<quinn::Endpoint> = (0..users.len().div_ceil(CONNECTIONS_PER_ENDPOINT))
            .map(|_| client_endpoint(ca))
            .collect();
        let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let mut tasks = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let endpoint = endpoints[i / CONNECTIONS_PER_ENDPOINT].clone();
            let permits = permits.clone();
            let user = user.clone();
            let token = token(&user);
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                let connection = endpoint
                    .connect(addr, "localhost")
                    .unwrap()
                    .await
                    .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
                let hello = Request::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    token,
                    device: "swarm".parse().unwrap(),
                };
                match request_on(&connection, &hello).await {
                    Some(Response::Welcome { .. }) => {}
                    other => panic!("{user}: hello answered {other:?}"),
                }
                let member = Arc::new(SwarmMember {
                    user,
                    connection,
                    received: Arc::default(),
                    resyncs: Arc::default(),
                });
                tokio::spawn(read_events(member.clone()));
                member
            }));
        }
        let mut members = Vec::with_capacity(tasks.len());
        for task in tasks {
            members.push(task.await.unwrap());
        }
        Swarm {
            members,
            _endpoints: endpoints,
        }
    }

    /// Sends `request(member)` from every member (bounded concurrency) and checks each answer.
    pub async fn each_request(
        &self,
        request: impl Fn(&SwarmMember) -> Request,
        check: impl Fn(&SwarmMember, Option<Response>) + Clone + Send + 'static,
    ) {
        let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let mut tasks = Vec::new();
        for member in &self.members {
            let request = request(member);
            let member = member.clone();
            let permits = permits.clone();
            let check = check.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                let answer = member.request(&request).await;
                check(&member, answer);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }

    /// Waits until every member has received `n` messages of `conversation` (or `timeout`).
    pub async fn wait_for(&self, conversation: &ConversationId, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.members.iter().all(|m| m.seqs(conversation).len() >= n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn close(&self) {
        for member in &self.members {
            member.connection.close(0u32.into(), b"done");
        }
    }
}

async fn read_events(member: Arc<SwarmMember>) {
    let Ok(mut events) = member.connection.accept_uni().await else {
        return;
    };
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Some(n)) = events.read(&mut buf).await {
        let now = Instant::now();
        decoder.extend(&buf[..n]);
        while let Ok(Some(event)) = decoder.next_value::<Event>() {
            match event {
                Event::Message(m) => {
                    member
                        .received
                        .lock()
                        .unwrap()
                        .push((m.conversation, m.seq.get(), now));
                }
                Event::Resync => *member.resyncs.lock().unwrap() += 1,
                Event::Receipt { .. } => {}
            }
        }
    }
}
