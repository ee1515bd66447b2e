//! CRC32C, the checksum of every header and payload (docs/FORMAT.md).
//!
//! The `crc32c` crate has a fixed cost per call however short the input (it
//! cannot be inlined, and it takes the bytes before and after the aligned
//! middle one at a time), and a write checksums three short things: the
//! tag, the header and, often, a short payload. Inputs of up to
//! [`INLINE_MAX`] bytes therefore go through a loop over the SSE 4.2
//! instruction, 8 bytes at a time; longer ones, or a CPU without SSE 4.2,
//! go to the crate, whose three interleaved streams are faster on long
//! inputs. Both give the same value (a test compares them for every length
//! up to 1100 bytes). The figures are in docs/PERFORMANCE.md ("Short
//! CRC32Cs with the SSE 4.2 instruction").

/// The longest input the inline loop takes: where the crate's interleaved
/// streams start to win (docs/PERFORMANCE.md).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const INLINE_MAX: usize = 512;

/// The CRC32C (Castagnoli) of `data`.
#[inline]
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= INLINE_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: `short_sse42` only needs the CPU to have SSE 4.2, which
        // was just checked.
        return unsafe { short_sse42(data) };
    }
    ::crc32c::crc32c(data)
}

/// CRC32C with the SSE 4.2 `crc32` instruction: 8 bytes a step, then 4, 2
/// and 1 for the rest.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn short_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64};

    let mut rest = data;
    let mut crc = u64::from(u32::MAX);
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(*word));
        rest = tail;
    }
    let mut crc = crc as u32;
    if let Some((word, tail)) = rest.split_first_chunk::<4>() {
        crc = _mm_crc32_u32(crc, u32::from_le_bytes(*word));
        rest = tail;
    }
    if let Some((word, tail)) = rest.split_first_chunk::<2>() {
        crc = _mm_crc32_u16(crc, u16::from_le_bytes(*word));
        rest = tail;
    }
    if let Some(&byte) = rest.first() {
        crc = _mm_crc32_u8(crc, byte);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_crate_for_every_length_and_alignment() {
        let bytes: Vec<u8> = (0..1200u32).map(|i| (i * 131 + 7) as u8).collect();
        // Under Miri, past the inline loop's 8-byte steps is enough. (Miri
        // reports no SSE 4.2 unless asked: `RUSTFLAGS="-C
        // target-feature=+sse4.2" cargo +nightly miri test --lib checksum`
        // runs the inline loop.)
        let longest = if cfg!(miri) { 40 } else { 1100 };
        for start in 0..8 {
            for len in 0..=longest {
                let data = &bytes[start..start + len];
                assert_eq!(
                    crc32c(data),
                    ::crc32c::crc32c(data),
                    "{len} bytes at {start}"
                );
            }
        }
    }

    #[test]
    fn known_values() {
        // The check value of CRC-32C (RFC 3720, B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[]), 0);
    }
}
