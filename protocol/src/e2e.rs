//! End-to-end encryption of data frames: P-256 key agreement and AES-256-GCM `E:` frames
//! (PROTOCOL.md §4, §5).
//!
//! Place in the data path: when a client's `client_hello` asks for encryption, `shard` makes a
//! [`KeyExchange`], sends [`KeyExchange::public_key_b64`] in `server_hello` and turns the
//! client's key into [`SessionKeys`] with [`KeyExchange::agree`]. From then on every outbound
//! data frame of that connection passes through [`SessionKeys::seal`] on its way to the
//! socket, and every inbound `E:` frame through [`SessionKeys::open`] (or
//! [`SessionKeys::open_in_place`]) before the envelope is parsed.
//!
//! This module owns the key material and the frame layout (`E:` || 12-byte IV || ciphertext ||
//! 16-byte tag, no AAD). It leaves to the shard which frames are sealed (heartbeats, `error`
//! and `server_hello` stay plaintext), when plaintext from the client is refused, and the
//! WebSocket opcode (`E:` frames are binary).
//!
//! Keys: IKM = the 32-byte ECDH x-coordinate; the AES key is HKDF-SHA256(IKM, no salt,
//! `wse-encryption/aes-gcm-key`) and the signing key HKDF-SHA256(IKM, no salt,
//! `wse-signing/hmac-sha256`), 32 bytes each. IVs come from the system random source for every
//! frame; with 96-bit random IVs one key stays safe for well over 2^32 frames, far beyond one
//! connection's life.

use std::fmt;
use std::sync::OnceLock;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::hkdf;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::signing::SigningKey;
use crate::Error;

/// The server's fresh P-256 key pair for one connection, before the client's key is known.
#[derive(Debug)]
pub struct KeyExchange {
    /// The private scalar; used once, by [`KeyExchange::agree`], which consumes `self`.
    private: PrivateKey,
    /// `private`'s public key as an uncompressed SEC1 point (`04 || X || Y`).
    public: [u8; PUBLIC_KEY_LEN],
}

impl KeyExchange {
    /// Makes a fresh key pair from the system random source.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the crypto library cannot generate a key.
    pub fn generate() -> Result<Self, Error> {
        let private = PrivateKey::generate(&ECDH_P256)
            .map_err(|_| Error::Crypto("p-256 key generation failed"))?;
        Self::from_private(private)
    }

    /// The public key to send in `server_hello` as `encryption_public_key`: the 65-byte
    /// uncompressed SEC1 point in standard base64 with padding.
    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.public)
    }

    /// Agrees on the session keys with the client's `encryption_public_key`, consuming the
    /// private key.
    ///
    /// # Errors
    /// [`Error::KeyExchange`] when the client key is not standard base64, not 65 bytes, not an
    /// uncompressed point, or not on P-256 (the shard answers `KEY_EXCHANGE_FAILED`,
    /// recoverable, and goes on unencrypted); [`Error::Crypto`] if key derivation fails.
    pub fn agree(self, client_public_b64: &str) -> Result<SessionKeys, Error> {
        let point = decode_public_key(client_public_b64)?;
        let peer = UnparsedPublicKey::new(&ECDH_P256, &point);
        agreement::agree(
            &self.private,
            peer,
            Error::KeyExchange("public key is not a point on p-256"),
            SessionKeys::from_ikm,
        )
    }

    /// Completes a key pair from its private half.
    fn from_private(private: PrivateKey) -> Result<Self, Error> {
        let public = private
            .compute_public_key()
            .map_err(|_| Error::Crypto("p-256 public key computation failed"))?;
        let public = <[u8; PUBLIC_KEY_LEN]>::try_from(public.as_ref())
            .map_err(|_| Error::Crypto("p-256 public key is not 65 bytes"))?;
        Ok(KeyExchange { private, public })
    }
}

/// The keys of one E2E connection: AES-256-GCM for `E:` frames and the HMAC signing key of
/// PROTOCOL.md §6, both derived from the ECDH shared secret.
///
/// About 80 bytes inline plus aws-lc-rs's heap context for AES-GCM. The HMAC key (about 1.2 KB,
/// it keeps precomputed hash states) is built on first use only, since most E2E clients never
/// sign.
pub struct SessionKeys {
    /// AES-256-GCM under the HKDF `wse-encryption/aes-gcm-key` output. Nonces are supplied per
    /// call, always fresh from `rng`.
    aead: LessSafeKey,
    /// The HKDF `wse-signing/hmac-sha256` output, the secret of `signing`.
    signing_secret: [u8; KEY_LEN],
    /// HMAC-SHA256 under `signing_secret`, built by the first [`SessionKeys::signing_key`].
    signing: OnceLock<Box<SigningKey>>,
    /// The system random source for IVs (a zero-sized handle).
    rng: SystemRandom,
}

impl SessionKeys {
    /// Appends one `E:` frame to `out`: `E:`, a fresh random 12-byte IV, the AES-256-GCM
    /// ciphertext of `plaintext` and its 16-byte tag.
    ///
    /// `plaintext` is the JSON text (or `M:` + msgpack) of one message. Nothing is allocated
    /// except by `out` growing; a publication is serialised once and sealed per subscriber into
    /// each subscriber's buffer. The IV costs one call to the system random source (about
    /// 0.45 us, most of a small frame's cost); [`SessionKeys::seal_with`] amortises it.
    ///
    /// # Errors
    /// [`Error::Crypto`] if the random source or the cipher fails; `out` is left as it was.
    pub fn seal(&self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let mut iv = [0u8; NONCE_LEN];
        self.rng.fill(&mut iv).map_err(|_| Error::Crypto("random source failed"))?;
        self.seal_under(iv, plaintext, out)
    }

    /// As [`SessionKeys::seal`], with the IV taken from `ivs`, a batch of random bytes drawn
    /// in bulk (one pool per shard, shared by all its connections).
    ///
    /// # Errors
    /// As [`SessionKeys::seal`].
    pub fn seal_with(
        &self,
        ivs: &mut IvPool,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        self.seal_under(ivs.take()?, plaintext, out)
    }

    /// Opens an `E:` frame (the whole binary message, prefix included) and returns its
    /// plaintext in a new buffer.
    ///
    /// # Errors
    /// [`Error::NotEncrypted`] without the `E:` prefix, [`Error::EncryptedFrameTooShort`] when
    /// shorter than prefix + IV + tag, [`Error::DecryptFailed`] when authentication fails.
    pub fn open(&self, frame: &[u8]) -> Result<Vec<u8>, Error> {
        let (nonce, sealed) = split_frame(frame)?;
        let mut buf = sealed.to_vec();
        let len = self
            .aead
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| Error::DecryptFailed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Like [`SessionKeys::open`], but decrypts inside the caller's buffer (the shard's read
    /// buffer) and returns the plaintext as a subslice of it; no allocation.
    ///
    /// # Errors
    /// As [`SessionKeys::open`]. After [`Error::DecryptFailed`] the ciphertext part of `frame`
    /// may have been overwritten.
    pub fn open_in_place<'f>(&self, frame: &'f mut [u8]) -> Result<&'f [u8], Error> {
        let (nonce, _) = split_frame(frame)?;
        let sealed = &mut frame[PREFIX.len() + NONCE_LEN..];
        let plain = self
            .aead
            .open_in_place(nonce, Aad::empty(), sealed)
            .map_err(|_| Error::DecryptFailed)?;
        Ok(plain)
    }

    /// The HMAC key for signing frames on this connection (PROTOCOL.md §6).
    pub fn signing_key(&self) -> &SigningKey {
        self.signing.get_or_init(|| Box::new(SigningKey::from_secret(&self.signing_secret)))
    }

    /// Appends the `E:` frame of `plaintext` under `iv`, which the caller never uses again.
    fn seal_under(
        &self,
        iv: [u8; NONCE_LEN],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = out.len();
        out.reserve(FRAME_OVERHEAD + plaintext.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&iv);
        let body = out.len();
        out.extend_from_slice(plaintext);

        let nonce = Nonce::assume_unique_for_key(iv);
        match self.aead.seal_in_place_separate_tag(nonce, Aad::empty(), &mut out[body..]) {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                out.truncate(start);
                Err(Error::Crypto("aes-256-gcm seal failed"))
            }
        }
    }

    /// Derives both keys from the ECDH x-coordinate.
    fn from_ikm(ikm: &[u8]) -> Result<Self, Error> {
        let aes = hkdf_sha256(ikm, AES_KEY_INFO)?;
        let signing = hkdf_sha256(ikm, SIGNING_KEY_INFO)?;
        let unbound = UnboundKey::new(&AES_256_GCM, &aes)
            .map_err(|_| Error::Crypto("aes-256-gcm key rejected"))?;
        Ok(SessionKeys {
            aead: LessSafeKey::new(unbound),
            signing_secret: signing,
            signing: OnceLock::new(),
            rng: SystemRandom::new(),
        })
    }
}

impl fmt::Debug for SessionKeys {
    /// Shows no key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").finish_non_exhaustive()
    }
}

/// Random IVs drawn from the system random source in bulk, each handed out once.
///
/// One call to the random source costs about as much as sealing 4 KiB, whatever the size
/// asked for; a pool pays it once per [`IV_POOL_LEN`] IVs. The IVs are as random as those of
/// [`SessionKeys::seal`] and a taken IV is never handed out again, so one pool may serve every
/// connection of a shard (each IV is unique across all keys, not only within one).
#[derive(Debug)]
pub struct IvPool {
    /// Random bytes; `buf[next..]` has not been handed out yet.
    buf: Box<[u8]>,
    /// Start of the first IV not yet taken; `buf.len()` when the pool must be refilled.
    next: usize,
    /// The system random source (a zero-sized handle).
    rng: SystemRandom,
}

impl IvPool {
    /// An empty pool; the first [`SessionKeys::seal_with`] fills it.
    pub fn new() -> Self {
        let len = IV_POOL_LEN * NONCE_LEN;
        IvPool { buf: vec![0; len].into_boxed_slice(), next: len, rng: SystemRandom::new() }
    }

    /// The next unused IV, refilling the pool from the random source when it is spent.
    fn take(&mut self) -> Result<[u8; NONCE_LEN], Error> {
        if self.next + NONCE_LEN > self.buf.len() {
            self.rng.fill(&mut self.buf).map_err(|_| Error::Crypto("random source failed"))?;
            self.next = 0;
        }
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(&self.buf[self.next..self.next + NONCE_LEN]);
        self.next += NONCE_LEN;
        Ok(iv)
    }
}

impl Default for IvPool {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes and checks a peer's public key: standard base64 of a 65-byte uncompressed point.
/// Whether the point is on the curve is checked by the agreement itself.
fn decode_public_key(b64: &str) -> Result<[u8; PUBLIC_KEY_LEN], Error> {
    if b64.len() > MAX_PUBLIC_KEY_B64_LEN {
        return Err(Error::KeyExchange("public key is not 65 bytes"));
    }
    let mut buf = [0u8; MAX_PUBLIC_KEY_B64_LEN / 4 * 3];
    let len = STANDARD
        .decode_slice(b64.as_bytes(), &mut buf)
        .map_err(|_| Error::KeyExchange("public key is not standard base64"))?;
    let point = <[u8; PUBLIC_KEY_LEN]>::try_from(&buf[..len])
        .map_err(|_| Error::KeyExchange("public key is not 65 bytes"))?;
    if point[0] != UNCOMPRESSED {
        return Err(Error::KeyExchange("public key is not an uncompressed point"));
    }
    Ok(point)
}

/// Splits an `E:` frame into its nonce and the ciphertext-plus-tag.
fn split_frame(frame: &[u8]) -> Result<(Nonce, &[u8]), Error> {
    let rest = frame.strip_prefix(PREFIX).ok_or(Error::NotEncrypted)?;
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::EncryptedFrameTooShort { len: frame.len() });
    }
    let (iv, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(iv)
        .map_err(|_| Error::EncryptedFrameTooShort { len: frame.len() })?;
    Ok((nonce, sealed))
}

/// HKDF-SHA256 with no salt (RFC 5869: a hash-length run of zeros), 32 bytes of output.
fn hkdf_sha256(ikm: &[u8], info: &[u8]) -> Result<[u8; KEY_LEN], Error> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(ikm);
    let info = [info];
    let okm = prk.expand(&info, hkdf::HKDF_SHA256).map_err(|_| Error::Crypto("hkdf expand"))?;
    let mut key = [0u8; KEY_LEN];
    okm.fill(&mut key).map_err(|_| Error::Crypto("hkdf fill"))?;
    Ok(key)
}

/// IVs drawn per refill of an [`IvPool`] (4,080 bytes of random data).
pub const IV_POOL_LEN: usize = 340;
/// The first bytes of every encrypted frame.
const PREFIX: &[u8] = b"E:";
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Bytes an `E:` frame adds to its plaintext: prefix, IV and tag.
pub const FRAME_OVERHEAD: usize = PREFIX.len() + NONCE_LEN + TAG_LEN;
/// Length of an uncompressed P-256 point.
const PUBLIC_KEY_LEN: usize = 65;
/// Longest base64 text decoded for a public key (88 is exact; a little slack for the decoder).
const MAX_PUBLIC_KEY_B64_LEN: usize = 128;
/// SEC1 tag of an uncompressed point.
const UNCOMPRESSED: u8 = 0x04;
/// Length of both derived keys.
const KEY_LEN: usize = 32;
/// HKDF info of the AES-256-GCM key.
const AES_KEY_INFO: &[u8] = b"wse-encryption/aes-gcm-key";
/// HKDF info of the signing key.
const SIGNING_KEY_INFO: &[u8] = b"wse-signing/hmac-sha256";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing;

    impl KeyExchange {
        /// A key pair from a fixed big-endian scalar, for known-answer tests.
        fn from_scalar(scalar: &[u8]) -> Self {
            let private = PrivateKey::from_private_key(&ECDH_P256, scalar).expect("valid scalar");
            Self::from_private(private).expect("public key")
        }
    }

    /// A server and a client side that agreed with each other.
    fn pair() -> (SessionKeys, SessionKeys) {
        let server = KeyExchange::generate().expect("generate");
        let client = KeyExchange::generate().expect("generate");
        let server_pub = server.public_key_b64();
        let s = server.agree(&client.public_key_b64()).expect("agree");
        let c = client.agree(&server_pub).expect("agree");
        (s, c)
    }

    fn sealed(keys: &SessionKeys, plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        keys.seal(plaintext, &mut out).expect("seal");
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn key_error(result: Result<SessionKeys, Error>) -> Error {
        result.expect_err("key must be rejected")
    }

    #[test]
    fn public_key_is_65_byte_uncompressed_point_in_std_base64() {
        let kx = KeyExchange::generate().expect("generate");
        let b64 = kx.public_key_b64();
        assert_eq!(b64.len(), 88);
        let bytes = STANDARD.decode(&b64).expect("base64");
        assert_eq!(bytes.len(), 65);
        assert_eq!(bytes[0], 0x04);
    }

    #[test]
    fn both_sides_derive_the_same_keys() {
        let (server, client) = pair();
        let frame = sealed(&server, br#"{"t":"hello"}"#);
        assert_eq!(client.open(&frame).expect("open"), br#"{"t":"hello"}"#);
        let frame = sealed(&client, b"from the client");
        assert_eq!(server.open(&frame).expect("open"), b"from the client");

        let mut signed = Vec::new();
        signing::sign(server.signing_key(), br#"{"a":1}"#, &mut signed).expect("sign");
        signing::verify(client.signing_key(), &signed).expect("same signing key");
    }

    #[test]
    fn frame_layout_is_prefix_iv_ciphertext_tag() {
        let (server, _) = pair();
        let frame = sealed(&server, b"0123456789");
        assert_eq!(&frame[..2], b"E:");
        assert_eq!(frame.len(), 2 + 12 + 10 + 16);
        assert_eq!(frame.len(), FRAME_OVERHEAD + 10);
    }

    #[test]
    fn seal_appends_and_leaves_existing_bytes() {
        let (server, client) = pair();
        let mut out = b"head".to_vec();
        server.seal(b"x", &mut out).expect("seal");
        assert_eq!(&out[..4], b"head");
        assert_eq!(client.open(&out[4..]).expect("open"), b"x");
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let (server, client) = pair();
        let frame = sealed(&server, b"");
        assert_eq!(frame.len(), FRAME_OVERHEAD);
        assert_eq!(client.open(&frame).expect("open"), b"");
    }

    #[test]
    fn open_in_place_returns_plaintext_inside_the_frame() {
        let (server, client) = pair();
        let mut frame = sealed(&server, b"in place");
        assert_eq!(client.open_in_place(&mut frame).expect("open"), b"in place");
    }

    #[test]
    fn pooled_ivs_are_unique_across_refills_and_frames_open() {
        let (server, client) = pair();
        let mut pool = IvPool::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(2 * IV_POOL_LEN + 7) {
            let mut frame = Vec::new();
            server.seal_with(&mut pool, b"pooled", &mut frame).expect("seal");
            assert!(seen.insert(frame[2..14].to_vec()), "IV handed out twice");
            assert_eq!(client.open(&frame).expect("open"), b"pooled");
        }
    }

    #[test]
    fn ivs_differ_between_seals_of_the_same_plaintext() {
        let (server, _) = pair();
        let a = sealed(&server, b"same");
        let b = sealed(&server, b"same");
        assert_ne!(a[2..14], b[2..14]);
        assert_ne!(a, b);
    }

    #[test]
    fn tampered_ciphertext_tag_or_iv_is_rejected() {
        let (server, client) = pair();
        let frame = sealed(&server, b"some plaintext");
        // IV, first ciphertext byte, last tag byte.
        for at in [2, 14, frame.len() - 1] {
            let mut bad = frame.clone();
            bad[at] ^= 0x01;
            assert_eq!(client.open(&bad), Err(Error::DecryptFailed), "byte {at}");
            assert_eq!(client.open_in_place(&mut bad), Err(Error::DecryptFailed));
        }
        let mut truncated = frame.clone();
        truncated.pop();
        assert_eq!(client.open(&truncated), Err(Error::DecryptFailed));
    }

    #[test]
    fn frame_under_another_key_is_rejected() {
        let (server, _) = pair();
        let (_, other) = pair();
        assert_eq!(other.open(&sealed(&server, b"x")), Err(Error::DecryptFailed));
    }

    #[test]
    fn short_frame_is_rejected() {
        let (_, client) = pair();
        let short = [b"E:".as_slice(), &[0u8; 27]].concat();
        assert_eq!(client.open(&short), Err(Error::EncryptedFrameTooShort { len: 29 }));
        assert_eq!(client.open(b"E:"), Err(Error::EncryptedFrameTooShort { len: 2 }));
    }

    #[test]
    fn frame_without_prefix_is_rejected() {
        let (server, client) = pair();
        let frame = sealed(&server, b"x");
        assert_eq!(client.open(&frame[2..]), Err(Error::NotEncrypted));
        assert_eq!(client.open(b""), Err(Error::NotEncrypted));
    }

    #[test]
    fn client_key_that_is_not_base64_is_rejected() {
        let kx = KeyExchange::generate().expect("generate");
        let err = key_error(kx.agree("not base64 at all!"));
        assert_eq!(err, Error::KeyExchange("public key is not standard base64"));
        assert_eq!(err.wire_code(), "KEY_EXCHANGE_FAILED");
    }

    #[test]
    fn client_key_of_wrong_length_is_rejected() {
        let peer = KeyExchange::generate().expect("generate").public;
        let short = STANDARD.encode(&peer[..64]);
        let long = STANDARD.encode([peer.as_slice(), &[0]].concat());
        let huge = "A".repeat(4096);
        for b64 in [short.as_str(), long.as_str(), "", huge.as_str()] {
            let kx = KeyExchange::generate().expect("generate");
            assert_eq!(key_error(kx.agree(b64)), Error::KeyExchange("public key is not 65 bytes"));
        }
    }

    #[test]
    fn compressed_client_key_is_rejected() {
        let peer = KeyExchange::generate().expect("generate").public;
        let compressed = [&[0x02 | (peer[64] & 1)], &peer[1..33]].concat();
        let kx = KeyExchange::generate().expect("generate");
        assert!(matches!(key_error(kx.agree(&STANDARD.encode(compressed))), Error::KeyExchange(_)));

        // Same length as an uncompressed point, but the hybrid-form tag.
        let mut hybrid = peer;
        hybrid[0] = 0x06 | (peer[64] & 1);
        let kx = KeyExchange::generate().expect("generate");
        assert_eq!(
            key_error(kx.agree(&STANDARD.encode(hybrid))),
            Error::KeyExchange("public key is not an uncompressed point")
        );
    }

    #[test]
    fn client_key_off_the_curve_is_rejected() {
        let mut point = KeyExchange::generate().expect("generate").public;
        point[64] ^= 0x01;
        let kx = KeyExchange::generate().expect("generate");
        assert_eq!(
            key_error(kx.agree(&STANDARD.encode(point))),
            Error::KeyExchange("public key is not a point on p-256")
        );
        let kx = KeyExchange::generate().expect("generate");
        let zeros = [&[0x04u8][..], &[0u8; 64]].concat();
        assert!(matches!(key_error(kx.agree(&STANDARD.encode(zeros))), Error::KeyExchange(_)));
    }

    #[test]
    fn derives_the_python_keys_from_fixed_scalars() {
        let server = KeyExchange::from_scalar(&hex(PY_SERVER_SCALAR));
        let client = KeyExchange::from_scalar(&hex(PY_CLIENT_SCALAR));
        assert_eq!(server.public_key_b64(), PY_SERVER_PUBLIC_B64);
        assert_eq!(client.public_key_b64(), PY_CLIENT_PUBLIC_B64);

        let ikm = agreement::agree(
            &server.private,
            UnparsedPublicKey::new(&ECDH_P256, decode_public_key(PY_CLIENT_PUBLIC_B64).unwrap()),
            (),
            |x| Ok(x.to_vec()),
        )
        .expect("agree");
        assert_eq!(ikm, hex(PY_SHARED_X));
        assert_eq!(hkdf_sha256(&ikm, AES_KEY_INFO).unwrap().as_slice(), hex(PY_AES_KEY));
        assert_eq!(hkdf_sha256(&ikm, SIGNING_KEY_INFO).unwrap().as_slice(), hex(PY_SIGNING_KEY));
    }

    #[test]
    fn opens_the_python_frame_and_signs_like_python() {
        let server = KeyExchange::from_scalar(&hex(PY_SERVER_SCALAR));
        let keys = server.agree(PY_CLIENT_PUBLIC_B64).expect("agree");
        assert_eq!(keys.open(&hex(PY_FRAME)).expect("open"), PY_PLAINTEXT.as_bytes());
        let frame = hex(PY_FRAME);
        assert_eq!(frame[2..14], hex(PY_IV));

        let mut signed = Vec::new();
        signing::sign(keys.signing_key(), PY_SIGN_INPUT.as_bytes(), &mut signed).expect("sign");
        assert_eq!(signed, PY_SIGNED.as_bytes());
    }

    #[test]
    fn client_side_of_the_vectors_agrees_too() {
        let client = KeyExchange::from_scalar(&hex(PY_CLIENT_SCALAR));
        let keys = client.agree(PY_SERVER_PUBLIC_B64).expect("agree");
        assert_eq!(keys.open(&hex(PY_FRAME)).expect("open"), PY_PLAINTEXT.as_bytes());
    }

    /// Prints a frame sealed under the vector key for the manual check
    /// `scripts/e2e_vectors.py open <AES_KEY> <frame-hex>` (run with `--nocapture`).
    #[test]
    fn frame_for_python_cross_check() {
        let server = KeyExchange::from_scalar(&hex(PY_SERVER_SCALAR));
        let keys = server.agree(PY_CLIENT_PUBLIC_B64).expect("agree");
        let frame = sealed(&keys, b"{\"t\":\"sealed by rust\",\"p\":{}}");
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        println!("rust frame for {PY_AES_KEY}: {hex}");
        assert_eq!(keys.open(&frame).expect("open"), b"{\"t\":\"sealed by rust\",\"p\":{}}");
    }

    /// The shard keeps `Option<Box<SessionKeys>>` per connection; this guards against the size
    /// growing unnoticed (an inline `hmac::Key` alone is 1,232 bytes with aws-lc-rs 1.19).
    #[test]
    fn session_keys_stay_small() {
        let size = size_of::<SessionKeys>();
        println!(
            "size_of SessionKeys = {size} (LessSafeKey {}, SigningKey {}), KeyExchange = {}",
            size_of::<LessSafeKey>(),
            size_of::<SigningKey>(),
            size_of::<KeyExchange>()
        );
        assert!(size <= 128, "SessionKeys is {size} bytes");
    }

    // Output of `scripts/e2e_vectors.py` (Python `cryptography` 50.0.2).
    const PY_CLIENT_SCALAR: &str =
        "2329f36e7d62747357f144328cd33604a820d8c635f053e97973606821bd239a";
    const PY_SERVER_SCALAR: &str =
        "9c0c61ad8f3f1d20d92c108445d5bc843be76dd160974ec2dcba4b7cdbeda38d";
    const PY_CLIENT_PUBLIC_B64: &str = concat!(
        "BGBLKh27MtSiNsx3S/FT5vKVR+sRy7SW97dASbmE5k7UAk5nhE8hvT3v6kYzhZ2h",
        "ebonQUIlFAcJaPuuh3mQCOw="
    );
    const PY_SERVER_PUBLIC_B64: &str = concat!(
        "BNtZy0FrIV9gW3bg1dl2dXp2Veax+M/Gf0VkIPO+eY0SZVtK61kqJL8Km1bWkZKi",
        "YmBB00Nm0G18XeJ1bw+PD1o="
    );
    const PY_SHARED_X: &str = "f09ada6cd2ceeb4ad3420e0ffcb2c5e30c482b64803f6d8b1c43381f37d5a991";
    const PY_AES_KEY: &str = "090f5d251f1be8864754ac00d99a5e4ff593f7f5e0995127634293045852d577";
    const PY_SIGNING_KEY: &str = "a95c92d5587dc17080551c1f09ab255e708995e108f25aa24325989d9e5686fe";
    const PY_IV: &str = "000102030405060708090a0b";
    const PY_PLAINTEXT: &str = r#"{"c":"U","t":"price","p":{"sym":"ACME","px":101.25},"v":1}"#;
    const PY_FRAME: &str = concat!(
        "453a000102030405060708090a0b0a709de9dfc40f2c90be132f735942253a888ae75b779c2351cce5d4",
        "fd58a48ead648131a5ba0d3f552890b94e0f5794fb5def69d6a72ad614574d402d3f32dd905ae2ef346f",
        "abd8c921"
    );
    const PY_SIGN_INPUT: &str = r#"{"c":"U","t":"note","p":{"text":"hello"},"v":1}"#;
    const PY_SIGNED: &str = concat!(
        r#"{"c":"U","t":"note","p":{"text":"hello"},"v":1,"#,
        r#""sig":"cBh5ZOBnx5qg4QsWpw0SCbPCTdNsE+bifA6+tcsxqko="}"#
    );
}
