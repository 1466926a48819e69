//! Ordered maps and sets for the browser build: sorted vectors behind the part of the
//! `BTreeMap` / `BTreeSet` API the overlay uses; and [`HashTable`], the one hash map (for
//! Plumtree's large set of seen message ids), so no `std` `HashMap` is left in the build.
//!
//! Why: std's B-tree is compiled once per key/value type, and its node code (insert with
//! splits, remove with rebalancing, iteration across nodes) came to about 100 KB of the
//! wasm binary over the overlay's twenty-odd map types. The overlay's maps are small
//! (views of a few dozen peers, DHT tables of a few hundred entries), where a sorted
//! vector is as fast and a fraction of the code. Natively the simulator runs thousands of
//! peers, so there the overlay keeps std's B-trees: `crate::collections::{BTreeMap,
//! BTreeSet}` names whichever the target uses. Both keep keys in order, so iteration order
//! (which the overlay's determinism relies on) is the same; the tests check the vector
//! versions against std's.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use std::collections::{BTreeMap, BTreeSet};
#[cfg(target_arch = "wasm32")]
pub(crate) use {VecMap as BTreeMap, VecSet as BTreeSet};

/// Sorts `v` stably by `cmp`: std's stable sort natively; in the browser build an
/// insertion sort ([`insertion_sort_by`]), because std's is compiled once per element type
/// at 1-2 KB each and the overlay only sorts short lists (a few dozen peers or links). A
/// stable sort's result is unique, so both order alike.
pub(crate) fn sort_by<T>(v: &mut [T], cmp: impl FnMut(&T, &T) -> Ordering) {
    #[cfg(not(target_arch = "wasm32"))]
    v.sort_by(cmp);
    #[cfg(target_arch = "wasm32")]
    insertion_sort_by(v, cmp);
}

/// [`sort_by`] in the order of `key`.
pub(crate) fn sort_by_key<T, K: Ord>(v: &mut [T], mut key: impl FnMut(&T) -> K) {
    sort_by(v, |a, b| key(a).cmp(&key(b)))
}

/// [`sort_by`] in the elements' own order.
pub(crate) fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, T::cmp)
}

/// A stable insertion sort: a binary search for each element's place among the sorted
/// ones before it (after any equal ones), then shifts. O(n log n) comparisons, O(n²)
/// moves; a few instructions of code.
#[cfg_attr(not(any(test, target_arch = "wasm32")), allow(dead_code))]
pub(crate) fn insertion_sort_by<T>(v: &mut [T], mut cmp: impl FnMut(&T, &T) -> Ordering) {
    for i in 1..v.len() {
        let (sorted, rest) = v.split_at(i);
        let at = sorted.partition_point(|x| cmp(x, &rest[0]) != Ordering::Greater);
        let mut j = i;
        while j > at {
            v.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// A map kept as a vector of entries sorted by key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct VecMap<K, V> {
    items: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { items: Vec::new() }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for VecMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.items.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

#[allow(dead_code)] // the whole surface is used only by some builds
impl<K: Ord, V> VecMap<K, V> {
    /// An empty map.
    pub(crate) const fn new() -> Self {
        VecMap { items: Vec::new() }
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.items.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear()
    }

    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.items[i].1)
    }

    pub(crate) fn get_key_value<Q: Ord + ?Sized>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| {
            let (k, v) = &self.items[i];
            (k, v)
        })
    }

    pub(crate) fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self.find(key) {
            Ok(i) => Some(&mut self.items[i].1),
            Err(_) => None,
        }
    }

    pub(crate) fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.items[i].1, value)),
            Err(i) => {
                self.items.insert(i, (key, value));
                None
            }
        }
    }

    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.items.remove(i).1)
    }

    pub(crate) fn remove_entry<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.items.remove(i))
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.items.retain_mut(|(k, v)| keep(k, v))
    }

    pub(crate) fn entry(&mut self, key: K) -> Entry<'_, K, V> {
        let at = self.find(&key);
        Entry { map: self, key, at }
    }

    pub(crate) fn first_key_value(&self) -> Option<(&K, &V)> {
        self.items.first().map(|(k, v)| (k, v))
    }

    pub(crate) fn last_key_value(&self) -> Option<(&K, &V)> {
        self.items.last().map(|(k, v)| (k, v))
    }

    pub(crate) fn pop_first(&mut self) -> Option<(K, V)> {
        if self.items.is_empty() {
            None
        } else {
            Some(self.items.remove(0))
        }
    }

    pub(crate) fn pop_last(&mut self) -> Option<(K, V)> {
        self.items.pop()
    }

    pub(crate) fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator + Clone {
        self.items.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&K, &mut V)> + ExactSizeIterator {
        self.items.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub(crate) fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator + Clone {
        self.items.iter().map(|(k, _)| k)
    }

    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator + Clone {
        self.items.iter().map(|(_, v)| v)
    }

    pub(crate) fn values_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.items.iter_mut().map(|(_, v)| v)
    }

    pub(crate) fn into_keys(self) -> impl DoubleEndedIterator<Item = K> + ExactSizeIterator {
        self.items.into_iter().map(|(k, _)| k)
    }

    pub(crate) fn into_values(self) -> impl DoubleEndedIterator<Item = V> + ExactSizeIterator {
        self.items.into_iter().map(|(_, v)| v)
    }
}

impl<K: Ord, V, Q: Ord + ?Sized> std::ops::Index<&Q> for VecMap<K, V>
where
    K: Borrow<Q>,
{
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry found for key")
    }
}

/// A place in a [`VecMap`] for one key, present or not.
pub(crate) struct Entry<'a, K, V> {
    map: &'a mut VecMap<K, V>,
    key: K,
    at: Result<usize, usize>,
}

#[allow(dead_code)]
impl<'a, K: Ord, V> Entry<'a, K, V> {
    pub(crate) fn key(&self) -> &K {
        &self.key
    }

    pub(crate) fn or_insert_with(self, make: impl FnOnce() -> V) -> &'a mut V {
        let i = match self.at {
            Ok(i) => i,
            Err(i) => {
                self.map.items.insert(i, (self.key, make()));
                i
            }
        };
        &mut self.map.items[i].1
    }

    pub(crate) fn or_insert(self, value: V) -> &'a mut V {
        self.or_insert_with(|| value)
    }

    pub(crate) fn or_default(self) -> &'a mut V
    where
        V: Default,
    {
        self.or_insert_with(V::default)
    }

    pub(crate) fn and_modify(self, modify: impl FnOnce(&mut V)) -> Self {
        if let Ok(i) = self.at {
            modify(&mut self.map.items[i].1);
        }
        self
    }
}

impl<K: Ord, V> FromIterator<(K, V)> for VecMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = VecMap::new();
        map.extend(iter);
        map
    }
}

impl<K: Ord, V> Extend<(K, V)> for VecMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K, V> IntoIterator for VecMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a VecMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter().map(|(k, v)| (k, v))
    }
}

impl<'a, K, V> IntoIterator for &'a mut VecMap<K, V> {
    type Item = (&'a K, &'a mut V);
    type IntoIter =
        std::iter::Map<std::slice::IterMut<'a, (K, V)>, fn(&'a mut (K, V)) -> (&'a K, &'a mut V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter_mut().map(|(k, v)| (&*k, v))
    }
}

/// A set kept as a sorted vector.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct VecSet<T> {
    items: Vec<T>,
}

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet { items: Vec::new() }
    }
}

impl<T: fmt::Debug> fmt::Debug for VecSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.items.iter()).finish()
    }
}

#[allow(dead_code)]
impl<T: Ord> VecSet<T> {
    /// An empty set.
    pub(crate) const fn new() -> Self {
        VecSet { items: Vec::new() }
    }

    fn find<Q: Ord + ?Sized>(&self, value: &Q) -> Result<usize, usize>
    where
        T: Borrow<Q>,
    {
        self.items.binary_search_by(|x| x.borrow().cmp(value))
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear()
    }

    pub(crate) fn contains<Q: Ord + ?Sized>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        self.find(value).is_ok()
    }

    pub(crate) fn insert(&mut self, value: T) -> bool {
        match self.find(&value) {
            Ok(_) => false,
            Err(i) => {
                self.items.insert(i, value);
                true
            }
        }
    }

    pub(crate) fn remove<Q: Ord + ?Sized>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
    {
        match self.find(value) {
            Ok(i) => {
                self.items.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.items.retain(keep)
    }

    pub(crate) fn first(&self) -> Option<&T> {
        self.items.first()
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.items.last()
    }

    pub(crate) fn pop_first(&mut self) -> Option<T> {
        if self.items.is_empty() {
            None
        } else {
            Some(self.items.remove(0))
        }
    }

    pub(crate) fn pop_last(&mut self) -> Option<T> {
        self.items.pop()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut items: Vec<T> = iter.into_iter().collect();
        sort(&mut items);
        items.dedup();
        VecSet { items }
    }
}

impl<T: Ord> Extend<T> for VecSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for x in iter {
            self.insert(x);
        }
    }
}

impl<T> IntoIterator for VecSet<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// A key that hashes itself under a secret seed (for [`HashTable`]).
pub(crate) trait SeededHash: Eq {
    /// The key's hash under `seed`; keys an attacker chooses must not collide more often
    /// than chance without knowing the seed.
    fn seeded_hash(&self, seed: &[u64; 4]) -> u64;
}

/// The folded 64×64→128-bit multiply of foldhash and wyhash: both halves of the
/// product XORed. Mixes every bit of `a` and `b` into the result.
pub(crate) fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    p as u64 ^ (p >> 64) as u64
}

/// A hash map for many entries, on both targets: linear probing in a power-of-two table,
/// backward-shift deletion (no tombstones), grown at 3/4 full and shrunk below 1/8.
///
/// Why: std's `HashMap` brings hashbrown and SipHash into the browser build (~6 KB
/// gzipped), and a sorted vector's O(n) insert is too slow for Plumtree's set of every
/// message id of the last five minutes. Keys hash themselves ([`SeededHash`]) under a
/// seed the owner draws secretly, so an attacker cannot pick ids that pile into one run
/// of the table. No iteration: nothing may depend on where entries sit.
#[derive(Clone)]
pub(crate) struct HashTable<K, V> {
    slots: Vec<Option<(K, V)>>,
    len: usize,
    seed: [u64; 4],
}

impl<K, V> fmt::Debug for HashTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashTable").field("len", &self.len).finish()
    }
}

impl<K: SeededHash, V> HashTable<K, V> {
    pub(crate) fn new(seed: [u64; 4]) -> Self {
        HashTable {
            slots: Vec::new(),
            len: 0,
            seed,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn home(&self, key: &K) -> usize {
        key.seeded_hash(&self.seed) as usize & (self.slots.len() - 1)
    }

    /// The slot holding `key`.
    fn find(&self, key: &K) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            match &self.slots[i] {
                None => return None,
                Some((k, _)) if k == key => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let i = self.find(key)?;
        self.slots[i].as_ref().map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find(key)?;
        self.slots[i].as_mut().map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_some()
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(i) = self.find(&key) {
            return self.slots[i]
                .as_mut()
                .map(|(_, v)| std::mem::replace(v, value));
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.resize((self.slots.len() * 2).max(8));
        }
        self.place(key, value);
        self.len += 1;
        None
    }

    /// Puts an absent key in the first free slot from its home (there is one: the table
    /// is never full).
    fn place(&mut self, key: K, value: V) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(&key);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some((key, value));
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let mut hole = self.find(key)?;
        let (_, value) = self.slots[hole].take()?;
        self.len -= 1;
        // Close the gap: each later entry of the run moves back into the hole unless its
        // home lies after the hole (cyclically), where a lookup would no longer reach it.
        let mask = self.slots.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some((k, _)) = &self.slots[j] else { break };
            let home = self.home(k);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
        if self.slots.len() > 64 && self.len * 8 < self.slots.len() {
            self.resize(self.slots.len() / 2);
        }
        Some(value)
    }

    fn resize(&mut self, capacity: usize) {
        let mut slots = Vec::new();
        slots.resize_with(capacity, || None);
        let old = std::mem::replace(&mut self.slots, slots);
        for (k, v) in old.into_iter().flatten() {
            self.place(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Remove(u8),
        Entry(u8),
        Retain(u8),
        PopFirst,
        PopLast,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u16>()).prop_map(|(k, v)| Op::Insert(k, v)),
            any::<u8>().prop_map(Op::Remove),
            any::<u8>().prop_map(Op::Entry),
            any::<u8>().prop_map(Op::Retain),
            Just(Op::PopFirst),
            Just(Op::PopLast),
        ]
    }

    proptest! {
        #[test]
        fn the_vector_map_and_set_behave_like_std_b_trees(ops in proptest::collection::vec(op(), 0..200)) {
            let mut ours = VecMap::new();
            let mut std_map = std::collections::BTreeMap::new();
            let mut our_set = VecSet::new();
            let mut std_set = std::collections::BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(ours.insert(k, v), std_map.insert(k, v));
                        prop_assert_eq!(our_set.insert(k), std_set.insert(k));
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(ours.remove(&k), std_map.remove(&k));
                        prop_assert_eq!(our_set.remove(&k), std_set.remove(&k));
                    }
                    Op::Entry(k) => {
                        let e = ours.entry(k).or_default();
                        *e = u16::wrapping_add(*e, 1);
                        let e = std_map.entry(k).or_default();
                        *e = u16::wrapping_add(*e, 1);
                    }
                    Op::Retain(m) => {
                        let m = m.max(1);
                        let keep = |k: &u8, v: &mut u16| (u32::from(*k) + u32::from(*v)) % u32::from(m) != 0;
                        ours.retain(keep);
                        std_map.retain(keep);
                        our_set.retain(|k| k % m != 0);
                        std_set.retain(|k| k % m != 0);
                    }
                    Op::PopFirst => {
                        prop_assert_eq!(ours.pop_first(), std_map.pop_first());
                        prop_assert_eq!(our_set.pop_first(), std_set.pop_first());
                    }
                    Op::PopLast => {
                        prop_assert_eq!(ours.pop_last(), std_map.pop_last());
                        prop_assert_eq!(our_set.pop_last(), std_set.pop_last());
                    }
                }
                prop_assert!(ours.iter().eq(std_map.iter()));
                prop_assert!(our_set.iter().eq(std_set.iter()));
                prop_assert_eq!(ours.len(), std_map.len());
                prop_assert_eq!(ours.first_key_value(), std_map.first_key_value());
                prop_assert_eq!(our_set.last(), std_set.last());
            }
            for k in 0..=255u8 {
                prop_assert_eq!(ours.get(&k), std_map.get(&k));
                prop_assert_eq!(our_set.contains(&k), std_set.contains(&k));
            }
        }
    }

    proptest! {
        #[test]
        fn the_insertion_sort_orders_exactly_like_std_stable_sort(
            mut v in proptest::collection::vec((0u8..8, any::<u16>()), 0..300)
        ) {
            // Sorting by the first half only: equal keys must keep their order.
            let mut expected = v.clone();
            expected.sort_by_key(|x| x.0);
            insertion_sort_by(&mut v, |a, b| a.0.cmp(&b.0));
            prop_assert_eq!(v, expected);
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    struct Weak(u16);

    /// A poor hash (many keys per slot), so runs wrap around and removals shift entries.
    impl SeededHash for Weak {
        fn seeded_hash(&self, seed: &[u64; 4]) -> u64 {
            u64::from(self.0 % 23) ^ seed[0]
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Spread(u16);

    impl SeededHash for Spread {
        fn seeded_hash(&self, seed: &[u64; 4]) -> u64 {
            fold_mul(u64::from(self.0) ^ seed[0], 0x9e37_79b9_7f4a_7c15)
        }
    }

    proptest! {
        #[test]
        fn the_hash_table_behaves_like_std_hash_map(
            seed in any::<u64>(),
            ops in proptest::collection::vec((0u8..3, 0u16..400, any::<u32>()), 0..1500)
        ) {
            let mut ours = HashTable::new([seed, 0, 0, 0]);
            let mut std_map = std::collections::HashMap::new();
            for (op, k, v) in ops {
                match op {
                    0 => prop_assert_eq!(ours.insert(Weak(k), v), std_map.insert(k, v)),
                    1 => prop_assert_eq!(ours.remove(&Weak(k)), std_map.remove(&k)),
                    _ => {
                        if let Some(x) = ours.get_mut(&Weak(k)) {
                            *x = x.wrapping_add(v);
                        }
                        if let Some(x) = std_map.get_mut(&k) {
                            *x = x.wrapping_add(v);
                        }
                    }
                }
                prop_assert_eq!(ours.len(), std_map.len());
            }
            for k in 0..400 {
                prop_assert_eq!(ours.get(&Weak(k)), std_map.get(&k));
                prop_assert_eq!(ours.contains_key(&Weak(k)), std_map.contains_key(&k));
            }
        }
    }

    #[test]
    fn the_hash_table_grows_and_shrinks_back() {
        let mut t = HashTable::new([7, 0, 0, 0]);
        for k in 0..5000u16 {
            t.insert(Spread(k), k);
        }
        let grown = t.slots.len();
        assert!(grown >= 5000 * 4 / 3);
        for k in 0..5000u16 {
            assert_eq!(t.remove(&Spread(k)), Some(k));
        }
        assert_eq!(t.len(), 0);
        assert!(
            t.slots.len() <= 128,
            "{} slots left of {grown}",
            t.slots.len()
        );
    }

    #[test]
    fn collecting_keeps_the_last_value_of_a_repeated_key_like_std() {
        let pairs = [(3, 'a'), (1, 'b'), (3, 'c')];
        let ours: VecMap<_, _> = pairs.into_iter().collect();
        let std_map: std::collections::BTreeMap<_, _> = pairs.into_iter().collect();
        assert!(ours.iter().eq(std_map.iter()));
        let set: VecSet<_> = [3, 1, 3, 2].into_iter().collect();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
