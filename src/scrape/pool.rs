//! The kubelet client's idle connections under one global budget, and the TLS session cache
//! that makes a reconnect cheap.
//!
//! hyper-util's pool limits idle connections per host only, so with one kept-alive connection
//! per node a 20,000-node cluster needs 20,000 descriptors for them alone, which RLIMIT_NOFILE
//! may not allow. [`IdlePool`] keeps at most `budget` idle connections in all, one per kubelet
//! address, and closes the most recently used beyond that (see [`IdlePool`] for why not the
//! least recently used). A node whose connection was closed
//! reconnects at its next scrape and resumes its TLS session from [`SessionCache`] (an
//! abbreviated handshake: no certificate chain sent or verified, one round trip), so a budget
//! smaller than the node count costs a TCP connect and a resumption per node and tick, never a
//! failure.
//!
//! The pool's lock is held only to move an entry in or out (a hash probe and a B-tree step),
//! never across I/O, and connections are closed after it is released.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use rustls::NamedGroup;
use rustls::client::ClientSessionMemoryCache;
use rustls::client::ClientSessionStore;
use rustls_pki_types::ServerName;

/// A kept-alive HTTP/1.1 connection to one kubelet, ready for its next request.
pub(crate) type Sender = SendRequest<Empty<Bytes>>;

/// Descriptors kept back from RLIMIT_NOFILE for everything but idle kubelet connections: the
/// listening socket and API clients' connections, the API server watches, log and certificate
/// files, the runtime's own descriptors.
pub const FD_RESERVE: u64 = 1024;

/// The idle-connection budget the open-file limit `nofile` allows: what is left after
/// [`FD_RESERVE`] and one descriptor per scrape in flight (`max_concurrent`), whose connections
/// are busy, not idle, while they run.
pub fn idle_budget_for(nofile: u64, max_concurrent: usize) -> usize {
    let left = nofile
        .saturating_sub(FD_RESERVE)
        .saturating_sub(max_concurrent as u64);
    usize::try_from(left).unwrap_or(usize::MAX)
}

/// Counters of the pool, for tests and self-metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle connections held now.
    pub idle: usize,
    /// The most idle connections held at once since start.
    pub idle_peak: usize,
    /// The budget: the most idle connections the pool will hold.
    pub budget: usize,
    /// Connections opened (TCP connect and TLS handshake).
    pub opened: u64,
    /// Of those, how many resumed a TLS session rather than doing a full handshake.
    pub resumed: u64,
    /// Requests sent on a kept-alive connection.
    pub reused: u64,
    /// Idle connections closed to stay within the budget.
    pub evicted: u64,
}

#[derive(Debug)]
struct Entry {
    sender: Sender,
    /// The entry's place in the recency order.
    seq: u64,
    since: Instant,
}

#[derive(Debug, Default)]
struct Lru {
    by_address: HashMap<Authority, Entry>,
    /// Return order, for closing expired connections oldest first.
    order: BTreeMap<u64, Authority>,
    next_seq: u64,
}

impl Lru {
    fn remove(&mut self, address: &Authority) -> Option<Entry> {
        let entry = self.by_address.remove(address)?;
        self.order.remove(&entry.seq);
        Some(entry)
    }

    fn pop_oldest(&mut self) -> Option<Entry> {
        let (_, address) = self.order.pop_first()?;
        self.by_address.remove(&address)
    }

    fn oldest_since(&self) -> Option<Instant> {
        let (_, address) = self.order.first_key_value()?;
        self.by_address.get(address).map(|e| e.since)
    }
}

/// Idle kubelet connections, at most one per address and `budget` in all; see the module docs.
///
/// Beyond the budget the connection just returned is closed, not the least recently used one.
/// Every tick scrapes every node once, in the same order (each node's offset in the tick is
/// fixed), so the connection just used is the one needed furthest in the future: closing it
/// is the optimal choice for this access pattern (Belady's). Closing the least recently used
/// would instead close each connection shortly before its node's turn: with 20,000 nodes and
/// room for 17,952 connections, no connection would ever be reused, while this way 17,952 are
/// reused every tick and 2,048 nodes reconnect, resuming their TLS sessions. Connections of
/// nodes no longer scraped do not hold the budget for long: they are closed once idle past
/// the timeout (two resolutions, at least 90 s), oldest first, at each tick's end.
#[derive(Debug)]
pub(crate) struct IdlePool {
    budget: usize,
    idle_timeout: Duration,
    lru: Mutex<Lru>,
    idle: AtomicUsize,
    idle_peak: AtomicUsize,
    opened: AtomicU64,
    resumed: AtomicU64,
    reused: AtomicU64,
    evicted: AtomicU64,
}

impl IdlePool {
    pub(crate) fn new(budget: usize, idle_timeout: Duration) -> Self {
        Self {
            budget,
            idle_timeout,
            lru: Mutex::new(Lru::default()),
            idle: AtomicUsize::new(0),
            idle_peak: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the idle connection to `address`, if one is held and still open and fresh.
    pub(crate) fn take(&self, address: &Authority) -> Option<Sender> {
        let entry = {
            let mut lru = self.lock();
            let entry = lru.remove(address);
            self.idle.store(lru.by_address.len(), Ordering::Relaxed);
            entry
        }?;
        // A connection the kubelet closed, or one idle too long, is dropped (closed) here.
        (!entry.sender.is_closed() && entry.since.elapsed() < self.idle_timeout)
            .then_some(entry.sender)
    }

    /// Whether a connection to `address` is held idle, or the budget has no room for one:
    /// either way, connecting ahead of a scrape would add nothing.
    pub(crate) fn holds_or_full(&self, address: &Authority) -> bool {
        let lru = self.lock();
        lru.by_address.contains_key(address) || lru.by_address.len() >= self.budget
    }

    /// Gives back a connection whose exchange finished. When the budget is used up, this
    /// connection, the most recently used, is the one closed (see [`IdlePool`]); connections
    /// idle past the timeout are closed too.
    pub(crate) fn put(&self, address: Authority, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut closing: Vec<Entry> = Vec::new();
        let mut refused = None;
        {
            let mut lru = self.lock();
            Self::expire_locked(&mut lru, now, self.idle_timeout, &mut closing);
            if let Some(old) = lru.remove(&address) {
                // Two nodes at one address: keep the newer connection.
                closing.push(old);
            }
            if lru.by_address.len() < self.budget {
                let seq = lru.next_seq;
                lru.next_seq += 1;
                let entry = Entry {
                    sender,
                    seq,
                    since: now,
                };
                lru.by_address.insert(address.clone(), entry);
                lru.order.insert(seq, address);
            } else {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                refused = Some(sender);
            }
            let idle = lru.by_address.len();
            self.idle.store(idle, Ordering::Relaxed);
            self.idle_peak.fetch_max(idle, Ordering::Relaxed);
        }
        // Dropping the senders ends their connections' tasks, which close the sockets.
        drop(closing);
        drop(refused);
    }

    /// Closes connections idle past the timeout; the scraper calls it after each tick, so idle
    /// connections to nodes no longer scraped do not linger.
    pub(crate) fn expire(&self) {
        let mut closing = Vec::new();
        {
            let mut lru = self.lock();
            Self::expire_locked(&mut lru, Instant::now(), self.idle_timeout, &mut closing);
            self.idle.store(lru.by_address.len(), Ordering::Relaxed);
        }
        drop(closing);
    }

    fn expire_locked(lru: &mut Lru, now: Instant, timeout: Duration, out: &mut Vec<Entry>) {
        while lru
            .oldest_since()
            .is_some_and(|since| now.saturating_duration_since(since) >= timeout)
        {
            match lru.pop_oldest() {
                Some(e) => out.push(e),
                None => break,
            }
        }
    }

    pub(crate) fn opened(&self, resumed: bool) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        if resumed {
            self.resumed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            idle: self.idle.load(Ordering::Relaxed),
            idle_peak: self.idle_peak.load(Ordering::Relaxed),
            budget: self.budget,
            opened: self.opened.load(Ordering::Relaxed),
            resumed: self.resumed.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}

/// Smallest session cache, in servers: rustls' default cache holds 256 tickets, 32 servers.
const MIN_SESSION_SERVERS: usize = 256;
/// rustls keeps up to this many TLS 1.3 tickets per server; its cache is sized in tickets.
const TICKETS_PER_SERVER: usize = 8;

/// rustls' client session cache, sized to the node count: [`SessionCache::reserve`] (called
/// each tick with the node count) replaces it with one twice as large when the nodes outgrow
/// it, so a cluster never evicts a node's session before its next reconnect, while a small
/// cluster does not pay for a 20,000-node table. Growing forgets the cached sessions once
/// (those nodes do one full handshake again), which happens only log₂ times as a cluster grows.
#[derive(Debug)]
pub(crate) struct SessionCache {
    inner: RwLock<(usize, Arc<ClientSessionMemoryCache>)>,
}

impl SessionCache {
    pub(crate) fn new() -> Self {
        Self {
            inner: RwLock::new(Self::sized(MIN_SESSION_SERVERS)),
        }
    }

    fn sized(servers: usize) -> (usize, Arc<ClientSessionMemoryCache>) {
        let cache = ClientSessionMemoryCache::new(servers.saturating_mul(TICKETS_PER_SERVER));
        (servers, Arc::new(cache))
    }

    /// Makes room for the sessions of `nodes` kubelets.
    pub(crate) fn reserve(&self, nodes: usize) {
        if nodes <= self.capacity() {
            return;
        }
        let servers = nodes.saturating_mul(2).max(MIN_SESSION_SERVERS);
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if nodes > inner.0 {
            tracing::debug!(servers, "growing the kubelet TLS session cache");
            *inner = Self::sized(servers);
        }
    }

    /// How many kubelets' sessions the cache holds.
    pub(crate) fn capacity(&self) -> usize {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).0
    }

    fn cache(&self) -> Arc<ClientSessionMemoryCache> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner).1)
    }
}

impl ClientSessionStore for SessionCache {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache().kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.cache().set_tls12_session(server_name, value);
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.cache().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.cache().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.cache().take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A real HTTP/1.1 client connection over an in-memory pipe, and the pipe's far end, which
    /// reads end-of-file once the connection is closed.
    async fn connection() -> (Sender, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1024);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(near))
                .await
                .unwrap();
        tokio::spawn(conn);
        (sender, far)
    }

    async fn assert_closed(far: &mut tokio::io::DuplexStream, what: &str) {
        let mut buf = [0u8; 16];
        // A guard against hanging forever, not a timing assertion.
        let read = tokio::time::timeout(Duration::from_secs(30), far.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what} was not closed"));
        assert_eq!(read.unwrap(), 0, "{what}: end of file");
    }

    fn address(name: &str) -> Authority {
        Authority::from_maybe_shared(format!("{name}:10250")).unwrap()
    }

    #[test]
    fn the_budget_is_the_limit_less_the_reserve_and_the_scrapes_in_flight() {
        assert_eq!(idle_budget_for(20_000, 1024), 20_000 - 1024 - 1024);
        assert_eq!(idle_budget_for(1_048_576, 1024), 1_048_576 - 2048);
        assert_eq!(idle_budget_for(2048, 1024), 0);
        assert_eq!(idle_budget_for(1000, 8), 0);
        assert_eq!(idle_budget_for(u64::MAX, 0) as u64, u64::MAX - FD_RESERVE);
    }

    #[tokio::test]
    async fn beyond_the_budget_the_connection_returned_is_closed_and_the_held_ones_stay() {
        let pool = IdlePool::new(2, Duration::from_secs(3600));
        let (a, mut far_a) = connection().await;
        let (b, _far_b) = connection().await;
        let (c, mut far_c) = connection().await;
        pool.put(address("a"), a);
        pool.put(address("b"), b);
        pool.put(address("c"), c);
        let stats = pool.stats();
        assert_eq!(
            (stats.idle, stats.idle_peak, stats.evicted, stats.budget),
            (2, 2, 1, 2)
        );
        assert!(pool.take(&address("c")).is_none(), "c was not kept");
        assert_closed(&mut far_c, "the connection beyond the budget").await;

        // A taken connection frees its place: another node's may take it, and then the
        // returning one is closed; the pool never holds more than the budget.
        let a = pool.take(&address("a")).expect("a is held");
        let (d, _far_d) = connection().await;
        pool.put(address("d"), d);
        pool.put(address("a"), a);
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.idle_peak, stats.evicted), (2, 2, 2));
        assert_closed(&mut far_a, "the returned connection beyond the budget").await;
        assert!(pool.take(&address("b")).is_some(), "b is held");
        assert!(pool.take(&address("d")).is_some(), "d is held");
        assert_eq!(pool.stats().idle, 0);
    }

    #[tokio::test]
    async fn a_zero_budget_or_an_expired_connection_is_not_kept() {
        let none = IdlePool::new(0, Duration::from_secs(3600));
        let (s, mut far) = connection().await;
        none.put(address("a"), s);
        assert_eq!(none.stats().idle, 0);
        assert!(none.take(&address("a")).is_none());
        assert_closed(&mut far, "the connection a zero budget refused").await;

        // Idle for the whole (zero) timeout: closed by the next put or expire.
        let expiring = IdlePool::new(10, Duration::ZERO);
        let (s, mut far) = connection().await;
        expiring.put(address("a"), s);
        expiring.expire();
        assert_eq!(expiring.stats().idle, 0);
        assert_closed(&mut far, "the expired connection").await;

        // A connection the far end closed is not handed out.
        let pool = IdlePool::new(10, Duration::from_secs(3600));
        let (s, far) = connection().await;
        pool.put(address("a"), s);
        drop(far);
        let mut waited = 0;
        while pool.take(&address("a")).is_some_and(|s| {
            // Still open: hand it back and let the connection task see the end of file.
            pool.put(address("a"), s);
            true
        }) {
            waited += 1;
            assert!(waited < 10_000, "the closed connection is still handed out");
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.stats().idle, 0);
    }

    #[test]
    fn the_session_cache_grows_with_the_node_count() {
        let cache = SessionCache::new();
        assert_eq!(cache.capacity(), MIN_SESSION_SERVERS);
        cache.reserve(MIN_SESSION_SERVERS);
        assert_eq!(cache.capacity(), MIN_SESSION_SERVERS);
        cache.reserve(20_000);
        assert_eq!(cache.capacity(), 40_000);
        cache.reserve(30_000);
        assert_eq!(cache.capacity(), 40_000, "no regrowth while it fits");
    }
}
