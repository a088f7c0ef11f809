//! The expiring caches behind every authentication and authorization answer.
//!
//! What they promise:
//! - keys are 32-byte digests (SHA-256 or HMAC-SHA256 of what they stand for), so a key
//!   costs no allocation, holds no secret, and spreads evenly over the shards without
//!   hashing again;
//! - a lookup takes one shard's read lock: requests on different keys never wait for each
//!   other, and requests on the same key only share a reader lock;
//! - each shard holds at most a fixed number of entries; a full shard first drops what has
//!   expired, then an arbitrary entry, so a flood of distinct credentials cannot grow memory;
//! - [`TtlCache::get_or_fetch`] coalesces concurrent misses on one key into one fetch (as
//!   k8s.io/apiserver's cached token authenticator does with `singleflight`), run as its own
//!   task so that a caller that gives up does not strand the others;
//! - an entry the caller marks renewable (an authenticated token, an allowed request) is
//!   fetched again in the background when used during the last quarter of its TTL
//!   (`REFRESH_AHEAD`), once, while callers keep getting the cached answer: a credential in
//!   steady use (the HPA's) never makes a request wait for a review. Every answer is still
//!   within its TTL, and one that fails to renew expires when it would have. Rejections and
//!   denials are not renewed: they hold for exactly their TTL, as in k8s.io/apiserver.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};

/// A cache key: a digest of everything the cached answer depends on.
pub type Key = [u8; 32];

/// The fraction of a TTL, at its end, in which a hit starts a background refresh.
const REFRESH_AHEAD: u32 = 4;

/// Number of shards; a power of two.
const SHARDS: usize = 64;

/// Builds SHA-256 keys from length-prefixed fields, so that `("ab", "c")` and `("a", "bc")`
/// never share a key.
pub struct KeyBuilder(ring::digest::Context);

impl KeyBuilder {
    pub fn new(domain: &str) -> Self {
        let mut b = Self(ring::digest::Context::new(&ring::digest::SHA256));
        b.field(domain.as_bytes());
        b
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.field(s.as_bytes())
    }

    pub fn finish(self) -> Key {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.finish().as_ref());
        key
    }
}

/// Keys are digests already: their first eight bytes are as good a hash as any.
#[derive(Default, Clone, Copy)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length, then its bytes: keep the bytes.
        if let Some(head) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*head);
        }
    }
}

#[derive(Default, Clone, Copy)]
struct BuildDigestHasher;

impl BuildHasher for BuildDigestHasher {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher::default()
    }
}

/// The shard of a key: from bytes the in-shard hash does not use.
fn shard_of(key: &Key) -> usize {
    usize::from(key[8]) % SHARDS
}

struct Entry<V> {
    value: V,
    expires: Instant,
    /// From when a hit refreshes the entry in the background; moved to `expires` by the hit
    /// that starts the refresh, so that one does.
    refresh_at: Instant,
}

type Flight<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;
type Shard<V> = RwLock<HashMap<Key, Entry<V>, BuildDigestHasher>>;
type FlightShard<V, E> = Mutex<HashMap<Key, Flight<V, E>, BuildDigestHasher>>;

/// An expiring, bounded, sharded map from [`Key`] to `V`.
pub struct TtlCache<V, E = ()> {
    shards: Box<[Shard<V>]>,
    flights: Box<[FlightShard<V, E>]>,
    per_shard: usize,
}

impl<V, E> std::fmt::Debug for TtlCache<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("capacity", &(self.per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl<V: Clone, E> TtlCache<V, E> {
    /// A cache holding at most about `capacity` entries (rounded up to a multiple of the shard
    /// count).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            flights: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The value under `key`, unless it has expired at `now`.
    pub fn get(&self, key: &Key, now: Instant) -> Option<V> {
        let shard = self.shards.get(shard_of(key))?;
        let map = shard.read().unwrap_or_else(PoisonError::into_inner);
        map.get(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    /// Stores `value` under `key` until `now + ttl`. A zero `ttl` stores nothing.
    pub fn insert(&self, key: Key, value: V, now: Instant, ttl: Duration) {
        self.insert_renewable(key, value, now, ttl, false);
    }

    /// [`Self::insert`]; with `renew`, a hit in the last `REFRESH_AHEAD`th of `ttl`
    /// renews the entry (see [`Self::get_or_fetch`]).
    fn insert_renewable(&self, key: Key, value: V, now: Instant, ttl: Duration, renew: bool) {
        if ttl.is_zero() {
            return;
        }
        let Some(shard) = self.shards.get(shard_of(&key)) else {
            return;
        };
        let Some(expires) = now.checked_add(ttl) else {
            return;
        };
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.per_shard
                && let Some(victim) = map.keys().next().copied()
            {
                map.remove(&victim);
            }
        }
        let refresh_at = if renew {
            expires.checked_sub(ttl / REFRESH_AHEAD).unwrap_or(expires)
        } else {
            expires
        };
        map.insert(
            key,
            Entry {
                value,
                expires,
                refresh_at,
            },
        );
    }

    /// The value under `key` unless expired at `now`, and whether this caller should refresh
    /// it: the first to find it in its last `REFRESH_AHEAD`th claims the refresh.
    fn get_claiming_refresh(&self, key: &Key, now: Instant) -> Option<(V, bool)> {
        let shard = self.shards.get(shard_of(key))?;
        {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            let entry = map.get(key).filter(|e| e.expires > now)?;
            if entry.refresh_at > now {
                return Some((entry.value.clone(), false));
            }
        }
        // Due: claim under the write lock, once per entry.
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get_mut(key).filter(|e| e.expires > now)?;
        let claimed = entry.refresh_at <= now;
        entry.refresh_at = entry.expires;
        Some((entry.value.clone(), claimed))
    }

    /// How many entries are stored, expired ones included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V, E> TtlCache<V, E>
where
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// The cached value under `key`, or the result of `fetch`, which is stored for the
    /// `ttl` it returns (`None`: not stored). Errors are never stored. Concurrent callers
    /// missing on the same key share one fetch; `aborted` is the error they see if that
    /// fetch's task dies (a panic, or the runtime shutting down). `now` is the caller's
    /// clock (`Instant::now()`). An answer for which `renew` is true is renewed in the
    /// background by the first hit in the last `REFRESH_AHEAD`th of its TTL.
    pub async fn get_or_fetch<Fut>(
        self: &Arc<Self>,
        now: Instant,
        key: Key,
        fetch: impl FnOnce() -> Fut,
        ttl: impl FnOnce(&V) -> Option<Duration> + Send + 'static,
        renew: fn(&V) -> bool,
        aborted: fn() -> E,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        if let Some((v, refresh)) = self.get_claiming_refresh(&key, now) {
            if refresh {
                // Not awaited: the task stores its answer, and a failure leaves the entry
                // to expire as it would have.
                let _ = self.flight(key, fetch, ttl, renew, aborted, None);
            }
            return Ok(v);
        }
        match self.flight(key, fetch, ttl, renew, aborted, Some(now)) {
            Ok(flight) => flight.await,
            Err(cached) => Ok(cached),
        }
    }

    /// The fetch in flight for `key`, or a new one. With `recheck`, a value stored since the
    /// caller's miss is returned instead (as `Err`) and nothing is fetched.
    fn flight<Fut>(
        self: &Arc<Self>,
        key: Key,
        fetch: impl FnOnce() -> Fut,
        ttl: impl FnOnce(&V) -> Option<Duration> + Send + 'static,
        renew: fn(&V) -> bool,
        aborted: fn() -> E,
        recheck: Option<Instant>,
    ) -> Result<Flight<V, E>, V>
    where
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let Some(flights) = self.flights.get(shard_of(&key)) else {
            let failed: BoxFuture<'static, Result<V, E>> = Box::pin(async move { Err(aborted()) });
            return Ok(failed.shared());
        };
        let flight = {
            let mut flights = flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&key) {
                Some(flight) => flight.clone(),
                None => {
                    // A fetch may have finished between the caller's lookup and this lock.
                    if let Some(now) = recheck
                        && let Some(v) = self.get(&key, now.max(Instant::now()))
                    {
                        return Err(v);
                    }
                    let cache = Arc::clone(self);
                    let work = fetch();
                    let task = tokio::spawn(async move {
                        let result = work.await;
                        if let Ok(v) = &result
                            && let Some(ttl) = ttl(v)
                        {
                            cache.insert_renewable(key, v.clone(), Instant::now(), ttl, renew(v));
                        }
                        if let Some(flights) = cache.flights.get(shard_of(&key)) {
                            flights
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&key);
                        }
                        result
                    });
                    let flight: Flight<V, E> = task
                        .map(move |joined| joined.unwrap_or_else(|_| Err(aborted())))
                        .boxed()
                        .shared();
                    flights.insert(key, flight.clone());
                    flight
                }
            }
        };
        Ok(flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(n: u64) -> Key {
        let mut b = KeyBuilder::new("test");
        b.field(&n.to_le_bytes());
        b.finish()
    }

    #[test]
    fn keys_separate_fields() {
        let k = |a: &str, b: &str| {
            let mut k = KeyBuilder::new("d");
            k.str(a).str(b);
            k.finish()
        };
        assert_ne!(k("ab", "c"), k("a", "bc"));
        assert_eq!(k("a", "bc"), k("a", "bc"));
        let mut other = KeyBuilder::new("e");
        other.str("a").str("bc");
        assert_ne!(other.finish(), k("a", "bc"), "domains separate");
    }

    #[test]
    fn entries_expire_at_their_ttl() {
        let cache: TtlCache<u32> = TtlCache::new(100);
        let t0 = Instant::now();
        cache.insert(key(1), 7, t0, Duration::from_secs(10));
        assert_eq!(cache.get(&key(1), t0), Some(7));
        assert_eq!(
            cache.get(&key(1), t0 + Duration::from_millis(9_999)),
            Some(7)
        );
        assert_eq!(cache.get(&key(1), t0 + Duration::from_secs(10)), None);
        assert_eq!(cache.get(&key(2), t0), None);
        cache.insert(key(3), 1, t0, Duration::ZERO);
        assert_eq!(cache.get(&key(3), t0), None, "a zero TTL stores nothing");
    }

    #[test]
    fn a_full_shard_drops_expired_entries_first_then_any() {
        // One entry per shard: every insert into an occupied shard must evict.
        let cache: TtlCache<u64> = TtlCache::new(1);
        let t0 = Instant::now();
        for n in 0..10_000 {
            cache.insert(key(n), n, t0, Duration::from_secs(1));
        }
        assert!(cache.len() <= SHARDS, "{} entries", cache.len());
        // The newest entry of each shard survives.
        assert_eq!(cache.get(&key(9_999), t0), Some(9_999));
        let later = t0 + Duration::from_secs(2);
        cache.insert(key(20_000), 1, later, Duration::from_secs(1));
        assert_eq!(cache.get(&key(20_000), later), Some(1));
    }

    /// In the last quarter of its TTL a hit still answers from the cache, and starts one
    /// background fetch whose answer replaces the entry; a failed refresh leaves the entry
    /// to expire when it would have.
    #[tokio::test]
    async fn entries_in_use_are_refreshed_ahead_of_expiry_once() {
        let cache: Arc<TtlCache<u32, String>> = Arc::new(TtlCache::new(100));
        let calls = Arc::new(AtomicUsize::new(0));
        let ttl = Duration::from_secs(400);
        let fetch = |value: Result<u32, String>| {
            let calls = Arc::clone(&calls);
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                value
            }
        };
        let get = |now: Instant, value: Result<u32, String>| {
            let cache = Arc::clone(&cache);
            let fetch = fetch(value);
            async move {
                cache
                    .get_or_fetch(
                        now,
                        key(1),
                        fetch,
                        move |_| Some(ttl),
                        |v| *v != 0,
                        || "aborted".to_owned(),
                    )
                    .await
            }
        };
        let t0 = Instant::now();
        assert_eq!(get(t0, Ok(1)).await, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Before the last quarter: a plain hit.
        assert_eq!(get(t0 + Duration::from_secs(290), Ok(2)).await, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // In it: the cached answer now, one refresh behind it, not one per hit.
        let due = t0 + Duration::from_secs(310);
        assert_eq!(get(due, Ok(2)).await, Ok(1));
        assert_eq!(get(due, Ok(3)).await, Ok(1));
        for _ in 0..100 {
            if cache.get(&key(1), Instant::now()) == Some(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.get(&key(1), Instant::now()), Some(2), "refreshed");

        // The refreshed entry has a whole TTL again, from when it was fetched.
        let refreshed = Instant::now();
        assert_eq!(
            get(refreshed + Duration::from_secs(290), Ok(4)).await,
            Ok(2)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A refresh that fails: the entry is still served until its own expiry, then fetched.
        let due = refreshed + Duration::from_secs(310);
        assert_eq!(get(due, Err("down".to_owned())).await, Ok(2));
        for _ in 0..100 {
            if calls.load(Ordering::SeqCst) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(get(due, Ok(5)).await, Ok(2), "no second refresh");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let expired = refreshed + Duration::from_secs(400);
        assert_eq!(get(expired, Ok(6)).await, Ok(6));
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        // An answer the caller does not mark renewable (0 here, as a denial) holds for
        // exactly its TTL.
        cache.insert(key(1), 0, Instant::now(), ttl);
        let late = Instant::now() + Duration::from_secs(390);
        assert_eq!(get(late, Ok(7)).await, Ok(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4, "not renewed");
        // The same for an answer fetched (the path reviews take).
        let expired = Instant::now() + Duration::from_secs(401);
        assert_eq!(get(expired, Ok(0)).await, Ok(0));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let late = Instant::now() + Duration::from_secs(390);
        assert_eq!(get(late, Ok(7)).await, Ok(0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "a fetched denial is not renewed"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch_and_errors_are_not_stored() {
        let cache: Arc<TtlCache<u32, String>> = Arc::new(TtlCache::new(100));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let (cache, calls, gate) = (Arc::clone(&cache), Arc::clone(&calls), gate.clone());
            waiters.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(
                        Instant::now(),
                        key(1),
                        move || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            let mut gate = gate;
                            let _ = gate.wait_for(|open| *open).await;
                            Ok(42)
                        },
                        |_| Some(Duration::from_secs(60)),
                        |_| true,
                        || "aborted".to_owned(),
                    )
                    .await
            }));
        }
        // Whenever a caller arrives, it finds either the flight or its stored result (the
        // fetch stores before it lands), so the count below holds whatever the schedule.
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(42));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one fetch for eight callers"
        );
        assert_eq!(cache.get(&key(1), Instant::now()), Some(42));

        let failed = cache
            .get_or_fetch(
                Instant::now(),
                key(2),
                || async { Err("down".to_owned()) },
                |_| Some(Duration::from_secs(60)),
                |_| true,
                || "aborted".to_owned(),
            )
            .await;
        assert_eq!(failed, Err("down".to_owned()));
        assert_eq!(cache.get(&key(2), Instant::now()), None);
        let retried = cache
            .get_or_fetch(
                Instant::now(),
                key(2),
                || async { Ok(5) },
                |v| (*v > 3).then_some(Duration::from_secs(60)),
                |_| true,
                || "aborted".to_owned(),
            )
            .await;
        assert_eq!(
            retried,
            Ok(5),
            "a failed fetch is retried by the next caller"
        );
    }
}
