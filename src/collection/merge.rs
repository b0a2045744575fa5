//! Merging sorted streams: a store's base with its delta, a transaction's own writes with its snapshot.

use std::cmp::Ordering as Order;

/// The union of two sorted iterators, in order from both ends. Each holds an element at most once; of two elements
/// that compare equal, the one from `b` is kept and the one from `a` dropped (`b` overrides `a`).
///
/// Both inputs are fused: once one ends, it is never asked again. A skip list's iterator is not fused: asked again
/// after its end, it starts over from the front, and keys inserted meanwhile would come out after larger ones
/// (found by `tests/checkpoint.rs`: a store whose delta was empty when a scan began, written during the scan).
pub(crate) struct Union<A: Iterator, B: Iterator, F> {
    a: std::iter::Fuse<A>,
    b: std::iter::Fuse<B>,
    /// Elements taken from one end and not yet yielded.
    a_front: Option<A::Item>,
    a_back: Option<A::Item>,
    b_front: Option<A::Item>,
    b_back: Option<A::Item>,
    cmp: F,
}

impl<A, B, F> Union<A, B, F>
where
    A: DoubleEndedIterator,
    B: DoubleEndedIterator<Item = A::Item>,
    F: Fn(&A::Item, &A::Item) -> Order,
{
    pub(crate) fn new(a: A, b: B, cmp: F) -> Self {
        Self {
            a: a.fuse(),
            b: b.fuse(),
            a_front: None,
            a_back: None,
            b_front: None,
            b_back: None,
            cmp,
        }
    }
}

impl<A, B, F> Iterator for Union<A, B, F>
where
    A: DoubleEndedIterator,
    B: DoubleEndedIterator<Item = A::Item>,
    F: Fn(&A::Item, &A::Item) -> Order,
{
    type Item = A::Item;

    fn next(&mut self) -> Option<A::Item> {
        if self.a_front.is_none() {
            self.a_front = self.a.next().or_else(|| self.a_back.take());
        }
        if self.b_front.is_none() {
            self.b_front = self.b.next().or_else(|| self.b_back.take());
        }
        match (&self.a_front, &self.b_front) {
            (Some(a), Some(b)) => match (self.cmp)(a, b) {
                Order::Less => self.a_front.take(),
                Order::Equal => {
                    self.a_front = None;
                    self.b_front.take()
                }
                Order::Greater => self.b_front.take(),
            },
            (Some(_), _) => self.a_front.take(),
            (None, _) => self.b_front.take(),
        }
    }
}

impl<A, B, F> DoubleEndedIterator for Union<A, B, F>
where
    A: DoubleEndedIterator,
    B: DoubleEndedIterator<Item = A::Item>,
    F: Fn(&A::Item, &A::Item) -> Order,
{
    fn next_back(&mut self) -> Option<A::Item> {
        if self.a_back.is_none() {
            self.a_back = self.a.next_back().or_else(|| self.a_front.take());
        }
        if self.b_back.is_none() {
            self.b_back = self.b.next_back().or_else(|| self.b_front.take());
        }
        match (&self.a_back, &self.b_back) {
            (Some(a), Some(b)) => match (self.cmp)(a, b) {
                Order::Greater => self.a_back.take(),
                Order::Equal => {
                    self.a_back = None;
                    self.b_back.take()
                }
                Order::Less => self.b_back.take(),
            },
            (Some(_), _) => self.a_back.take(),
            (None, _) => self.b_back.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes from the front while `pattern` says so and from the back otherwise, and returns the elements in order.
    fn merged(a: &[(u32, char)], b: &[(u32, char)], pattern: u32) -> Vec<(u32, char)> {
        let mut union = Union::new(a.iter().copied(), b.iter().copied(), |x, y| x.0.cmp(&y.0));
        let (mut front, mut back) = (Vec::new(), Vec::new());
        for step in 0.. {
            let next = if pattern >> (step % 32) & 1 == 1 {
                union.next().map(|e| front.push(e))
            } else {
                union.next_back().map(|e| back.push(e))
            };
            if next.is_none() {
                break;
            }
        }
        front.extend(back.into_iter().rev());
        front
    }

    #[test]
    fn equal_elements_come_once_from_b_whichever_end_is_taken() {
        let a = [(1, 'a'), (3, 'a'), (4, 'a'), (7, 'a')];
        let b = [(2, 'b'), (3, 'b'), (7, 'b'), (9, 'b')];
        let expected = vec![(1, 'a'), (2, 'b'), (3, 'b'), (4, 'a'), (7, 'b'), (9, 'b')];
        for pattern in [0, u32::MAX, 0b1010, 0b0101, 0b1100, 0b0011, 0b1001_0110] {
            assert_eq!(merged(&a, &b, pattern), expected, "pattern {pattern:b}");
            let swapped: Vec<(u32, char)> = expected
                .iter()
                .map(|&(k, c)| (k, if k == 3 || k == 7 { 'a' } else { c }))
                .collect();
            assert_eq!(merged(&b, &a, pattern), swapped, "pattern {pattern:b}");
        }
        assert!(merged(&[], &[], 0).is_empty());
        assert_eq!(merged(&[(5, 'a')], &[(5, 'b')], 0), vec![(5, 'b')]);
    }

    /// Yields its items, then `None` once, then starts over, as a skip list's iterator does.
    struct Restarting {
        items: Vec<u32>,
        at: usize,
    }

    impl Iterator for Restarting {
        type Item = (u32, char);
        fn next(&mut self) -> Option<(u32, char)> {
            let item = self.items.get(self.at).map(|&k| (k, 'b'));
            self.at = if item.is_some() { self.at + 1 } else { 0 };
            item
        }
    }

    impl DoubleEndedIterator for Restarting {
        fn next_back(&mut self) -> Option<(u32, char)> {
            None
        }
    }

    #[test]
    fn an_input_that_ended_is_not_asked_again() {
        let a = [(1, 'a'), (5, 'a'), (9, 'a')];
        // Ends at once (an empty delta when the scan began), then would start over with what was inserted.
        let b = Restarting {
            items: vec![],
            at: 0,
        };
        let merged: Vec<(u32, char)> =
            Union::new(a.iter().copied(), b, |x, y| x.0.cmp(&y.0)).collect();
        assert_eq!(merged, a);
        let b = Restarting {
            items: vec![3],
            at: 0,
        };
        let mut union = Union::new(a.iter().copied(), b, |x, y| x.0.cmp(&y.0));
        assert_eq!(union.next(), Some((1, 'a')));
        assert_eq!(union.next(), Some((3, 'b')));
        assert_eq!(
            union.next(),
            Some((5, 'a')),
            "b ended: asked again it would say 3"
        );
        assert_eq!(union.next(), Some((9, 'a')));
        assert_eq!(union.next(), None);
    }
}
