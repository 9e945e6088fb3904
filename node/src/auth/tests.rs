use super::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn mint_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k/token-key.pk8");
    let authority = TokenAuthority::load_or_generate(&path).unwrap();
    let alice: UserId = "alice".parse().unwrap();
    let token = authority.mint(&alice, now(), 60).unwrap();
    assert_eq!(authority.verify(&token).unwrap(), alice);

    // The same key file yields the same authority after a restart.
    let again = TokenAuthority::load_or_generate(&path).unwrap();
    assert_eq!(again.verify(&token).unwrap(), alice);

    // Another key does not verify it.
    let other = TokenAuthority::load_or_generate(&dir.path().join("other.pk8")).unwrap();
    assert!(matches!(
        other.verify(&token),
        Err(AuthError::InvalidToken(_))
    ));
}

#[test]
fn rejects_expired_tampered_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let authority = TokenAuthority::load_or_generate(&dir.path().join("k.pk8")).unwrap();
    let alice: UserId = "alice".parse().unwrap();
    let expired = authority.mint(&alice, now() - 100, 10).unwrap();
    assert!(authority.verify(&expired).is_err());

    let token = authority.mint(&alice, now(), 60).unwrap();
    let mut tampered = token.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    assert!(
        authority
            .verify(&String::from_utf8(tampered).unwrap())
            .is_err()
    );
    assert!(authority.verify("").is_err());
    assert!(authority.verify("a.b.c").is_err());
}

#[test]
fn verify_only_authority() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pk8");
    let signer = TokenAuthority::load_or_generate(&path).unwrap();
    let pkcs8 = std::fs::read(&path).unwrap();
    let public = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let public_path = dir.path().join("k.pub");
    std::fs::write(&public_path, public).unwrap();
    let verifier = TokenAuthority::load_public(&public_path).unwrap();
    let bob: UserId = "bob".parse().unwrap();
    assert_eq!(
        verifier
            .verify(&signer.mint(&bob, now(), 60).unwrap())
            .unwrap(),
        bob
    );
    assert!(matches!(
        verifier.mint(&bob, now(), 60),
        Err(AuthError::NoSigningKey)
    ));
}
