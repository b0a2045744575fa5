//! Order-preserving ("memcomparable") encoding of keys: the bytes of two keys compare like the keys.
//!
//! Indexes store encoded keys, so a range over an index is a range over bytes. Composite keys are tuples, encoded
//! field by field; every field's encoding is prefix-free, so `(a, b) < (a, c)` exactly when `b < c`.

/// The encodings of a range's bounds.
pub fn encode_bounds<K: IndexKey>(
    range: &impl std::ops::RangeBounds<K>,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let encode = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(k.to_key_bytes()),
        Bound::Excluded(k) => Bound::Excluded(k.to_key_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (encode(range.start_bound()), encode(range.end_bound()))
}

/// A value usable as an index key.
pub trait IndexKey {
    /// Appends the order-preserving encoding of `self` to `out`.
    fn encode_key(&self, out: &mut Vec<u8>);

    /// The encoding as a fresh vector.
    fn to_key_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_key(&mut out);
        out
    }
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl IndexKey for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, u128);

macro_rules! signed {
    ($($t:ty => $u:ty),*) => {$(
        impl IndexKey for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                // Flip the sign bit: negative numbers sort before positive ones.
                #[allow(clippy::cast_sign_loss)]
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
        }
    )*};
}
signed!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl IndexKey for bool {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

/// Strings and byte strings: each 0x00 is escaped as 0x00 0xFF and the value ends with 0x00 0x00, so the encoding
/// is prefix-free and sorts like the bytes.
fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    // Most keys hold no zero byte: one search (memchr), then one copy.
    if bytes.contains(&0) {
        for &b in bytes {
            out.push(b);
            if b == 0 {
                out.push(0xFF);
            }
        }
    } else {
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&[0, 0]);
}

impl IndexKey for str {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
}

impl IndexKey for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self.as_bytes(), out);
    }
}

impl IndexKey for [u8] {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }
}

impl IndexKey for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        encode_bytes(self, out);
    }
}

impl<T: IndexKey + ?Sized> IndexKey for &T {
    fn encode_key(&self, out: &mut Vec<u8>) {
        (**self).encode_key(out);
    }
}

macro_rules! tuple {
    ($($name:ident),+) => {
        impl<$($name: IndexKey),+> IndexKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_key(out);)+
            }
        }
    };
}
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered<K: IndexKey + Ord + std::fmt::Debug>(mut keys: Vec<K>) {
        keys.sort();
        for pair in keys.windows(2) {
            assert!(
                pair[0].to_key_bytes() <= pair[1].to_key_bytes(),
                "{:?} vs {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn zero_bytes_are_escaped_and_strings_terminated() {
        assert_eq!("".to_key_bytes(), [0, 0]);
        assert_eq!("ab".to_key_bytes(), [b'a', b'b', 0, 0]);
        assert_eq!(
            b"\0a\0\0".as_slice().to_key_bytes(),
            [0, 0xFF, b'a', 0, 0xFF, 0, 0xFF, 0, 0]
        );
        let mut out = vec![7];
        "x".encode_key(&mut out);
        assert_eq!(out, [7, b'x', 0, 0], "appends");
    }

    #[test]
    fn encodings_sort_like_values() {
        ordered(vec![i64::MIN, -5, -1, 0, 1, 7, i64::MAX]);
        ordered(vec![0u32, 1, 255, 256, u32::MAX]);
        ordered(vec![
            String::new(),
            "a".into(),
            "a\0".into(),
            "a\0b".into(),
            "ab".into(),
            "b".into(),
        ]);
        ordered(vec![
            ("a".to_string(), 2i32),
            ("a".into(), 10),
            ("a\0".into(), -1),
            ("b".into(), i32::MIN),
        ]);
    }
}
