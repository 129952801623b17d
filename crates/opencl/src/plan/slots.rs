//! Activation buffers ("slots") reused by liveness: a slot is free once no live value (and no
//! side-queue hold) uses it; an allocation takes the smallest free slot that fits, else grows
//! the largest free one, else adds a slot. Every slot has `SLOT_SLACK` bytes past what was
//! asked for (whole-vector loads that start inside the tensor stay inside the buffer).

use super::SLOT_SLACK;

/// The slots of one plan: their sizes, users and the free list.
#[derive(Debug, Default)]
pub(super) struct Slots {
    /// Bytes of each slot (the tensor's and the slack).
    sizes: Vec<usize>,
    /// Live values (and side-branch holds) per slot.
    users: Vec<usize>,
    free: Vec<usize>,
}

impl Slots {
    /// A slot of at least `bytes` (at least 16) plus the slack, with no user yet.
    pub(super) fn alloc(&mut self, bytes: usize) -> usize {
        let bytes = bytes.max(16) + SLOT_SLACK;
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|&(_, &s)| self.sizes[s] >= bytes)
            .min_by_key(|&(_, &s)| self.sizes[s])
            .map(|(i, _)| i);
        let slot = match best {
            Some(i) => self.free.swap_remove(i),
            None => match self
                .free
                .iter()
                .enumerate()
                .max_by_key(|&(_, &s)| self.sizes[s])
                .map(|(i, _)| i)
            {
                // grow the largest free slot rather than adding another
                Some(i) => {
                    let s = self.free.swap_remove(i);
                    self.sizes[s] = bytes;
                    s
                }
                None => {
                    self.sizes.push(bytes);
                    self.users.push(0);
                    self.sizes.len() - 1
                }
            },
        };
        self.users[slot] = 0;
        slot
    }

    /// One more live value on `slot`.
    pub(super) fn add_user(&mut self, slot: usize) {
        self.users[slot] += 1;
    }

    /// One more user of `slot` that keeps it out of reuse even where it was free (a side
    /// branch's hold until its join).
    pub(super) fn hold(&mut self, slot: usize) {
        self.users[slot] += 1;
        self.free.retain(|&f| f != slot);
    }

    /// One fewer live value (or hold) on `slot`; with none left it is free.
    pub(super) fn drop_user(&mut self, slot: usize) {
        self.users[slot] = self.users[slot].saturating_sub(1);
        if self.users[slot] == 0 && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }

    /// A scratch slot (allocated with no user) free again after the launch that used it.
    pub(super) fn release_scratch(&mut self, slot: usize) {
        if self.users[slot] == 0 && !self.free.contains(&slot) {
            self.free.push(slot);
        }
    }

    /// Live values on `slot`.
    pub(super) fn users(&self, slot: usize) -> usize {
        self.users.get(slot).copied().unwrap_or(0)
    }

    /// Bytes of `slot`.
    pub(super) fn size(&self, slot: usize) -> usize {
        self.sizes[slot]
    }

    /// Every slot's size, for the plan.
    pub(super) fn into_sizes(self) -> Vec<usize> {
        self.sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_reused_only_once_free_and_the_smallest_fit_wins() {
        let mut s = Slots::default();
        let a = s.alloc(1000);
        s.add_user(a);
        let b = s.alloc(100);
        s.add_user(b);
        assert_ne!(a, b, "a live slot was handed out again");
        assert_eq!(s.size(a), 1000 + SLOT_SLACK);
        assert_eq!(s.size(b), 100 + SLOT_SLACK);
        s.drop_user(a);
        s.drop_user(b);
        // both free: 50 bytes fit either, the smaller one is taken
        let c = s.alloc(50);
        assert_eq!(c, b);
        s.add_user(c);
        // 900 bytes: only `a` fits
        assert_eq!(s.alloc(900), a);
    }

    #[test]
    fn a_free_slot_too_small_grows_instead_of_adding_one() {
        let mut s = Slots::default();
        let a = s.alloc(100);
        s.add_user(a);
        s.drop_user(a);
        let b = s.alloc(5000);
        assert_eq!(a, b);
        assert_eq!(s.size(b), 5000 + SLOT_SLACK);
        assert_eq!(s.into_sizes().len(), 1);
    }

    #[test]
    fn a_held_slot_stays_out_of_reuse_until_every_user_is_gone() {
        let mut s = Slots::default();
        let a = s.alloc(64);
        s.add_user(a);
        s.hold(a);
        s.drop_user(a);
        assert_eq!(s.users(a), 1);
        assert_ne!(s.alloc(64), a, "a held slot was reused");
        s.drop_user(a);
        assert_eq!(s.users(a), 0);
        assert_eq!(s.alloc(64), a);
    }

    #[test]
    fn a_hold_takes_a_free_slot_off_the_free_list() {
        let mut s = Slots::default();
        let a = s.alloc(64);
        s.add_user(a);
        s.drop_user(a);
        s.hold(a);
        assert_ne!(s.alloc(64), a);
        s.drop_user(a);
        // dropping twice never frees a slot twice
        s.drop_user(a);
        let x = s.alloc(64);
        let y = s.alloc(64);
        assert_ne!(x, y);
    }

    #[test]
    fn scratch_slots_return_to_the_free_list() {
        let mut s = Slots::default();
        let t = s.alloc(128);
        s.release_scratch(t);
        s.release_scratch(t);
        let a = s.alloc(128);
        let b = s.alloc(128);
        assert_eq!(a, t);
        assert_ne!(a, b);
    }
}
