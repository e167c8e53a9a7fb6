//! The path a request is routed by: its target's path percent-decoded, with
//! `.` and `..` segments resolved and repeated slashes merged, as nginx
//! matches locations. Without it `/%61dmin`, `/public/../admin` or `//admin`
//! would miss a route for `/admin` that an upstream then serves anyway.

use std::borrow::Cow;

/// A `..` segment that would climb above the root (nginx answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AboveRoot;

/// The normalised form of `path` (which starts with `/`): `%XX` decoded,
/// dot segments resolved (RFC 3986 §5.2.4), empty segments dropped; a
/// trailing slash is kept. Borrowed when `path` is already normal, which is
/// the common case and costs one scan. A `%` not followed by two hex digits
/// stays as it is.
pub fn normalize(path: &[u8]) -> Result<Cow<'_, [u8]>, AboveRoot> {
    if !needs_work(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = percent_decode(path);
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut rest = decoded.strip_prefix(b"/").unwrap_or(&decoded);
    // Whether the result ends in `/`: a trailing slash, or a last segment
    // that names a directory (`.`, `..`).
    let mut trailing;
    loop {
        let (segment, more) = match rest.iter().position(|&b| b == b'/') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        match segment {
            b"" | b"." => trailing = true,
            b".." => {
                segments.pop().ok_or(AboveRoot)?;
                trailing = true;
            }
            name => {
                segments.push(name);
                trailing = false;
            }
        }
        match more {
            Some(next) => rest = next,
            None => break,
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing || segments.is_empty() {
        out.push(b'/');
    }
    Ok(Cow::Owned(out))
}

/// Whether `path` holds a `%`, a `//`, or a `.` or `..` segment.
fn needs_work(path: &[u8]) -> bool {
    path.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            || (b == b'/'
                && match path.get(i + 1) {
                    Some(b'/') => true,
                    Some(b'.') => {
                        let tail = &path[i + 2..];
                        let tail = tail.strip_prefix(b".").unwrap_or(tail);
                        tail.is_empty() || tail[0] == b'/'
                    }
                    _ => false,
                })
    })
}

fn percent_decode(path: &[u8]) -> Vec<u8> {
    let hex = |b: &u8| (*b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b == b'%' {
            if let (Some(high), Some(low)) =
                (path.get(i + 1).and_then(hex), path.get(i + 2).and_then(hex))
            {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, AboveRoot> {
        normalize(path.as_bytes()).map(|p| String::from_utf8_lossy(&p).into_owned())
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c.",
            "/.well-known/x",
            "/a/..b",
            "/a/.b/",
        ] {
            let out = normalize(path.as_bytes()).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{path}");
            assert_eq!(out.as_ref(), path.as_bytes());
        }
    }

    #[test]
    fn escapes_dot_segments_and_repeated_slashes_are_resolved() {
        for (path, want) in [
            ("/%61dmin", "/admin"),
            ("/ADM%49N/%2e%2E/x", "/x"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("//admin", "/admin"),
            ("/./admin/./", "/admin/"),
            ("/a//b///c", "/a/b/c"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("//", "/"),
            ("/%", "/%"),
            ("/%4", "/%4"),
            ("/%zz/x", "/%zz/x"),
            ("/caf%C3%A9", "/café"),
        ] {
            assert_eq!(norm(path), Ok(want.to_owned()), "{path}");
        }
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in ["/..", "/../admin", "/a/../../b", "/%2e%2e/x", "//../x"] {
            assert_eq!(norm(path), Err(AboveRoot), "{path}");
        }
    }
}
