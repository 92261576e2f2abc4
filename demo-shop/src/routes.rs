//! Request routing and the endpoint handlers.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::StatusCode;
use serde::Serialize;

use super::cart::{self, InputError};
use super::http::{contains_ignore_ascii_case, Request, Response, HTML};
use super::inventory::{Item, Line, Shortfall, MAX_QTY};
use super::pages::{self, PricedLine};
use super::{bump, PathClass, Shop, ShopInner, COMMAND_HEADER};

/// Catalog pages are identical for every shopper and change slowly, so
/// Flashgate (and browsers) may cache them briefly — a few seconds of
/// caching absorbs most of a launch's page views.
const CATALOG_CACHE: &str = "public, max-age=5";
const GET: &str = "GET, HEAD";

/// Answers one well-formed request and updates the counters.
pub(crate) fn handle(shop: &Shop, req: &Request<'_>, peer: SocketAddr) -> Response {
    let counters = &shop.inner.counters;
    bump(&counters.requests, 1);
    if cart::has_flashgate_cookie(req) {
        bump(&counters.requests_with_fg_cookie, 1);
    }
    let ctx = Ctx {
        shop,
        inner: &shop.inner,
        req,
        json: req.path.starts_with("/api/")
            || req
                .header(http::header::ACCEPT)
                .is_some_and(|a| contains_ignore_ascii_case(a, b"application/json")),
    };
    if let Some(status) = shop.failing_for(req.path) {
        // A fault: the request is counted but not handled (no order, no cart change).
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        bump(&counters.by_path[PathClass::of(req.path) as usize], 1);
        return ctx.error(status, "injected failure");
    }
    let (class, mut response) = ctx.dispatch(peer);
    bump(&counters.by_path[class as usize], 1);
    let (cache_control, headers) = shop.response_overrides(req.path);
    if let Some(cc) = cache_control {
        response.cache_control = cc;
    }
    for (name, value) in headers.into_iter().flatten() {
        response = response.header(name, value);
    }
    response
}

struct Ctx<'a> {
    shop: &'a Shop,
    inner: &'a ShopInner,
    req: &'a Request<'a>,
    /// Whether to answer in JSON rather than HTML.
    json: bool,
}

#[derive(Serialize)]
struct ProductView<'a> {
    sku: &'a str,
    name: &'a str,
    price_cents: u64,
    stock: u32,
    sold_out: bool,
}

impl<'a> From<&'a Item> for ProductView<'a> {
    fn from(item: &'a Item) -> Self {
        let stock = item.stock();
        ProductView {
            sku: &item.product.sku,
            name: &item.product.name,
            price_cents: item.product.price_cents,
            stock,
            sold_out: stock == 0,
        }
    }
}

#[derive(Serialize)]
struct StockView<'a> {
    sku: &'a str,
    stock: u32,
    initial_stock: u32,
}

#[derive(Serialize)]
struct LineView<'a> {
    sku: &'a str,
    name: &'a str,
    qty: u32,
    unit_price_cents: u64,
    line_total_cents: u64,
}

#[derive(Serialize)]
struct CartView<'a> {
    items: Vec<LineView<'a>>,
    total_cents: u64,
}

#[derive(Serialize)]
struct OrderView<'a> {
    order_id: &'a str,
    items: Vec<LineView<'a>>,
    total_cents: u64,
    /// SKUs whose last unit this order took.
    sold_out: Vec<&'a str>,
}

#[derive(Serialize)]
struct ErrorView<'a> {
    status: u16,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available: Option<u32>,
}

#[derive(Serialize)]
struct EchoView<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: &'a str,
    version: &'static str,
    /// The TCP peer, i.e. the proxy when running behind Flashgate.
    peer: String,
    /// Lower-cased names; repeated fields joined as a recipient would
    /// combine them (`; ` for cookies, `, ` otherwise).
    headers: BTreeMap<String, String>,
    /// Every field in order of arrival, names lower-cased, for tests that
    /// care about repetition or order.
    header_list: Vec<(String, String)>,
    body: Cow<'a, str>,
}

impl Ctx<'_> {
    fn dispatch(&self, peer: SocketAddr) -> (PathClass, Response) {
        let path = self.req.path;
        let get = matches!(self.req.method, "GET" | "HEAD");
        let post = self.req.method == "POST";
        match path {
            "/" if get => (PathClass::Catalog, self.home()),
            "/products" | "/api/products" if get => (PathClass::Catalog, self.catalog()),
            "/" | "/products" | "/api/products" => (PathClass::Catalog, self.not_allowed(GET)),
            "/cart" | "/api/cart" if get => (PathClass::Cart, self.view_cart()),
            "/cart" | "/api/cart" if post => (PathClass::Cart, self.add_to_cart()),
            "/cart" | "/api/cart" => (PathClass::Cart, self.not_allowed("GET, HEAD, POST")),
            "/checkout" | "/api/checkout" if post => (PathClass::Checkout, self.checkout()),
            "/checkout" | "/api/checkout" => (PathClass::Checkout, self.not_allowed("POST")),
            "/api/inventory" if get => (PathClass::Inventory, self.inventory()),
            "/api/inventory" => (PathClass::Inventory, self.not_allowed(GET)),
            "/logout-queue" if post => (PathClass::Queue, self.leave()),
            "/logout-queue" => (PathClass::Queue, self.not_allowed("POST")),
            "/done" if get => (PathClass::Queue, self.leave()),
            "/done" => (PathClass::Queue, self.not_allowed(GET)),
            "/healthz" if get => (PathClass::Health, Response::text(StatusCode::OK, "ok")),
            "/healthz" => (PathClass::Health, self.not_allowed(GET)),
            // Any method: tests use it to see exactly what arrives.
            "/echo" => (PathClass::Echo, self.echo(peer)),
            "/api/stats" if get => (
                PathClass::Stats,
                Response::json(StatusCode::OK, &self.shop.stats()),
            ),
            "/api/stats" => (PathClass::Stats, self.not_allowed(GET)),
            _ => match path
                .strip_prefix("/products/")
                .or_else(|| path.strip_prefix("/api/products/"))
            {
                Some(sku) if get => (PathClass::Product, self.product(sku)),
                Some(_) => (PathClass::Product, self.not_allowed(GET)),
                None => (
                    PathClass::Other,
                    self.error(StatusCode::NOT_FOUND, "page not found"),
                ),
            },
        }
    }

    fn home(&self) -> Response {
        let items = self.inner.inventory.items();
        let response = if self.json {
            self.product_list(items)
        } else {
            Response::html(StatusCode::OK, pages::home(&self.inner.name, items))
        };
        self.negotiated(response.cache(CATALOG_CACHE))
    }

    fn catalog(&self) -> Response {
        let items = self.inner.inventory.items();
        let response = if self.json {
            self.product_list(items)
        } else {
            Response::html(StatusCode::OK, pages::catalog(&self.inner.name, items))
        };
        self.negotiated(response.cache(CATALOG_CACHE))
    }

    /// A shared cache must keep the HTML and JSON forms of a page apart: outside `/api/` the
    /// form follows the `Accept` header, so say so.
    fn negotiated(&self, response: Response) -> Response {
        if self.req.path.starts_with("/api/") {
            response
        } else {
            response.header("Vary", "Accept")
        }
    }

    fn product_list(&self, items: &[Item]) -> Response {
        let views: Vec<ProductView<'_>> = items.iter().map(ProductView::from).collect();
        Response::json(StatusCode::OK, &views)
    }

    fn product(&self, sku: &str) -> Response {
        let Some((_, item)) = self.inner.inventory.find(sku) else {
            return self.error(StatusCode::NOT_FOUND, "no such product");
        };
        let response = if self.json {
            Response::json(StatusCode::OK, &ProductView::from(item))
        } else {
            Response::html(StatusCode::OK, pages::product(&self.inner.name, item))
        };
        self.negotiated(response.cache(CATALOG_CACHE))
    }

    fn inventory(&self) -> Response {
        let views: Vec<StockView<'_>> = self
            .inner
            .inventory
            .items()
            .iter()
            .map(|item| StockView {
                sku: &item.product.sku,
                stock: item.stock(),
                initial_stock: item.product.stock,
            })
            .collect();
        Response::json(StatusCode::OK, &views)
    }

    fn priced<'i>(&'i self, lines: &[Line]) -> Vec<PricedLine<'i>> {
        lines
            .iter()
            .filter_map(|line| {
                Some(PricedLine {
                    item: self.inner.inventory.get(line.item)?,
                    qty: line.qty,
                })
            })
            .collect()
    }

    fn line_views<'i>(lines: &[PricedLine<'i>]) -> (Vec<LineView<'i>>, u64) {
        let mut total = 0u64;
        let views = lines
            .iter()
            .map(|l| {
                let p = &l.item.product;
                let line_total = p.price_cents.saturating_mul(u64::from(l.qty));
                total = total.saturating_add(line_total);
                LineView {
                    sku: &p.sku,
                    name: &p.name,
                    qty: l.qty,
                    unit_price_cents: p.price_cents,
                    line_total_cents: line_total,
                }
            })
            .collect();
        (views, total)
    }

    fn view_cart(&self) -> Response {
        let lines = cart::from_request(self.req, &self.inner.inventory);
        let priced = self.priced(&lines);
        if self.json {
            let (items, total_cents) = Self::line_views(&priced);
            Response::json(StatusCode::OK, &CartView { items, total_cents })
        } else {
            Response::html(StatusCode::OK, pages::cart(&self.inner.name, &priced))
        }
    }

    /// Adds to the cart cookie and redirects with 303, the classic
    /// post/redirect/get pattern, so reloading the cart page never re-posts.
    fn add_to_cart(&self) -> Response {
        let inventory = &self.inner.inventory;
        let line = match cart::line_from_request(self.req, inventory) {
            Ok(Some(line)) => line,
            Ok(None) => return self.error(StatusCode::BAD_REQUEST, "missing sku"),
            Err(e) => return self.input_error(e),
        };
        let mut lines = cart::from_request(self.req, inventory);
        cart::add(&mut lines, line);
        self.redirect("/cart")
            .header("Set-Cookie", cart::set_cookie(&lines, inventory))
    }

    /// Places an order for the submitted `sku`/`qty`, or for the whole cart
    /// when nothing was submitted.
    fn checkout(&self) -> Response {
        let inventory = &self.inner.inventory;
        let (lines, from_cart) = match cart::line_from_request(self.req, inventory) {
            Ok(Some(line)) => (vec![line], false),
            Ok(None) => (cart::from_request(self.req, inventory), true),
            Err(e) => return self.input_error(e),
        };
        if lines.is_empty() {
            return self.error(StatusCode::BAD_REQUEST, "your bag is empty");
        }
        let counters = &self.inner.counters;
        let placed = match inventory.place_order(&lines) {
            Ok(placed) => placed,
            Err(shortfall) => {
                bump(&counters.sold_out_rejections, 1);
                return self.sold_out(shortfall);
            }
        };
        bump(&counters.orders, 1);
        bump(
            &counters.units_sold,
            lines.iter().map(|l| u64::from(l.qty)).sum(),
        );

        let order_id = format!("ORD-{:06}", placed.order_id);
        let priced = self.priced(&lines);
        let mut response = if self.json {
            let (items, total_cents) = Self::line_views(&priced);
            let sold_out = placed
                .sold_out
                .iter()
                .filter_map(|&i| Some(inventory.get(i)?.product.sku.as_str()))
                .collect();
            Response::json(
                StatusCode::CREATED,
                &OrderView {
                    order_id: &order_id,
                    items,
                    total_cents,
                    sold_out,
                },
            )
        } else {
            Response::html(
                StatusCode::CREATED,
                pages::order_placed(&self.inner.name, &order_id, &priced),
            )
        };
        response = response.header("X-Order-Id", order_id.clone());
        if !placed.sold_out.is_empty() {
            // This order took the last unit of a product: tell Flashgate the
            // drop is over, so it can stop admitting shoppers from the queue.
            response = response.header(COMMAND_HEADER, "sold-out");
        }
        if from_cart {
            response = response.header("Set-Cookie", cart::CLEAR_COOKIE);
        }
        response
    }

    fn sold_out(&self, shortfall: Shortfall) -> Response {
        let sku = self
            .inner
            .inventory
            .get(shortfall.item)
            .map_or("", |item| item.product.sku.as_str());
        let message = if shortfall.available == 0 {
            Cow::Borrowed("sold out")
        } else {
            Cow::Owned(format!("only {} left", shortfall.available))
        };
        if self.json {
            Response::json(
                StatusCode::CONFLICT,
                &ErrorView {
                    status: StatusCode::CONFLICT.as_u16(),
                    error: &message,
                    sku: Some(sku),
                    available: Some(shortfall.available),
                },
            )
        } else {
            Response::html(
                StatusCode::CONFLICT,
                pages::error(&self.inner.name, 409, &format!("{sku}: {message}")),
            )
        }
    }

    /// The shopper is finished: the header tells Flashgate to end their
    /// waiting-room session and free the slot for the next in line.
    fn leave(&self) -> Response {
        let response = if self.json {
            Response::json(
                StatusCode::OK,
                &serde_json::json!({ "status": "thanks for shopping" }),
            )
        } else {
            Response::html(StatusCode::OK, pages::thanks(&self.inner.name))
        };
        response.header(COMMAND_HEADER, "revoke")
    }

    fn echo(&self, peer: SocketAddr) -> Response {
        let req = self.req;
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        let mut header_list = Vec::with_capacity(req.headers.len());
        for (name, value) in req.headers {
            let name = name.as_str().to_owned();
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.clone())
                .and_modify(|v| {
                    v.push_str(if name == "cookie" { "; " } else { ", " });
                    v.push_str(&value);
                })
                .or_insert_with(|| value.clone());
            header_list.push((name, value));
        }
        Response::json(
            StatusCode::OK,
            &EchoView {
                method: req.method,
                target: req.target,
                path: req.path,
                query: req.query,
                version: req.version,
                peer: peer.to_string(),
                headers,
                header_list,
                body: String::from_utf8_lossy(req.body),
            },
        )
    }

    fn redirect(&self, location: &'static str) -> Response {
        Response::new(
            StatusCode::SEE_OTHER,
            HTML,
            format!("<a href=\"{location}\">Continue</a>").into_bytes(),
        )
        .header("Location", location)
    }

    fn input_error(&self, err: InputError) -> Response {
        match err {
            InputError::Malformed(why) => self.error(StatusCode::BAD_REQUEST, why),
            InputError::UnknownSku(_) => self.error(StatusCode::NOT_FOUND, "no such product"),
            InputError::BadQuantity => self.error(
                StatusCode::BAD_REQUEST,
                &format!("qty must be between 1 and {MAX_QTY}"),
            ),
        }
    }

    fn not_allowed(&self, allow: &'static str) -> Response {
        self.error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            .header("Allow", allow)
    }

    /// An error in the format the client asked for.
    fn error(&self, status: StatusCode, message: &str) -> Response {
        if self.json {
            Response::json(
                status,
                &ErrorView {
                    status: status.as_u16(),
                    error: message,
                    sku: None,
                    available: None,
                },
            )
        } else {
            Response::html(
                status,
                pages::error(&self.inner.name, status.as_u16(), message),
            )
        }
    }
}
