//! Magic-byte sniffing: the type of a blob is decided from its first bytes, never taken from the
//! uploader. Pure: the same prefix always gives the same type, so a store may sniff again instead of
//! keeping the type beside the bytes.

/// Bytes of a blob's beginning that sniffing looks at. Every magic number below sits in the first
/// 16 bytes; the rest is for telling text from binary.
pub(crate) const SNIFF_BYTES: usize = 8 * 1024;

/// The type for bytes that match nothing known.
pub(crate) const OCTET_STREAM: &str = "application/octet-stream";

/// The MIME type of a blob whose first (up to [`SNIFF_BYTES`]) bytes are `prefix`. `complete`
/// says whether `prefix` is the whole blob (then a multi-byte character cut off at the end is not
/// excused when checking for text).
pub(crate) fn sniff(prefix: &[u8], complete: bool) -> &'static str {
    let prefix = &prefix[..prefix.len().min(SNIFF_BYTES)];
    let starts = |magic: &[u8]| prefix.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| {
        prefix
            .get(offset..offset + magic.len())
            .is_some_and(|bytes| bytes == magic)
    };
    if starts(&[0xff, 0xd8, 0xff]) {
        return "image/jpeg";
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return "image/png";
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return "image/gif";
    }
    if starts(b"RIFF") && at(8, b"WEBP") {
        return "image/webp";
    }
    if starts(b"RIFF") && at(8, b"WAVE") {
        return "audio/wav";
    }
    if at(4, b"ftyp") {
        // ISO base media: the major brand says whether it is audio only (iTunes' M4A).
        return if at(8, b"M4A ") {
            "audio/mp4"
        } else {
            "video/mp4"
        };
    }
    if starts(&[0x1a, 0x45, 0xdf, 0xa3]) {
        // EBML: WebM names its doc type in the header; other Matroska files do not say "webm".
        let head = &prefix[..prefix.len().min(64)];
        return if head.windows(4).any(|w| w == b"webm") {
            "video/webm"
        } else {
            "video/x-matroska"
        };
    }
    if starts(b"OggS") {
        return "audio/ogg";
    }
    if starts(b"ID3") || is_mpeg_audio_frame(prefix) {
        return "audio/mpeg";
    }
    if starts(b"%PDF-") {
        return "application/pdf";
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        return "application/zip";
    }
    if is_text(prefix, complete) {
        return "text/plain; charset=utf-8";
    }
    OCTET_STREAM
}

/// Whether a declared type `hint` contradicts the sniffed type `sniffed`. Only image, video and
/// audio claims are checked (a client that says "photo" must send one); any other hint is
/// informational. An image of another format than claimed is still an image; containers that hold
/// sound or pictures satisfy both claims where they can (MP4, WebM and Matroska an audio claim,
/// Ogg a video claim).
pub(crate) fn contradicts(hint: &str, sniffed: &str) -> bool {
    let family = |mime: &str| {
        mime.split('/')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let sniffed_family = family(sniffed);
    match family(hint).as_str() {
        "image" => sniffed_family != "image",
        "video" => !(sniffed_family == "video" || sniffed == "audio/ogg"),
        "audio" => {
            !(sniffed_family == "audio"
                || matches!(sniffed, "video/mp4" | "video/webm" | "video/x-matroska"))
        }
        _ => false,
    }
}

/// An MPEG audio frame header without an ID3 tag: 11 sync bits, a valid version and layer, and a
/// bitrate index that is neither free nor bad.
fn is_mpeg_audio_frame(prefix: &[u8]) -> bool {
    let [b0, b1, b2, ..] = prefix else {
        return false;
    };
    let sync = *b0 == 0xff && (b1 & 0xe0) == 0xe0;
    let version_ok = (b1 >> 3) & 0b11 != 0b01;
    let layer_ok = (b1 >> 1) & 0b11 != 0b00;
    let bitrate = b2 >> 4;
    sync && version_ok && layer_ok && bitrate != 0 && bitrate != 0b1111
}

/// Valid UTF-8 without NUL or other control characters than whitespace. When the prefix is not the
/// whole blob, a character cut off by the prefix's end is allowed.
fn is_text(prefix: &[u8], complete: bool) -> bool {
    if prefix.is_empty() {
        return false;
    }
    let valid = match std::str::from_utf8(prefix) {
        Ok(text) => text,
        Err(e) if !complete && e.error_len().is_none() => {
            // Only an incomplete sequence at the very end: judge what precedes it.
            match std::str::from_utf8(&prefix[..e.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    !valid
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}
