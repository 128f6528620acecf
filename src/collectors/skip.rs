//! Skip-unchanged tracker (collectors.md §2.6.3): send when the rows change, and every 30th
//! unchanged collection as a liveness signal.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

pub const FORCE_AFTER: u32 = 30;

#[derive(Default, Debug)]
pub struct SkipUnchanged {
    last: Option<u64>,
    unchanged: u32,
}

impl SkipUnchanged {
    /// Returns true when this payload should be sent.
    pub fn should_send(&mut self, rows_json: &[u8]) -> bool {
        let mut h = DefaultHasher::new();
        h.write(rows_json);
        self.should_send_hash(h.finish())
    }

    /// Like [`SkipUnchanged::should_send`] with the rows' hash computed while streaming them.
    pub fn should_send_hash(&mut self, hash: u64) -> bool {
        if self.last != Some(hash) {
            self.last = Some(hash);
            self.unchanged = 0;
            return true;
        }
        self.unchanged += 1;
        if self.unchanged >= FORCE_AFTER {
            self.unchanged = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_first_changes_and_every_thirtieth() {
        let mut s = SkipUnchanged::default();
        assert!(s.should_send(b"[1]"));
        let sent: Vec<bool> = (0..30).map(|_| s.should_send(b"[1]")).collect();
        assert_eq!(sent.iter().filter(|b| **b).count(), 1);
        assert!(sent[29]);
        assert!(s.should_send(b"[2]"));
    }
}
