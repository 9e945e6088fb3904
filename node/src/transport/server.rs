//! Accepting client connections and driving each one: `Hello` first, then one task per request
//! stream, one writer for the event stream, one for datagrams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use piazza_protocol::limits::{DATAGRAM_BYTES_MAX, REQUEST_FRAME_BYTES_MAX};
use piazza_protocol::{
    ALPN, Datagram, ErrorCode, Event, MediaResponse, Request, Response, UserId, close_code, codec,
};
use quinn::VarInt;
use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::sync::{Semaphore, watch};

use super::{FrameError, media, read_frame};
use crate::node::NodeContext;
use crate::session::{self, SessionIo, SessionMsg};

/// Stream error code sent with `STOP_SENDING` when a request is refused before it was read whole.
const STREAM_REFUSED: u32 = 1;

/// Bad requests tolerated before `Hello` before the connection is closed.
const PRE_HELLO_ATTEMPTS_MAX: u32 = 8;

/// Event frames written per syscall batch; bounds one turn of the writer loop.
const EVENT_BATCH_MAX: usize = 64;

/// How long a stream may take to deliver its request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` flips, each under a connection permit.
pub(crate) async fn serve(
    endpoint: quinn::Endpoint,
    ctx: Arc<NodeContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(ctx.config.server.max_connections as usize));
    loop {
        // Either a new connection or shutdown; shutdown wins so no connection starts after it.
        let incoming = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("piazza_connections_refused_total").increment(1);
            incoming.refuse();
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match incoming.await {
                Ok(connection) => drive(connection, ctx).await,
                Err(e) => tracing::debug!(error = %e, "handshake failed"),
            }
        });
    }
}

async fn drive(connection: quinn::Connection, ctx: Arc<NodeContext>) {
    let alpn_ok = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|protocol| protocol == ALPN);
    if !alpn_ok {
        connection.close(
            VarInt::from_u32(close_code::PROTOCOL_VIOLATION),
            b"ALPN piazza/1 required",
        );
        return;
    }
    metrics::counter!("piazza_connections_total").increment(1);
    metrics::gauge!("piazza_connections_active").increment(1.0);
    let hello_timeout = Duration::from_millis(ctx.config.server.hello_timeout_ms);
    match tokio::time::timeout(hello_timeout, hello(&connection, &ctx)).await {
        Ok(Some((session, io, user))) => {
            serve_session(&connection, &ctx, &user, &session, io).await;
            session.stop(None);
        }
        Ok(None) => {}
        Err(_) => connection.close(
            VarInt::from_u32(close_code::UNAUTHENTICATED),
            b"no Hello in time",
        ),
    }
    metrics::gauge!("piazza_connections_active").decrement(1.0);
}

/// Waits for a valid `Hello`. Anything else first is answered with `Unauthenticated`.
async fn hello(
    connection: &quinn::Connection,
    ctx: &Arc<NodeContext>,
) -> Option<(ActorRef<SessionMsg>, SessionIo, UserId)> {
    for _ in 0..PRE_HELLO_ATTEMPTS_MAX {
        let (mut send, mut recv) = connection.accept_bi().await.ok()?;
        let response = match read_frame::<Request>(&mut recv, REQUEST_FRAME_BYTES_MAX).await {
            Ok(request @ Request::Hello { .. }) => match request.validate() {
                Err(code) => Response::Error(code),
                Ok(()) => {
                    let Request::Hello {
                        protocol_version,
                        token,
                        device,
                    } = request
                    else {
                        continue;
                    };
                    match session::authenticate(ctx, protocol_version, &token) {
                        Err(code) => Response::Error(code),
                        Ok(user) => match session::open(ctx, user.clone(), device).await {
                            Err(code) => Response::Error(code),
                            Ok((session, io)) => {
                                let welcome = Response::Welcome {
                                    user: user.clone(),
                                    node: ctx.config.node.name.clone(),
                                    server_time_ms: crate::node::now_ms(),
                                };
                                if write_response(&mut send, &welcome).await.is_err() {
                                    session.stop(None);
                                    return None;
                                }
                                return Some((session, io, user));
                            }
                        },
                    }
                }
            },
            Ok(_) => Response::Error(ErrorCode::Unauthenticated {
                reason: "send Hello first".into(),
            }),
            Err(e) => match frame_error_response(&e, &mut recv) {
                Some(response) => response,
                None => continue,
            },
        };
        metrics::counter!("piazza_requests_total", "kind" => "hello", "outcome" => outcome_label(&response))
            .increment(1);
        let _ = write_response(&mut send, &response).await;
    }
    connection.close(
        VarInt::from_u32(close_code::UNAUTHENTICATED),
        b"too many attempts without Hello",
    );
    None
}

async fn serve_session(
    connection: &quinn::Connection,
    ctx: &Arc<NodeContext>,
    user: &UserId,
    session: &ActorRef<SessionMsg>,
    io: SessionIo,
) {
    let SessionIo {
        events,
        datagrams,
        overflowed,
    } = io;
    let event_writer = match connection.open_uni().await {
        Ok(stream) => tokio::spawn(write_events(stream, events, overflowed)),
        Err(_) => return,
    };
    let datagram_writer = tokio::spawn(write_datagrams(connection.clone(), datagrams));
    loop {
        // Requests, upload streams and datagrams from the client, until the connection ends.
        tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(serve_request(ctx.clone(), session.clone(), send, recv));
                }
                Err(_) => break,
            },
            // Bounded by `media.upload_streams_max` concurrent streams per connection (quinn).
            stream = connection.accept_uni() => match stream {
                Ok(recv) => {
                    tokio::spawn(media::serve_upload(ctx.clone(), user.clone(), recv));
                }
                Err(_) => break,
            },
            datagram = connection.read_datagram() => match datagram {
                Ok(bytes) => {
                    // Over-size or undecodable datagrams are dropped: they are unreliable anyway.
                    if let Ok(datagram) = codec::decode::<Datagram>(&bytes, DATAGRAM_BYTES_MAX as usize) {
                        let _ = session.send_message(SessionMsg::Datagram(datagram));
                    }
                }
                Err(_) => break,
            },
        }
    }
    event_writer.abort();
    datagram_writer.abort();
}

/// Reads one request, has the session answer it, writes the response and finishes the stream.
/// A media download's answer is followed by the blob's bytes.
async fn serve_request(
    ctx: Arc<NodeContext>,
    session: ActorRef<SessionMsg>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let read = tokio::time::timeout(
        REQUEST_READ_TIMEOUT,
        read_frame::<Request>(&mut recv, REQUEST_FRAME_BYTES_MAX),
    )
    .await;
    let (kind, response) = match read {
        Err(_) => (
            "unknown",
            Response::Error(ErrorCode::invalid("request", "not received in time")),
        ),
        Ok(Err(e)) => match frame_error_response(&e, &mut recv) {
            Some(response) => ("unknown", response),
            None => return,
        },
        Ok(Ok(request)) => {
            let kind = request.label();
            let response = match request.validate() {
                Err(code) => Response::Error(code),
                Ok(()) => call_session(&session, request).await,
            };
            (kind, response)
        }
    };
    metrics::counter!("piazza_requests_total", "kind" => kind, "outcome" => outcome_label(&response)).increment(1);
    if let Response::Media(MediaResponse::Download { info, start, end }) = &response {
        media::send_download(&ctx, &mut send, &response, &info.id, *start, *end).await;
        return;
    }
    let _ = write_response(&mut send, &response).await;
}

async fn call_session(session: &ActorRef<SessionMsg>, request: Request) -> Response {
    // Generous: a send waits for one group commit, which takes milliseconds unless the disk stalls.
    let timeout = Duration::from_secs(30);
    match session
        .call(
            |reply| SessionMsg::Request { request, reply },
            Some(timeout),
        )
        .await
    {
        Ok(CallResult::Success(response)) => response,
        Ok(CallResult::Timeout) => Response::Error(ErrorCode::unavailable("request timed out")),
        Ok(CallResult::SenderError) | Err(_) => {
            Response::Error(ErrorCode::unavailable("request was dropped, retry"))
        }
    }
}

/// The error response for a frame that could not be read, after telling the peer to stop sending
/// on that stream; `None` when there is nobody left to answer.
fn frame_error_response(error: &FrameError, recv: &mut quinn::RecvStream) -> Option<Response> {
    match error {
        FrameError::TooLarge { len, max } => {
            let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
            tracing::debug!(len, max, "refused oversize frame");
            Some(Response::Error(ErrorCode::TooLarge {
                what: "frame".into(),
                limit: *max as u64,
            }))
        }
        FrameError::Malformed(reason) => {
            let _ = recv.stop(VarInt::from_u32(STREAM_REFUSED));
            Some(Response::Error(ErrorCode::Malformed {
                reason: reason.clone(),
            }))
        }
        FrameError::Truncated => Some(Response::Error(ErrorCode::Malformed {
            reason: "stream ended mid-frame".into(),
        })),
        FrameError::Connection(_) => None,
    }
}

pub(super) async fn write_response(
    send: &mut quinn::SendStream,
    response: &Response,
) -> Result<(), ()> {
    let frame = match codec::encode_frame(response) {
        Ok(frame) => frame,
        Err(e) => {
            let code = crate::actors::conversation::internal_error("encode response", &e);
            codec::encode_frame(&Response::Error(code)).map_err(|_| ())?
        }
    };
    send.write_all(&frame).await.map_err(|_| ())?;
    send.finish().map_err(|_| ())
}

fn outcome_label(response: &Response) -> &'static str {
    match response {
        Response::Error(code) => code.label(),
        _ => "ok",
    }
}

/// Drains the session's outbox onto the event stream, several frames per write, and tells the
/// client to resync after the relay had to drop events for it.
async fn write_events(
    mut stream: quinn::SendStream,
    mut events: tokio::sync::mpsc::Receiver<Bytes>,
    overflowed: Arc<std::sync::atomic::AtomicBool>,
) {
    let resync = match codec::encode_frame(&Event::Resync) {
        Ok(frame) => Bytes::from(frame),
        Err(_) => return,
    };
    let mut batch = Vec::with_capacity(EVENT_BATCH_MAX);
    loop {
        if events.recv_many(&mut batch, EVENT_BATCH_MAX).await == 0 {
            break;
        }
        if session::take_overflow(&overflowed) {
            metrics::counter!("piazza_resyncs_total").increment(1);
            batch.push(resync.clone());
        }
        if stream.write_all_chunks(&mut batch).await.is_err() {
            break;
        }
        batch.clear();
    }
}

async fn write_datagrams(
    connection: quinn::Connection,
    mut datagrams: tokio::sync::mpsc::Receiver<Bytes>,
) {
    while let Some(payload) = datagrams.recv().await {
        // Datagrams are unreliable by design; a peer that does not take them just misses typing.
        let _ = connection.send_datagram(payload);
    }
}
