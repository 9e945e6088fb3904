//! Media over real QUIC: resumable uploads on unidirectional streams, downloads with ranges,
//! limits, sniffing, permissions, garbage collection of abandoned uploads, and media messages.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use piazza_client::{Client, ConversationRef, EventStart, MediaId};
use piazza_protocol::limits::UPLOAD_HEADER_FRAME_BYTES_MAX;
use piazza_protocol::{
    ConversationId, ErrorCode, MediaRequest, MediaResponse, MessageBody, PROTOCOL_VERSION, Request,
    Response, UploadChunkHeader, UploadId, codec,
};
use piazza_tests::*;
use ring::digest::{Context, SHA256};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1024 * 1024;

fn dm(peer: &str) -> ConversationRef {
    ConversationRef::Direct { peer: user(peer) }
}

/// Writes `size` pseudo-random bytes (xorshift, so nothing sniffs as a known type).
fn random_file(dir: &Path, name: &str, size: u64, seed: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut state = seed | 1;
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        file.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    path
}

fn sha256_of(path: &Path) -> MediaId {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut context = Context::new(&SHA256);
    let mut buffer = vec![0u8; MIB as usize];
    loop {
        let n = file.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    MediaId::from_digest(context.finish().as_ref().try_into().unwrap())
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

/// A raw connection that said `Hello` as `name`.
async fn raw_client(node: &TestNode, name: &str) -> RawConnection {
    let raw = RawConnection::connect(node.addr, &node.ca).await;
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        token: node.token(name),
        device: "raw".parse().unwrap(),
    };
    assert!(matches!(
        raw.request(&hello).await,
        Some(Response::Welcome { .. })
    ));
    raw
}

async fn download_to(
    client: &Client,
    media: &MediaId,
    conversation: ConversationRef,
    range: Option<(u64, u64)>,
    path: &Path,
) -> Result<piazza_client::Downloaded, piazza_client::ClientError> {
    let mut file = tokio::fs::File::create(path).await.unwrap();
    let got = client.download(media, conversation, range, &mut file).await;
    file.flush().await.unwrap();
    got
}

fn part_path(node: &TestNode, owner: &str, upload: UploadId) -> PathBuf {
    node.data_dir()
        .join("uploads")
        .join(format!("u-{owner}"))
        .join(format!("{upload}.part"))
}

/// The acceptance test: a 50 MiB upload interrupted half way (the connection dies after
/// ~25 MiB went out on a raw upload stream) resumes from the node's offset through the SDK, and the
/// recipient's download has the same SHA-256. Prints the loopback throughput.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_upload_resumes_and_download_matches() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 50 * MIB;
    let path = random_file(dir.path(), "big.bin", size, 0x5eed);
    let sha256 = sha256_of(&path);

    // Half an upload on a raw connection, then the connection dies mid-stream.
    let raw = raw_client(&node, "alice").await;
    let begin = Request::Media(MediaRequest::BeginUpload {
        size_bytes: size,
        sha256: sha256.clone(),
        mime_hint: None,
        file_name: Some("big.bin".into()),
    });
    let Some(Response::Media(MediaResponse::Upload {
        upload,
        offset_bytes: 0,
    })) = raw.request(&begin).await
    else {
        panic!("expected a new upload");
    };
    let bytes = std::fs::read(&path).unwrap();
    let half = (25 * MIB) as usize;
    let mut stream = raw.connection.open_uni().await.unwrap();
    let header = UploadChunkHeader {
        upload,
        offset_bytes: 0,
    };
    stream
        .write_all(&codec::encode_frame(&header).unwrap())
        .await
        .unwrap();
    for piece in bytes[..half].chunks(MIB as usize) {
        stream.write_all(piece).await.unwrap();
    }
    // Let most of it reach the node's disk, then cut the connection without finishing the stream.
    let part = part_path(&node, "alice", upload);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 20 * MIB {
        assert!(
            Instant::now() < deadline,
            "the node did not write the first half"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    raw.connection.close(0u32.into(), b"interrupted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(raw);

    // The SDK resumes from the node's offset.
    let alice = node.client("alice").await;
    let started = Instant::now();
    let uploaded = alice.upload(&path, None, None).await.unwrap();
    let upload_time = started.elapsed();
    assert_eq!(uploaded.info.id, sha256);
    assert_eq!(uploaded.info.size_bytes, size);
    assert_eq!(uploaded.info.mime, "application/octet-stream");
    assert!(
        uploaded.resumed_from_bytes >= 20 * MIB && uploaded.resumed_from_bytes <= half as u64,
        "resumed from {}",
        uploaded.resumed_from_bytes
    );
    assert_eq!(uploaded.sent_bytes, size - uploaded.resumed_from_bytes);
    assert!(!part.exists(), "the finished upload leaves no part file");

    // Uploading the same bytes again is instant for the same user.
    let again = alice.upload(&path, None, None).await.unwrap();
    assert_eq!(
        (again.info.id.clone(), again.sent_bytes),
        (sha256.clone(), 0)
    );

    // Sent to Bob, who downloads it through the conversation.
    let ack = alice
        .send_media(dm("bob"), sha256.clone(), "the big one", None)
        .await
        .unwrap();
    let bob = node.client_with("bob", "b", EventStart::Off).await;
    let page = bob.history(dm("alice"), None, 10).await.unwrap();
    let message = page.messages.iter().find(|m| m.seq == ack.seq).unwrap();
    assert_eq!(
        message.body,
        MessageBody::Media {
            media: uploaded.info.clone(),
            caption: "the big one".into()
        }
    );
    let out = dir.path().join("downloaded.bin");
    let started = Instant::now();
    let got = download_to(&bob, &sha256, dm("alice"), None, &out)
        .await
        .unwrap();
    let download_time = started.elapsed();
    assert_eq!((got.start, got.end), (0, size));
    assert_eq!(sha256_of(&out), sha256, "the download matches the upload");

    // A full upload by another user (the bytes must be sent again: proof of possession), for an
    // uninterrupted throughput figure; the blob is stored once.
    let carol = node.client_with("carol", "c", EventStart::Off).await;
    let started = Instant::now();
    let full = carol.upload(&path, None, None).await.unwrap();
    let full_time = started.elapsed();
    assert_eq!((full.resumed_from_bytes, full.sent_bytes), (0, size));

    eprintln!(
        "media throughput on loopback (debug build): resumed upload {:.1} MiB in {:.2} s = {:.1} MiB/s; \
         full upload {:.1} MiB/s; download {:.1} MiB/s",
        uploaded.sent_bytes as f64 / MIB as f64,
        upload_time.as_secs_f64(),
        mib_per_s(uploaded.sent_bytes, upload_time),
        mib_per_s(size, full_time),
        mib_per_s(size, download_time),
    );
    node.stop().await;
    assert_no_warnings();
}

/// Range downloads return exactly the requested bytes; an end past the blob means "to the end".
#[tokio::test]
async fn range_downloads() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 300 * 1024;
    let path = random_file(dir.path(), "r.bin", size, 7);
    let bytes = std::fs::read(&path).unwrap();
    let alice = node.client_with("alice", "a", EventStart::Off).await;
    let info = alice.upload(&path, None, None).await.unwrap().info;
    alice
        .send_media(dm("bob"), info.id.clone(), "", None)
        .await
        .unwrap();
    let bob = node.client_with("bob", "b", EventStart::Off).await;
    let out = dir.path().join("part.bin");
    for (range, expected) in [
        ((0, 10), &bytes[..10]),
        ((1000, 200_000), &bytes[1000..200_000]),
        ((size - 5, u64::MAX), &bytes[(size - 5) as usize..]),
        ((size, size), &bytes[..0]),
    ] {
        let got = download_to(&bob, &info.id, dm("alice"), Some(range), &out)
            .await
            .unwrap();
        assert_eq!(got.start, range.0);
        assert_eq!(got.end, range.1.min(size));
        assert_eq!(std::fs::read(&out).unwrap(), expected, "range {range:?}");
    }
    let past = download_to(
        &bob,
        &info.id,
        dm("alice"),
        Some((size + 1, size + 2)),
        &out,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(past.server_code(), Some(ErrorCode::Invalid { field, .. }) if field == "range"),
        "{past}"
    );
    node.stop().await;
    assert_no_warnings();
}

/// `media.max_bytes`: a file of exactly the limit is taken, one byte more is `TooLarge`.
#[tokio::test]
async fn size_limit() {
    let limit = 64 * 1024;
    let node = TestNode::start_with(|c| c.media.max_bytes = limit).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = node.client_with("alice", "a", EventStart::Off).await;
    let at_limit = random_file(dir.path(), "limit.bin", limit, 1);
    assert_eq!(
        alice
            .upload(&at_limit, None, None)
            .await
            .unwrap()
            .info
            .size_bytes,
        limit
    );
    let over = random_file(dir.path(), "over.bin", limit + 1, 2);
    let refused = alice.upload(&over, None, None).await.unwrap_err();
    assert_eq!(
        refused.server_code(),
        Some(&ErrorCode::TooLarge {
            what: "size_bytes".into(),
            limit
        })
    );
    node.stop().await;
    assert_no_warnings();
}

/// The stored type is the sniffed one; an image claim the bytes contradict fails the upload and
/// leaves nothing behind.
#[tokio::test]
async fn sniffing_validates_the_type() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = node.client_with("alice", "a", EventStart::Off).await;

    let pdf = dir.path().join("doc.pdf");
    std::fs::write(&pdf, b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF\n").unwrap();
    let refused = alice
        .upload(&pdf, Some("image/png".into()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused.server_code(), Some(ErrorCode::Invalid { field, .. }) if field == "mime_hint"),
        "{refused}"
    );
    let leftovers = std::fs::read_dir(node.data_dir().join("uploads/u-alice"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "the failed upload was discarded");
    // The same bytes without the false claim are stored as what they are.
    let info = alice.upload(&pdf, None, None).await.unwrap().info;
    assert_eq!(info.mime, "application/pdf");

    let png = dir.path().join("pixel.bin");
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend_from_slice(&[0u8; 64]);
    std::fs::write(&png, &bytes).unwrap();
    let info = alice
        .upload(&png, Some("image/jpeg".into()), None)
        .await
        .unwrap()
        .info;
    assert_eq!(
        info.mime, "image/png",
        "an image is an image; the sniffed type is stored"
    );

    let note = dir.path().join("note.txt");
    std::fs::write(&note, "grüße\n").unwrap();
    assert_eq!(
        alice.upload(&note, None, None).await.unwrap().info.mime,
        "text/plain; charset=utf-8"
    );
    node.stop().await;
    assert_no_warnings();
}

/// Downloads need a conversation the user can read that references the blob (or having uploaded
/// it); sending needs having uploaded it (or it being referenced in the target conversation).
/// Uploads belong to their user.
#[tokio::test]
async fn permissions() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = random_file(dir.path(), "secret.bin", 4096, 3);
    let alice = node.client_with("alice", "a", EventStart::Off).await;
    let bob = node.client_with("bob", "b", EventStart::Off).await;
    let carol = node.client_with("carol", "c", EventStart::Off).await;
    let info = alice.upload(&path, None, None).await.unwrap().info;
    let out = dir.path().join("out.bin");

    // Before it is sent, only the uploader can read it.
    let denied = download_to(&bob, &info.id, dm("alice"), None, &out)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    download_to(&alice, &info.id, dm("carol"), None, &out)
        .await
        .unwrap();

    alice
        .send_media(dm("bob"), info.id.clone(), "for bob", None)
        .await
        .unwrap();
    download_to(&bob, &info.id, dm("alice"), None, &out)
        .await
        .unwrap();
    // Carol cannot read the conversation between Alice and Bob.
    let alice_bob =
        ConversationRef::Id(ConversationId::direct(user("alice"), user("bob")).unwrap());
    let denied = download_to(&carol, &info.id, alice_bob, None, &out)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    // Nor get at it through a conversation of hers that does not reference it.
    let denied = download_to(&carol, &info.id, dm("bob"), None, &out)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    // Bob may send it again where it already is, but not elsewhere; Carol not at all; and an
    // unknown id is refused just the same (nobody learns which blobs exist).
    bob.send_media(dm("alice"), info.id.clone(), "back to you", None)
        .await
        .unwrap();
    let denied = bob
        .send_media(dm("carol"), info.id.clone(), "leak", None)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    let unknown: MediaId = "0".repeat(64).parse().unwrap();
    let denied = carol
        .send_media(dm("bob"), unknown, "?", None)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));
    // Forwarding a media message makes it readable where it was forwarded.
    let ack = bob
        .history(dm("alice"), None, 10)
        .await
        .unwrap()
        .messages
        .last()
        .unwrap()
        .seq;
    bob.forward(dm("alice"), ack, dm("carol")).await.unwrap();
    download_to(&carol, &info.id, dm("bob"), None, &out)
        .await
        .unwrap();

    // Groups: a member can read what was posted, an outsider cannot.
    let group = alice.create_group("pics", vec![user("bob")]).await.unwrap();
    let ConversationId::Group(group) = group else {
        panic!("not a group")
    };
    alice
        .send_media(ConversationRef::Group(group), info.id.clone(), "", None)
        .await
        .unwrap();
    download_to(&bob, &info.id, ConversationRef::Group(group), None, &out)
        .await
        .unwrap();
    let denied = download_to(&carol, &info.id, ConversationRef::Group(group), None, &out)
        .await
        .unwrap_err();
    assert_eq!(denied.server_code(), Some(&ErrorCode::Forbidden));

    // Another user cannot continue or finish Alice's upload: they cannot even name it.
    let raw = raw_client(&node, "carol").await;
    let other = random_file(dir.path(), "other.bin", 1000, 4);
    let begin = Request::Media(MediaRequest::BeginUpload {
        size_bytes: 1000,
        sha256: sha256_of(&other),
        mime_hint: None,
        file_name: None,
    });
    let alice_raw = raw_client(&node, "alice").await;
    let Some(Response::Media(MediaResponse::Upload { upload, .. })) =
        alice_raw.request(&begin).await
    else {
        panic!("expected an upload");
    };
    let finish = Request::Media(MediaRequest::FinishUpload { upload });
    assert_eq!(
        raw.request(&finish).await,
        Some(Response::Error(ErrorCode::NotFound))
    );
    node.stop().await;
    assert_no_warnings();
}

/// Raw upload streams: a header that is too large or an offset that does not continue the part is
/// refused with a stop code, and the node keeps serving.
#[tokio::test]
async fn bad_upload_streams_are_stopped() {
    let node = TestNode::start().await;
    let raw = raw_client(&node, "alice").await;
    let data = b"hello media".to_vec();
    let sha = {
        let mut c = Context::new(&SHA256);
        c.update(&data);
        MediaId::from_digest(c.finish().as_ref().try_into().unwrap())
    };
    let begin = Request::Media(MediaRequest::BeginUpload {
        size_bytes: data.len() as u64,
        sha256: sha,
        mime_hint: None,
        file_name: None,
    });
    let Some(Response::Media(MediaResponse::Upload { upload, .. })) = raw.request(&begin).await
    else {
        panic!("expected an upload");
    };
    let stopped = |bytes: Vec<u8>| {
        let connection = raw.connection.clone();
        async move {
            let mut stream = connection.open_uni().await.unwrap();
            let _ = stream.write_all(&bytes).await;
            // Not finished: a stream whose every byte was acknowledged may complete before the
            // node's STOP_SENDING arrives; an open one can only end by being stopped.
            tokio::time::timeout(Duration::from_secs(20), stream.stopped())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let oversize_header = (UPLOAD_HEADER_FRAME_BYTES_MAX + 1).to_be_bytes().to_vec();
    assert_eq!(
        stopped(oversize_header).await,
        Some(piazza_protocol::media::upload_stop::MALFORMED.into())
    );
    let gap = UploadChunkHeader {
        upload,
        offset_bytes: 5,
    };
    let mut bytes = codec::encode_frame(&gap).unwrap();
    bytes.extend_from_slice(&data[5..]);
    // The node waits (bounded) for an earlier stream to fill the gap; none comes.
    let started = Instant::now();
    let code = stopped(bytes).await;
    assert_eq!(
        code,
        Some(piazza_protocol::media::upload_stop::OFFSET_MISMATCH.into()),
        "after {:?}",
        started.elapsed()
    );
    let mut bytes = codec::encode_frame(&UploadChunkHeader {
        upload,
        offset_bytes: 0,
    })
    .unwrap();
    bytes.extend_from_slice(&data);
    bytes.push(b'!');
    assert_eq!(
        stopped(bytes).await,
        Some(piazza_protocol::media::upload_stop::TOO_LARGE.into())
    );
    node.stop().await;
    assert_no_warnings();
}

/// An abandoned upload is deleted once untouched for `media.upload_ttl_secs`.
#[tokio::test]
async fn abandoned_uploads_are_collected() {
    let node = TestNode::start_with(|c| {
        c.media.upload_ttl_secs = 1;
        c.media.gc_interval_secs = 1;
    })
    .await;
    let raw = raw_client(&node, "alice").await;
    let begin = Request::Media(MediaRequest::BeginUpload {
        size_bytes: 1000,
        sha256: "ab".repeat(32).parse().unwrap(),
        mime_hint: None,
        file_name: None,
    });
    let Some(Response::Media(MediaResponse::Upload { upload, .. })) = raw.request(&begin).await
    else {
        panic!("expected an upload");
    };
    let mut stream = raw.connection.open_uni().await.unwrap();
    let header = UploadChunkHeader {
        upload,
        offset_bytes: 0,
    };
    stream
        .write_all(&codec::encode_frame(&header).unwrap())
        .await
        .unwrap();
    stream.write_all(&[1u8; 300]).await.unwrap();
    stream.finish().unwrap();
    let part = part_path(&node, "alice", upload);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 300 {
        assert!(Instant::now() < deadline, "the bytes never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(raw);
    // Bounded wait: TTL (1 s) plus at most one GC period (1 s), with slack for a busy machine.
    let deadline = Instant::now() + Duration::from_secs(15);
    let uploads = node.data_dir().join("uploads");
    loop {
        let leftovers: Vec<_> = walk(&uploads);
        if leftovers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not collected: {leftovers:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await;
    assert_no_warnings();
}

/// Every file under `dir` (two levels: user directories and their files).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            files.push(path);
        }
    }
    files
}

/// Uploads survive a node restart: the metadata and bytes are on disk, the upload id is derived
/// from (user, content), and the node hashes the part again at the finish.
#[tokio::test]
async fn uploads_resume_after_a_restart() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * MIB;
    let path = random_file(dir.path(), "r.bin", size, 11);
    let sha256 = sha256_of(&path);
    let raw = raw_client(&node, "alice").await;
    let begin = Request::Media(MediaRequest::BeginUpload {
        size_bytes: size,
        sha256: sha256.clone(),
        mime_hint: None,
        file_name: None,
    });
    let Some(Response::Media(MediaResponse::Upload { upload, .. })) = raw.request(&begin).await
    else {
        panic!("expected an upload");
    };
    let bytes = std::fs::read(&path).unwrap();
    let mut stream = raw.connection.open_uni().await.unwrap();
    let header = UploadChunkHeader {
        upload,
        offset_bytes: 0,
    };
    stream
        .write_all(&codec::encode_frame(&header).unwrap())
        .await
        .unwrap();
    stream.write_all(&bytes[..MIB as usize]).await.unwrap();
    stream.finish().unwrap();
    let part = part_path(&node, "alice", upload);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < MIB {
        assert!(Instant::now() < deadline, "the first MiB never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(raw);

    let node = node.restart().await;
    let alice = node.client_with("alice", "a", EventStart::Off).await;
    let uploaded = alice.upload(&path, None, None).await.unwrap();
    assert_eq!(uploaded.info.id, sha256);
    assert_eq!(
        (uploaded.resumed_from_bytes, uploaded.sent_bytes),
        (MIB, size - MIB)
    );
    node.stop().await;
    assert_no_warnings();
}

/// Groups and channels have pictures: set by moderators from an image they uploaded, announced
/// to members, downloadable by members, shown in the profile; not by members, not a non-image.
#[tokio::test]
async fn group_and_channel_pictures() {
    let node = TestNode::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("face.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend_from_slice(&[1u8; 200]);
    std::fs::write(&png, &bytes).unwrap();
    let image = alice.upload(&png, None, None).await.unwrap().info;
    let text_file = dir.path().join("note.txt");
    std::fs::write(&text_file, "not a picture").unwrap();
    let note = alice.upload(&text_file, None, None).await.unwrap().info;

    let conversation = alice.create_group("g", vec![user("bob")]).await.unwrap();
    let ConversationId::Group(group) = conversation.clone() else {
        panic!()
    };
    let target = ConversationRef::Group(group);
    assert!(matches!(
        alice
            .set_avatar(target.clone(), Some(note.id.clone()))
            .await
            .unwrap_err()
            .server_code(),
        Some(ErrorCode::Invalid { .. })
    ));
    alice
        .set_avatar(target.clone(), Some(image.id.clone()))
        .await
        .unwrap();
    let announced = loop {
        let m = next_message(&bob, Duration::from_secs(10)).await;
        if matches!(m.body, MessageBody::System(_)) && m.seq > piazza_protocol::Seq::new(1) {
            break m;
        }
    };
    assert!(matches!(
        announced.body,
        MessageBody::System(piazza_protocol::SystemEvent::AvatarChanged { media: Some(ref m) })
            if m.id == image.id
    ));
    assert_eq!(
        bob.group_info(group).await.unwrap().avatar,
        Some(image.id.clone())
    );
    // A member downloads it through the group; a member cannot change it.
    let mut got = Vec::new();
    bob.download(&image.id, target.clone(), None, &mut got)
        .await
        .unwrap();
    assert_eq!(got, bytes);
    assert_eq!(
        bob.set_avatar(target.clone(), None)
            .await
            .unwrap_err()
            .server_code(),
        Some(&ErrorCode::Forbidden)
    );
    alice.set_avatar(target, None).await.unwrap();
    assert_eq!(bob.group_info(group).await.unwrap().avatar, None);

    let channel = alice.create_channel("c", "", false).await.unwrap();
    let chan = ConversationRef::Id(ConversationId::Channel(channel));
    alice
        .set_avatar(chan, Some(image.id.clone()))
        .await
        .unwrap();
    assert_eq!(
        bob.channel_info(channel).await.unwrap().avatar,
        Some(image.id)
    );
    node.stop().await;
    assert_no_warnings();
}
