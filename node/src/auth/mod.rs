//! Client tokens: JWTs signed with Ed25519 (`EdDSA`).
//!
//! The node verifies a token's signature, issuer and expiry in `Hello`; the subject is the user
//! name. `piazza-node token` mints tokens with the node's signing key. A production deployment
//! configures only the public key (`auth.public_key_file`) and mints tokens elsewhere.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use piazza_protocol::UserId;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// Issuer claim of every token this node mints and accepts.
pub const TOKEN_ISSUER: &str = "piazza";

/// Why a token could not be minted or verified, or a key loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, badly signed, expired, or names an invalid user.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyIo {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a valid key.
    #[error("key file {path} does not hold a valid Ed25519 key")]
    BadKey {
        /// The file.
        path: String,
    },
    /// This node only has a public key and cannot mint tokens.
    #[error("no signing key configured (only a public key)")]
    NoSigningKey,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: u64,
    exp: u64,
}

/// Verifies tokens and, when it holds the private key, mints them.
pub struct TokenAuthority {
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

impl TokenAuthority {
    /// Loads the PKCS#8 signing key at `path`, generating it (mode 0600) if the file is missing.
    pub fn load_or_generate(path: &Path) -> Result<TokenAuthority, AuthError> {
        let io_err = |source| AuthError::KeyIo {
            path: path.display().to_string(),
            source,
        };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AuthError::BadKey {
                    path: path.display().to_string(),
                })?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io_err)?;
                }
                write_private(path, doc.as_ref()).map_err(io_err)?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(io_err(e)),
        };
        TokenAuthority::from_pkcs8(&pkcs8).map_err(|_| AuthError::BadKey {
            path: path.display().to_string(),
        })
    }

    /// Loads a verify-only authority from a raw 32-byte Ed25519 public key file.
    pub fn load_public(path: &Path) -> Result<TokenAuthority, AuthError> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::KeyIo {
            path: path.display().to_string(),
            source,
        })?;
        if bytes.len() != 32 {
            return Err(AuthError::BadKey {
                path: path.display().to_string(),
            });
        }
        Ok(TokenAuthority {
            encoding: None,
            decoding: DecodingKey::from_ed_der(&bytes),
            validation: validation(),
        })
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenAuthority, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)?;
        Ok(TokenAuthority {
            encoding: Some(EncodingKey::from_ed_der(pkcs8)),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            validation: validation(),
        })
    }

    /// Mints a token for `user`, valid from `now_s` for `ttl_s` seconds.
    pub fn mint(&self, user: &UserId, now_s: u64, ttl_s: u64) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::NoSigningKey)?;
        let claims = Claims {
            sub: user.as_str().to_owned(),
            iss: TOKEN_ISSUER.to_owned(),
            iat: now_s,
            exp: now_s.saturating_add(ttl_s),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, key)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))
    }

    /// Verifies a token and returns its user. Expiry is checked against the system clock by the
    /// JWT library (with no leeway).
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let user = data
            .claims
            .sub
            .parse::<UserId>()
            .map_err(|e| AuthError::InvalidToken(format!("subject: {e}")))?;
        if user.is_reserved() {
            return Err(AuthError::InvalidToken(format!(
                "subject {user} is reserved for the node"
            )));
        }
        Ok(user)
    }
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[TOKEN_ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.leeway = 0;
    validation
}

/// Writes a secret file readable only by its owner.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
