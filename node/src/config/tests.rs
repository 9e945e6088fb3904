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
