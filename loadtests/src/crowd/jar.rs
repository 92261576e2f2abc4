//! A per-shopper cookie jar, by hand: tens of thousands of shoppers share one HTTP client, so
//! each keeps its few cookies (`fg_t_*`, `fg_p_*`, the shop's cart) here and sends them back.

/// Cookies by name, in the order first set. One host, one path: enough for a shop on loopback.
#[derive(Debug, Clone, Default)]
pub struct Jar(Vec<(String, String)>);

impl Jar {
    /// Applies one `Set-Cookie` value: sets, replaces, or (empty value or `Max-Age=0`) deletes.
    pub fn absorb(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return;
        }
        let expired = parts.any(|a| {
            let a = a.trim();
            a.len() > 8
                && a[..8].eq_ignore_ascii_case("max-age=")
                && a[8..].trim().starts_with(['0', '-'])
        });
        self.0.retain(|(n, _)| n != name);
        if !expired && !value.is_empty() {
            self.0.push((name.to_owned(), value.to_owned()));
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// The `Cookie` header value, if any cookie is held.
    pub fn header(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            self.0
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replace_delete() {
        let mut j = Jar::default();
        assert_eq!(j.header(), None);
        j.absorb("fg_t_drop=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=120");
        j.absorb("shop_cart=A:1; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(j.header().as_deref(), Some("fg_t_drop=abc; shop_cart=A:1"));
        j.absorb("fg_t_drop=def; Path=/; Max-Age=60");
        assert_eq!(j.get("fg_t_drop"), Some("def"));
        j.absorb("fg_t_drop=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
        assert_eq!(j.get("fg_t_drop"), None);
        j.absorb("shop_cart=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
        assert_eq!(j.header(), None);
        j.absorb("garbage");
        assert_eq!(j.header(), None);
    }
}
