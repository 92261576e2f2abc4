//! `flashgate admin ...`: a small client for the admin API. It speaks plain HTTP/1.1 over a
//! blocking socket — the admin listener is local and a CLI makes one request.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A response: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `host:port` (an `http://` prefix is accepted).
    pub addr: String,
    pub token: Option<String>,
}

impl AdminTarget {
    /// Sends one request and reads the whole response.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<Reply, String> {
        let hostport = self
            .addr
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("admin address {hostport}: {e}"))?
            .next()
            .ok_or_else(|| format!("admin address {hostport} does not resolve"))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("cannot reach the admin API at {hostport}: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let body = body.unwrap_or("");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: flashgate-cli\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .map_err(|e| format!("sending to the admin API: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .map_err(|e| format!("reading from the admin API: {e}"))?;
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("malformed response from the admin API")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("malformed status line from the admin API")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Reply { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Builds the PATCH body for `set ROOM key=value ...`: numbers stay numbers, `true`/`false`
/// booleans, `null` clears, anything else is a string.
pub fn patch_body(pairs: &[String]) -> Result<String, String> {
    let mut obj = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?}: expected key=value"))?;
        let value = match v {
            "null" => serde_json::Value::Null,
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => v
                .parse::<u64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| serde_json::Value::String(v.to_owned())),
        };
        obj.insert(k.to_owned(), value);
    }
    Ok(serde_json::Value::Object(obj).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").expect("plain");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!((r.status, r.body.as_str()), (404, "abcde"));
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn patch_bodies() {
        let b = patch_body(&[
            "new_users_per_minute=120".into(),
            "paused=true".into(),
            "message=Hi there".into(),
        ])
        .expect("valid");
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["new_users_per_minute"], 120);
        assert_eq!(v["paused"], true);
        assert_eq!(v["message"], "Hi there");
        assert!(patch_body(&["oops".into()]).is_err());
    }
}
