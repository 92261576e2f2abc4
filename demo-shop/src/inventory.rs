//! Lock-free stock keeping.
//!
//! A flash sale is exactly the situation where hundreds of checkouts for the
//! same SKU race each other, and the one property the demo must show is that
//! the shop never sells a unit it does not have. Each product's stock is a
//! single atomic counter that is only ever decremented with a
//! compare-and-swap that refuses to go below zero, so no interleaving can
//! oversell, and no lock is held across requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::Product;

/// The most units of one SKU a single order (or cart line) may contain —
/// a per-customer purchase limit, as real drops have.
pub(crate) const MAX_QTY: u32 = 10;

#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) product: Product,
    stock: AtomicU32,
}

impl Item {
    pub(crate) fn stock(&self) -> u32 {
        self.stock.load(Ordering::Relaxed)
    }
}

/// One line of an order: an index into [`Inventory::items`] and a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) item: usize,
    pub(crate) qty: u32,
}

/// A successfully placed order.
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) order_id: u64,
    /// Items whose last unit this order took. Non-empty means the response
    /// must tell Flashgate the sale is sold out.
    pub(crate) sold_out: Vec<usize>,
}

/// Why an order could not be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub(crate) item: usize,
    pub(crate) available: u32,
}

#[derive(Debug)]
pub(crate) struct Inventory {
    items: Vec<Item>,
    by_sku: HashMap<String, usize>,
    next_order: AtomicU64,
}

impl Inventory {
    /// `products` must already be validated (unique, URL- and cookie-safe
    /// SKUs); see `ShopConfig::validate`.
    pub(crate) fn new(products: Vec<Product>) -> Self {
        let by_sku = products
            .iter()
            .enumerate()
            .map(|(i, p)| (p.sku.clone(), i))
            .collect();
        let items = products
            .into_iter()
            .map(|product| Item {
                stock: AtomicU32::new(product.stock),
                product,
            })
            .collect();
        Inventory {
            items,
            by_sku,
            next_order: AtomicU64::new(0),
        }
    }

    pub(crate) fn items(&self) -> &[Item] {
        &self.items
    }

    pub(crate) fn get(&self, index: usize) -> Option<&Item> {
        self.items.get(index)
    }

    pub(crate) fn find(&self, sku: &str) -> Option<(usize, &Item)> {
        let index = *self.by_sku.get(sku)?;
        Some((index, self.items.get(index)?))
    }

    /// Takes every line's quantity out of stock, or nothing at all.
    ///
    /// Lines are reserved one by one; if a later line is short, the earlier
    /// reservations are given back. Between taking and giving back, a
    /// concurrent buyer may see the lower stock and be refused — a spurious
    /// "sold out" is acceptable in a flash sale, an oversell is not.
    pub(crate) fn place_order(&self, lines: &[Line]) -> Result<Placed, Shortfall> {
        let mut sold_out = Vec::new();
        for (done, line) in lines.iter().enumerate() {
            let Some(item) = self.items.get(line.item) else {
                self.release(&lines[..done]);
                return Err(Shortfall {
                    item: line.item,
                    available: 0,
                });
            };
            // Relaxed is enough: the counter is the only state being
            // protected, and read-modify-write operations on one atomic are
            // totally ordered regardless of the memory ordering.
            match item
                .stock
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    s.checked_sub(line.qty)
                }) {
                Ok(before) => {
                    if before == line.qty {
                        sold_out.push(line.item);
                    }
                }
                Err(available) => {
                    self.release(&lines[..done]);
                    return Err(Shortfall {
                        item: line.item,
                        available,
                    });
                }
            }
        }
        let order_id = self.next_order.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Placed { order_id, sold_out })
    }

    fn release(&self, lines: &[Line]) {
        for line in lines {
            if let Some(item) = self.items.get(line.item) {
                item.stock.fetch_add(line.qty, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(sku: &str, stock: u32) -> Product {
        Product {
            sku: sku.into(),
            name: sku.into(),
            price_cents: 100,
            stock,
        }
    }

    #[test]
    fn concurrent_buyers_never_oversell() {
        let inv = Inventory::new(vec![product("A", 500)]);
        let sold = std::sync::atomic::AtomicU32::new(0);
        let sold_out_signals = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let (inv, sold, signals) = (&inv, &sold, &sold_out_signals);
                s.spawn(move || {
                    for i in 0..1_000u32 {
                        let qty = 1 + (i + t) % 3;
                        if let Ok(placed) = inv.place_order(&[Line { item: 0, qty }]) {
                            sold.fetch_add(qty, Ordering::Relaxed);
                            if !placed.sold_out.is_empty() {
                                signals.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let sold = sold.into_inner();
        let stock = inv.items()[0].stock();
        assert_eq!(sold + stock, 500, "units are conserved");
        // Demand is ~30x the supply and a third of all attempts are for a
        // single unit, so the stock always drains completely — and exactly
        // one order can be the one that takes the last unit.
        assert_eq!(stock, 0);
        assert_eq!(sold_out_signals.into_inner(), 1);
    }

    #[test]
    fn multi_line_orders_are_all_or_nothing() {
        let inv = Inventory::new(vec![product("A", 5), product("B", 1)]);
        let lines = [Line { item: 0, qty: 2 }, Line { item: 1, qty: 2 }];
        assert_eq!(
            inv.place_order(&lines).err(),
            Some(Shortfall {
                item: 1,
                available: 1
            })
        );
        assert_eq!(inv.items()[0].stock(), 5, "first line was rolled back");

        let placed = inv
            .place_order(&[Line { item: 0, qty: 2 }, Line { item: 1, qty: 1 }])
            .expect("enough stock");
        assert_eq!(placed.order_id, 1);
        assert_eq!(placed.sold_out, vec![1]);
        assert_eq!(inv.find("A").map(|(_, i)| i.stock()), Some(3));
    }

    #[test]
    fn unknown_item_index_is_a_shortfall_not_a_panic() {
        let inv = Inventory::new(vec![product("A", 5)]);
        let res = inv.place_order(&[Line { item: 0, qty: 1 }, Line { item: 7, qty: 1 }]);
        assert!(res.is_err());
        assert_eq!(inv.items()[0].stock(), 5);
    }
}
