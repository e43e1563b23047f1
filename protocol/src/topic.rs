//! Topic names: the rules of PROTOCOL.md §3.
//!
//! Part of the envelope layer. A topic name is 1 to 256 bytes of UTF-8 with no ASCII control
//! characters and no spaces; `*` and `?` are wildcards, allowed in subscriptions only. Glob
//! matching and ACLs live in `fanout/`; this module only says whether a name is well formed.

use crate::Error;

/// Checks `name` against the topic rules; `allow_wildcards` is true for subscriptions.
///
/// Errors with [`Error::InvalidTopic`] naming the first broken rule. "Space" means the ASCII
/// space; other Unicode whitespace is allowed, as the wire contract only forbids spaces and
/// ASCII control characters.
pub fn validate_topic(name: &str, allow_wildcards: bool) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidTopic("topic name is empty"));
    }
    if name.len() > MAX_TOPIC_BYTES {
        return Err(Error::InvalidTopic("topic name is longer than 256 bytes"));
    }
    for byte in name.bytes() {
        if byte.is_ascii_control() {
            return Err(Error::InvalidTopic("topic name contains a control character"));
        }
        if byte == b' ' {
            return Err(Error::InvalidTopic("topic name contains a space"));
        }
    }
    if !allow_wildcards && has_wildcards(name) {
        return Err(Error::InvalidTopic("wildcards are only allowed in subscriptions"));
    }
    Ok(())
}

/// Whether `name` contains a wildcard (`*` or `?`), i.e. is a pattern rather than one topic.
pub fn has_wildcards(name: &str) -> bool {
    name.bytes().any(|b| b == b'*' || b == b'?')
}

/// The longest topic name, in bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["a", "prices.BTC-USD", "user:42/orders", "π-δ", "a\u{a0}b"] {
            assert_eq!(validate_topic(name, false), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn accepts_256_bytes_and_rejects_257() {
        assert_eq!(validate_topic(&"x".repeat(256), false), Ok(()));
        assert!(matches!(validate_topic(&"x".repeat(257), false), Err(Error::InvalidTopic(_))));
    }

    #[test]
    fn counts_bytes_not_characters() {
        // 128 two-byte characters are 256 bytes; one more byte is too many.
        let name = "é".repeat(128);
        assert_eq!(validate_topic(&name, false), Ok(()));
        assert!(validate_topic(&format!("{name}x"), false).is_err());
    }

    #[test]
    fn rejects_empty_name() {
        assert!(matches!(validate_topic("", true), Err(Error::InvalidTopic(_))));
    }

    #[test]
    fn rejects_control_characters_and_delete() {
        for name in ["a\nb", "\0", "tab\there", "del\u{7f}"] {
            assert!(matches!(validate_topic(name, true), Err(Error::InvalidTopic(_))), "{name:?}");
        }
    }

    #[test]
    fn rejects_space() {
        assert!(matches!(validate_topic("a b", true), Err(Error::InvalidTopic(_))));
    }

    #[test]
    fn allows_wildcards_only_when_asked() {
        assert_eq!(validate_topic("prices.*", true), Ok(()));
        assert_eq!(validate_topic("a?c", true), Ok(()));
        assert!(matches!(validate_topic("prices.*", false), Err(Error::InvalidTopic(_))));
        assert!(matches!(validate_topic("a?c", false), Err(Error::InvalidTopic(_))));
    }

    #[test]
    fn detects_wildcards() {
        assert!(has_wildcards("*"));
        assert!(has_wildcards("a.?"));
        assert!(!has_wildcards("a.b"));
    }

    #[test]
    fn invalid_topic_maps_to_wire_code() {
        let err = validate_topic("", false).expect_err("empty name is invalid");
        assert_eq!(err.wire_code(), "INVALID_TOPIC");
    }
}
