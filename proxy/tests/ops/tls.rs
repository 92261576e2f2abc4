//! The TLS listener: HTTPS, HTTP/2, `Secure` cookies, certificate rotation.

use super::*;

/// A fresh self-signed certificate for 127.0.0.1 and localhost, written as PEM.
fn write_cert(dir: &Path, tag: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("self-signed certificate");
    let (cert, key) = (
        dir.join(format!("{tag}-cert.pem")),
        dir.join(format!("{tag}-key.pem")),
    );
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
    (cert, key, c.cert.der().to_vec())
}

fn https_client(h2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none());
    let b = if h2 { b } else { b.http1_only() };
    b.build().expect("https client")
}

/// The certificate a new HTTPS connection to `https` is served.
async fn served_cert(https: &str) -> Vec<u8> {
    let r = https_client(true)
        .get(format!("{https}/products"))
        .send()
        .await
        .expect("HTTPS request");
    peer_cert(&r)
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_listener_serves_the_gate_with_secure_cookies() {
    let origin = Origin::start().await;
    let dir = std::env::temp_dir().join(format!("flashgate-ops-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key, der1) = write_cert(&dir, "one");
    let cfg = base(&origin)
        .tls(cert.clone(), key.clone())
        .room(room("drop", "/echo", 600, "over TLS"));
    let node = start(&cfg).await;
    let https = format!("https://127.0.0.1:{}", node.cfg.tls_port);
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": true})))
        .await;

    // HTTP/2 through ALPN: the waiting page, with Secure cookies.
    let shopper = https_client(true);
    let r = shopper
        .get(format!("{https}/echo"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("HTTPS request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 202);
    assert_eq!(peer_cert(&r), der1);
    let cookies = set_cookies(&r);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("fg_t_drop=") && c.ends_with("; Secure")),
        "{cookies:?}"
    );
    let html = r.text().await.expect("page");
    assert!(html.contains("over TLS"), "the waiting page");
    // Server-sent events over HTTP/2 stay on Pingora (no raw socket to hand over): pushed too.
    let mut sse = Events::open(&shopper, &format!("{https}/.flashgate/events?room=drop")).await;
    assert_eq!(sse.next(Duration::from_secs(20)).await["state"], "paused");

    // Admitted over HTTPS: the pass cookie is Secure, the origin hears https.
    node.admin_req("PATCH", "/api/rooms/drop", Some(json!({"paused": false})))
        .await;
    sse.next_where(Duration::from_secs(10), |st| st["admitted"] == true)
        .await;
    wait_for("admission over TLS", Duration::from_secs(20), || async {
        let (_, st, _) = get_json(&shopper, &format!("{https}/.flashgate/status?room=drop")).await;
        st["admitted"] == json!(true)
    })
    .await;
    let r = shopper
        .get(format!("{https}/echo"))
        .send()
        .await
        .expect("forwarded");
    assert_eq!(r.status(), 200);
    let cookies = set_cookies(&r);
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "every cookie Secure: {cookies:?}"
    );
    let echo: Value = r.json().await.expect("echo");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // HTTP/1.1 over TLS works too.
    let h1 = https_client(false);
    let r = h1.get(format!("{https}/echo")).send().await.expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert!(set_cookies(&r).iter().all(|c| c.contains("; Secure")));

    // The plain listener of the same node: no Secure, http to the origin.
    let plain = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let (code, _, _) = get_json(&plain, &format!("{}/echo", node.base)).await;
    assert!(code == 200 || code == 202);
    let r = shopper::get(&plain, &node.url("/echo"), &[]).await;
    assert!(r.set_cookies().iter().all(|c| !c.contains("Secure")));

    certificates_rotate_on_reload(&node, &dir, &cert, &key, &https).await;

    // A node whose certificate cannot be read does not start without its TLS listener: it
    // refuses to start, naming the key.
    let bad = dir.join("bad.toml");
    let bad_text = cfg.render().replace(
        &format!("tls_cert = \"{}\"", cert.display()),
        "tls_cert = \"/nonexistent/cert.pem\"",
    );
    std::fs::write(&bad, bad_text).expect("write");
    let out = cli(&["run", "-c", bad.to_str().expect("path")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "{}: server.tls_cert: cannot read /nonexistent/cert.pem",
            bad.display()
        )),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A reload picks up a renewed certificate for new connections; a broken key is refused by name
/// and the renewed certificate stays in service.
async fn certificates_rotate_on_reload(
    node: &Node,
    dir: &Path,
    cert: &Path,
    key: &Path,
    https: &str,
) {
    let (cert2, key2, der2) = write_cert(dir, "two");
    std::fs::copy(&cert2, cert).expect("renew cert");
    std::fs::copy(&key2, key).expect("renew key");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let summary = shopper::text(&body["summary"]);
    assert!(summary.contains("new TLS certificate"), "{body}");
    assert_eq!(served_cert(https).await, der2, "a new connection");

    // A broken key is refused by name; the renewed certificate stays in service.
    std::fs::write(
        key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("break key");
    let (code, body) = node.admin_req("POST", "/api/reload", None).await;
    assert_eq!(code, 422);
    let msg = body["error"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(&format!("{}: server.tls_key: ", node.config.display())),
        "{msg}"
    );
    assert_eq!(served_cert(https).await, der2, "still serving");
}
