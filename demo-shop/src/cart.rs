//! The cart cookie and the shopper's input (SKU and quantity).
//!
//! The cart lives entirely in the `shop_cart` cookie so the shop stays
//! stateless per shopper — like many real storefronts, and conveniently for
//! Flashgate's tests: the proxy must pass the origin's own cookies through
//! untouched while stripping its own `fg_*` ones.

use serde::Deserialize;

use super::http::{self, Request};
use super::inventory::{Inventory, Line, MAX_QTY};

pub(crate) const COOKIE: &str = "shop_cart";

/// Prefix of the cookies Flashgate sets for itself. They must never reach
/// the origin, and the shop counts requests that carry one.
const FLASHGATE_COOKIE_PREFIX: &[u8] = b"fg_";

/// Iterates over `(name, value)` pairs of every `Cookie` header. Clients
/// should send one `Cookie` header, but HTTP/2-to-1 translation and
/// hand-written tests may send several.
fn cookies<'a>(req: &'a Request<'_>) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    req.headers_named(::http::header::COOKIE).flat_map(|value| {
        value.split(|&b| b == b';').filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
        })
    })
}

/// Whether the request carries any of Flashgate's own cookies.
pub(crate) fn has_flashgate_cookie(req: &Request<'_>) -> bool {
    cookies(req).any(|(name, _)| name.starts_with(FLASHGATE_COOKIE_PREFIX))
}

/// Reads the cart from the request's cookie. Unknown SKUs and malformed
/// entries are dropped rather than rejected: the catalog may have changed
/// since the cookie was set, and a broken cart must not lock a shopper out.
pub(crate) fn from_request(req: &Request<'_>, inv: &Inventory) -> Vec<Line> {
    let mut lines = Vec::new();
    let Some((_, value)) = cookies(req).find(|(name, _)| *name == COOKIE.as_bytes()) else {
        return lines;
    };
    for entry in value.split(|&b| b == b'|') {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((sku, qty)) = entry.split_once(':') else {
            continue;
        };
        let (Some((item, _)), Ok(qty)) = (inv.find(sku), qty.parse::<u32>()) else {
            continue;
        };
        if qty > 0 {
            add(&mut lines, Line { item, qty });
        }
    }
    lines
}

/// Adds `line` to the cart, merging with an existing line for the same
/// product and capping at the per-order limit (which also bounds the
/// cookie's size by the number of products).
pub(crate) fn add(lines: &mut Vec<Line>, line: Line) {
    match lines.iter_mut().find(|l| l.item == line.item) {
        Some(existing) => existing.qty = existing.qty.saturating_add(line.qty).min(MAX_QTY),
        None => lines.push(Line {
            qty: line.qty.min(MAX_QTY),
            ..line
        }),
    }
}

/// `Set-Cookie` value storing `lines`, as `SKU:QTY|SKU:QTY`. Both separators
/// are legal cookie octets and SKUs are restricted to `[A-Za-z0-9_-]`, so
/// no escaping is needed.
pub(crate) fn set_cookie(lines: &[Line], inv: &Inventory) -> String {
    let mut value = String::new();
    for line in lines {
        if let Some(item) = inv.get(line.item) {
            if !value.is_empty() {
                value.push('|');
            }
            value.push_str(&item.product.sku);
            value.push(':');
            value.push_str(&line.qty.to_string());
        }
    }
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax")
}

pub(crate) const CLEAR_COOKIE: &str = "shop_cart=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax";

/// Problems with what the shopper submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InputError {
    Malformed(&'static str),
    UnknownSku(String),
    BadQuantity,
}

#[derive(Deserialize)]
struct JsonLine {
    sku: String,
    #[serde(default = "one")]
    qty: u32,
}

fn one() -> u32 {
    1
}

/// Reads a single `sku`/`qty` pair from the body — a form, or JSON when the
/// content type says so or the body looks like an object — or, when the
/// body is empty, from the query string (handy for load generators that
/// can only send bodiless POSTs). `Ok(None)` means nothing was submitted.
pub(crate) fn line_from_request(
    req: &Request<'_>,
    inv: &Inventory,
) -> Result<Option<Line>, InputError> {
    let body = req.body.trim_ascii();
    let is_json = !body.is_empty()
        && (body.starts_with(b"{")
            || req
                .header(::http::header::CONTENT_TYPE)
                .is_some_and(|ct| http::contains_ignore_ascii_case(ct, b"json")));
    let (sku, qty) = if is_json {
        let line: JsonLine = serde_json::from_slice(body).map_err(|_| {
            InputError::Malformed("expected a JSON object with \"sku\" and \"qty\"")
        })?;
        (line.sku, line.qty)
    } else {
        let form = if body.is_empty() {
            req.query.as_bytes()
        } else {
            body
        };
        let Some(sku) = http::form_value(form, "sku") else {
            return Ok(None);
        };
        (sku, form_qty(http::form_value(form, "qty"))?)
    };
    if !(1..=MAX_QTY).contains(&qty) {
        return Err(InputError::BadQuantity);
    }
    let (item, _) = inv.find(&sku).ok_or(InputError::UnknownSku(sku))?;
    Ok(Some(Line { item, qty }))
}

/// A form quantity; absent or empty means one unit.
fn form_qty(raw: Option<String>) -> Result<u32, InputError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(1),
        Some(q) => q.parse().map_err(|_| InputError::BadQuantity),
    }
}
