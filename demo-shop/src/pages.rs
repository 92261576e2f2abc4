//! HTML rendering.
//!
//! Plain `format!` templates: the pages only need to look like a shop in a
//! demo and in screenshots of Flashgate's waiting room, not to be a
//! templating showcase. Every interpolated string goes through [`escape`],
//! because product names come from config files and must not be able to
//! break the markup.

use std::fmt::Write as _;

use super::inventory::{Item, MAX_QTY};

/// Shared stylesheet, inlined so every page is a single request — which
/// keeps request counts in tests and benchmarks easy to reason about.
const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#2b1d2a;background:#fff8fb}\
header{display:flex;align-items:center;justify-content:space-between;padding:16px 32px;background:#2b1d2a}\
header a{color:#fff;text-decoration:none;margin-left:20px}\
.brand{font-size:1.4em;font-weight:700;letter-spacing:.08em;margin-left:0}\
main{max-width:960px;margin:0 auto;padding:24px 32px}\
.hero{padding:32px;border-radius:16px;background:linear-gradient(135deg,#ffd1e3,#e3d1ff);margin-bottom:24px}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:16px}\
.card{background:#fff;border-radius:12px;padding:16px;box-shadow:0 1px 4px rgba(0,0,0,.08)}\
.card a{color:inherit;text-decoration:none}\
.price{font-weight:700}\
.badge{display:inline-block;font-size:.8em;padding:2px 8px;border-radius:8px;background:#eee}\
.low{background:#ffe0b2}.out{background:#ffcdd2}\
button{background:#c2185b;color:#fff;border:0;border-radius:8px;padding:10px 18px;font-size:1em;cursor:pointer}\
button:disabled{background:#bbb}\
table{width:100%;border-collapse:collapse}td,th{padding:8px;border-bottom:1px solid #eee;text-align:left}\
footer{text-align:center;color:#998;padding:32px;font-size:.85em}";

/// Escapes text for use in HTML content and double-quoted attributes.
pub(crate) use fg_html::escape;

/// Formats a price the way a shopper reads it.
pub(crate) fn price(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

pub(crate) fn layout(shop: &str, title: &str, main: &str) -> String {
    let shop = escape(shop);
    let title = escape(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · {shop}</title><style>{CSS}</style></head>\n<body>\
         <header><a class=\"brand\" href=\"/\">{shop}</a>\
         <nav><a href=\"/products\">Shop all</a><a href=\"/cart\">Bag</a></nav></header>\n\
         <main>{main}</main>\n\
         <footer>{shop} is a demo storefront for the Flashgate waiting room.</footer>\
         </body></html>\n"
    )
}

fn stock_badge(stock: u32) -> String {
    match stock {
        0 => "<span class=\"badge out\">Sold out</span>".to_owned(),
        1..=50 => format!("<span class=\"badge low\">Only {stock} left</span>"),
        _ => "<span class=\"badge\">In stock</span>".to_owned(),
    }
}

fn product_cards(items: &[Item]) -> String {
    let mut html = String::from("<div class=\"grid\">");
    for item in items {
        let p = &item.product;
        let _ = write!(
            html,
            "<div class=\"card\"><a href=\"/products/{sku}\"><h3>{name}</h3></a>\
             <p class=\"price\">{price}</p>{badge}</div>",
            sku = escape(&p.sku),
            name = escape(&p.name),
            price = price(p.price_cents),
            badge = stock_badge(item.stock()),
        );
    }
    html.push_str("</div>");
    html
}

pub(crate) fn home(shop: &str, items: &[Item]) -> String {
    let mut main = String::new();
    // The first product is the drop everyone queues for.
    if let Some(featured) = items.first() {
        let p = &featured.product;
        let _ = write!(
            main,
            "<section class=\"hero\"><p>NEW DROP</p><h1>{name}</h1>\
             <p>Limited to {limit} units — {price}. {badge}</p>\
             <a href=\"/products/{sku}\"><button>Shop the drop</button></a></section>",
            name = escape(&p.name),
            limit = p.stock,
            price = price(p.price_cents),
            badge = stock_badge(featured.stock()),
            sku = escape(&p.sku),
        );
    }
    main.push_str("<h2>The collection</h2>");
    main.push_str(&product_cards(items));
    layout(shop, "Home", &main)
}

pub(crate) fn catalog(shop: &str, items: &[Item]) -> String {
    let main = format!("<h1>Shop all</h1>{}", product_cards(items));
    layout(shop, "Shop all", &main)
}

pub(crate) fn product(shop: &str, item: &Item) -> String {
    let p = &item.product;
    let stock = item.stock();
    let disabled = if stock == 0 { " disabled" } else { "" };
    let sku = escape(&p.sku);
    let main = format!(
        "<div class=\"card\"><h1>{name}</h1><p class=\"price\">{price}</p>{badge}\
         <form method=\"post\" action=\"/cart\"><input type=\"hidden\" name=\"sku\" value=\"{sku}\">\
         <label>Qty <input type=\"number\" name=\"qty\" value=\"1\" min=\"1\" max=\"{MAX_QTY}\"></label> \
         <button{disabled}>Add to bag</button></form>\
         <form method=\"post\" action=\"/checkout\"><input type=\"hidden\" name=\"sku\" value=\"{sku}\">\
         <input type=\"hidden\" name=\"qty\" value=\"1\"><p><button{disabled}>Buy now</button></p></form>\
         <p><small>SKU {sku} · limit {MAX_QTY} per order</small></p></div>",
        name = escape(&p.name),
        price = price(p.price_cents),
        badge = stock_badge(stock),
    );
    layout(shop, &p.name, &main)
}

/// One priced line, as shown in the cart and on the order confirmation.
pub(crate) struct PricedLine<'a> {
    pub(crate) item: &'a Item,
    pub(crate) qty: u32,
}

fn lines_table(lines: &[PricedLine<'_>]) -> (String, u64) {
    let mut html =
        String::from("<table><tr><th>Product</th><th>Qty</th><th>Price</th><th>Total</th></tr>");
    let mut total = 0;
    for line in lines {
        let p = &line.item.product;
        let line_total = p.price_cents.saturating_mul(u64::from(line.qty));
        total += line_total;
        let _ = write!(
            html,
            "<tr><td><a href=\"/products/{sku}\">{name}</a></td><td>{qty}</td><td>{each}</td><td>{sum}</td></tr>",
            sku = escape(&p.sku),
            name = escape(&p.name),
            qty = line.qty,
            each = price(p.price_cents),
            sum = price(line_total),
        );
    }
    let _ = write!(
        html,
        "<tr><th colspan=\"3\">Total</th><th>{}</th></tr></table>",
        price(total)
    );
    (html, total)
}

pub(crate) fn cart(shop: &str, lines: &[PricedLine<'_>]) -> String {
    let main = if lines.is_empty() {
        "<h1>Your bag</h1><p>Your bag is empty. <a href=\"/products\">Browse the collection</a>.</p>"
            .to_owned()
    } else {
        let (table, _) = lines_table(lines);
        format!(
            "<h1>Your bag</h1>{table}\
             <form method=\"post\" action=\"/checkout\"><p><button>Place order</button></p></form>"
        )
    };
    layout(shop, "Your bag", &main)
}

pub(crate) fn order_placed(shop: &str, order_id: &str, lines: &[PricedLine<'_>]) -> String {
    let (table, _) = lines_table(lines);
    let main = format!(
        "<div class=\"hero\"><h1>Thank you!</h1><p>Order <strong>{id}</strong> is confirmed.</p></div>\
         {table}<p><a href=\"/done\">Finish shopping</a></p>",
        id = escape(order_id),
    );
    layout(shop, "Order confirmed", &main)
}

pub(crate) fn thanks(shop: &str) -> String {
    layout(
        shop,
        "Thanks for visiting",
        "<div class=\"hero\"><h1>Thanks for shopping with us!</h1>\
         <p>Your spot in the line has been released so the next shopper can come in.</p></div>\
         <p><a href=\"/\">Back to the shop</a></p>",
    )
}

pub(crate) fn error(shop: &str, status: u16, message: &str) -> String {
    let main = format!(
        "<h1>{status}</h1><p>{}</p><p><a href=\"/\">Back to the shop</a></p>",
        escape(message)
    );
    layout(shop, message, &main)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn formats_prices() {
        assert_eq!(price(0), "$0.00");
        assert_eq!(price(3_205), "$32.05");
    }
}
