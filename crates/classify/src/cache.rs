//! A bounded, sharded, thread-safe cache of classifications keyed by SQL text.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::functions::FunctionOverrides;
use crate::kind::Classification;
use crate::StatementKind;

/// Bookkeeping bytes counted per entry on top of the SQL text and the value.
const ENTRY_OVERHEAD: usize = 64;

/// Limits of a [`ClassifyCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Maximum number of entries (0 disables caching).
    pub max_entries: usize,
    /// Maximum approximate bytes: SQL text + classification + ~64 bytes per
    /// entry. An entry larger than `max_bytes / shards` is never cached.
    pub max_bytes: usize,
    /// Number of independently locked shards (rounded up to a power of two,
    /// reduced so that every shard holds at least one entry).
    pub shards: usize,
}

impl Default for CacheConfig {
    /// 10 000 entries, 32 MiB, 16 shards.
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 32 << 20,
            shards: 16,
        }
    }
}

/// A snapshot of a cache's counters and size, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found the SQL text.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries stored. Until [`ClassifyCache::clear`],
    /// `insertions - evictions == entries`.
    pub insertions: u64,
    /// Entries dropped to make room (or displaced by a hash collision).
    pub evictions: u64,
    /// Entries held now.
    pub entries: usize,
    /// Approximate bytes held now.
    pub bytes: usize,
}

/// A bounded cache from SQL text to `Arc<Classification>`.
///
/// Entries are found by a 64-bit keyed hash of the text and confirmed by
/// comparing the full text, so two statements never share an entry. Each
/// shard is a `Mutex` over a hash index and a CLOCK (second chance) ring:
/// a hit marks its entry, and eviction skips (and unmarks) marked entries.
/// All methods take `&self`; share it as `Arc<ClassifyCache>`.
///
/// Entries depend on the [`FunctionOverrides`] used to compute them: call
/// [`ClassifyCache::clear`] (or build a new cache) when those change.
#[derive(Debug)]
pub struct ClassifyCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    shard_mask: u64,
    entries_per_shard: usize,
    bytes_per_shard: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    insertions: AtomicU64,
    evictions: AtomicU64,
}

/// The index already holds well-mixed hashes: use them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
struct Shard {
    index: HashMap<u64, usize, BuildHasherDefault<IdentityHasher>>,
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
}

#[derive(Debug)]
struct Slot {
    hash: u64,
    sql: Box<str>,
    value: Arc<Classification>,
    bytes: usize,
    referenced: bool,
}

impl Shard {
    fn remove(&mut self, i: usize) {
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.hash);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.hash, i);
        }
        self.bytes -= slot.bytes;
    }

    /// Evicts one entry with the CLOCK policy. False if the shard is empty.
    fn evict_one(&mut self) -> bool {
        while !self.slots.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            if slot.referenced {
                slot.referenced = false;
                self.hand += 1;
            } else {
                self.remove(self.hand);
                return true;
            }
        }
        false
    }
}

impl Default for ClassifyCache {
    fn default() -> Self {
        Self::new(CacheConfig::default())
    }
}

impl ClassifyCache {
    /// Creates an empty cache with the given limits.
    pub fn new(config: CacheConfig) -> Self {
        let mut shards = config.shards.clamp(1, 1024).next_power_of_two();
        while shards > 1 && shards > config.max_entries {
            shards /= 2;
        }
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            shard_mask: shards as u64 - 1,
            entries_per_shard: config.max_entries / shards,
            bytes_per_shard: config.max_bytes / shards,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            insertions: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Creates a cache holding at most `max_entries` entries and about
    /// `max_bytes` bytes, with the default number of shards.
    pub fn with_limits(max_entries: usize, max_bytes: usize) -> Self {
        Self::new(CacheConfig {
            max_entries,
            max_bytes,
            ..CacheConfig::default()
        })
    }

    fn hash(&self, sql: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(sql.as_bytes());
        h.finish()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The index uses the low bits; pick the shard from the high ones.
        let i = ((hash >> 40) & self.shard_mask) as usize;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `sql` up, counting a hit or a miss.
    pub fn get(&self, sql: &str) -> Option<Arc<Classification>> {
        let hash = self.hash(sql);
        let found = {
            let mut shard = self.shard(hash);
            match shard.index.get(&hash).copied() {
                Some(i) if &*shard.slots[i].sql == sql => {
                    let slot = &mut shard.slots[i];
                    slot.referenced = true;
                    Some(Arc::clone(&slot.value))
                }
                _ => None,
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a classification for `sql`, evicting entries as needed, and
    /// returns it shared. If `sql` is already cached (a concurrent miss), the
    /// cached value is kept and returned instead. An entry too large for the
    /// limits is returned without being stored.
    pub fn insert(&self, sql: &str, value: Classification) -> Arc<Classification> {
        let value = Arc::new(value);
        let bytes = sql.len() + value.approx_bytes() + ENTRY_OVERHEAD;
        if self.entries_per_shard == 0 || bytes > self.bytes_per_shard {
            return value;
        }
        let hash = self.hash(sql);
        let mut evicted = 0;
        {
            let mut shard = self.shard(hash);
            if let Some(i) = shard.index.get(&hash).copied() {
                if &*shard.slots[i].sql == sql {
                    // Another thread missed on the same text first: share its value.
                    return Arc::clone(&shard.slots[i].value);
                }
                // A 64-bit hash collision (very rare): the old entry goes.
                shard.remove(i);
                evicted += 1;
            }
            while shard.slots.len() >= self.entries_per_shard
                || shard.bytes + bytes > self.bytes_per_shard
            {
                if !shard.evict_one() {
                    break;
                }
                evicted += 1;
            }
            let at = shard.slots.len();
            shard.slots.push(Slot {
                hash,
                sql: sql.into(),
                value: Arc::clone(&value),
                bytes,
                referenced: false,
            });
            shard.index.insert(hash, at);
            shard.bytes += bytes;
        }
        self.insertions.fetch_add(1, Ordering::Relaxed);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        value
    }

    /// Returns the cached classification of `sql`, classifying and storing
    /// it on a miss.
    pub fn get_or_classify(&self, sql: &str, overrides: &FunctionOverrides) -> Arc<Classification> {
        match self.get(sql) {
            Some(hit) => hit,
            None => self.insert(sql, crate::classify(sql, overrides)),
        }
    }

    /// Like [`Self::get_or_classify`], but keyed on the statement's shape (literals replaced,
    /// see [`crate::normalize_literals`]) when the shape classifies exactly like the statement:
    /// one parse per shape rather than per value. `scratch` is a reusable buffer.
    pub fn get_or_classify_shape(
        &self,
        sql: &str,
        overrides: &FunctionOverrides,
        scratch: &mut String,
    ) -> Arc<Classification> {
        crate::normalize_literals(sql, scratch);
        if scratch.as_str() == sql {
            return self.get_or_classify(sql, overrides);
        }
        if let Some(hit) = self.get(scratch) {
            return hit;
        }
        if let Some(hit) = self.get(sql) {
            return hit;
        }
        let exact = crate::classify(sql, overrides);
        let shaped = crate::classify(scratch, overrides);
        // Only plain reads and writes are cached by shape: other kinds carry values (names,
        // settings) that the shape would blur.
        let plain = matches!(exact.kind, StatementKind::Read | StatementKind::Write);
        if plain && exact == shaped {
            self.insert(scratch, exact)
        } else {
            self.insert(sql, exact)
        }
    }

    /// Drops every entry (counters are kept).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            *shard = Shard::default();
        }
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).slots.len())
            .sum()
    }

    /// True if no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The approximate number of bytes held.
    pub fn approx_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }

    /// The number of lookups that hit.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The number of lookups that missed.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// The number of entries evicted to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The number of entries stored.
    pub fn insertions(&self) -> u64 {
        self.insertions.load(Ordering::Relaxed)
    }

    /// All counters and the current size at once.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits(),
            misses: self.misses(),
            insertions: self.insertions(),
            evictions: self.evictions(),
            entries: self.len(),
            bytes: self.approx_bytes(),
        }
    }
}
