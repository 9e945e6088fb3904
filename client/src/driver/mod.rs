//! The background task of a [`crate::Client`]: it owns the connection's lifecycle.
//!
//! One task per client, so that every decision about the connection is taken in one place:
//!
//! * it reads the node's event stream and typing datagrams, judges each message with the
//!   [`Cursors`] (deliver, drop as duplicate, or `Sync` first because of a gap) and queues
//!   [`ClientEvent`]s for the app;
//! * it runs `Sync` when the node says `Resync`, when a gap shows up, and after every reconnect,
//!   and stops reading live events until the sync is done, so missed messages are delivered
//!   before live ones;
//! * when the connection drops, it reconnects with [`Backoff`], says `Hello` again and publishes
//!   the new connection through a `watch`, where requests waiting to be retried pick it up.
//!
//! Requests do not go through this task: they open their own streams on the current connection
//! (see `crate::client`), so a slow sync never delays a send.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use piazza_protocol::limits::{DATAGRAM_BYTES_MAX, FRAME_BYTES_MAX, SYNC_MESSAGES_MAX};
use piazza_protocol::{Datagram, ErrorCode, Event, FrameDecoder, Request, Response, codec};
use quinn::ReadError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::client::ClientEvent;
use crate::cursors::{Arrival, Cursors};
use crate::error::ClientError;
use crate::transport::{self, Closed, Link, Settings, classify_close};

/// Capacity of the queue between this task and [`crate::Client::next_event`]. 4096 events absorb
/// a burst (a catch-up after a reconnect) without stalling the task on a briefly busy app.
pub(crate) const EVENT_QUEUE_CAPACITY: usize = 4096;

/// Events decoded but not yet accepted by the app's queue. When the outbox is this full, the task
/// stops reading the event stream, and QUIC flow control pushes back on the node, which then
/// drops events for this connection and sends `Resync` (a slow app never makes the node buffer
/// without bound). It can overshoot by the events of one chunk, see [`EVENT_CHUNK_BYTES_MAX`].
const OUTBOX_MAX: usize = 1024;

/// Largest piece read from the event stream at once. 64 KiB is a few hundred typical events;
/// it bounds how far one read can push the outbox past [`OUTBOX_MAX`].
const EVENT_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Most `Sync` rounds in one catch-up pass: 1000 rounds of [`SYNC_MESSAGES_MAX`] (100) is 100,000
/// messages. A device further behind than that gets the rest at the next trigger.
pub(crate) const SYNC_ROUNDS_MAX: u32 = 1000;

/// Consecutive failed `Sync` rounds (timeouts, the node unavailable) after which the connection
/// is considered broken and replaced. Three tolerates a hiccup without looping forever on a
/// node that accepts requests but never answers them.
const SYNC_FAILURES_MAX: u32 = 3;

/// Longest pause before retrying a `Sync` the node refused as rate limited or unavailable.
const SYNC_RETRY_DELAY_MAX: Duration = Duration::from_secs(5);

/// The connection as requests see it.
#[derive(Clone, Debug)]
pub(crate) enum LinkState {
    /// Connected and authenticated. `generation` counts connections, so a request that lost
    /// generation `n` waits for one newer than `n`.
    Up { generation: u64, link: Link },
    /// Lost; the task is trying to reconnect.
    Reconnecting,
    /// Given up or closed; every request fails with this error.
    Closed(ClientError),
}

/// What the task needs at start.
#[derive(Debug)]
pub(crate) struct DriverParts {
    pub(crate) settings: Arc<Settings>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) link: Link,
    pub(crate) link_tx: watch::Sender<LinkState>,
    pub(crate) events_tx: mpsc::Sender<ClientEvent>,
    pub(crate) cursors: Arc<Mutex<Cursors>>,
    /// Whether messages are delivered at all (false for [`crate::EventStart::Off`]).
    pub(crate) tracking: bool,
    /// Whether to `Sync` before reading live events on the first connection.
    pub(crate) initial_sync: bool,
    /// Resolves (either way) when the client is closed or dropped.
    pub(crate) shutdown: oneshot::Receiver<()>,
}

/// The task's state.
#[derive(Debug)]
struct Driver {
    settings: Arc<Settings>,
    endpoint: quinn::Endpoint,
    link: Link,
    generation: u64,
    link_tx: watch::Sender<LinkState>,
    events_tx: mpsc::Sender<ClientEvent>,
    cursors: Arc<Mutex<Cursors>>,
    tracking: bool,
    shutdown: oneshot::Receiver<()>,
    /// The node's event stream on the current connection, once the node has opened it.
    event_stream: Option<quinn::RecvStream>,
    decoder: FrameDecoder,
    /// Events waiting for room in the app's queue, in delivery order.
    outbox: VecDeque<ClientEvent>,
    /// A catch-up `Sync` is due; live events are not read until it is done.
    needs_sync: bool,
    sync_rounds: u32,
    sync_failures: u32,
}

/// Why [`Driver::serve`] stopped serving a connection.
#[derive(Debug)]
enum End {
    /// The client was closed or dropped.
    Shutdown,
    /// The connection is gone but another one may work.
    Reconnect(String),
    /// Nothing more can work.
    Fatal(ClientError),
}

/// One turn of the serve loop: which of the things it waits for happened.
enum Step {
    Shutdown,
    Closed(quinn::ConnectionError),
    Deliver(Option<mpsc::OwnedPermit<ClientEvent>>),
    Stream(Result<quinn::RecvStream, quinn::ConnectionError>),
    Chunk(Result<Option<quinn::Chunk>, ReadError>),
    Datagram(Result<bytes::Bytes, quinn::ConnectionError>),
}

/// Runs the task until the client is closed or the connection is lost for good.
pub(crate) async fn run(parts: DriverParts) {
    let mut driver = Driver {
        settings: parts.settings,
        endpoint: parts.endpoint,
        link: parts.link,
        generation: 0,
        link_tx: parts.link_tx,
        events_tx: parts.events_tx,
        cursors: parts.cursors,
        tracking: parts.tracking,
        shutdown: parts.shutdown,
        event_stream: None,
        decoder: FrameDecoder::new(FRAME_BYTES_MAX),
        outbox: VecDeque::new(),
        needs_sync: parts.tracking && parts.initial_sync,
        sync_rounds: 0,
        sync_failures: 0,
    };
    driver.run().await;
}

impl Driver {
    async fn run(&mut self) {
        loop {
            match self.serve().await {
                End::Shutdown => {
                    transport::close_if_open(&self.link.connection, b"client closed");
                    self.finish(ClientError::Closed);
                    return;
                }
                End::Fatal(error) => {
                    warn!(node = %self.link.node, "connection unusable, not reconnecting: {error}");
                    transport::close_if_open(&self.link.connection, b"client error");
                    self.finish(error);
                    return;
                }
                End::Reconnect(why) => {
                    warn!(node = %self.link.node, "connection lost ({why}); reconnecting");
                    // Already closed in most cases. When the event stream broke on an open
                    // connection, this releases it.
                    transport::close_if_open(&self.link.connection, b"reconnecting");
                    self.link_tx.send_replace(LinkState::Reconnecting);
                    match self.reconnect(&why).await {
                        Ok(link) => self.install(link),
                        Err(error) => {
                            if error != ClientError::Closed {
                                warn!("giving up: {error}");
                            }
                            self.finish(error);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self) -> End {
        let connection = self.link.connection.clone();
        loop {
            // Catch-up first, and only when the outbox has room for a whole batch, so missed
            // messages go out before any live one and the outbox stays bounded.
            if self.needs_sync && self.outbox.len() + SYNC_MESSAGES_MAX as usize <= OUTBOX_MAX {
                if let Some(end) = self.sync_round(&connection).await {
                    return end;
                }
                continue;
            }
            let reading = !self.needs_sync && self.outbox.len() < OUTBOX_MAX;
            // One select so that shutdown, connection loss, delivery to the app, the event stream
            // and datagrams all make progress and none blocks the others. Every branch is
            // cancel-safe (quinn documents `read_chunk`, `accept_uni` and `read_datagram` as
            // such; a dropped `reserve_owned` only loses its place in line).
            let step = tokio::select! {
                _ = &mut self.shutdown => Step::Shutdown,
                error = connection.closed() => Step::Closed(error),
                permit = self.events_tx.clone().reserve_owned(), if !self.outbox.is_empty() => {
                    Step::Deliver(permit.ok())
                }
                stream = connection.accept_uni(), if self.event_stream.is_none() => {
                    Step::Stream(stream)
                }
                chunk = next_chunk(self.event_stream.as_mut()), if reading => Step::Chunk(chunk),
                datagram = connection.read_datagram() => Step::Datagram(datagram),
            };
            match step {
                Step::Shutdown => return End::Shutdown,
                Step::Closed(error) => return end_of(&error),
                Step::Deliver(Some(permit)) => {
                    if let Some(event) = self.outbox.pop_front() {
                        permit.send(event);
                    }
                }
                // The app's receiver is gone: the client was dropped.
                Step::Deliver(None) => return End::Shutdown,
                Step::Stream(Ok(stream)) => self.event_stream = Some(stream),
                Step::Stream(Err(error)) => return end_of(&error),
                Step::Chunk(Ok(Some(chunk))) => {
                    if let Err(end) = self.handle_bytes(&chunk.bytes) {
                        return end;
                    }
                }
                Step::Chunk(Ok(None)) => {
                    return End::Reconnect("the node ended the event stream".into());
                }
                Step::Chunk(Err(ReadError::ConnectionLost(error))) => return end_of(&error),
                Step::Chunk(Err(error)) => {
                    return End::Reconnect(format!("event stream failed: {error}"));
                }
                Step::Datagram(Ok(bytes)) => self.handle_datagram(&bytes),
                Step::Datagram(Err(error)) => return end_of(&error),
            }
        }
    }

    /// Decodes every complete event frame buffered so far. The loop is bounded by the buffered
    /// bytes: each frame consumes at least its 4-byte header.
    fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.decoder.extend(bytes);
        loop {
            match self.decoder.next_value::<Event>() {
                Ok(Some(event)) => self.handle_event(event),
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(End::Fatal(ClientError::Protocol(format!(
                        "undecodable event from the node: {error}"
                    ))));
                }
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        if !self.tracking {
            return;
        }
        match event {
            Event::Message(message) => {
                let arrival = self.lock_cursors().handle_live(&message);
                match arrival {
                    Arrival::New => self.outbox.push_back(ClientEvent::Message(message)),
                    Arrival::Duplicate => {}
                    Arrival::Gap { missing_from } => {
                        // Dropped on purpose: it is durable on the node, so the sync returns it
                        // after the missing ones.
                        debug!(
                            conversation = %message.conversation,
                            seq = %message.seq,
                            %missing_from,
                            "gap in the event stream; syncing"
                        );
                        self.needs_sync = true;
                    }
                }
            }
            Event::Receipt {
                conversation,
                user,
                kind,
                seq,
            } => self.outbox.push_back(ClientEvent::Receipt {
                conversation,
                user,
                kind,
                seq,
            }),
            Event::Resync => {
                debug!("the node dropped events for this connection; syncing");
                self.needs_sync = true;
            }
        }
    }

    fn handle_datagram(&mut self, bytes: &[u8]) {
        if !self.tracking {
            return;
        }
        match codec::decode::<Datagram>(bytes, DATAGRAM_BYTES_MAX as usize) {
            Ok(Datagram::Typing {
                conversation,
                user,
                active,
            }) => {
                // Typing indicators are ephemeral: when the app is behind, dropping one is
                // better than queueing it behind messages.
                let _ = self.events_tx.try_send(ClientEvent::Typing {
                    conversation,
                    user,
                    active,
                });
            }
            Ok(Datagram::Presence(state)) => {
                let _ = self.events_tx.try_send(ClientEvent::Presence(state));
            }
            // A datagram is unreliable by nature; a bad one is dropped, not fatal.
            Err(error) => debug!("dropping undecodable datagram: {error}"),
        }
    }

    /// Runs one catch-up `Sync` round. Returns `Some` when the connection must end.
    async fn sync_round(&mut self, connection: &quinn::Connection) -> Option<End> {
        let request = Request::Sync {
            cursors: self.lock_cursors().sync_cursors(),
            limit: SYNC_MESSAGES_MAX,
        };
        let answer =
            transport::round_trip(connection, &request, self.settings.request_timeout).await;
        let retry_after = match answer {
            Ok(Response::Sync(batch)) => {
                let step = self.lock_cursors().handle_sync_batch(batch);
                self.outbox
                    .extend(step.fresh.into_iter().map(ClientEvent::Message));
                self.sync_failures = 0;
                self.sync_rounds += 1;
                if step.stalled {
                    warn!(
                        "sync returned nothing new but claims more; stopping this catch-up \
                         (more conversations than one Sync can name?)"
                    );
                }
                if step.more && self.sync_rounds >= SYNC_ROUNDS_MAX {
                    warn!(
                        rounds = self.sync_rounds,
                        "catch-up is very long; pausing it until the next trigger"
                    );
                }
                self.needs_sync = step.more && self.sync_rounds < SYNC_ROUNDS_MAX;
                if !self.needs_sync {
                    self.sync_rounds = 0;
                }
                return None;
            }
            Ok(Response::Error(ErrorCode::RateLimited { retry_after_ms })) => {
                Duration::from_millis(retry_after_ms)
            }
            Ok(Response::Error(code @ ErrorCode::Unavailable { .. })) => {
                debug!("sync refused for now: {code}");
                Duration::from_secs(1)
            }
            Ok(Response::Error(code)) => {
                // The node will not sync us (for example a bug on its side). Live delivery
                // continues; the next gap or Resync tries again.
                warn!("sync refused: {code}");
                self.needs_sync = false;
                self.sync_rounds = 0;
                return None;
            }
            Ok(other) => return Some(End::Fatal(transport::unexpected("sync", &other))),
            Err(ClientError::ConnectionLost(why)) => {
                // A local close of the current connection can only come from `Client::close`.
                return Some(match connection.close_reason() {
                    Some(error) => end_of(&error),
                    None => End::Reconnect(why),
                });
            }
            Err(ClientError::Closed) => return Some(End::Shutdown),
            Err(error @ ClientError::Timeout { .. }) => {
                debug!("sync round failed: {error}");
                Duration::ZERO
            }
            Err(error) => return Some(End::Fatal(error)),
        };
        self.sync_failures += 1;
        if self.sync_failures >= SYNC_FAILURES_MAX {
            return Some(End::Reconnect(format!(
                "sync failed {} times in a row",
                self.sync_failures
            )));
        }
        // Why select: a shutdown must not wait for the pause to end.
        tokio::select! {
            _ = tokio::time::sleep(retry_after.min(SYNC_RETRY_DELAY_MAX)) => None,
            _ = &mut self.shutdown => Some(End::Shutdown),
        }
    }

    /// Tries to get a connection back, within the reconnect budget.
    async fn reconnect(&mut self, why: &str) -> Result<Link, ClientError> {
        let lost_at = Instant::now();
        let mut backoff = Backoff::new(self.settings.reconnect);
        let mut attempts: u32 = 0;
        let mut last_error = String::from(why);
        // Bounded by the backoff budget: `next_delay` returns None once it is spent.
        while let Some(delay) = backoff.next_delay(lost_at.elapsed()) {
            let (endpoint, settings) = (&self.endpoint, &self.settings);
            // Why select: closing the client must not wait for the backoff or a slow attempt.
            let attempt = tokio::select! {
                _ = &mut self.shutdown => return Err(ClientError::Closed),
                result = async {
                    tokio::time::sleep(delay).await;
                    transport::open(endpoint, settings).await
                } => result,
            };
            attempts += 1;
            match attempt {
                Ok(link) if link.user != self.link.user => {
                    return Err(ClientError::Protocol(format!(
                        "reconnected as {} instead of {}",
                        link.user, self.link.user
                    )));
                }
                Ok(link) => {
                    info!(node = %link.node, attempts, "reconnected");
                    return Ok(link);
                }
                Err(ClientError::Server(ErrorCode::RateLimited { retry_after_ms })) => {
                    backoff.at_least(Duration::from_millis(retry_after_ms));
                    last_error = format!("rate limited, retry after {retry_after_ms} ms");
                }
                Err(error) if worth_retrying(&error) => {
                    debug!(attempts, "reconnect attempt failed: {error}");
                    last_error = error.to_string();
                }
                Err(error) => return Err(error),
            }
        }
        Err(ClientError::ConnectionLost(format!(
            "{why}; gave up after {attempts} reconnect attempts in {} ms (last: {last_error})",
            lost_at.elapsed().as_millis()
        )))
    }

    /// Switches to a new connection and schedules the catch-up.
    fn install(&mut self, link: Link) {
        self.generation += 1;
        self.link = link;
        self.event_stream = None;
        self.decoder = FrameDecoder::new(FRAME_BYTES_MAX);
        self.needs_sync = self.tracking;
        self.sync_rounds = 0;
        self.sync_failures = 0;
        self.link_tx.send_replace(LinkState::Up {
            generation: self.generation,
            link: self.link.clone(),
        });
        let event = ClientEvent::Reconnected {
            node: self.link.node.clone(),
        };
        if self.tracking {
            self.outbox.push_back(event);
        } else {
            let _ = self.events_tx.try_send(event);
        }
    }

    /// Hands what is left in the outbox to the app (as far as its queue has room) and publishes
    /// the final state. The task ends right after, which ends the app's event stream.
    fn finish(&mut self, error: ClientError) {
        while let Some(event) = self.outbox.pop_front() {
            if self.events_tx.try_send(event).is_err() {
                break;
            }
        }
        self.link_tx.send_replace(LinkState::Closed(error));
    }

    fn lock_cursors(&self) -> MutexGuard<'_, Cursors> {
        // A poisoned lock means a panic elsewhere while holding it; the cursor map itself is
        // still consistent (every mutation is a single insert), so keep using it.
        self.cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a failed reconnect attempt is worth another try.
fn worth_retrying(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::ConnectionLost(_) => true,
        ClientError::Timeout { .. } => true,
        ClientError::Server(code) => code.is_retryable(),
        ClientError::Config(_)
        | ClientError::Invalid(_)
        | ClientError::Protocol(_)
        | ClientError::Closed
        | ClientError::File(_) => false,
    }
}

fn end_of(error: &quinn::ConnectionError) -> End {
    match classify_close(error) {
        Closed::Local => End::Shutdown,
        Closed::Fatal(fatal) => End::Fatal(fatal),
        Closed::Reconnect(why) => End::Reconnect(why),
    }
}

/// The next chunk of the event stream, or never if there is no stream yet.
async fn next_chunk(
    stream: Option<&mut quinn::RecvStream>,
) -> Result<Option<quinn::Chunk>, ReadError> {
    match stream {
        Some(stream) => stream.read_chunk(EVENT_CHUNK_BYTES_MAX, true).await,
        None => std::future::pending().await,
    }
}
