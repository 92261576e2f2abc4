//! End-to-end tests: a real shop on `127.0.0.1:0`, driven over loopback by
//! reqwest and, where reqwest is too polite, by raw TCP.
//!
//! Nothing here sleeps to synchronise; the only timeouts are upper bounds
//! that turn a hang into a failure.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::{PathClass, PathFault, Product, Shop, ShopConfig, ShopConfigError, ShopStats};

/// Upper bound for any single network wait in these tests.
const LIMIT: Duration = Duration::from_secs(10);

struct Running {
    shop: Shop,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` with `c`.
    async fn get(&self, c: &reqwest::Client, path: &str) -> reqwest::Response {
        c.get(self.url(path)).send().await.unwrap()
    }

    /// POST the form `fields` to `path` with `c`.
    async fn post_form(
        &self,
        c: &reqwest::Client,
        path: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        c.post(self.url(path)).form(fields).send().await.unwrap()
    }

    /// POST `body` as JSON to `path` with `c`.
    async fn post_json(&self, c: &reqwest::Client, path: &str, body: &Value) -> reqwest::Response {
        c.post(self.url(path)).json(body).send().await.unwrap()
    }

    /// GET `path` with `c`: the body as JSON.
    async fn json(&self, c: &reqwest::Client, path: &str) -> Value {
        self.get(c, path).await.json().await.unwrap()
    }

    /// GET `path` with `c`: the body as text.
    async fn text(&self, c: &reqwest::Client, path: &str) -> String {
        self.get(c, path).await.text().await.unwrap()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        timeout(LIMIT, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task did not panic")
            .expect("serve returned Ok");
    }
}

async fn start(cfg: ShopConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shop = Shop::try_new(cfg).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shop.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        shop,
        addr,
        stop,
        task,
    }
}

/// A shop on `cfg`, and a client for it.
async fn open(cfg: ShopConfig) -> (Running, reqwest::Client) {
    (start(cfg).await, client())
}

fn product(sku: &str, price_cents: u64, stock: u32) -> Product {
    Product {
        sku: sku.to_owned(),
        name: format!("{sku} product"),
        price_cents,
        stock,
    }
}

fn small_shop(limited_stock: u32) -> ShopConfig {
    ShopConfig {
        name: "Test Shop".to_owned(),
        products: vec![
            product("LIMITED", 1_000, limited_stock),
            product("PLENTY", 250, 1_000),
        ],
        latency: Duration::ZERO,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn header<'r>(resp: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Asserts the response's `Cache-Control`.
#[track_caller]
fn assert_cache(resp: &reqwest::Response, cache_control: &str) {
    assert_eq!(header(resp, CACHE_CONTROL.as_str()), Some(cache_control));
}

/// Asserts the response's `Content-Type`.
#[track_caller]
fn assert_type(resp: &reqwest::Response, content_type: &str) {
    assert_eq!(header(resp, CONTENT_TYPE.as_str()), Some(content_type));
}

/// Sends `req`: the answer's body as JSON.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// A connection to `addr` on which `request` has been sent.
async fn sent(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

/// Sends raw bytes and reads until the server closes the connection.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = sent(addr, request).await;
    let mut out = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads exactly one response (head and `Content-Length` body) from a
/// keep-alive connection, leaving any further bytes in `buf`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .expect("every response has Content-Length");
            let total = end + 4 + len;
            while buf.len() < total {
                read_more(stream, buf).await;
            }
            let body = String::from_utf8_lossy(&buf[end + 4..total]).into_owned();
            buf.drain(..total);
            return (head, body);
        }
        read_more(stream, buf).await;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    let n = timeout(LIMIT, stream.read(&mut chunk))
        .await
        .expect("response arrives")
        .unwrap();
    assert!(n > 0, "connection closed mid-response");
    buf.extend_from_slice(&chunk[..n]);
}

/// Waits until the server closes `stream`, failing if it sends anything.
async fn expect_closed(stream: &mut TcpStream) {
    let mut chunk = [0u8; 64];
    match timeout(LIMIT, stream.read(&mut chunk))
        .await
        .expect("server closes the connection")
    {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "expected close, got {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

#[tokio::test]
async fn catalog_pages_are_html_and_cacheable() {
    let (shop, c) = open(ShopConfig::demo()).await;
    for path in ["/", "/products", "/products/AURORA-LIP-KIT"] {
        let resp = shop.get(&c, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_type(&resp, "text/html; charset=utf-8");
        assert_cache(&resp, "public, max-age=5");
        assert!(resp.headers().contains_key(CONTENT_LENGTH));
        assert_eq!(header(&resp, "vary"), Some("Accept"), "{path}: negotiated");
        let body = resp.text().await.unwrap();
        assert!(body.contains("Aurora Lip Kit"), "{path}: {body}");
        assert!(body.starts_with("<!doctype html>"));
    }
    let home = shop.text(&c, "/").await;
    for p in &ShopConfig::demo().products {
        assert!(home.contains(&format!("href=\"/products/{}\"", p.sku)));
    }
    let stats = shop.shop.stats();
    assert_eq!(stats.by_path.catalog, 3);
    assert_eq!(stats.by_path.product, 1);
    shop.shutdown().await;
}

#[tokio::test]
async fn json_when_asked_or_under_api() {
    let (shop, c) = open(ShopConfig::demo()).await;

    let resp = shop.get(&c, "/api/products").await;
    assert_type(&resp, "application/json");
    assert_cache(&resp, "public, max-age=5");
    assert_eq!(header(&resp, "vary"), None, "always JSON under /api/");
    let list: Value = resp.json().await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["sku"], "AURORA-LIP-KIT");
    assert_eq!(list[0]["stock"], 500);
    assert_eq!(list[0]["sold_out"], false);

    let negotiated: Value = json_of(
        c.get(shop.url("/products"))
            .header("Accept", "text/html;q=0.9, application/json"),
    )
    .await;
    assert_eq!(negotiated.as_array().map(Vec::len), Some(5));

    let one: Value = shop.json(&c, "/api/products/ECLIPSE-PALETTE").await;
    assert_eq!(
        one,
        json!({"sku": "ECLIPSE-PALETTE", "name": "Eclipse Eyeshadow Palette",
               "price_cents": 5400, "stock": 1500, "sold_out": false})
    );

    let missing = shop.get(&c, "/api/products/NOPE").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["status"], 404);

    let missing_html = shop.get(&c, "/nope").await;
    assert_eq!(missing_html.status(), StatusCode::NOT_FOUND);
    assert_type(&missing_html, "text/html; charset=utf-8");
    assert_cache(&missing_html, "private, no-store");

    let inventory: Value = shop.json(&c, "/api/inventory").await;
    assert_eq!(
        inventory[0],
        json!({"sku": "AURORA-LIP-KIT", "stock": 500, "initial_stock": 500})
    );
    shop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_never_oversells_under_contention() {
    let (shop, c) = open(small_shop(10)).await;
    let buyers: Vec<_> = (0..50)
        .map(|_| {
            let (c, url) = (c.clone(), shop.url("/api/checkout"));
            tokio::spawn(async move {
                let resp = c
                    .post(url)
                    .json(&json!({"sku": "LIMITED", "qty": 1}))
                    .send()
                    .await
                    .unwrap();
                let sold_out_command = header(&resp, "x-flashgate-command") == Some("sold-out");
                let cache = header(&resp, CACHE_CONTROL.as_str()).map(str::to_owned);
                (resp.status(), sold_out_command, cache)
            })
        })
        .collect();
    let mut created = 0;
    let mut conflicts = 0;
    let mut sold_out_commands = 0;
    for buyer in buyers {
        let (status, sold_out_command, cache) = buyer.await.unwrap();
        assert_eq!(cache.as_deref(), Some("private, no-store"));
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!("unexpected status {other}"),
        }
        sold_out_commands += u32::from(sold_out_command);
    }
    assert_eq!((created, conflicts), (10, 40));
    assert_eq!(
        sold_out_commands, 1,
        "exactly one order takes the last unit"
    );
    assert_eq!(shop.shop.stock("LIMITED"), Some(0));
    let stats = shop.shop.stats();
    assert_eq!(stats.orders, 10);
    assert_eq!(stats.units_sold, 10);
    assert_eq!(stats.sold_out_rejections, 40);
    assert_eq!(stats.by_path.checkout, 50);
    shop.shutdown().await;
}

#[tokio::test]
async fn last_unit_carries_sold_out_command() {
    let (shop, c) = open(small_shop(3)).await;
    let buy = |qty: u32| {
        c.post(shop.url("/checkout"))
            .header("Accept", "application/json")
            .form(&[("sku", "LIMITED".to_owned()), ("qty", qty.to_string())])
            .send()
    };

    let first = buy(2).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(header(&first, "x-flashgate-command"), None);
    let order: Value = first.json().await.unwrap();
    assert_eq!(order["order_id"], "ORD-000001");
    assert_eq!(order["total_cents"], 2_000);

    let too_many = buy(2).await.unwrap();
    assert_eq!(too_many.status(), StatusCode::CONFLICT);
    let err: Value = too_many.json().await.unwrap();
    assert_eq!(err["available"], 1);

    let last = buy(1).await.unwrap();
    assert_eq!(last.status(), StatusCode::CREATED);
    assert_eq!(header(&last, "x-flashgate-command"), Some("sold-out"));
    let order: Value = last.json().await.unwrap();
    assert_eq!(order["sold_out"], json!(["LIMITED"]));

    let after = buy(1).await.unwrap();
    assert_eq!(after.status(), StatusCode::CONFLICT);
    assert_eq!(header(&after, "x-flashgate-command"), None);
    let err: Value = after.json().await.unwrap();
    assert_eq!(err["error"], "sold out");

    // HTML shoppers get a page, and the product shows as sold out.
    let page = shop.post_form(&c, "/checkout", &[("sku", "LIMITED")]).await;
    assert_eq!(page.status(), StatusCode::CONFLICT);
    assert!(page.text().await.unwrap().contains("sold out"));
    let product = shop.text(&c, "/products/LIMITED").await;
    assert!(product.contains("Sold out"));
    shop.shutdown().await;
}

#[tokio::test]
async fn cart_cookie_and_checkout_from_cart() {
    let (shop, c) = open(small_shop(5)).await;

    let added = shop
        .post_form(&c, "/cart", &[("sku", "LIMITED"), ("qty", "2")])
        .await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&added, LOCATION.as_str()), Some("/cart"));
    assert_cache(&added, "private, no-store");
    let cookie = header(&added, SET_COOKIE.as_str()).unwrap();
    assert!(cookie.starts_with("shop_cart=LIMITED:2;"), "{cookie}");
    let cart_cookie = cookie.split(';').next().unwrap().to_owned();

    // JSON input, merged into the existing cart.
    let added = c
        .post(shop.url("/cart"))
        .header("Cookie", &cart_cookie)
        .json(&json!({"sku": "PLENTY", "qty": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let cart_cookie = header(&added, SET_COOKIE.as_str())
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(cart_cookie, "shop_cart=LIMITED:2|PLENTY:3");

    let cart: Value = json_of(
        c.get(shop.url("/api/cart"))
            .header("Cookie", format!("other=1; {cart_cookie}")),
    )
    .await;
    assert_eq!(cart["total_cents"], 2 * 1_000 + 3 * 250);
    assert_eq!(cart["items"][1]["qty"], 3);

    let bad = shop
        .post_form(&c, "/cart", &[("sku", "LIMITED"), ("qty", "0")])
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unknown = shop.post_form(&c, "/cart", &[("sku", "NOPE")]).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let empty = c.post(shop.url("/checkout")).send().await.unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);

    let placed = c
        .post(shop.url("/checkout"))
        .header("Cookie", &cart_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), StatusCode::CREATED);
    assert!(header(&placed, SET_COOKIE.as_str())
        .unwrap()
        .contains("Max-Age=0"));
    assert!(header(&placed, "x-order-id").is_some());
    assert!(placed.text().await.unwrap().contains("Thank you"));
    assert_eq!(shop.shop.stock("LIMITED"), Some(3));
    assert_eq!(shop.shop.stock("PLENTY"), Some(997));
    assert_eq!(shop.shop.stats().units_sold, 5);
    shop.shutdown().await;
}

#[tokio::test]
async fn leaving_revokes_the_queue_session() {
    let (shop, c) = open(ShopConfig::demo()).await;
    for resp in [
        shop.get(&c, "/done").await,
        c.post(shop.url("/logout-queue")).send().await.unwrap(),
    ] {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "x-flashgate-command"), Some("revoke"));
        assert_cache(&resp, "private, no-store");
        assert!(resp.text().await.unwrap().contains("Thanks"));
    }
    let wrong = shop.get(&c, "/logout-queue").await;
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&wrong, "allow"), Some("POST"));
    assert_eq!(header(&wrong, "x-flashgate-command"), None);
    assert_eq!(shop.shop.stats().by_path.queue, 3);
    shop.shutdown().await;
}

#[tokio::test]
async fn echo_reports_headers_and_counts_flashgate_cookies() {
    let (shop, c) = open(ShopConfig::demo()).await;
    let echo: Value = json_of(
        c.post(shop.url("/echo?x=1"))
            .header("X-Forwarded-For", "203.0.113.7")
            .header("X-Request-Id", "req-42")
            .header("Cookie", "fg_p_main=abc; shop_cart=X:1")
            .body("payload"),
    )
    .await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["body"], "payload");
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.7");
    assert_eq!(echo["headers"]["x-request-id"], "req-42");
    assert_eq!(echo["headers"]["cookie"], "fg_p_main=abc; shop_cart=X:1");
    assert!(echo["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(shop.shop.stats().requests_with_fg_cookie, 1);

    // Lookalikes are not Flashgate cookies; a second Cookie field is seen.
    let echo: Value = json_of(
        c.get(shop.url("/echo"))
            .header("Cookie", "xfg_t=1; shop_cart=X:1")
            .header("Cookie", "fg_t_main=2"),
    )
    .await;
    let stats = shop.shop.stats();
    assert_eq!(stats.requests_with_fg_cookie, 2, "{echo}");

    c.get(shop.url("/echo"))
        .header("Cookie", "xfg_t=1; shop_cart=X:1")
        .send()
        .await
        .unwrap();
    let stats = shop.shop.stats();
    assert_eq!(stats.requests_with_fg_cookie, 2);
    assert_eq!(stats.by_path.echo, 3);
    assert_eq!(stats.requests, 3);
    shop.shutdown().await;
}

#[tokio::test]
async fn health_and_head() {
    let (shop, c) = open(ShopConfig::demo()).await;
    let ok = shop.get(&c, "/healthz").await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "ok");

    let head = c.head(shop.url("/products")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let advertised: usize = header(&head, CONTENT_LENGTH.as_str())
        .unwrap()
        .parse()
        .unwrap();
    assert!(advertised > 0);
    assert!(head.bytes().await.unwrap().is_empty());

    let post = c.post(shop.url("/healthz")).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&post, "allow"), Some("GET, HEAD"));
    shop.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_an_error_and_a_closed_connection() {
    let shop = start(ShopConfig::demo()).await;
    let cases: &[(&[u8], &str)] = &[
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 "),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", "HTTP/1.1 400 "),
        // hyper refuses a version it does not speak as a malformed request line.
        (b"GET / HTTP/3.0\r\n\r\n", "HTTP/1.1 400 "),
        (
            b"POST /cart HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            "HTTP/1.1 400 ",
        ),
    ];
    for (request, status_line) in cases {
        let reply = raw_exchange(shop.addr, request).await;
        assert!(reply.starts_with(status_line), "{reply}");
        assert!(reply.contains("\r\nconnection: close\r\n"), "{reply}");
        assert!(reply.contains("\r\ncontent-length: "), "{reply}");
    }

    // A body over the limit is refused before it is read, and the 413
    // still reaches the client although it keeps uploading.
    let mut big = b"POST /cart HTTP/1.1\r\nContent-Length: 200000\r\n\r\n".to_vec();
    big.resize(big.len() + 200_000, b'a');
    let reply = raw_exchange(shop.addr, &big).await;
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");

    let mut huge_head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge_head.resize(40_000, b'b');
    let reply = raw_exchange(shop.addr, &huge_head).await;
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");

    let stats = shop.shop.stats();
    assert_eq!(stats.bad_requests, 6);
    assert_eq!(stats.requests, 0);

    // A chunked body (which the hand-written server refused with 501) is read like any other.
    let reply = raw_exchange(
        shop.addr,
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert!(reply.contains("\"body\":\"hello\""), "{reply}");

    // The shop is unharmed.
    let ok = client().get(shop.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    shop.shutdown().await;
}

#[tokio::test]
async fn keep_alive_reuses_one_connection() {
    let (shop, c) = open(ShopConfig::demo()).await;
    for path in ["/", "/api/products", "/healthz", "/echo", "/cart"] {
        let resp = shop.get(&c, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.bytes().await.unwrap();
    }
    let stats = shop.shop.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.connections, 1);
    shop.shutdown().await;
}

/// Three requests in one write: a health check, an echo with a body, and a health check that
/// closes the connection.
const PIPELINED: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n\
    POST /echo HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello\
    GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn pipelined_requests_and_connection_close() {
    let shop = start(ShopConfig::demo()).await;
    let mut stream = sent(shop.addr, PIPELINED).await;
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(!head.contains("connection: close"));
    assert_eq!(body, "ok");
    let (_, body) = read_response(&mut stream, &mut buf).await;
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["body"], "hello");
    let (head, body) = read_response(&mut stream, &mut buf).await;
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(body, "ok");
    assert!(buf.is_empty());
    expect_closed(&mut stream).await;
    assert_eq!(shop.shop.stats().connections, 1);
    shop.shutdown().await;
}

#[tokio::test]
async fn http10_closes_unless_keep_alive_is_requested() {
    let shop = start(ShopConfig::demo()).await;
    let reply = raw_exchange(shop.addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    // hyper answers a 1.0 request in 1.0 (the hand-written server said 1.1; both are valid).
    assert!(reply.starts_with("HTTP/1.0 200 OK"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nok"), "{reply}");

    let mut stream = TcpStream::connect(shop.addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_response(&mut stream, &mut buf).await;
        assert!(head.contains("\r\nconnection: keep-alive"), "{head}");
    }
    assert_eq!(shop.shop.stats().connections, 2);
    shop.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue() {
    let shop = start(ShopConfig::demo()).await;
    let mut stream = sent(
        shop.addr,
        b"POST /echo HTTP/1.1\r\nHost: shop\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    while !buf.ends_with(b"\r\n\r\n") {
        read_more(&mut stream, &mut buf).await;
    }
    assert_eq!(buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    buf.clear();
    stream.write_all(b"body").await.unwrap();
    let (head, body) = read_response(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(body.contains("\"body\":\"body\""), "{body}");
    shop.shutdown().await;
}

#[tokio::test]
async fn down_closes_connections_until_back_up() {
    let shop = start(ShopConfig::demo()).await;

    // An idle keep-alive connection is closed as soon as the shop goes down.
    let mut idle = sent(shop.addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
    read_response(&mut idle, &mut Vec::new()).await;

    shop.shop.set_down(true);
    assert!(shop.shop.is_down());
    expect_closed(&mut idle).await;

    // New connections are closed without a response (by FIN or, if the
    // request was already buffered when the socket was dropped, RST).
    let mut refused = TcpStream::connect(shop.addr).await.unwrap();
    let _ = refused.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    expect_closed(&mut refused).await;
    let fresh = client().get(shop.url("/healthz")).send().await;
    assert!(fresh.is_err(), "{fresh:?}");

    shop.shop.set_down(false);
    let ok = client().get(shop.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(shop.shop.stats().requests, 2);
    shop.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listener_and_closes_idle_connections() {
    let shop = start(ShopConfig::demo()).await;
    let addr = shop.addr;
    let mut idle = sent(addr, b"GET /healthz HTTP/1.1\r\n\r\n").await;
    read_response(&mut idle, &mut Vec::new()).await;

    let handle = shop.shop.clone();
    shop.shutdown().await;
    expect_closed(&mut idle).await;
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eq!(handle.stats().connections, 1);
}

#[tokio::test]
async fn artificial_latency_delays_responses() {
    let latency = Duration::from_millis(30);
    let shop = start(ShopConfig {
        latency,
        ..small_shop(1)
    })
    .await;
    let started = Instant::now();
    let resp = client().get(shop.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= latency);
    shop.shutdown().await;
}

#[tokio::test]
async fn latency_and_failures_can_be_switched_at_run_time() {
    let (shop, c) = open(small_shop(5)).await;
    let latency = Duration::from_millis(40);
    shop.shop.set_latency(latency);
    let started = Instant::now();
    let resp = shop.get(&c, "/products").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= latency);
    shop.shop.set_latency(Duration::ZERO);

    shop.shop.set_failing(Some(503));
    let resp = shop.get(&c, "/products").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[CACHE_CONTROL], "private, no-store");
    // A failing shop handles nothing: no order is placed.
    let resp = shop
        .post_json(&c, "/checkout", &json!({"sku": "LIMITED", "qty": 1}))
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shop.shop.stock("LIMITED"), Some(5));
    shop.shop.set_failing(None);
    let resp = shop.get(&c, "/products").await;
    assert_eq!(resp.status(), StatusCode::OK);

    // Every request is counted, failed or not, per exact path and per class.
    assert_eq!(shop.shop.path_requests("/products"), 3);
    assert_eq!(shop.shop.path_requests("/checkout"), 1);
    assert_eq!(shop.shop.path_requests("/cart"), 0);
    let stats = shop.shop.stats();
    assert_eq!(stats.by_path.catalog, 3);
    assert_eq!(stats.by_path.checkout, 1);
    assert_eq!(stats.orders, 0);
    shop.shutdown().await;
}

#[tokio::test]
async fn path_faults_apply_to_their_prefix_only() {
    let (shop, c) = open(small_shop(5)).await;
    shop.shop.set_path_fault(
        "/products/",
        Some(PathFault {
            status: Some(500),
            ..PathFault::default()
        }),
    );
    shop.shop.set_path_fault(
        "/products/PLENTY",
        Some(PathFault {
            cache_control: Some("private, max-age=5"),
            headers: vec![("Set-Cookie", "seen=1; Path=/".to_owned())],
            latency: Some(Duration::from_millis(30)),
            ..PathFault::default()
        }),
    );
    let get = |path: &'static str| {
        let c = c.clone();
        let url = shop.url(path);
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(get("/products").await.status(), StatusCode::OK);
    assert_eq!(
        get("/products/LIMITED").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // The longer prefix sets no status, so the shorter one's applies.
    let started = Instant::now();
    let resp = get("/products/PLENTY").await;
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    shop.shop.set_path_fault("/products/", None);
    let resp = get("/products/PLENTY").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[CACHE_CONTROL], "private, max-age=5");
    assert_eq!(resp.headers()[SET_COOKIE], "seen=1; Path=/");
    shop.shop.set_path_fault("/products/PLENTY", None);
    let resp = get("/products/PLENTY").await;
    assert_eq!(resp.headers()[CACHE_CONTROL], "public, max-age=5");
    assert!(resp.headers().get(SET_COOKIE).is_none());
    shop.shutdown().await;
}

#[tokio::test]
async fn failed_requests_are_counted_in_the_routers_class() {
    let (shop, c) = open(small_shop(5)).await;
    let paths = [
        "/",
        "/products",
        "/api/products",
        "/products/PLENTY",
        "/api/products/NOPE",
        "/cart",
        "/api/checkout",
        "/api/inventory",
        "/done",
        "/healthz",
        "/echo",
        "/api/stats",
        "/nowhere",
    ];
    for failing in [false, true] {
        shop.shop.set_failing(failing.then_some(500));
        for p in paths {
            let before = shop.shop.stats().by_path;
            shop.get(&c, p).await;
            let after = shop.shop.stats().by_path;
            let class = PathClass::of(p);
            let count = |b: &super::PathCounts| match class {
                PathClass::Catalog => b.catalog,
                PathClass::Product => b.product,
                PathClass::Cart => b.cart,
                PathClass::Checkout => b.checkout,
                PathClass::Inventory => b.inventory,
                PathClass::Queue => b.queue,
                PathClass::Health => b.health,
                PathClass::Echo => b.echo,
                PathClass::Stats => b.stats,
                PathClass::Other => b.other,
            };
            assert_eq!(
                count(&after),
                count(&before) + 1,
                "{p} (failing: {failing})"
            );
        }
    }
    shop.shutdown().await;
}

#[tokio::test]
async fn stats_endpoint_matches_snapshot() {
    let (shop, c) = open(ShopConfig::demo()).await;
    shop.get(&c, "/").await;
    let remote: Value = shop.json(&c, "/api/stats").await;
    // The snapshot is taken while answering the stats request itself, so
    // that request is counted but not yet attributed to its path.
    assert_eq!(remote["requests"], 2);
    assert_eq!(remote["by_path"]["catalog"], 1);
    assert_eq!(remote["by_path"]["stats"], 0);
    assert_eq!(shop.shop.stats().by_path.stats, 1);
    shop.shutdown().await;
}

#[test]
fn config_validation() {
    let mut cfg = small_shop(1);
    cfg.products.push(product("bad sku", 1, 1));
    cfg.products.push(product("LIMITED", 1, 1));
    assert_eq!(
        cfg.validate(),
        Err(ShopConfigError::InvalidSku("bad sku".into()))
    );
    assert!(Shop::try_new(cfg.clone()).is_err());

    // The lenient constructor keeps the valid, first-seen products.
    let shop = Shop::new(cfg);
    assert_eq!(shop.stock("LIMITED"), Some(1));
    assert_eq!(shop.stock("PLENTY"), Some(1_000));
    assert_eq!(shop.stock("bad sku"), None);
    assert_eq!(shop.stats(), ShopStats::default());

    assert!(ShopConfig::demo().validate().is_ok());
    let demo = ShopConfig::demo();
    assert_eq!(demo.products[0].name, "Aurora Lip Kit — Limited Edition");
    assert_eq!(demo.products[0].stock, 500);
}

#[test]
fn config_from_serde_uses_millis_and_demo_defaults() {
    let cfg: ShopConfig = serde_json::from_value(json!({"latency_ms": 25})).unwrap();
    assert_eq!(cfg.latency, Duration::from_millis(25));
    assert_eq!(cfg.products, ShopConfig::demo().products);
    assert_eq!(serde_json::to_value(&cfg).unwrap()["latency_ms"], json!(25));
    assert!(serde_json::from_value::<ShopConfig>(json!({"latency": 1})).is_err());
}
