//! Consistent Overhead Byte Stuffing, written for our two needs: encoding in
//! place inside one caller-provided buffer, and decoding one byte at a time so
//! that a stream decoder never buffers more than one frame.
//!
//! Hand-written rather than the `cobs` crate (the tests' reference): both are
//! no_std and allocation-free, but that crate cannot encode in place.

/// Worst-case number of bytes COBS adds to `len` bytes of input.
pub(crate) const fn max_overhead(len: usize) -> usize {
    len / 254 + 1
}

/// COBS-encodes `buf[src..src + len]` into `buf[dst..]`, returning the encoded
/// length. Requires `dst + max_overhead(len) <= src` so that the write cursor
/// never overtakes the read cursor, and `buf.len() >= src + len`.
pub(crate) fn encode_in_place(buf: &mut [u8], src: usize, len: usize, dst: usize) -> usize {
    debug_assert!(dst + max_overhead(len) <= src);
    let mut code_pos = dst;
    let mut out = dst + 1;
    let mut code: u8 = 1;
    for i in src..src + len {
        let byte = buf[i];
        if byte == 0 {
            buf[code_pos] = code;
            code_pos = out;
            out += 1;
            code = 1;
        } else {
            buf[out] = byte;
            out += 1;
            code += 1;
            if code == 0xFF {
                buf[code_pos] = code;
                code_pos = out;
                out += 1;
                code = 1;
            }
        }
    }
    buf[code_pos] = code;
    out - dst
}

/// Incremental COBS decoder state for one frame. Bytes are pushed one at a
/// time; the zero delimiter is handled by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unstuffer {
    /// Data bytes still expected in the current block.
    remaining: u8,
    /// Whether the current block ends with an implied zero (code < 0xFF).
    implied_zero: bool,
    /// Whether any block has started in this frame.
    started: bool,
}

/// What a non-zero input byte turns into.
pub(crate) enum Unstuffed {
    /// Nothing to output (the byte was a block code with no pending zero).
    Nothing,
    /// One decoded byte.
    One(u8),
    /// The implied zero of the previous block; the byte started a new block.
    Zero,
}

impl Unstuffer {
    /// A state at the start of a frame.
    pub(crate) const fn new() -> Self {
        Self {
            remaining: 0,
            implied_zero: false,
            started: false,
        }
    }

    /// Pushes one non-zero encoded byte.
    pub(crate) fn push(&mut self, byte: u8) -> Unstuffed {
        debug_assert_ne!(byte, 0);
        if self.remaining > 0 {
            self.remaining -= 1;
            return Unstuffed::One(byte);
        }
        let emit_zero = self.started && self.implied_zero;
        self.started = true;
        self.remaining = byte - 1;
        self.implied_zero = byte != 0xFF;
        if emit_zero {
            Unstuffed::Zero
        } else {
            Unstuffed::Nothing
        }
    }

    /// True when the frame so far ends on a block boundary, i.e. a delimiter
    /// here closes a well-formed frame.
    pub(crate) fn complete(&self) -> bool {
        self.remaining == 0
    }

    /// True if no byte was pushed since the last reset.
    pub(crate) fn is_empty(&self) -> bool {
        !self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) {
        let slack = 1 + max_overhead(data.len());
        let mut buf = [0u8; 2048];
        buf[slack..slack + data.len()].copy_from_slice(data);
        let n = encode_in_place(&mut buf, slack, data.len(), 0);
        assert!(n <= data.len() + max_overhead(data.len()));
        assert!(buf[..n].iter().all(|&b| b != 0), "encoded bytes contain 0");
        let mut un = Unstuffer::default();
        let mut out = [0u8; 2048];
        let mut len = 0;
        for &b in &buf[..n] {
            match un.push(b) {
                Unstuffed::Nothing => {}
                Unstuffed::One(x) => {
                    out[len] = x;
                    len += 1
                }
                Unstuffed::Zero => {
                    out[len] = 0;
                    len += 1
                }
            }
        }
        assert!(un.complete());
        assert_eq!(&out[..len], data);
    }

    #[test]
    fn known_vectors() {
        // Vectors from the COBS paper / Wikipedia.
        let mut buf = [0u8; 16];
        buf[2] = 0;
        let n = encode_in_place(&mut buf, 2, 1, 0);
        assert_eq!(&buf[..n], &[1, 1]);
        let mut buf = [0u8; 16];
        buf[3..7].copy_from_slice(&[0x11, 0x22, 0x00, 0x33]);
        let n = encode_in_place(&mut buf, 3, 4, 0);
        assert_eq!(&buf[..n], &[3, 0x11, 0x22, 2, 0x33]);
    }

    #[test]
    fn block_boundaries() {
        for len in [0usize, 1, 253, 254, 255, 508, 509, 1000] {
            let data: [u8; 1000] = core::array::from_fn(|i| (i % 251) as u8 + 1);
            roundtrip(&data[..len]);
            let zeros = [0u8; 1000];
            roundtrip(&zeros[..len]);
            let mixed: [u8; 1000] = core::array::from_fn(|i| if i % 300 == 7 { 0 } else { 9 });
            roundtrip(&mixed[..len]);
        }
    }
}

/// Differential tests against the `cobs` crate. The encodings differ in two
/// cases, both valid COBS that either decoder reads: an empty input, which
/// we encode as `[1]` and the crate as nothing; and an input whose last block
/// is full (a positive multiple of 254 non-zero bytes after the last zero),
/// after which we write a final `1` code (an empty block) and the crate
/// stops. The tail costs one byte in 254 at most and changing it would
/// change frames' bytes on the wire.
#[cfg(all(test, feature = "std"))]
mod reference {
    use std::vec;
    use std::vec::Vec;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn encode_ours(data: &[u8]) -> Vec<u8> {
        let slack = max_overhead(data.len());
        let mut buf = vec![0u8; slack + data.len()];
        buf[slack..].copy_from_slice(data);
        let n = encode_in_place(&mut buf, slack, data.len(), 0);
        buf.truncate(n);
        buf
    }

    /// `None` unless `encoded` is one well-formed frame without delimiters.
    fn decode_ours(encoded: &[u8]) -> Option<Vec<u8>> {
        let mut un = Unstuffer::new();
        let mut out = Vec::new();
        for &byte in encoded {
            if byte == 0 {
                return None;
            }
            match un.push(byte) {
                Unstuffed::Nothing => {}
                Unstuffed::One(b) => out.push(b),
                Unstuffed::Zero => out.push(0),
            }
        }
        un.complete().then_some(out)
    }

    fn encode_theirs(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; cobs::max_encoding_length(data.len())];
        let n = cobs::encode(data, &mut out);
        out.truncate(n);
        out
    }

    fn decode_theirs(encoded: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; encoded.len()];
        let n = cobs::decode(encoded, &mut out).ok()?;
        out.truncate(n);
        Some(out)
    }

    /// True when the non-zero bytes after the last zero (or all of `data`)
    /// are a positive multiple of 254: the last block is full.
    fn ends_on_full_block(data: &[u8]) -> bool {
        let tail = data.iter().rev().take_while(|&&b| b != 0).count();
        tail > 0 && tail % 254 == 0
    }

    /// Arbitrary bytes, and runs of non-zero bytes around the block length
    /// (254) between zeros, which random bytes seldom hit exactly.
    fn data() -> impl Strategy<Value = Vec<u8>> {
        let run_len = prop_oneof![0..4usize, 250..260usize, 504..512usize];
        prop_oneof![
            vec(any::<u8>(), 0..1100),
            vec((run_len, 1..=255u8, any::<bool>()), 0..4).prop_map(|runs| {
                let mut out = Vec::new();
                for (len, byte, zero_after) in runs {
                    out.extend(core::iter::repeat_n(byte, len));
                    if zero_after {
                        out.push(0);
                    }
                }
                out
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn encodes_as_the_cobs_crate(data in data()) {
            let ours = encode_ours(&data);
            let theirs = encode_theirs(&data);
            if data.is_empty() {
                prop_assert_eq!(ours, vec![1]);
                prop_assert!(theirs.is_empty());
            } else if ends_on_full_block(&data) {
                prop_assert_eq!(ours, [theirs, vec![1]].concat());
            } else {
                prop_assert_eq!(ours, theirs);
            }
        }

        #[test]
        fn each_decodes_the_others_encoding(data in data()) {
            let ours = encode_ours(&data);
            let theirs = encode_theirs(&data);
            prop_assert_eq!(decode_ours(&ours), Some(data.clone()));
            prop_assert_eq!(decode_ours(&theirs), Some(data.clone()));
            prop_assert_eq!(decode_theirs(&ours), Some(data.clone()));
            if !theirs.is_empty() {
                // The crate refuses an empty frame, even its own.
                prop_assert_eq!(decode_theirs(&theirs), Some(data));
            }
        }

        #[test]
        fn decoders_agree_on_any_frame(
            frame in vec(1..=255u8, 1..600),
        ) {
            prop_assert_eq!(decode_ours(&frame), decode_theirs(&frame));
        }
    }
}
