//! Placement of mailboxes on the partitions of the assignment topic, as
//! the Java client's default partitioner places a record keyed by the
//! mailbox name: `murmur2(key) & 0x7fffffff` modulo the partition count.

/// Seed of Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
const SEED: u32 = 0x9747_b28c;
const MULTIPLIER: u32 = 0x5bd1_e995;
const SHIFT: u32 = 24;

/// Returns the partition of `mailbox` among `partitions` partitions.
///
/// # Panics
///
/// When `partitions` is 0.
pub fn partition_of(mailbox: &str, partitions: u32) -> u32 {
    let positive = (murmur2(mailbox.as_bytes()) as u32) & 0x7fff_ffff;

    positive % partitions
}

/// Kafka's variant of MurmurHash2, 32 bits, as a signed value like the
/// Java original returns.
fn murmur2(data: &[u8]) -> i32 {
    let mut hash = SEED ^ data.len() as u32;

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(MULTIPLIER);
        k ^= k >> SHIFT;
        k = k.wrapping_mul(MULTIPLIER);
        hash = hash.wrapping_mul(MULTIPLIER);
        hash ^= k;
    }

    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (index, byte) in rest.iter().enumerate().rev() {
            hash ^= u32::from(*byte) << (8 * index);
        }
        hash = hash.wrapping_mul(MULTIPLIER);
    }

    hash ^= hash >> 13;
    hash = hash.wrapping_mul(MULTIPLIER);
    hash ^= hash >> 15;
    hash as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signed values of the Java client's `Utils.murmur2` for these keys,
    /// with key lengths of every remainder modulo 4.
    const KAFKA_VECTORS: [(&str, i32); 11] = [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
        ("", 275646681),
        ("string-f-24-chars-length", 124730809),
        ("string-fo-25-chars-length", 1269511650),
        ("string-foo-26-chars-length", 119165628),
        ("string-last-27-chars-length", 1089971754),
    ];

    #[test]
    fn murmur2_matches_kafka_vectors() {
        for (key, expected) in KAFKA_VECTORS {
            assert_eq!(murmur2(key.as_bytes()), expected, "murmur2({key:?})");
        }
    }

    #[test]
    fn partition_clears_sign_bit_before_modulo() {
        // -973932308 & 0x7fffffff = 1173551340.
        assert_eq!(partition_of("21", 60), 1173551340 % 60);
        assert_eq!(partition_of("abc", 7), 479470107 % 7);
    }

    #[test]
    fn partition_of_single_partition_is_zero() {
        for (key, _) in KAFKA_VECTORS {
            assert_eq!(partition_of(key, 1), 0, "{key}");
        }
    }

    #[test]
    fn partition_uses_utf8_bytes() {
        let name = "Entwürfe";
        let expected = (murmur2(name.as_bytes()) as u32 & 0x7fff_ffff) % 13;

        assert_eq!(name.len(), 9);
        assert_eq!(partition_of(name, 13), expected);
    }

    #[test]
    fn empty_name_has_a_partition() {
        assert!(partition_of("", 60) < 60);
    }
}
