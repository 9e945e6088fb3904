use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_match_the_contract() {
    let config = Config::load(None, env(&[]), &Overrides::default()).unwrap();
    assert_eq!(config.node.data_dir, PathBuf::from("./piazza-data"));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:4433");
    assert_eq!(config.server.admin_listen.to_string(), "127.0.0.1:9090");
}

#[test]
fn file_then_env_then_flags() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[server]\nlisten = \"127.0.0.1:5000\"\n[limits]\nsend_burst = 7\nsend_rate_per_s = 3"
    )
    .unwrap();
    let config = Config::load(
        Some(file.path()),
        env(&[
            ("PIAZZA__LIMITS__SEND_BURST", "9"),
            ("PIAZZA__NODE__NAME", "n7"),
            ("HOME", "/x"),
        ]),
        &Overrides {
            admin_listen: Some("127.0.0.1:9999".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        config.server.listen.to_string(),
        "127.0.0.1:5000",
        "from the file"
    );
    assert_eq!(config.limits.send_burst, 9, "env beats the file");
    assert_eq!(config.limits.send_rate_per_s, 3, "file beats the default");
    assert_eq!(config.node.name, "n7");
    assert_eq!(
        config.server.admin_listen.to_string(),
        "127.0.0.1:9999",
        "flag beats all"
    );

    let config = Config::load(
        Some(file.path()),
        env(&[]),
        &Overrides {
            listen: Some("127.0.0.1:6000".parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:6000");
}

#[test]
fn mistakes_are_reported() {
    let bad = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
    assert!(
        matches!(
            bad(&[("PIAZZA__LIMITS__SEND_BRUST", "1")]),
            Err(ConfigError::Invalid(_))
        ),
        "typo"
    );
    assert!(matches!(
        bad(&[("PIAZZA__LIMITS__SEND_BURST", "lots")]),
        Err(ConfigError::Invalid(_))
    ));
    assert!(matches!(
        bad(&[("PIAZZA__LIMITS__SEND_BURST", "0")]),
        Err(ConfigError::Invalid(_))
    ));
    assert!(matches!(
        bad(&[("PIAZZA__LIMITS", "1")]),
        Err(ConfigError::Invalid(_))
    ));
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[server\n").unwrap();
    assert!(matches!(
        Config::load(Some(file.path()), env(&[]), &Overrides::default()),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn media_section_defaults_and_bounds() {
    let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs), &Overrides::default());
    let config = load(&[]).unwrap();
    assert_eq!(config.media.max_bytes, 100 * 1024 * 1024);
    assert_eq!(config.media.upload_ttl_secs, 24 * 3600);
    assert_eq!(config.media.upload_streams_max, 4);
    // max_bytes: the protocol's hard limit is allowed, one byte more is not.
    let hard = piazza_protocol::limits::MEDIA_BYTES_HARD_MAX;
    let config = load(&[("PIAZZA__MEDIA__MAX_BYTES", &hard.to_string())]).unwrap();
    assert_eq!(config.media.max_bytes, hard);
    for (key, value) in [
        ("PIAZZA__MEDIA__MAX_BYTES", (hard + 1).to_string()),
        ("PIAZZA__MEDIA__MAX_BYTES", "0".to_owned()),
        ("PIAZZA__MEDIA__UPLOAD_TTL_SECS", "0".to_owned()),
        ("PIAZZA__MEDIA__GC_INTERVAL_SECS", "86401".to_owned()),
        ("PIAZZA__MEDIA__UPLOAD_STREAMS_MAX", "65".to_owned()),
        ("PIAZZA__MEDIA__UPLOADS_PER_USER_MAX", "0".to_owned()),
    ] {
        assert!(
            matches!(load(&[(key, &value)]), Err(ConfigError::Invalid(_))),
            "{key}={value}"
        );
    }
    let config = load(&[
        ("PIAZZA__MEDIA__GC_INTERVAL_SECS", "86400"),
        ("PIAZZA__MEDIA__UPLOAD_STREAMS_MAX", "64"),
    ])
    .unwrap();
    assert_eq!(
        (
            config.media.gc_interval_secs,
            config.media.upload_streams_max
        ),
        (86400, 64)
    );
}
