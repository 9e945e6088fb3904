//! The pure pieces (sniffing, metadata, upload decisions, slots) and the service against a real
//! temporary directory.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use piazza_protocol::limits::UPLOAD_STREAM_BYTES_MAX;
use piazza_protocol::{MediaId, MediaResponse, UploadChunkHeader, UploadId, UserId};

use super::sniff::{SNIFF_BYTES, contradicts, sniff};
use super::upload::{
    BeginPlan, RunningHash, Slots, UploadMeta, check_complete, plan_begin, stream_allowance,
    upload_id,
};
use super::{Media, MediaError};
use crate::config::MediaSection;

fn user(name: &str) -> UserId {
    name.parse().unwrap()
}

fn sha(bytes: &[u8]) -> MediaId {
    let mut hash = RunningHash::new();
    hash.update(bytes);
    hash.finish()
}

fn meta(size_bytes: u64) -> UploadMeta {
    UploadMeta {
        owner: user("alice"),
        size_bytes,
        sha256: sha(b"x"),
        created_at_ms: 1_700_000_000_000,
        mime_hint: Some("image/png".into()),
    }
}

#[test]
fn sniffs_known_types() {
    let check = |bytes: &[u8], expected: &str| {
        assert_eq!(sniff(bytes, true), expected, "{bytes:02x?}");
    };
    check(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], "image/jpeg");
    check(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png");
    check(b"GIF89a\x01\x00", "image/gif");
    check(b"GIF87a\x01\x00", "image/gif");
    check(b"RIFF\x24\0\0\0WEBPVP8 ", "image/webp");
    check(b"RIFF\x24\0\0\0WAVEfmt ", "audio/wav");
    check(b"\0\0\0\x20ftypisom\0\0\x02\0", "video/mp4");
    check(b"\0\0\0\x20ftypM4A \0\0\x02\0", "audio/mp4");
    check(
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
        "video/webm",
    );
    check(
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska",
        "video/x-matroska",
    );
    check(b"OggS\0\x02\0\0", "audio/ogg");
    check(b"ID3\x04\0\0\0\0\0\0", "audio/mpeg");
    check(&[0xff, 0xfb, 0x90, 0x64], "audio/mpeg");
    check(b"%PDF-1.7\n", "application/pdf");
    check(b"PK\x03\x04\x14\0", "application/zip");
    check(
        "hello, wörld\n\ttabs".as_bytes(),
        "text/plain; charset=utf-8",
    );
    check(b"nul \0 inside", "application/octet-stream");
    check(&[0xc3, 0x28], "application/octet-stream");
    check(b"", "application/octet-stream");
    // Free-format and reserved MPEG headers are not taken for MP3.
    check(&[0xff, 0xfb, 0x00, 0x64], "application/octet-stream");
}

#[test]
fn text_cut_at_the_sniff_window_is_still_text() {
    // A multi-byte character split by the window is excused only when the prefix is not the
    // whole blob.
    let mut text = "a".repeat(SNIFF_BYTES - 1).into_bytes();
    text.extend_from_slice("é".as_bytes());
    let prefix = &text[..SNIFF_BYTES];
    assert_eq!(sniff(prefix, false), "text/plain; charset=utf-8");
    assert_eq!(sniff(prefix, true), "application/octet-stream");
}

#[test]
fn hints_that_contradict() {
    assert!(contradicts("image/png", "application/pdf"));
    assert!(contradicts("image/jpeg", "text/plain; charset=utf-8"));
    assert!(!contradicts("image/png", "image/jpeg"), "still an image");
    assert!(contradicts("video/mp4", "audio/mpeg"));
    assert!(!contradicts("video/ogg", "audio/ogg"));
    assert!(
        !contradicts("audio/mp4", "video/mp4"),
        "m4a without its brand"
    );
    assert!(contradicts("audio/mpeg", "image/png"));
    assert!(
        !contradicts("application/pdf", "image/png"),
        "other hints inform only"
    );
    assert!(!contradicts("nonsense", "application/octet-stream"));
    assert!(!contradicts("IMAGE/PNG", "image/png"));
}

#[test]
fn meta_round_trips_and_rejects_corruption() {
    for m in [
        meta(1),
        UploadMeta {
            mime_hint: None,
            ..meta(u64::MAX)
        },
    ] {
        assert_eq!(UploadMeta::decode(&m.encode()).unwrap(), m);
    }
    let bytes = meta(5).encode();
    assert!(UploadMeta::decode(&[]).is_err());
    assert!(UploadMeta::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(UploadMeta::decode(&trailing).is_err());
    let mut version = bytes;
    version[0] = 9;
    assert!(UploadMeta::decode(&version).is_err());
}

#[test]
fn upload_ids_are_per_owner_and_content() {
    let a = upload_id(&user("alice"), &sha(b"x"), 1);
    assert_eq!(a, upload_id(&user("alice"), &sha(b"x"), 1));
    assert_ne!(a, upload_id(&user("bob"), &sha(b"x"), 1));
    assert_ne!(a, upload_id(&user("alice"), &sha(b"y"), 1));
    assert_ne!(a, upload_id(&user("alice"), &sha(b"x"), 2));
}

#[test]
fn begin_resumes_creates_and_limits() {
    let requested = meta(10);
    assert_eq!(
        plan_begin(&requested, Some((&requested, 4)), 99, 1).unwrap(),
        BeginPlan::Resume { offset_bytes: 4 },
        "resuming is not counted against the limit"
    );
    // Limit and limit + 1 of uploads in progress.
    assert_eq!(
        plan_begin(&requested, None, 1, 2).unwrap(),
        BeginPlan::Create
    );
    assert!(matches!(
        plan_begin(&requested, None, 2, 2),
        Err(MediaError::TooLarge { .. })
    ));
    let other = UploadMeta {
        size_bytes: 11,
        ..requested.clone()
    };
    assert!(matches!(
        plan_begin(&requested, Some((&other, 0)), 0, 2),
        Err(MediaError::Conflict(_))
    ));
}

#[test]
fn streams_continue_exactly_where_the_part_ends() {
    assert_eq!(stream_allowance(10, 4, 4).unwrap(), 6);
    assert_eq!(stream_allowance(10, 10, 10).unwrap(), 0);
    assert!(matches!(
        stream_allowance(10, 4, 5),
        Err(MediaError::OffsetMismatch { have: 4, got: 5 })
    ));
    assert!(matches!(
        stream_allowance(10, 4, 3),
        Err(MediaError::OffsetMismatch { .. })
    ));
    let huge = 4 * UPLOAD_STREAM_BYTES_MAX;
    assert_eq!(
        stream_allowance(huge, 0, 0).unwrap(),
        UPLOAD_STREAM_BYTES_MAX
    );
}

#[test]
fn completion_checks_size_and_hash() {
    let m = UploadMeta {
        sha256: sha(b"abc"),
        ..meta(3)
    };
    assert!(check_complete(&m, 3, &sha(b"abc")).is_ok());
    assert!(matches!(
        check_complete(&m, 2, &sha(b"ab")),
        Err(MediaError::Incomplete { have: 2, size: 3 })
    ));
    assert!(matches!(
        check_complete(&m, 3, &sha(b"abd")),
        Err(MediaError::Mismatch)
    ));
}

#[test]
fn slots_are_bounded() {
    let slots = Slots::new(2);
    let key = |n: u64| (user("alice"), UploadId::new(n).unwrap());
    let held = slots.acquire(&key(1)).unwrap();
    let idle = slots.acquire(&key(2)).unwrap();
    drop(idle);
    // Full: the idle slot is evicted for a new one.
    let third = slots.acquire(&key(3)).unwrap();
    assert_eq!(slots.len(), 2);
    // Full of held slots: refused.
    assert!(slots.acquire(&key(4)).is_none());
    // The same key finds the same slot.
    assert!(Arc::ptr_eq(&held, &slots.acquire(&key(1)).unwrap()));
    drop(third);
    assert!(slots.acquire(&key(4)).is_some());
}

fn service(dir: &std::path::Path, max_bytes: u64) -> Arc<Media> {
    let config = MediaSection {
        max_bytes,
        uploads_per_user_max: 2,
        ..MediaSection::default()
    };
    Arc::new(Media::open(dir, &config).unwrap())
}

async fn begin(media: &Arc<Media>, who: &str, bytes: &[u8], hint: Option<&str>) -> (UploadId, u64) {
    let response = media
        .begin_upload(
            user(who),
            bytes.len() as u64,
            sha(bytes),
            hint.map(str::to_owned),
            None,
        )
        .await
        .unwrap();
    match response {
        MediaResponse::Upload {
            upload,
            offset_bytes,
        } => (upload, offset_bytes),
        other => panic!("expected an upload, got {other:?}"),
    }
}

async fn stream(
    media: &Arc<Media>,
    who: &str,
    upload: UploadId,
    offset_bytes: u64,
    bytes: &[u8],
) -> Result<u64, MediaError> {
    let header = UploadChunkHeader {
        upload,
        offset_bytes,
    };
    let mut writer = media.open_stream(&user(who), &header).await?;
    writer.write(bytes).await?;
    writer.close().await
}

#[tokio::test]
async fn upload_resume_finish_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let media = service(dir.path(), 1 << 20);
    let png = [b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 5000]].concat();

    let (upload, offset) = begin(&media, "alice", &png, Some("image/png")).await;
    assert_eq!(offset, 0);
    assert_eq!(
        stream(&media, "alice", upload, 0, &png[..2000])
            .await
            .unwrap(),
        2000
    );
    // Finishing early names what the node has and keeps the upload.
    assert!(matches!(
        media.finish_upload(user("alice"), upload).await,
        Err(MediaError::Incomplete { have: 2000, .. })
    ));
    // Asking again resumes; a stream at the wrong offset is refused; another user cannot even
    // find the upload.
    assert_eq!(
        begin(&media, "alice", &png, Some("image/png")).await,
        (upload, 2000)
    );
    assert!(matches!(
        stream(&media, "alice", upload, 1000, &png[1000..]).await,
        Err(MediaError::OffsetMismatch {
            have: 2000,
            got: 1000
        })
    ));
    assert!(matches!(
        stream(&media, "bob", upload, 2000, &png[2000..]).await,
        Err(MediaError::NotFound)
    ));
    assert!(matches!(
        media.finish_upload(user("bob"), upload).await,
        Err(MediaError::NotFound)
    ));
    // More than the file is refused.
    let mut too_much = png[2000..].to_vec();
    too_much.push(0);
    assert!(matches!(
        stream(&media, "alice", upload, 2000, &too_much).await,
        Err(MediaError::TooLarge { .. })
    ));
    stream(&media, "alice", upload, 2000, &png[2000..])
        .await
        .unwrap();
    let info = media.finish_upload(user("alice"), upload).await.unwrap();
    assert_eq!(info.id, sha(&png));
    assert_eq!(info.size_bytes, png.len() as u64);
    assert_eq!(info.mime, "image/png");
    assert_eq!(media.stat(&info.id).await.unwrap(), Some(info.clone()));
    assert!(media.uploaded_by(&user("alice"), &info.id).await);
    assert!(!media.uploaded_by(&user("bob"), &info.id).await);

    // Nothing is left of the upload; the same user gets the blob at once, another uploads again.
    assert!(
        std::fs::read_dir(dir.path().join("uploads/u-alice"))
            .unwrap()
            .next()
            .is_none()
    );
    let again = media
        .begin_upload(user("alice"), png.len() as u64, info.id.clone(), None, None)
        .await
        .unwrap();
    assert_eq!(again, MediaResponse::Ready(info.clone()));
    let (_, offset) = begin(&media, "bob", &png, None).await;
    assert_eq!(offset, 0);

    // Ranges.
    let mut reader = media.open_range(&info.id, 8, 20).await.unwrap();
    let mut read = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        read.extend_from_slice(&chunk);
    }
    assert_eq!(read, png[8..20]);
}

#[tokio::test]
async fn bad_uploads_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let media = service(dir.path(), 1 << 20);
    let pdf = b"%PDF-1.7\nnot a picture".to_vec();

    // A hint the bytes contradict fails the upload and removes it.
    let (upload, _) = begin(&media, "alice", &pdf, Some("image/jpeg")).await;
    stream(&media, "alice", upload, 0, &pdf).await.unwrap();
    match media.finish_upload(user("alice"), upload).await {
        Err(MediaError::Invalid { field, reason }) => {
            assert_eq!(field, "mime_hint");
            assert!(reason.contains("application/pdf"), "{reason}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(matches!(
        media.finish_upload(user("alice"), upload).await,
        Err(MediaError::NotFound)
    ));

    // Bytes that do not hash to the declared id fail the upload and remove it.
    let declared = b"%PDF-1.7\nthe real one".to_vec();
    let response = media
        .begin_upload(
            user("alice"),
            declared.len() as u64,
            sha(&declared),
            None,
            None,
        )
        .await
        .unwrap();
    let MediaResponse::Upload { upload, .. } = response else {
        panic!("expected an upload");
    };
    let forged = b"%PDF-1.7\nthe fake one".to_vec();
    assert_eq!(forged.len(), declared.len());
    stream(&media, "alice", upload, 0, &forged).await.unwrap();
    assert!(matches!(
        media.finish_upload(user("alice"), upload).await,
        Err(MediaError::Mismatch)
    ));
    assert!(
        std::fs::read_dir(dir.path().join("uploads/u-alice"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(media.stat(&sha(&declared)).await.unwrap(), None);

    // Size limit and limit + 1; uploads in progress per user.
    let small_dir = tempfile::tempdir().unwrap();
    let small = service(small_dir.path(), 10);
    assert!(
        small
            .begin_upload(user("alice"), 10, sha(b"0123456789"), None, None)
            .await
            .is_ok()
    );
    assert!(matches!(
        small
            .begin_upload(user("alice"), 11, sha(b"x"), None, None)
            .await,
        Err(MediaError::TooLarge {
            what: "size_bytes",
            limit: 10
        })
    ));
    assert!(
        small
            .begin_upload(user("alice"), 3, sha(b"abc"), None, None)
            .await
            .is_ok()
    );
    assert!(matches!(
        small
            .begin_upload(user("alice"), 3, sha(b"abd"), None, None)
            .await,
        Err(MediaError::TooLarge {
            what: "uploads_in_progress",
            ..
        })
    ));
}

#[tokio::test]
async fn abandoned_uploads_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let media = service(dir.path(), 1 << 20);
    let (old, _) = begin(&media, "alice", b"old bytes", None).await;
    stream(&media, "alice", old, 0, b"old").await.unwrap();
    // A stray temporary file as a crash between write and rename leaves it.
    let stray = dir.path().join("uploads/u-alice/0000000000000001.meta.tmp");
    std::fs::write(&stray, b"x").unwrap();

    let later = SystemTime::now() + Duration::from_secs(10);
    let removed = media
        .uploads
        .sweep(&media.slots, Duration::from_secs(5), later)
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!stray.exists());
    assert!(
        !dir.path().join("uploads/u-alice").exists(),
        "empty old directory removed"
    );

    // A recent upload and one whose lock is held stay.
    let (fresh, _) = begin(&media, "alice", b"fresh", None).await;
    let removed = media.collect_garbage().await.unwrap();
    assert_eq!(removed, 0);
    let header = UploadChunkHeader {
        upload: fresh,
        offset_bytes: 0,
    };
    let writer = media.open_stream(&user("alice"), &header).await.unwrap();
    let removed = media
        .uploads
        .sweep(&media.slots, Duration::ZERO, later)
        .unwrap();
    assert_eq!(removed, 0, "in use");
    writer.close().await.unwrap();
    let removed = media
        .uploads
        .sweep(&media.slots, Duration::ZERO, later)
        .unwrap();
    assert_eq!(removed, 1);
    assert!(matches!(
        media.finish_upload(user("alice"), fresh).await,
        Err(MediaError::NotFound)
    ));
}
