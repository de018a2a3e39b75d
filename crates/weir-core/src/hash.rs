//! The hash weir owns, for everything that partitions by key: which worker holds a key's state,
//! and which partition of a stream a keyed result goes to. State is checkpointed per worker and
//! restored by worker index, so the hash must not change when the compiler does (std's
//! `DefaultHasher` may), nor between machines (values are written in a fixed byte order). The
//! tests below pin its values.

use crate::value::Value;

const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 32-bit FNV-1a, the hash of the NATS server's `partition()` subject mapping.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a over the bytes written to it.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(FNV64_OFFSET)
    }
}

impl KeyHasher {
    /// Adds `bytes` to the hash.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(FNV64_PRIME);
        }
    }

    /// A value, tagged by kind. An integral float hashes as the integer it equals, since the two
    /// compare equal and must meet the same state.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.write(&[0]),
            Value::Bool(b) => self.write(&[1, u8::from(*b)]),
            Value::Int(i) => self.int(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => self.int(*f as i64),
            Value::Float(f) => {
                self.write(&[3]);
                self.write(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                self.write(&[4]);
                self.write(&(s.len() as u64).to_le_bytes());
                self.write(s.as_bytes());
            }
            Value::Array(a) => {
                self.write(&[5]);
                self.write(&(a.len() as u64).to_le_bytes());
                a.iter().for_each(|x| self.value(x));
            }
            Value::Object(o) => {
                self.write(&[6]);
                self.write(&(o.len() as u64).to_le_bytes());
                for (k, x) in o.iter() {
                    self.write(&(k.len() as u64).to_le_bytes());
                    self.write(k.as_bytes());
                    self.value(x);
                }
            }
        }
    }

    fn int(&mut self, i: i64) {
        self.write(&[2]);
        self.write(&i.to_le_bytes());
    }

    /// The hash, with its bits mixed (FNV's low bits alone spread small keys poorly).
    pub fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// The hash of a key (the values of a rule's key expressions).
pub fn key_hash<'a>(values: impl IntoIterator<Item = &'a Value>) -> u64 {
    let mut h = KeyHasher::default();
    values.into_iter().for_each(|v| h.value(v));
    h.finish()
}

/// Which of `n` partitions a key belongs to.
pub fn partition_of<'a>(values: impl IntoIterator<Item = &'a Value>, n: usize) -> usize {
    (key_hash(values) % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These values are what checkpoints were partitioned by: if this test fails, restored state
    /// would land on other workers. Change the hash only with a new checkpoint format.
    #[test]
    fn key_hashes_are_pinned() {
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c, "FNV-1a 32 of 'a'");
        assert_eq!(key_hash(&[Value::Int(1)]), 0x8f96_f0d6_b617_55b0);
        assert_eq!(key_hash(&[Value::str("sensor-7")]), 0xd089_d69d_acfc_5195);
        assert_eq!(
            key_hash(&[Value::str("a"), Value::Null, Value::Bool(true)]),
            0x7dea_72de_990d_a9fd
        );
        assert_eq!(key_hash(&[Value::Float(2.5)]), 0xc23b_9690_0432_4032);
        let partitions: Vec<usize> = (0..8).map(|i| partition_of(&[Value::Int(i)], 3)).collect();
        assert_eq!(partitions, vec![1, 1, 1, 0, 1, 0, 0, 2]);
    }

    #[test]
    fn equal_values_hash_alike() {
        assert_eq!(key_hash(&[Value::Int(3)]), key_hash(&[Value::Float(3.0)]));
        assert_ne!(key_hash(&[Value::Int(3)]), key_hash(&[Value::str("3")]));
        assert_ne!(
            key_hash(&[Value::str("ab"), Value::str("c")]),
            key_hash(&[Value::str("a"), Value::str("bc")])
        );
    }
}
