//! `flashgate admin ...`: a client for the admin API, one request over hyper's HTTP/1.1 client
//! connection (the admin listener is local and a CLI makes one request).

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long connecting may take, and the whole exchange.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status code and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Why a `flashgate admin` command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin address {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin address {0} does not resolve")]
    NoAddress(String),
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot reach the admin API at {0}: no answer within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout(String),
    #[error("talking to the admin API: {0}")]
    Http(#[from] hyper::Error),
    #[error("the admin API did not answer within {REPLY_TIMEOUT:?}")]
    ReplyTimeout,
    #[error("a request the admin API cannot be sent: {0}")]
    Request(#[from] http::Error),
    #[error("{0:?}: expected key=value")]
    NotAPair(String),
    #[error("cannot start the client: {0}")]
    Runtime(std::io::Error),
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
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Reply, AdminError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminError::Runtime)?
            .block_on(self.send(method, path, body.unwrap_or("")))
    }

    async fn send(&self, method: &str, path: &str, body: &str) -> Result<Reply, AdminError> {
        let hostport = self
            .addr
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let addr = tokio::net::lookup_host(hostport)
            .await
            .map_err(|source| AdminError::Resolve {
                addr: hostport.to_owned(),
                source,
            })?
            .next()
            .ok_or_else(|| AdminError::NoAddress(hostport.to_owned()))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| AdminError::ConnectTimeout(hostport.to_owned()))?
            .map_err(|source| AdminError::Connect {
                addr: hostport.to_owned(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, hostport)
            .header(USER_AGENT, "flashgate-cli")
            .header(CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned())))?;
        let exchange = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(Reply {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(REPLY_TIMEOUT, exchange)
            .await
            .map_err(|_| AdminError::ReplyTimeout)?
    }
}

/// Builds the PATCH body for `set ROOM key=value ...`: numbers stay numbers, `true`/`false`
/// booleans, `null` clears, anything else is a string.
pub fn patch_body(pairs: &[String]) -> Result<String, AdminError> {
    let mut obj = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| AdminError::NotAPair(p.clone()))?;
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
