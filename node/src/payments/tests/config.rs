//! The `[payments]` section: defaults, validation, secrets kept out of `Debug`, and building
//! each provider.

use tokio::sync::mpsc;

use crate::config::{Config, Overrides};
use crate::payments::{PaymentsSection, ProviderKind, build};

fn load(toml: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piazza.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(Some(&path), Vec::new(), &Overrides::default()).map_err(|e| e.to_string())
}

#[test]
fn the_default_is_a_quiet_sandbox() {
    let config = load("").unwrap();
    let p = &config.payments;
    assert_eq!(p.provider, ProviderKind::Sandbox);
    assert_eq!(p.sandbox_latency_ms, 20);
    assert_eq!(
        (
            p.sandbox_duplicate_per_mille,
            p.sandbox_reorder_per_mille,
            p.sandbox_late_per_mille
        ),
        (0, 0, 0)
    );
    assert_eq!(p.webhook_tolerance_secs, 300);
    p.validate().unwrap();
}

#[test]
fn keys_are_checked() {
    let config = load("[payments]\nsandbox_duplicate_per_mille = 250\nsandbox_seed = 9\n").unwrap();
    assert_eq!(config.payments.sandbox_duplicate_per_mille, 250);
    for bad in [
        "[payments]\nsandbox_duplicate_per_mille = 1001\n",
        "[payments]\nsandbox_latency_ms = 60001\n",
        "[payments]\nwebhook_tolerance_secs = 0\n",
        "[payments]\nrequest_timeout_ms = 0\n",
        "[payments]\nprovider = \"paypal\"\n",
        "[payments]\nno_such_key = 1\n",
        "[payments]\nprovider = \"http\"\n",
        "[payments]\nprovider = \"http\"\nbase_url = \"https://api.example\"\napi_key = \"k\"\nwebhook_secret = \"s\"\n",
        "[payments]\nprovider = \"http\"\nbase_url = \"http://127.0.0.1:9\"\nwebhook_secret = \"s\"\n",
        "[payments]\nprovider = \"http\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\n",
    ] {
        assert!(load(bad).is_err(), "{bad}");
    }
    let good = "[payments]\nprovider = \"http\"\nbase_url = \"http://127.0.0.1:9/stripe\"\napi_key = \"k\"\nwebhook_secret = \"s\"\n";
    assert_eq!(load(good).unwrap().payments.provider, ProviderKind::Http);
}

#[test]
fn environment_variables_set_payment_keys() {
    let env = [
        (
            "PIAZZA__PAYMENTS__SANDBOX_LATE_PER_MILLE".to_owned(),
            "100".to_owned(),
        ),
        (
            "PIAZZA__PAYMENTS__PROVIDER".to_owned(),
            "sandbox".to_owned(),
        ),
    ];
    let config = Config::load(None, env, &Overrides::default()).unwrap();
    assert_eq!(config.payments.sandbox_late_per_mille, 100);
}

#[test]
fn secrets_are_not_printed() {
    let section = PaymentsSection {
        api_key: Some("sk_live_secret".into()),
        webhook_secret: Some("whsec_secret".into()),
        ..PaymentsSection::default()
    };
    let printed = format!("{section:?}");
    assert!(
        !printed.contains("sk_live_secret") && !printed.contains("whsec_secret"),
        "{printed}"
    );
    assert!(printed.contains("<redacted>"));
}

#[tokio::test]
async fn build_makes_the_configured_provider_and_reads_secret_files() {
    let (tx, _rx) = mpsc::channel(4);
    let sandbox = build(&PaymentsSection::default(), tx.clone()).unwrap();
    assert_eq!(sandbox.name(), "sandbox");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let secret = dir.path().join("secret");
    std::fs::write(&key, "sk_test_1\n").unwrap();
    std::fs::write(&secret, "whsec_1\n").unwrap();
    let section = PaymentsSection {
        provider: ProviderKind::Http,
        base_url: "http://127.0.0.1:9".into(),
        api_key_file: Some(key),
        webhook_secret_file: Some(secret.clone()),
        ..PaymentsSection::default()
    };
    assert_eq!(build(&section, tx.clone()).unwrap().name(), "http");
    let missing = PaymentsSection {
        webhook_secret_file: Some(dir.path().join("nope")),
        ..section
    };
    assert!(build(&missing, tx).is_err());
}
