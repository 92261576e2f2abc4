//! HTTP as shoppers speak it: a browser-like client with a cookie jar, the JSON status a
//! waiting page polls, plain GETs read in full, and server-sent events.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A client that keeps cookies, like a browser, and does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A client without cookies that does not follow redirects (an app, a crawler, a probe).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// GET with `Accept: application/json`: (status, JSON body or `Null`, headers).
pub async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value, HeaderMap) {
    let r = c
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// Where requests go: a running [`Node`](crate::Node), or just its base URL (for tasks that
/// outlive a borrow).
pub trait Base {
    /// `http://127.0.0.1:PORT`.
    fn base(&self) -> &str;
}

impl Base for crate::Node {
    fn base(&self) -> &str {
        &self.base
    }
}

impl Base for str {
    fn base(&self) -> &str {
        self
    }
}

impl Base for String {
    fn base(&self) -> &str {
        self
    }
}

/// `GET /.flashgate/status?room=ROOM` as the waiting page's script asks; must answer 200.
pub async fn status(at: &(impl Base + ?Sized), c: &reqwest::Client, room: &str) -> Value {
    let url = format!("{}/.flashgate/status?room={room}", at.base());
    let (code, st, _) = get_json(c, &url).await;
    assert_eq!(code, 200, "status poll: {st}");
    st
}

/// One response, read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// From sending the request to the end of the body.
    pub took: Duration,
}

impl Reply {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// `X-Flashgate-Cache`: how the catalog cache answered (`hit`, `miss`, `stale`, ...).
    pub fn cache(&self) -> Option<&str> {
        self.header("x-flashgate-cache")
    }

    /// `Age` in seconds.
    pub fn age(&self) -> Option<u64> {
        self.header("age").and_then(|a| a.parse().ok())
    }

    /// `Retry-After` in seconds (0 when absent).
    pub fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the origin answered: its `/echo` reports the method.
    pub fn from_origin(&self) -> bool {
        self.json()["method"] == "GET"
    }

    /// Every `Set-Cookie`, as text.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Set-Cookie` of the cookie `name`, if one was set (or cleared).
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}=");
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&prefix))
    }

    /// How many cookies the response clears (`Max-Age=0`).
    pub fn cleared_cookies(&self) -> usize {
        self.set_cookies()
            .iter()
            .filter(|c| c.contains("Max-Age=0"))
            .count()
    }
}

/// Sends `req` and reads the response in full.
pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let started = Instant::now();
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("body");
    Reply {
        status,
        headers,
        body,
        took: started.elapsed(),
    }
}

/// GET `path` as a browser loads a page (`Accept: text/html`).
pub async fn page(at: &(impl Base + ?Sized), c: &reqwest::Client, path: &str) -> Reply {
    get(
        c,
        &format!("{}{path}", at.base()),
        &[("accept", "text/html")],
    )
    .await
}

/// How a request is repeated: every `every`, for at most `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    pub every: Duration,
    pub within: Duration,
}

impl Poll {
    /// Every `every`, up to [`DEADLINE`](crate::DEADLINE).
    pub fn every(every: Duration) -> Self {
        Self {
            every,
            within: crate::DEADLINE,
        }
    }

    /// For at most `within`.
    #[must_use]
    pub fn within(self, within: Duration) -> Self {
        Self { within, ..self }
    }
}

/// GETs `url` with `headers` as `poll` says until `done` holds for the reply — the shopper is
/// through, a stale copy is served — and returns that reply; panics naming `what` and the last
/// reply when `poll.within` runs out.
pub async fn get_until(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    poll: Poll,
    what: &str,
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + poll.within;
    loop {
        let r = get(c, url, headers).await;
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {} {:?} {}",
            r.status,
            r.cache(),
            r.body.chars().take(200).collect::<String>()
        );
        tokio::time::sleep(poll.every).await;
    }
}

/// `POST /.flashgate/leave?room=ROOM` as an app leaves the line or the shop (JSON answer).
pub async fn leave(at: &(impl Base + ?Sized), c: &reqwest::Client, room: &str) -> Reply {
    let url = format!("{}/.flashgate/leave?room={room}", at.base());
    send(c.post(url).header("accept", "application/json")).await
}

/// `POST /.flashgate/feedback?room=ROOM` with the JSON `body`, as the waiting page rates the
/// wait; the status code.
pub async fn feedback(
    at: &(impl Base + ?Sized),
    c: &reqwest::Client,
    room: &str,
    body: &str,
) -> u16 {
    let url = format!("{}/.flashgate/feedback?room={room}", at.base());
    let req = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    send(req).await.status
}

/// GET `url` with `headers`, read in full.
pub async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

/// A server-sent events stream (`/.flashgate/events`), read event by event.
#[derive(Debug)]
pub struct Events {
    response: reqwest::Response,
    buf: String,
    /// The `id` of the last event read that had one (the ticket the stream renewed last).
    pub last_id: Option<String>,
}

impl Events {
    /// Opens `url` as an event stream: it must answer 200 `text/event-stream`.
    pub async fn open(c: &reqwest::Client, url: &str) -> Self {
        Self::open_with(c, url, &[]).await
    }

    /// Opens `url` as an event stream with `headers` (a reconnecting browser's
    /// `Last-Event-ID`, say).
    pub async fn open_with(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Self {
        let mut req = c.get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = req.send().await.expect("event stream");
        assert_eq!(response.status(), 200, "event stream status");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            response,
            buf: String::new(),
            last_id: None,
        }
    }

    /// The next event's JSON data (comments and keep-alives are passed over), within `limit`.
    /// Every event's data must be JSON.
    pub async fn next(&mut self, limit: Duration) -> Value {
        self.next_where(limit, |_| true).await
    }

    /// Reads events until one's JSON data satisfies `want` (within `limit`).
    pub async fn next_where(&mut self, limit: Duration, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(event) = self.take_event() {
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue; // a keep-alive (a comment, or a `renew` event: no data) or `retry:`
                };
                let st: Value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
                if want(&st) {
                    return st;
                }
            }
            self.read_chunk(deadline).await;
        }
    }
}

impl Events {
    /// Reads the stream until `at` (keep-alives included, so this returns soon after `at`),
    /// at most `limit` after the call; the `id` read last.
    pub async fn read_until(&mut self, at: Instant, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < at {
            while self.take_event().is_some() {}
            self.read_chunk(deadline).await;
        }
        self.last_id.clone()
    }

    /// The next whole event in the buffer, noting its `id`.
    fn take_event(&mut self) -> Option<String> {
        let end = self.buf.find("\n\n")?;
        let event: String = self.buf.drain(..end + 2).collect();
        if let Some(id) = event.lines().find_map(|l| l.strip_prefix("id: ")) {
            self.last_id = Some(id.to_owned());
        }
        Some(event)
    }

    /// Reads the next chunk of the stream into the buffer (by `deadline`).
    async fn read_chunk(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, self.response.chunk())
            .await
            .expect("an event in time")
            .expect("read the stream")
            .expect("the stream still open");
        self.buf.push_str(&String::from_utf8_lossy(&chunk));
    }

    /// Waits (up to `limit`) for the stream to end; `None` when it ended with no more bytes,
    /// else what came instead (events already read but not returned are not looked at).
    pub async fn end(&mut self, limit: Duration) -> Option<String> {
        let rest = tokio::time::timeout(limit, self.response.chunk())
            .await
            .expect("the stream ends in time");
        match rest {
            Ok(None) => None,
            Ok(Some(chunk)) => Some(String::from_utf8_lossy(&chunk).into_owned()),
            Err(e) => Some(format!("a read error: {e}")),
        }
    }
}

/// GET `url` as an app does (`Accept: application/json`) with `headers`: (status, JSON body
/// or `Null`).
pub async fn get_app(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = c.get(url).header("accept", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or_default())
}

/// Joins the line at `url` (its room must be holding it: a 200 with a ticket); returns the
/// ticket number.
pub async fn join(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> u64 {
    let (code, st) = get_app(c, url, headers).await;
    assert_eq!(code, 200, "queued: {st}");
    st["ticket"]
        .as_u64()
        .unwrap_or_else(|| panic!("a ticket: {st}"))
}

/// Tries to enter at `url` (the origin's `/echo`): (status, whether the origin answered — its
/// echo reports the method).
pub async fn enter(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, bool) {
    let (code, body) = get_app(c, url, headers).await;
    (code, body["method"] == "GET")
}

/// A JSON value as text: its string, or `""` when it is not one (for `contains` asserts).
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// Every `Set-Cookie` of a response, as text.
pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// Asserts one order of entry: nobody entered (ticket, time since the line opened) more than
/// `slack` before a lower ticket — the polls' pace and the nodes' view age make up the slack.
#[track_caller]
pub fn assert_entered_in_order(entries: &[(u64, Duration)], slack: Duration) {
    for &(ti, at_i) in entries {
        for &(tj, at_j) in entries {
            assert!(
                ti >= tj || at_j + slack >= at_i,
                "ticket {tj} entered at {at_j:?}, long before ticket {ti} at {at_i:?}"
            );
        }
    }
}

/// What a waiting shopper saw on one status poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Since the line opened.
    pub at: Duration,
    pub ticket: u64,
    pub serving: u64,
    pub admitted: bool,
    pub position: Option<u64>,
}

/// A line that opened at `opened`, waited in as the waiting page does: each shopper polls
/// `room`'s status at the pace it is told (at most `max_pause` apart), every answer is recorded
/// in `seen`, and once admitted the shopper tries `path`.
#[derive(Debug, Clone)]
pub struct Line {
    pub room: String,
    pub path: String,
    pub opened: Instant,
    /// How long after `opened` every shopper must be in.
    pub within: Duration,
    pub max_pause: Duration,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Line {
    /// The line of `room` at `path`, open from now; everyone in `within`, polls as told.
    pub fn new(room: &str, path: &str, within: Duration) -> Self {
        Self {
            room: room.to_owned(),
            path: path.to_owned(),
            opened: Instant::now(),
            within,
            max_pause: Duration::MAX,
            seen: std::sync::Arc::default(),
        }
    }

    /// Polls at most `pause` apart, whatever the page is told.
    #[must_use]
    pub fn max_pause(mut self, pause: Duration) -> Self {
        self.max_pause = pause;
        self
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The shopper holding `ticket` waits and enters; `check` sees each entry attempt's
    /// (status, JSON body). Returns when the origin answered (its echo reports the method),
    /// how long after `opened`. Panics if that takes longer than `within`.
    pub async fn wait_and_enter(
        &self,
        at: &(impl Base + ?Sized),
        c: &reqwest::Client,
        ticket: u64,
        check: impl Fn(u16, &Value),
    ) -> Duration {
        let deadline = self.opened + self.within;
        loop {
            let st = status(at, c, &self.room).await;
            let s = Seen {
                at: self.opened.elapsed(),
                ticket,
                serving: st["serving"].as_u64().expect("serving"),
                admitted: st["admitted"] == true,
                position: st["position"].as_u64(),
            };
            self.seen.lock().expect("seen lock").push(s);
            if s.admitted {
                let (code, body) = get_app_plain(at, c, &self.path).await;
                check(code, &body);
                if body["method"] == "GET" {
                    return self.opened.elapsed();
                }
            }
            assert!(Instant::now() < deadline, "ticket {ticket} never admitted");
            let after = st["poll_after_ms"].as_u64().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(after).min(self.max_pause)).await;
        }
    }
}

/// GET `path` without an `Accept` header: (status, JSON body or `Null`).
async fn get_app_plain(at: &(impl Base + ?Sized), c: &reqwest::Client, path: &str) -> (u16, Value) {
    let r = c
        .get(format!("{}{path}", at.base()))
        .send()
        .await
        .expect("enter");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or_default())
}
