//! Encryption at rest: a key ring of XChaCha20-Poly1305 keys, sealing with
//! associated data that binds a ciphertext to its row, and a `Secret` wrapper
//! that never prints its contents.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{AeadCore, Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::fmt;

const NONCE_LEN: usize = 24;
/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;

/// A value that must never reach a log line, an error or a page.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The wrapped value; call sites are the places a secret is used on purpose.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Stands in for a secret field in a hand-written `Debug`: prints `***`.
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `Some(***)` or `None`: whether a secret is there, never what it is.
pub fn redacted<T>(value: &Option<T>) -> Option<Redacted> {
    value.as_ref().map(|_| Redacted)
}

/// Why a ciphertext did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("data is encrypted with key id '{0}', which is not in TETHER_ENCRYPTION_KEYS")]
    UnknownKey(String),
    #[error("ciphertext is too short to be valid")]
    Truncated,
    #[error("ciphertext failed authentication (tampered, moved from another row, or a different key under id '{0}')")]
    Tampered(String),
}

/// Which row a ciphertext belongs to. Sealing binds the ciphertext to it, so a
/// ciphertext copied into another row (or table) does not open.
#[derive(Debug, Clone, Copy)]
pub enum Aad<'a> {
    Connection {
        id: &'a str,
        tenant_id: &'a str,
        provider: &'a str,
    },
    OAuthState {
        id: &'a str,
        tenant_id: &'a str,
        provider: &'a str,
    },
    KeyCheck {
        key_id: &'a str,
    },
    /// A provider-initiated install no tenant has claimed yet.
    PendingInstall {
        id: &'a str,
        provider: &'a str,
    },
}

impl Aad<'_> {
    fn bytes(&self) -> Vec<u8> {
        // NUL separators: none of the parts may contain NUL (ids are UUIDs,
        // providers are validated keys), so the encoding is unambiguous.
        let parts: [&str; 4] = match *self {
            Aad::Connection {
                id,
                tenant_id,
                provider,
            } => ["tether/v1/connection", id, tenant_id, provider],
            Aad::OAuthState {
                id,
                tenant_id,
                provider,
            } => ["tether/v1/oauth_state", id, tenant_id, provider],
            Aad::KeyCheck { key_id } => ["tether/v1/key_check", key_id, "", ""],
            Aad::PendingInstall { id, provider } => ["tether/v1/pending_install", id, "", provider],
        };
        parts.join("\0").into_bytes()
    }
}

/// A ciphertext and the id of the key that sealed it.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key_id: String,
    /// nonce (24 bytes) followed by the AEAD output.
    pub bytes: Vec<u8>,
}

/// The keys Tether encrypts with: the first seals, all open.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("key_ids", &self.key_ids())
            .field("keys", &Redacted)
            .finish()
    }
}

impl KeyRing {
    /// Parses `kid:base64,kid:base64` (first is primary). The error names the
    /// offending entry by position and key id, never its key material.
    pub fn parse(spec: &str) -> Result<KeyRing, String> {
        let mut keys: Vec<(String, XChaCha20Poly1305)> = Vec::new();
        for (i, entry) in spec.split(',').map(str::trim).enumerate() {
            let n = i + 1;
            let Some((kid, b64)) = entry.split_once(':') else {
                return Err(format!(
                    "entry {n} is not of the form <key-id>:<base64 of {KEY_LEN} bytes>"
                ));
            };
            let kid = kid.trim();
            if !valid_key_id(kid) {
                return Err(format!(
                    "entry {n}: key id must be 1 to 32 characters of A-Z, a-z, 0-9, '-' or '_'"
                ));
            }
            let raw = B64
                .decode(b64.trim())
                .map_err(|_| format!("key '{kid}' is not valid base64"))?;
            if raw.len() != KEY_LEN {
                return Err(format!(
                    "key '{kid}' is {} bytes; it must be {KEY_LEN} bytes (generate one with `openssl rand -base64 32`)",
                    raw.len()
                ));
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(format!("key id '{kid}' appears twice"));
            }
            keys.push((
                kid.to_string(),
                XChaCha20Poly1305::new(Key::from_slice(&raw)),
            ));
        }
        Ok(KeyRing { keys })
    }

    /// A ring of one freshly generated key, and its `kid:base64` form.
    pub fn generate(kid: &str) -> (KeyRing, Secret<String>) {
        let mut raw = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut raw);
        let spec = format!("{kid}:{}", B64.encode(raw));
        let ring = KeyRing::parse(&spec).expect("a generated key is well-formed");
        (ring, Secret::new(spec))
    }

    /// The id of the key that seals new data.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The same keys with `kid` moved first (it must be in the ring).
    pub fn with_primary(&self, kid: &str) -> KeyRing {
        let mut keys = self.keys.clone();
        if let Some(i) = keys.iter().position(|(k, _)| k == kid) {
            let key = keys.remove(i);
            keys.insert(0, key);
        }
        KeyRing { keys }
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(k, _)| k.as_str()).collect()
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key_id)
    }

    /// Seals `plaintext` under the primary key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], aad: Aad<'_>) -> Sealed {
        let (kid, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad.bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut bytes = Vec::with_capacity(NONCE_LEN + ct.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ct);
        Sealed {
            key_id: kid.clone(),
            bytes,
        }
    }

    /// Opens a ciphertext sealed by `key_id` for the row `aad` names.
    pub fn open(&self, key_id: &str, bytes: &[u8], aad: Aad<'_>) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| k == key_id)
            .map(|(_, c)| c)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        // 16 bytes of Poly1305 tag at the least.
        if bytes.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Truncated);
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad.bytes(),
                },
            )
            .map_err(|_| CryptoError::Tampered(key_id.to_string()))
    }
}

fn valid_key_id(kid: &str) -> bool {
    (1..=32).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    OsRng.fill_bytes(&mut out);
    out
}

/// A random token of `n` bytes, URL-safe base64 without padding.
pub fn random_token(n: usize) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    URL_SAFE_NO_PAD.encode(random_bytes(n))
}

/// Lower-case hex SHA-256, for values stored only as hashes (API keys, states).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// A fingerprint of a secret key that instances can compare without
/// revealing it: the first 16 bytes of HMAC-SHA256 of a fixed text under
/// the key, in hex.
pub fn key_fingerprint(key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"tether key fingerprint v1");
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 section 4):
/// the 32 bytes of the key follow it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 public key from its SubjectPublicKeyInfo: PEM (`-----BEGIN
/// PUBLIC KEY-----`, with real or `\n` line breaks) or the bare base64 of
/// the DER. The error says what is wrong, never the text.
pub fn ed25519_public_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.replace("\\n", "\n");
    let body: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = B64
        .decode(body.split_whitespace().collect::<String>())
        .map_err(|_| "is not base64 (or PEM) of an Ed25519 public key".to_string())?;
    match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => {
            let mut out = [0u8; 32];
            out.copy_from_slice(key);
            Ok(out)
        }
        _ => Err(format!(
            "is {} bytes of DER, not an Ed25519 SubjectPublicKeyInfo (44 bytes starting 302a300506032b6570032100)",
            der.len()
        )),
    }
}

/// The SubjectPublicKeyInfo (bare base64 of the DER) of a raw Ed25519 key.
pub fn ed25519_spki_base64(key: &[u8; 32]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(key);
    B64.encode(der)
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `message`.
pub fn ed25519_verifies(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_read_from_pem_or_base64_and_verify_only_their_signatures() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pair = Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        let mut raw = [0u8; 32];
        raw.copy_from_slice(pair.public_key().as_ref());
        let b64 = ed25519_spki_base64(&raw);
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n");
        let escaped = pem.replace('\n', "\\n");
        for text in [&b64, &pem, &escaped] {
            assert_eq!(ed25519_public_key(text).unwrap(), raw, "{text}");
        }
        let sig = pair.sign(b"body");
        assert!(ed25519_verifies(&raw, b"body", sig.as_ref()));
        assert!(!ed25519_verifies(&raw, b"body!", sig.as_ref()));
        assert!(!ed25519_verifies(&raw, b"body", &sig.as_ref()[1..]));
        // GoHighLevel's published key reads (the default of its option).
        assert!(
            ed25519_public_key("MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=")
                .is_ok()
        );
        for bad in [
            "",
            "not base64!",
            &B64.encode([0u8; 44]),
            &B64.encode([1u8; 32]),
        ] {
            assert!(ed25519_public_key(bad).is_err(), "{bad}");
        }
    }

    fn aad() -> Aad<'static> {
        Aad::Connection {
            id: "c1",
            tenant_id: "t1",
            provider: "demo",
        }
    }

    #[test]
    fn seal_then_open_round_trips_with_a_fresh_nonce_each_time() {
        let (ring, _) = KeyRing::generate("k1");
        let a = ring.seal(b"hello", aad());
        let b = ring.seal(b"hello", aad());
        assert_ne!(a.bytes, b.bytes, "nonces must differ");
        assert_eq!(ring.open("k1", &a.bytes, aad()).unwrap(), b"hello");
    }

    #[test]
    fn other_row_or_flipped_byte_does_not_open() {
        let (ring, _) = KeyRing::generate("k1");
        let sealed = ring.seal(b"hello", aad());
        let other = Aad::Connection {
            id: "c2",
            tenant_id: "t1",
            provider: "demo",
        };
        assert_eq!(
            ring.open("k1", &sealed.bytes, other),
            Err(CryptoError::Tampered("k1".into()))
        );
        let mut flipped = sealed.bytes.clone();
        flipped[30] ^= 1;
        assert!(ring.open("k1", &flipped, aad()).is_err());
        assert_eq!(
            ring.open("k1", &sealed.bytes[..10], aad()),
            Err(CryptoError::Truncated)
        );
        assert_eq!(
            ring.open("k9", &sealed.bytes, aad()),
            Err(CryptoError::UnknownKey("k9".into()))
        );
    }

    #[test]
    fn parse_rejects_bad_rings_without_echoing_key_material() {
        let good = B64.encode([7u8; 32]);
        assert!(KeyRing::parse(&format!("k2:{good},k1:{good}")).is_ok());
        for bad in [
            "nokid".to_string(),
            format!("k1:{good},k1:{good}"),
            "k1:not-base64!!".to_string(),
            format!("k1:{}", B64.encode([1u8; 16])),
            format!("bad id:{good}"),
        ] {
            let err = KeyRing::parse(&bad).unwrap_err();
            assert!(!err.contains(&good), "{err}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }
}
