//! What was made from media parts' bytes, by digest.

/// What was made from a media part's bytes (decoded pixels, a document's text), by the
/// SHA-256 of those bytes, so that the turns of a conversation that carry the same file
/// decode it once. Bounded by the size of what it holds; the oldest entries go first.
#[derive(Debug)]
pub struct DigestCache<V> {
    budget: usize,
    size: fn(&V) -> usize,
    inner: std::sync::Mutex<CacheInner<V>>,
}

#[derive(Debug)]
struct CacheInner<V> {
    map: std::collections::HashMap<[u8; 32], V>,
    order: std::collections::VecDeque<[u8; 32]>,
    bytes: usize,
}

impl<V: Clone> DigestCache<V> {
    /// A cache holding at most `budget` bytes, as `size` measures its values.
    pub fn new(budget: usize, size: fn(&V) -> usize) -> Self {
        DigestCache {
            budget,
            size,
            inner: std::sync::Mutex::new(CacheInner {
                map: std::collections::HashMap::new(),
                order: std::collections::VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// The value kept for this digest.
    pub fn get(&self, key: &[u8; 32]) -> Option<V> {
        self.inner.lock().expect("poisoned").map.get(key).cloned()
    }

    /// Keep a value (one larger than the whole budget is not kept).
    pub fn put(&self, key: [u8; 32], value: V) {
        let size = (self.size)(&value);
        if size > self.budget {
            return;
        }
        let mut c = self.inner.lock().expect("poisoned");
        if c.map.contains_key(&key) {
            return;
        }
        while c.bytes + size > self.budget {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(v) = c.map.remove(&old) {
                c.bytes -= (self.size)(&v);
            }
        }
        c.bytes += size;
        c.order.push_back(key);
        c.map.insert(key, value);
    }

    /// The value kept for `key`, else what `make` gives, kept.
    ///
    /// # Errors
    /// What `make` fails with (nothing is kept then).
    pub async fn get_or_make<E, Fut>(
        &self,
        key: [u8; 32],
        make: impl FnOnce() -> Fut,
    ) -> Result<V, E>
    where
        Fut: std::future::Future<Output = Result<V, E>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        let v = make().await?;
        self.put(key, v.clone());
        Ok(v)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("poisoned").bytes
    }
}

/// SHA-256 over length-prefixed parts: a cache key.
pub fn digest(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use localgem_core::Image;

    #[test]
    fn the_image_cache_keeps_the_newest_within_its_budget() {
        let img = |v: u8| Image::new(2, 2, vec![v; 12]);
        let cache = DigestCache::new(30, |i: &Image| i.rgb.len());
        cache.put([1; 32], img(1));
        cache.put([2; 32], img(2));
        assert_eq!(cache.bytes(), 24);
        assert_eq!(cache.get(&[1; 32]), Some(img(1)));
        cache.put([3; 32], img(3));
        assert_eq!(cache.get(&[1; 32]), None, "the oldest goes first");
        assert_eq!(cache.get(&[2; 32]), Some(img(2)));
        assert_eq!(cache.get(&[3; 32]), Some(img(3)));
        assert_eq!(cache.bytes(), 24);
        cache.put([4; 32], Image::new(4, 4, vec![0; 48]));
        assert_eq!(cache.get(&[4; 32]), None, "larger than the budget");
        assert_eq!(cache.bytes(), 24);
    }
}
