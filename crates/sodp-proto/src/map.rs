//! [`Map`]: a value's object — string keys in insertion order — stored as a
//! plain vector while it is small and as an [`IndexMap`] once it is not.
//!
//! Most objects in real state are small (a player's `{x, y}`, a cursor, a
//! patch of two fields), and every write decodes, merges and diffs a few of
//! them. For those a hash index costs more than it saves: a second
//! allocation for the table, a hash per insert and lookup, and memory per
//! map. So up to [`SMALL_MAX`] entries a map is a `Vec` searched linearly
//! (a short key compare is cheaper than a hash); the insert that takes it
//! past that moves it into an `IndexMap`, which it then stays (a map that
//! shrinks again keeps its index, so a map near the boundary does not flip
//! on every write). Both keep insertion order, and removal shifts the rest
//! (`shift_remove`), so the form never shows: iteration, encoding and
//! equality are the same for either.
//!
//! The index hashes with foldhash, randomly seeded per process: a fixed-seed
//! hash would let a client flood one bucket, and SipHash costs several
//! times more on short keys. The vector form needs no hash, and its linear
//! search is bounded by `SMALL_MAX`.

use indexmap::IndexMap;

use crate::value::Value;

/// Most entries a map holds as a vector.
pub const SMALL_MAX: usize = 8;

type Index = IndexMap<String, Value, foldhash::fast::RandomState>;

/// An object: string keys in insertion order (see the module doc).
#[derive(Clone, Default)]
pub struct Map {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Small(Vec<(String, Value)>),
    Large(Index),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Small(Vec::new())
    }
}

impl Map {
    pub fn new() -> Map {
        Map::default()
    }

    /// A map with room for `n` entries (the form `n` entries would take).
    pub fn with_capacity(n: usize) -> Map {
        let repr = if n <= SMALL_MAX {
            Repr::Small(Vec::with_capacity(n))
        } else {
            Repr::Large(Index::with_capacity_and_hasher(n, Default::default()))
        };
        Map { repr }
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Small(v) => v.len(),
            Repr::Large(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match &self.repr {
            Repr::Small(v) => v.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Repr::Large(m) => m.get(key),
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match &mut self.repr {
            Repr::Small(v) => v.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            Repr::Large(m) => m.get_mut(key),
        }
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; a key already there keeps its position and
    /// its old value is returned, a new one goes last.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        match &mut self.repr {
            Repr::Small(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(old, value));
                }
                if v.len() < SMALL_MAX {
                    v.push((key, value));
                    return None;
                }
                let mut index = Index::with_capacity_and_hasher(v.len() + 1, Default::default());
                index.extend(v.drain(..));
                index.insert(key, value);
                self.repr = Repr::Large(index);
                None
            }
            Repr::Large(m) => m.insert(key, value),
        }
    }

    /// The value at `key`, inserting `make()` last first when it is absent.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> Value) -> &mut Value {
        if !self.contains_key(key) {
            self.insert(key.to_owned(), make());
        }
        match &mut self.repr {
            Repr::Small(v) => v
                .iter_mut()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .expect("just inserted"),
            Repr::Large(m) => m.get_mut(key).expect("just inserted"),
        }
    }

    /// Removes `key`, keeping the order of the rest.
    pub fn shift_remove(&mut self, key: &str) -> Option<Value> {
        match &mut self.repr {
            Repr::Small(v) => {
                let at = v.iter().position(|(k, _)| k == key)?;
                Some(v.remove(at).1)
            }
            Repr::Large(m) => m.shift_remove(key),
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter(match &self.repr {
            Repr::Small(v) => Forms::Small(v.iter()),
            Repr::Large(m) => Forms::Large(m.iter()),
        })
    }

    pub fn iter_mut(&mut self) -> IterMut<'_> {
        IterMut(match &mut self.repr {
            Repr::Small(v) => Forms::Small(v.iter_mut()),
            Repr::Large(m) => Forms::Large(m.iter_mut()),
        })
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> + DoubleEndedIterator {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> + DoubleEndedIterator {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(
        &mut self,
    ) -> impl ExactSizeIterator<Item = &mut Value> + DoubleEndedIterator {
        self.iter_mut().map(|(_, v)| v)
    }

    /// Whether the map is held with a hash index (tests and size accounting).
    pub fn is_indexed(&self) -> bool {
        matches!(self.repr, Repr::Large(_))
    }
}

/// Equal when both hold the same keys with equal values, in any order (as
/// `IndexMap`'s equality, which this type replaced).
impl PartialEq for Map {
    fn eq(&self, other: &Map) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// `map["key"]`; panics when the key is absent (tests and known shapes).
impl std::ops::Index<&str> for Map {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key)
            .unwrap_or_else(|| panic!("no key {key:?} in the map"))
    }
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(String, Value)> for Map {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Map {
        let iter = iter.into_iter();
        let mut map = Map::with_capacity(iter.size_hint().0);
        map.extend(iter);
        map
    }
}

impl Extend<(String, Value)> for Map {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<'a> IntoIterator for &'a Map {
    type Item = (&'a String, &'a Value);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Map {
    type Item = (String, Value);
    type IntoIter = IntoIter;
    fn into_iter(self) -> IntoIter {
        IntoIter(match self.repr {
            Repr::Small(v) => Forms::Small(v.into_iter()),
            Repr::Large(m) => Forms::Large(m.into_iter()),
        })
    }
}

/// An iterator of either form: the vector's or the index's.
enum Forms<S, L> {
    Small(S),
    Large(L),
}

/// `Iterator`, `DoubleEndedIterator` and `ExactSizeIterator` for a wrapper
/// of [`Forms`], the vector's items turned into `$item` by `|$x| $small`.
macro_rules! forms_iterator {
    ($name:ident $(<$l:lifetime>)?, $item:ty, |$x:pat_param| $small:expr) => {
        impl$(<$l>)? Iterator for $name$(<$l>)? {
            type Item = $item;
            #[inline]
            fn next(&mut self) -> Option<$item> {
                match &mut self.0 {
                    Forms::Small(i) => i.next().map(|$x| $small),
                    Forms::Large(i) => i.next(),
                }
            }
            fn size_hint(&self) -> (usize, Option<usize>) {
                match &self.0 {
                    Forms::Small(i) => i.size_hint(),
                    Forms::Large(i) => i.size_hint(),
                }
            }
        }

        impl$(<$l>)? DoubleEndedIterator for $name$(<$l>)? {
            fn next_back(&mut self) -> Option<$item> {
                match &mut self.0 {
                    Forms::Small(i) => i.next_back().map(|$x| $small),
                    Forms::Large(i) => i.next_back(),
                }
            }
        }

        impl$(<$l>)? ExactSizeIterator for $name$(<$l>)? {}
    };
}

/// The entries of a [`Map`] in order, by reference.
pub struct Iter<'a>(
    Forms<std::slice::Iter<'a, (String, Value)>, indexmap::map::Iter<'a, String, Value>>,
);
forms_iterator!(Iter<'a>, (&'a String, &'a Value), |(k, v)| (k, v));

/// The entries of a [`Map`] in order, values mutable.
pub struct IterMut<'a>(
    Forms<std::slice::IterMut<'a, (String, Value)>, indexmap::map::IterMut<'a, String, Value>>,
);
forms_iterator!(IterMut<'a>, (&'a String, &'a mut Value), |(k, v)| (&*k, v));

/// The entries of a [`Map`] in order, owned.
pub struct IntoIter(
    Forms<std::vec::IntoIter<(String, Value)>, indexmap::map::IntoIter<String, Value>>,
);
forms_iterator!(IntoIter, (String, Value), |entry| entry);

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: what `IndexMap` does with the same operations.
    fn both(ops: &[(&str, Option<i64>)]) -> (Map, Index) {
        let (mut map, mut index) = (Map::new(), Index::default());
        for (k, op) in ops {
            match op {
                Some(n) => {
                    let got = map.insert((*k).to_owned(), Value::Int(*n));
                    let want = index.insert((*k).to_owned(), Value::Int(*n));
                    assert_eq!(got, want, "insert {k}");
                }
                None => {
                    assert_eq!(map.shift_remove(k), index.shift_remove(*k), "remove {k}");
                }
            }
            let got: Vec<_> = map.iter().collect();
            let want: Vec<_> = index.iter().collect();
            assert_eq!(got, want);
            assert_eq!(map.len(), index.len());
        }
        (map, index)
    }

    #[test]
    fn behaves_as_an_index_map_on_both_sides_of_the_boundary() {
        let keys: Vec<String> = (0..3 * SMALL_MAX).map(|i| format!("k{i}")).collect();
        // Grow past the boundary, overwrite in both forms, remove from the
        // middle, the front and the back, and re-add.
        let mut ops: Vec<(&str, Option<i64>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            ops.push((k, Some(i as i64)));
            if i % 3 == 0 {
                ops.push((&keys[i / 2], Some(100 + i as i64)));
            }
            if i == SMALL_MAX / 2 || i == 2 * SMALL_MAX {
                ops.push((&keys[1], None));
                ops.push((&keys[0], None));
                ops.push((k, None));
                ops.push((&keys[1], Some(7)));
                ops.push(("absent", None));
            }
        }
        let (map, index) = both(&ops);
        assert!(map.is_indexed());
        for k in &keys {
            assert_eq!(map.get(k), index.get(k.as_str()));
            assert_eq!(map.contains_key(k), index.contains_key(k.as_str()));
        }
        let owned: Vec<_> = map.clone().into_iter().collect();
        assert_eq!(owned, index.into_iter().collect::<Vec<_>>());
        assert_eq!(map.keys().next_back(), owned.last().map(|(k, _)| k));
    }

    #[test]
    fn stays_a_vector_up_to_small_max_and_an_index_after() {
        let mut map: Map = (0..SMALL_MAX)
            .map(|i| (format!("k{i}"), Value::Int(i as i64)))
            .collect();
        assert!(!map.is_indexed());
        // Overwriting does not grow it.
        map.insert("k0".into(), Value::Nil);
        assert!(!map.is_indexed());
        map.insert("one more".into(), Value::Nil);
        assert!(map.is_indexed());
        // Shrinking keeps the index (no flipping at the boundary).
        map.shift_remove("one more");
        map.shift_remove("k1");
        assert!(map.is_indexed());
        assert_eq!(map.len(), SMALL_MAX - 1);
        assert!(Map::with_capacity(SMALL_MAX + 1).is_indexed());
        assert!(!Map::with_capacity(SMALL_MAX).is_indexed());
    }

    #[test]
    fn equality_ignores_order_and_form() {
        let forward: Map = (0..SMALL_MAX + 2)
            .map(|i| (format!("k{i}"), Value::Int(i as i64)))
            .collect();
        let mut backward: Map = (0..SMALL_MAX + 2)
            .rev()
            .map(|i| (format!("k{i}"), Value::Int(i as i64)))
            .collect();
        assert_eq!(forward, backward);
        backward.shift_remove("k0");
        assert_ne!(forward, backward);
        let small: Map = [
            ("a".to_owned(), Value::Int(1)),
            ("b".to_owned(), Value::Int(2)),
        ]
        .into_iter()
        .collect();
        let mut large = Map::with_capacity(SMALL_MAX + 1);
        large.insert("b".into(), Value::Int(2));
        large.insert("a".into(), Value::Int(1));
        assert!(large.is_indexed() && !small.is_indexed());
        assert_eq!(small, large);
        large.insert("a".into(), Value::Int(3));
        assert_ne!(small, large);
    }

    #[test]
    fn get_or_insert_with_adds_last_only_when_absent() {
        let mut map = Map::new();
        map.insert("a".into(), Value::Int(1));
        *map.get_or_insert_with("b", || Value::Nil) = Value::Int(2);
        *map.get_or_insert_with("a", || panic!("present")) = Value::Int(3);
        let got: Vec<_> = map.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert_eq!(got, [("a", Value::Int(3)), ("b", Value::Int(2))]);
    }
}
