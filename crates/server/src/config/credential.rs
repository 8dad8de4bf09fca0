//! Minting credentials in LiveKit's own format, and recognising placeholders.

use rand::rngs::OsRng;
use rand::TryRngCore;

use super::model::{Credential, Secret};
use super::rules;

/// `livekit-server generate-keys` draws API keys from this alphabet (no
/// `0 1 I O l`, which read alike).
pub const KEY_ALPHABET: &[u8; 57] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
/// Random characters after the `API` prefix.
pub const KEY_RANDOM_LEN: usize = 12;
/// Length of a minted secret: 32 random bytes as a fixed-width base62
/// number. 62^43 > 2^256, so 43 digits hold every value; the width is fixed
/// (left-padded with `0`) so that the mapping is a bijection and the length
/// never drops below 43.
pub const SECRET_LEN: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The operating system's random number generator failed. On Linux this
/// needs a broken kernel or a seccomp filter that forbids `getrandom`; a
/// credential is never minted from a weaker source.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct MintError(String);

impl MintError {
    /// Wraps the OS error's description.
    pub fn new(reason: impl Into<String>) -> MintError {
        MintError(reason.into())
    }
}

/// Mints a credential from the OS CSPRNG: key `API` + 12 characters of
/// [`KEY_ALPHABET`], secret 32 random bytes in base62 ([`SECRET_LEN`] chars).
///
/// # Errors
/// [`MintError`] when the OS refuses random bytes.
pub fn mint_credential() -> Result<Credential, MintError> {
    mint_credential_with(|buf| OsRng.try_fill_bytes(buf).map_err(|e| MintError::new(e.to_string())))
}

/// [`mint_credential`] drawing bytes from `fill`, so the encoding can be
/// tested with chosen bytes.
///
/// # Errors
/// Whatever `fill` returns.
pub fn mint_credential_with(mut fill: impl FnMut(&mut [u8]) -> Result<(), MintError>) -> Result<Credential, MintError> {
    let mut key = String::with_capacity(3 + KEY_RANDOM_LEN);
    key.push_str("API");
    // Rejection sampling keeps every character equally likely: 228 is the
    // largest multiple of 57 that fits in a byte.
    let limit = (256 / KEY_ALPHABET.len() * KEY_ALPHABET.len()) as u8;
    let mut buf = [0u8; 32];
    while key.len() < 3 + KEY_RANDOM_LEN {
        fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| b < limit) {
            if key.len() == 3 + KEY_RANDOM_LEN {
                break;
            }
            key.push(char::from(KEY_ALPHABET[usize::from(b) % KEY_ALPHABET.len()]));
        }
    }
    let mut secret_bytes = [0u8; 32];
    fill(&mut secret_bytes)?;
    Ok(Credential {
        api_key: key,
        api_secret: Secret::new(base62_fixed(secret_bytes)),
    })
}

/// The 256-bit big-endian number `bytes` in base62, [`SECRET_LEN`] digits.
fn base62_fixed(mut bytes: [u8; 32]) -> String {
    let mut digits = [b'0'; SECRET_LEN];
    for slot in digits.iter_mut().rev() {
        // Long division of the whole number by 62; the remainder is the
        // next least significant digit.
        let mut rem: u32 = 0;
        for b in bytes.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = BASE62[rem as usize];
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

/// Whether `value` is a placeholder rather than a real value: empty or
/// blank, a template word (`secret`, `devkey`, `changeme`, `your-api-key`,
/// ...), a run of `x`, or a `<...>` / `${...}` template. Case-insensitive.
/// A credential made of them is not adopted from old files at boot, and
/// `configure` refuses one for the credential ([`super::rules`] says what
/// other fields do with them).
pub fn is_placeholder(value: &str) -> bool {
    rules::is_empty(value) || rules::is_placeholder_word(value) || rules::is_template(value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_livekits_57_characters() {
        assert_eq!(KEY_ALPHABET.len(), 57);
        for confusable in [b'0', b'1', b'I', b'O', b'l'] {
            assert!(!KEY_ALPHABET.contains(&confusable));
        }
    }

    #[test]
    fn minted_credentials_have_livekits_format() {
        for _ in 0..200 {
            let c = mint_credential().expect("OS RNG works in tests");
            assert_eq!(c.api_key.len(), 15);
            assert!(c.api_key.starts_with("API"));
            assert!(
                c.api_key[3..].bytes().all(|b| KEY_ALPHABET.contains(&b)),
                "{}",
                c.api_key
            );
            let s = c.api_secret.expose();
            assert_eq!(s.len(), SECRET_LEN);
            assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!(super::super::validate::validate_credential(&c).is_ok());
        }
    }

    #[test]
    fn minted_credentials_differ() {
        let a = mint_credential().expect("rng");
        let b = mint_credential().expect("rng");
        assert_ne!(a.api_key, b.api_key);
        assert_ne!(a.api_secret, b.api_secret);
    }

    #[test]
    fn base62_is_the_big_integer_in_fixed_width() {
        assert_eq!(base62_fixed([0; 32]), "0".repeat(43));
        let mut one = [0u8; 32];
        one[31] = 61;
        assert_eq!(base62_fixed(one), format!("{}z", "0".repeat(42)));
        let mut sixty_two = [0u8; 32];
        sixty_two[31] = 62;
        assert_eq!(base62_fixed(sixty_two), format!("{}10", "0".repeat(41)));
        // 2^256 - 1 needs all 43 digits and starts with the top digit of
        // 62^42 * k for the largest k that fits.
        let max = base62_fixed([0xff; 32]);
        assert_eq!(max.len(), 43);
        assert_ne!(&max[..1], "0");
    }

    #[test]
    fn key_sampling_rejects_bytes_that_would_bias_the_alphabet() {
        // Bytes >= 228 must be skipped; 228 itself would map to index 0 and
        // make '2' more likely than the others.
        let mut calls = 0;
        let c = mint_credential_with(|buf| {
            calls += 1;
            let v = if calls == 1 { 228u8 } else { 57 + 1 };
            buf.fill(v);
            Ok(())
        })
        .expect("fill never fails here");
        assert_eq!(&c.api_key[3..], "3".repeat(12));
        assert!(calls >= 3, "first buffer was all rejected, then key and secret");
    }

    #[test]
    fn mint_error_propagates() {
        let r = mint_credential_with(|_| Err(MintError::new("no entropy")));
        assert_eq!(
            r.expect_err("fails").to_string(),
            "the operating system's random number generator failed: no entropy"
        );
    }

    #[test]
    fn placeholders_are_recognised_case_insensitively() {
        for p in [
            "",
            "   ",
            "\t\n",
            "secret",
            "SECRET",
            "devkey",
            "changeme",
            "Change-Me",
            "your-api-key",
            "YOUR-API-SECRET",
            "your_livekit_key",
            "apikey",
            "API_KEY",
            "xxx",
            "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "<your key>",
            "<>",
            "${LIVEKIT_API_SECRET}",
            "todo",
            "TODO",
            "placeholder",
            "example",
            "<redis-host>:6379",
        ] {
            assert!(is_placeholder(p), "{p:?} should be a placeholder");
        }
    }

    #[test]
    fn real_values_are_not_placeholders() {
        for v in [
            "APIabcdefghijkm",
            "mysecretkey",
            "x",
            "xx",
            "example.com",
            "localhost",
            "10.0.0.1",
            "redis:6379",
            "a>b<c",
            "0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
        ] {
            assert!(!is_placeholder(v), "{v:?} is a real value");
        }
    }
}
