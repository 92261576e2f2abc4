//! Where load may go: loopback only, unless the operator says otherwise.
//!
//! Every tool in this crate parses its target URLs here before it sends anything. A host that
//! is not `localhost`, an address in 127.0.0.0/8 or `[::1]` is refused with a message saying
//! why, unless the tool was started with `--allow-remote` (meant for a staging fleet you run
//! yourself, never for someone else's site).

use std::net::IpAddr;

/// A parsed `http://host[:port]/path?query` URL (plain HTTP only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// `host:port` for a `Host` header and for connecting (`[::1]:port` for IPv6).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port` without the path.
    pub fn origin(&self) -> String {
        format!("http://{}", self.authority())
    }
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{url}: not an http:// URL ({reason})")]
    Invalid { url: String, reason: String },
    #[error(
        "{url}: refusing to send load to {host}: only 127.0.0.0/8, localhost and [::1] are \
         allowed (pass --allow-remote to load a host you operate yourself)"
    )]
    Remote { url: String, host: String },
}

/// Parses a plain-HTTP URL.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, TargetError> {
    let bad = |reason: &str| TargetError::Invalid {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is supported"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        return Err(bad("user information is not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => 80,
            None => return Err(bad("junk after ]")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
            None => (authority.to_owned(), 80),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(HttpUrl { host, port, path })
}

/// Whether `host` names this machine's loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses `url` and refuses a non-loopback host unless `allow_remote`.
pub fn check_target(url: &str, allow_remote: bool) -> Result<HttpUrl, TargetError> {
    let u = parse_http_url(url)?;
    if !allow_remote && !is_loopback_host(&u.host) {
        return Err(TargetError::Remote {
            url: url.to_owned(),
            host: u.host,
        });
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_guards() {
        let u = check_target("http://127.0.0.1:8080/products?x=1", false).expect("loopback");
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/products?x=1");
        assert_eq!(u.origin(), "http://127.0.0.1:8080");
        let u = check_target("http://localhost", false).expect("localhost");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = check_target("http://[::1]:9000?room=a", false).expect("v6 loopback");
        assert_eq!(u.authority(), "[::1]:9000");
        assert_eq!(u.path, "/?room=a");
        assert!(check_target("http://127.8.9.10:1/", false).is_ok());

        for remote in [
            "http://10.0.0.1/",
            "http://192.168.1.1:80/",
            "http://example.com/",
            "http://[2001:db8::1]:80/",
            "http://localhost.example.com/",
        ] {
            let e = check_target(remote, false).expect_err(remote);
            assert!(e.to_string().contains("refusing to send load"), "{e}");
            assert!(
                check_target(remote, true).is_ok(),
                "{remote} with --allow-remote"
            );
        }
        assert!(check_target("https://127.0.0.1/", false).is_err());
        assert!(check_target("http://user@127.0.0.1/", false).is_err());
        assert!(check_target("http://127.0.0.1:x/", false).is_err());
    }
}
