//! Route kinds and the one prefix matcher used for both routes and rooms (which of them a
//! request falls in is decided by the gate, `gate::request::find`).
//!
//! A prefix covers a path on whole segments (`/drops` covers `/drops` and `/drops/x`, not
//! `/dropship`); the longest prefix wins, and a host-specific route beats a wildcard of equal
//! length. Routes and rooms see the path both as sent and as an origin may normalise it
//! (`//drops/x`, `/%64rops/x`, `/a/../drops/x`): either falling in a room is gated, and a
//! bypass route skips rooms only when the path reads as bypass both ways.

/// How a route's traffic is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Default,
    /// Cacheable catalog pages.
    Catalog,
    /// Never gated by a room (static assets, health checks).
    Bypass,
    /// Kept alive under origin stress (checkout, payment).
    Essential,
    /// Shed first under origin stress (reviews, wishlists).
    Optional,
}

/// Whether the prefix `prefix` covers `path` on whole segments.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    let prefix = prefix.trim_end_matches('/');
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// Of `candidates` (a prefix, and a score bonus that breaks ties between equal lengths), the
/// index of the longest prefix covering `path`.
pub(crate) fn longest<'a>(
    candidates: impl Iterator<Item = (usize, &'a str, usize)>,
    path: &str,
) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, prefix, bonus) in candidates {
        if prefix_matches(prefix, path) {
            let score = prefix.len() * 2 + bonus;
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/drops", "/drops"));
        assert!(prefix_matches("/drops", "/drops/aurora"));
        assert!(prefix_matches("/drops/", "/drops/aurora"));
        assert!(!prefix_matches("/drops", "/dropship"));
    }

    #[test]
    fn the_longest_prefix_wins_and_the_bonus_breaks_ties() {
        let c = [(0, "/", 0), (1, "/drops", 0), (2, "/drops", 1)];
        assert_eq!(longest(c.iter().copied(), "/drops/x"), Some(2));
        assert_eq!(longest(c[..2].iter().copied(), "/drops/x"), Some(1));
        assert_eq!(longest(c[..2].iter().copied(), "/cart"), Some(0));
        assert_eq!(longest(c[1..2].iter().copied(), "/cart"), None);
    }
}
