//! Which route and which room a request falls in: the one prefix matcher for both.
//!
//! A prefix covers a path on whole segments (`/drops` covers `/drops` and `/drops/x`, not
//! `/dropship`); the longest prefix wins, and a host-specific route beats a wildcard of equal
//! length. Routes and rooms see the path both as sent and as an origin may normalise it
//! (`//drops/x`, `/%64rops/x`, `/a/../drops/x`): either falling in a room is gated, and a
//! bypass route skips rooms only when the path reads as bypass both ways.

use std::sync::Arc;

use crate::config::Route;
use crate::http_util::{canonical_path, BadPath};
use crate::node::Live;
use crate::rooms::RoomRuntime;

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

/// Where a request goes.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// The route's index in the config.
    pub(crate) route: Option<usize>,
    /// The route's kind (`None`: no route for this path).
    pub(crate) kind: Option<RouteKind>,
    /// The room that gates it.
    pub(crate) room: Option<Arc<RoomRuntime>>,
}

/// The route index for `host` + `path`.
fn route_for(routes: &[Route], host: &str, path: &str) -> Option<usize> {
    let candidates = routes.iter().enumerate().filter_map(|(i, r)| {
        let here = r.host.as_deref().is_none_or(|h| h == host);
        // A host-specific route beats a wildcard of equal length.
        here.then_some((i, r.path.as_str(), usize::from(r.host.is_some())))
    });
    longest(candidates, path)
}

/// The route and room of a request; `Err` for a path that cannot be normalised.
pub(crate) fn find(live: &Live, host: &str, path: &str, method: &str) -> Result<Found, BadPath> {
    let canon = canonical_path(path)?;
    let routes = &live.config.routes;
    let raw_route = route_for(routes, host, path);
    let canon_route = if canon == path {
        raw_route
    } else {
        route_for(routes, host, &canon)
    };
    let Some(route) = raw_route.or(canon_route) else {
        return Ok(Found::default());
    };
    let kind = routes[route].kind;
    let canon_bypass = canon_route.is_none_or(|i| routes[i].kind == RouteKind::Bypass);
    let room = if kind != RouteKind::Bypass || !canon_bypass {
        live.rooms
            .find(host, path, method)
            .or_else(|| live.rooms.find(host, &canon, method))
            .cloned()
    } else {
        None
    };
    Ok(Found {
        route: Some(route),
        kind: Some(kind),
        room,
    })
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
