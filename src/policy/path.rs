//! Path prefixes of rules with `paths`. A path is matched byte for byte against the prefixes, so any spelling
//! that the origin (or a proxy behind it) may decode or normalize into a different path is refused as
//! ambiguous instead of matched: the decoded path could lie outside the prefix.

/// Why a request path is ambiguous for prefix matching, or `None` if it means exactly what it says. Only the
/// path is looked at, not the query or fragment.
pub fn ambiguity(path: &str) -> Option<&'static str> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.contains('\\') {
        return Some("a backslash, which some servers read as '/'");
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + off;
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            None => return Some("a '%' that does not start a %XX escape"),
            Some(b'.') => return Some("an encoded dot (%2e), which may decode into a dot segment"),
            Some(b'/') => return Some("an encoded slash (%2f), which may decode into a separator"),
            Some(b'\\') => {
                return Some("an encoded backslash (%5c), which may decode into a separator")
            }
            Some(b'%') => {
                return Some(
                    "an encoded '%' (%25), which a second decoding turns into another escape",
                )
            }
            Some(0xc0 | 0xc1) => return Some(
                "an overlong UTF-8 escape (%c0, %c1), which lenient decoders read as '.' or '/'",
            ),
            Some(_) => {}
        }
        i = at + 3;
    }
    // `..;x` is a dot segment to servers that strip path parameters (Tomcat, Spring).
    if path
        .split('/')
        .map(|seg| seg.split(';').next().unwrap_or_default())
        .any(|seg| seg == "." || seg == "..")
    {
        return Some("a '.' or '..' segment, which the origin resolves to another path");
    }
    None
}

/// Does a request path fall under a rule's path prefix? An ambiguous path (see [`ambiguity`]) never does.
pub fn allowed(prefix: &str, path: &str) -> bool {
    ambiguity(path).is_none() && path.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_spellings_are_refused() {
        for path in [
            "/bucket/%252e%252e/secret",
            "/bucket/%252F..%252Fsecret",
            "/bucket/%25",
            "/bucket/%2e%2e/secret",
            "/bucket/%2E./secret",
            "/bucket/..%2fsecret",
            "/bucket/..%5csecret",
            "/bucket/%c0%ae%c0%ae/secret",
            "/bucket/%C1%9C",
            "/bucket/a\\..\\b",
            "/bucket/../secret",
            "/bucket/./x",
            "/bucket/..;/secret",
            "/bucket/..",
            "/bucket/%",
            "/bucket/%4",
            "/bucket/%zz",
        ] {
            assert!(ambiguity(path).is_some(), "{path}");
            assert!(!allowed("/bucket/", path), "{path}");
        }
    }

    #[test]
    fn plain_paths_match_by_prefix() {
        for path in [
            "/bucket/a/b.tar.gz",
            "/bucket/a%20b",
            "/bucket/caf%C3%A9",
            "/bucket/x?q=%25&r=..",
            "/bucket/...",
            "/bucket/.hidden",
            "/bucket/a..b",
        ] {
            assert_eq!(ambiguity(path), None, "{path}");
            assert!(allowed("/bucket/", path), "{path}");
        }
        assert!(!allowed("/bucket/", "/other/x"));
        assert!(!allowed("/bucket/", "/bucket"));
    }
}
