//! Cheap signals and their weights. Each is a hint, not a proof: a score is the sum of the
//! weights of the signals that fired, and only a sum crosses the action thresholds.
//!
//! Header checks look for real browsers first: a `Mozilla/5.0 (…)` user agent with a known
//! engine token is a browser unless it names an automation tool (`HeadlessChrome`,
//! `PhantomJS`, …) or a crawler. Native shopping apps (`okhttp`, `CFNetwork`, `Dart`) are
//! "unusual", not "automation": they score a little, never enough to act on by themselves.

use std::fmt;

use http::HeaderMap;

/// One signal (also the `signal` / `reason` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// No `User-Agent`, or an empty one.
    NoUserAgent,
    /// A tool or library (`curl`, `python-requests`, `Go-http-client`, `HeadlessChrome`, …)
    /// or a crawler outside the crawler bypass.
    AutomationUserAgent,
    /// Neither a browser nor a known tool.
    UnusualUserAgent,
    NoAccept,
    NoAcceptLanguage,
    /// A browser user agent with headers that browser always sends missing
    /// (`Accept-Encoding`; over TLS, `Sec-Fetch-Mode` for Chrome ≥ 80 / Firefox ≥ 90).
    HeaderAnomaly,
    /// Polling faster than the waiting room asked (several tabs are tolerated).
    PollTooFast,
    /// Many join attempts from one /24 or /64.
    PrefixTickets,
    /// One ticket or pass seen from many /24s or /64s (a copied token).
    SharedToken,
}

impl Signal {
    pub const ALL: [Signal; 9] = [
        Signal::NoUserAgent,
        Signal::AutomationUserAgent,
        Signal::UnusualUserAgent,
        Signal::NoAccept,
        Signal::NoAcceptLanguage,
        Signal::HeaderAnomaly,
        Signal::PollTooFast,
        Signal::PrefixTickets,
        Signal::SharedToken,
    ];

    /// Points added to the score.
    pub const fn weight(self) -> u32 {
        match self {
            Signal::NoUserAgent => 40,
            Signal::AutomationUserAgent => 60,
            Signal::UnusualUserAgent => 10,
            Signal::NoAccept => 20,
            Signal::NoAcceptLanguage => 20,
            Signal::HeaderAnomaly => 25,
            Signal::PollTooFast => 40,
            Signal::PrefixTickets => 30,
            Signal::SharedToken => 100,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::NoUserAgent => "no_user_agent",
            Signal::AutomationUserAgent => "automation_user_agent",
            Signal::UnusualUserAgent => "unusual_user_agent",
            Signal::NoAccept => "no_accept",
            Signal::NoAcceptLanguage => "no_accept_language",
            Signal::HeaderAnomaly => "header_anomaly",
            Signal::PollTooFast => "poll_too_fast",
            Signal::PrefixTickets => "prefix_tickets",
            Signal::SharedToken => "shared_token",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of signals.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals(u16);

impl Signals {
    pub fn insert(&mut self, s: Signal) {
        self.0 |= s.bit();
    }

    pub fn contains(self, s: Signal) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Signal> {
        Signal::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Sum of the weights.
    pub fn score(self) -> u32 {
        self.iter().map(Signal::weight).sum()
    }

    /// The heaviest signal (the reason given for an action).
    pub fn strongest(self) -> Option<Signal> {
        // `max_by_key` keeps the last maximum; ALL is ordered so ties go to the later one.
        self.iter().max_by_key(|s| s.weight())
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(Signal::as_str))
            .finish()
    }
}

/// What a `User-Agent` says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UaClass {
    Missing,
    Browser,
    Automation,
    Other,
}

/// Markers that mean automation even inside a browser-shaped string (lowercase).
const AUTOMATION_ANYWHERE: &[&str] = &[
    "headlesschrome",
    "phantomjs",
    "selenium",
    "webdriver",
    "puppeteer",
    "playwright",
    "slimerjs",
    "htmlunit",
    "windowspowershell",
    // Crawlers: `Googlebot/2.1`, `bingbot/2.0`, `(compatible; …; +http://…)`. Not plain
    // "bot", which is in phone model names (Cubot).
    "bot/",
    "spider",
    "crawler",
    "+http",
];

/// Tools and libraries, matched at the start of the string (lowercase).
const AUTOMATION_PREFIX: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests/",
    "python-urllib/",
    "python-httpx/",
    "python/",
    "aiohttp/",
    "httpx/",
    "go-http-client/",
    "go-resty/",
    "java/",
    "apache-httpclient/",
    "jakarta commons-httpclient",
    "libwww-perl/",
    "lwp::",
    "mechanize",
    "axios/",
    "node-fetch/",
    "node.js",
    "undici",
    "got (",
    "scrapy/",
    "httpie/",
    "postmanruntime/",
    "insomnia/",
    "ruby",
    "faraday",
    "guzzlehttp/",
    "php/",
    "rest-client/",
    "hackney/",
    "reqwest/",
    "colly",
    "zgrab/",
    "masscan/",
    "nuclei",
];

/// Classifies a `User-Agent` value.
pub fn classify_user_agent(ua: Option<&str>) -> UaClass {
    match ua.map(str::trim).filter(|u| !u.is_empty()) {
        None => UaClass::Missing,
        Some(ua) => classify_lower(&ua.to_ascii_lowercase()),
    }
}

/// Classifies a non-empty, lowercased `User-Agent`.
fn classify_lower(lower: &str) -> UaClass {
    if AUTOMATION_ANYWHERE.iter().any(|m| lower.contains(m)) {
        return UaClass::Automation;
    }
    if lower.starts_with("mozilla/5.0 (")
        && ["applewebkit/", "gecko/", "trident/"]
            .iter()
            .any(|e| lower.contains(e))
    {
        return UaClass::Browser;
    }
    if AUTOMATION_PREFIX.iter().any(|p| lower.starts_with(p)) {
        return UaClass::Automation;
    }
    UaClass::Other
}

/// The major version after `marker` (e.g. `chrome/`) in a lowercase UA.
fn major_after(lower: &str, marker: &str) -> Option<u32> {
    let at = lower.find(marker)? + marker.len();
    let digits: &str = &lower[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

fn present(h: &HeaderMap, name: &str) -> bool {
    h.get(name)
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
}

/// The header-only signals of a request. `tls`: the client reached us over TLS (browsers send
/// `Sec-Fetch-*` only to secure origins).
pub fn header_signals(h: &HeaderMap, tls: bool) -> Signals {
    let mut out = Signals::default();
    let lower = h
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_ascii_lowercase);
    match lower.as_deref().map_or(UaClass::Missing, classify_lower) {
        UaClass::Missing => out.insert(Signal::NoUserAgent),
        UaClass::Automation => out.insert(Signal::AutomationUserAgent),
        UaClass::Other => out.insert(Signal::UnusualUserAgent),
        UaClass::Browser => {
            let lower = lower.as_deref().unwrap_or_default();
            let mut anomaly = !present(h, "accept-encoding");
            if tls && !present(h, "sec-fetch-mode") {
                let chromium = major_after(lower, "chrome/").is_some_and(|v| v >= 80);
                let firefox = major_after(lower, "firefox/").is_some_and(|v| v >= 90);
                anomaly |= chromium || firefox;
            }
            if anomaly {
                out.insert(Signal::HeaderAnomaly);
            }
        }
    }
    if !present(h, "accept") {
        out.insert(Signal::NoAccept);
    }
    if !present(h, "accept-language") {
        out.insert(Signal::NoAcceptLanguage);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    pub const SAFARI_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
    pub const FIREFOX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51";
    const SAMSUNG: &str = "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36";
    const CUBOT: &str = "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
    const IE11: &str = "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko";

    #[test]
    fn real_browsers_are_browsers() {
        for ua in [CHROME, SAFARI_IOS, FIREFOX, EDGE, SAMSUNG, CUBOT, IE11] {
            assert_eq!(classify_user_agent(Some(ua)), UaClass::Browser, "{ua}");
        }
    }

    #[test]
    fn automation_is_named() {
        for ua in [
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
            "Python-urllib/3.12",
            "python-httpx/0.27.0",
            "aiohttp/3.9.3",
            "Go-http-client/1.1",
            "Go-http-client/2.0",
            "Java/17.0.2",
            "Apache-HttpClient/4.5.14 (Java/17.0.2)",
            "axios/1.6.8",
            "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
            "undici",
            "Scrapy/2.11.1 (+https://scrapy.org)",
            "PostmanRuntime/7.37.0",
            "libwww-perl/6.72",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.22621.2506",
            "Mozilla/5.4 (compatible; PhantomJS)",
        ] {
            assert_eq!(
                classify_user_agent(Some(ua)),
                UaClass::Automation,
                "{ua}"
            );
        }
    }

    #[test]
    fn apps_and_oddities_are_other_and_empty_is_missing() {
        for ua in [
            "okhttp/4.12.0",
            "Velvet/3.2 CFNetwork/1494.0.7 Darwin/23.4.0",
            "Dart/3.3 (dart:io)",
            "Opera/9.80 (Windows NT 6.1) Presto/2.12.388 Version/12.18",
        ] {
            assert_eq!(classify_user_agent(Some(ua)), UaClass::Other, "{ua}");
        }
        assert_eq!(classify_user_agent(None), UaClass::Missing);
        assert_eq!(classify_user_agent(Some("  ")), UaClass::Missing);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header value"));
        }
        h
    }

    pub fn browser(ua: &str) -> HeaderMap {
        headers(&[
            ("user-agent", ua),
            ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
            ("accept-language", "en-GB,en;q=0.9"),
            ("accept-encoding", "gzip, deflate, br"),
            ("sec-fetch-mode", "navigate"),
        ])
    }

    #[test]
    fn a_real_browser_scores_zero_over_http_and_tls() {
        for ua in [CHROME, SAFARI_IOS, FIREFOX] {
            assert!(header_signals(&browser(ua), true).is_empty(), "{ua}");
            assert!(header_signals(&browser(ua), false).is_empty(), "{ua}");
        }
        // Safari before 16.4 sends no Sec-Fetch-*: not an anomaly.
        let mut old_safari = browser(SAFARI_IOS);
        old_safari.remove("sec-fetch-mode");
        assert!(header_signals(&old_safari, true).is_empty());
        // Over plain HTTP Chrome sends no Sec-Fetch-* either.
        let mut plain = browser(CHROME);
        plain.remove("sec-fetch-mode");
        assert!(header_signals(&plain, false).is_empty());
    }

    #[test]
    fn each_header_signal() {
        let s = header_signals(&HeaderMap::new(), false);
        assert!(s.contains(Signal::NoUserAgent));
        assert!(s.contains(Signal::NoAccept));
        assert!(s.contains(Signal::NoAcceptLanguage));
        assert_eq!(s.score(), 80);

        let curl = headers(&[("user-agent", "curl/8.5.0"), ("accept", "*/*")]);
        let s = header_signals(&curl, false);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [Signal::AutomationUserAgent, Signal::NoAcceptLanguage]
        );
        assert_eq!(s.strongest(), Some(Signal::AutomationUserAgent));

        let mut no_enc = browser(CHROME);
        no_enc.remove("accept-encoding");
        assert_eq!(
            header_signals(&no_enc, false).iter().collect::<Vec<_>>(),
            [Signal::HeaderAnomaly]
        );
        let mut no_fetch = browser(CHROME);
        no_fetch.remove("sec-fetch-mode");
        assert_eq!(
            header_signals(&no_fetch, true).iter().collect::<Vec<_>>(),
            [Signal::HeaderAnomaly]
        );
        let mut no_lang = browser(FIREFOX);
        no_lang.remove("accept-language");
        assert_eq!(
            header_signals(&no_lang, true).iter().collect::<Vec<_>>(),
            [Signal::NoAcceptLanguage]
        );
        let app = headers(&[
            ("user-agent", "okhttp/4.12.0"),
            ("accept", "application/json"),
            ("accept-language", "de-DE"),
        ]);
        assert_eq!(header_signals(&app, true).score(), 10);
        assert_eq!(
            format!("{:?}", header_signals(&app, true)),
            "{\"unusual_user_agent\"}"
        );
    }
}
