//! A write batch that remembers its operations: sled applies it atomically, and the
//! changelog (`changelog`) carries the very same operations to the partition's next
//! owner, so a restored ledger holds the same bytes: entries, sequence numbers, hash
//! chains, projections, positions and outbox.

/// One operation: a key and its new value (`None`: removed).
pub type Op = (Vec<u8>, Option<Vec<u8>>);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Operations recorded elsewhere, applied before this batch's own.
    pub(crate) fn prepend(&mut self, mut ops: Vec<Op>) {
        ops.append(&mut self.ops);
        self.ops = ops;
    }

    pub(crate) fn from_ops(ops: Vec<Op>) -> Batch {
        Batch { ops }
    }

    /// The same operations as one atomic sled batch (in order: the last write of a key wins).
    pub(crate) fn to_sled(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in &self.ops {
            match value {
                Some(v) => batch.insert(key.as_slice(), v.as_slice()),
                None => batch.remove(key.as_slice()),
            }
        }
        batch
    }
}
