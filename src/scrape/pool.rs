//! The kubelet client's idle connections under one global budget, and the TLS session cache
//! that makes a reconnect cheap.
//!
//! hyper-util's pool limits idle connections per host only, so with one kept-alive connection
//! per node a 20,000-node cluster needs 20,000 descriptors for them alone, which RLIMIT_NOFILE
//! may not allow. [`IdlePool`] keeps at most `budget` idle connections in all, one per kubelet
//! address, and closes the least recently used beyond that. A node whose connection was closed
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
use rustls::client::ClientSessionStore;
use rustls::client::ClientSessionMemoryCache;
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
    /// Recency order: the first is the least recently used.
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

    /// Gives back a connection whose exchange finished, as the most recently used; closes the
    /// least recently used ones beyond the budget and those idle past the timeout.
    pub(crate) fn put(&self, address: Authority, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut closing: Vec<Entry> = Vec::new();
        {
            let mut lru = self.lock();
            if self.budget > 0 {
                let seq = lru.next_seq;
                lru.next_seq += 1;
                let entry = Entry {
                    sender,
                    seq,
                    since: now,
                };
                if let Some(old) = lru.by_address.insert(address.clone(), entry) {
                    // Two nodes at one address: keep the newer connection.
                    lru.order.remove(&old.seq);
                    closing.push(old);
                }
                lru.order.insert(seq, address);
            }
            while lru.by_address.len() > self.budget {
                match lru.pop_oldest() {
                    Some(e) => closing.push(e),
                    None => break,
                }
            }
            self.evicted
                .fetch_add(closing.len() as u64, Ordering::Relaxed);
            Self::expire_locked(&mut lru, now, self.idle_timeout, &mut closing);
            let idle = lru.by_address.len();
            self.idle.store(idle, Ordering::Relaxed);
            self.idle_peak.fetch_max(idle, Ordering::Relaxed);
        }
        // Dropping the senders ends their connections' tasks, which close the sockets.
        drop(closing);
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
