//! Latent codecs: how a vector of `f32` becomes a [`Latent::payload`](crate::Latent::payload).
//!
//! | id | codec        | payload                                   | bytes for dim d | error bound                  |
//! |----|--------------|-------------------------------------------|-----------------|------------------------------|
//! | 1  | `F32`        | d × f32 LE                                | 4d              | exact                        |
//! | 2  | `F16`        | d × IEEE binary16 LE                      | 2d              | relative 2⁻¹¹ (normal range) |
//! | 3  | `U8Affine`   | min f32 LE, scale f32 LE, d × u8          | 8 + d           | absolute scale / 2           |
//!
//! For `U8Affine`, `scale = (max − min) / 255` over the vector and
//! `x ≈ min + q·scale`. Encoders refuse non-finite input instead of sending a
//! vector the host cannot interpret.

use crate::message::byte_enum;
use core::fmt;

byte_enum! {
    /// Latent codec id, sent in [`Hello`](crate::Hello) and every
    /// [`Latent`](crate::Latent).
    pub enum Codec {
        /// 32-bit floats, exact.
        F32 = 1,
        /// 16-bit floats.
        F16 = 2,
        /// 8-bit affine quantisation with a per-vector minimum and scale.
        U8Affine = 3,
    }
}

/// Length of the `U8Affine` header (min and scale, two f32).
const U8_HEADER: usize = 8;

/// Why a latent could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The codec id is not one this crate implements.
    UnknownCodec(u8),
    /// The payload length is not valid for the codec.
    BadPayloadLength {
        /// The codec.
        codec: Codec,
        /// The offending length.
        len: usize,
    },
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes or values needed.
        needed: usize,
    },
    /// The input holds NaN or infinity.
    NonFinite,
    /// A value is outside the codec's range (e.g. |x| > 65504 for `F16`).
    OutOfRange,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::UnknownCodec(id) => write!(f, "unknown latent codec id {id}"),
            CodecError::BadPayloadLength { codec, len } => {
                write!(f, "payload of {len} bytes is not a valid {codec:?} latent")
            }
            CodecError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} needed")
            }
            CodecError::NonFinite => write!(f, "latent holds NaN or infinity"),
            CodecError::OutOfRange => write!(f, "latent value outside the codec's range"),
        }
    }
}

impl core::error::Error for CodecError {}

impl Codec {
    /// Payload bytes for a latent of `dim` values.
    pub fn payload_len(self, dim: usize) -> Result<usize, CodecError> {
        match self {
            Codec::F32 => Ok(4 * dim),
            Codec::F16 => Ok(2 * dim),
            Codec::U8Affine => Ok(U8_HEADER + dim),
            Codec::Unknown(id) => Err(CodecError::UnknownCodec(id)),
        }
    }

    /// Number of latent values in a payload of `len` bytes.
    pub fn dim(self, len: usize) -> Result<usize, CodecError> {
        let bad = CodecError::BadPayloadLength { codec: self, len };
        match self {
            Codec::F32 if len.is_multiple_of(4) => Ok(len / 4),
            Codec::F16 if len.is_multiple_of(2) => Ok(len / 2),
            Codec::U8Affine if len >= U8_HEADER => Ok(len - U8_HEADER),
            Codec::Unknown(id) => Err(CodecError::UnknownCodec(id)),
            _ => Err(bad),
        }
    }

    /// Encodes `latent` into `out`, returning the payload length.
    pub fn encode(self, latent: &[f32], out: &mut [u8]) -> Result<usize, CodecError> {
        let needed = self.payload_len(latent.len())?;
        if out.len() < needed {
            return Err(CodecError::BufferTooSmall { needed });
        }
        if latent.iter().any(|x| !x.is_finite()) {
            return Err(CodecError::NonFinite);
        }
        match self {
            Codec::F32 => {
                for (chunk, x) in out.chunks_exact_mut(4).zip(latent) {
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
            }
            Codec::F16 => {
                for (chunk, x) in out.chunks_exact_mut(2).zip(latent) {
                    let h = half::f16::from_f32(*x);
                    if h.is_infinite() {
                        return Err(CodecError::OutOfRange);
                    }
                    chunk.copy_from_slice(&h.to_bits().to_le_bytes());
                }
            }
            Codec::U8Affine => {
                let (min, max) = latent
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                        (lo.min(x), hi.max(x))
                    });
                let (min, scale) = if latent.is_empty() {
                    (0.0, 0.0)
                } else {
                    (min, (max - min) / 255.0)
                };
                if !scale.is_finite() {
                    return Err(CodecError::OutOfRange);
                }
                out[0..4].copy_from_slice(&min.to_le_bytes());
                out[4..8].copy_from_slice(&scale.to_le_bytes());
                for (q, x) in out[U8_HEADER..needed].iter_mut().zip(latent) {
                    *q = if scale > 0.0 {
                        // `as` saturates, so the clamp to 0..=255 is free.
                        ((x - min) / scale + 0.5) as u8
                    } else {
                        0
                    };
                }
            }
            Codec::Unknown(id) => return Err(CodecError::UnknownCodec(id)),
        }
        Ok(needed)
    }

    /// Decodes `payload` into `out`, returning the latent dimension.
    pub fn decode(self, payload: &[u8], out: &mut [f32]) -> Result<usize, CodecError> {
        let dim = self.dim(payload.len())?;
        if out.len() < dim {
            return Err(CodecError::BufferTooSmall { needed: dim });
        }
        match self {
            Codec::F32 => {
                for (x, chunk) in out.iter_mut().zip(payload.chunks_exact(4)) {
                    *x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                }
            }
            Codec::F16 => {
                for (x, chunk) in out.iter_mut().zip(payload.chunks_exact(2)) {
                    *x = half::f16::from_bits(u16::from_le_bytes([chunk[0], chunk[1]])).to_f32();
                }
            }
            Codec::U8Affine => {
                let min = f32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let scale = f32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
                for (x, &q) in out.iter_mut().zip(&payload[U8_HEADER..]) {
                    *x = min + f32::from(q) * scale;
                }
            }
            Codec::Unknown(id) => return Err(CodecError::UnknownCodec(id)),
        }
        if out[..dim].iter().any(|x| !x.is_finite()) {
            return Err(CodecError::NonFinite);
        }
        Ok(dim)
    }

    /// Encodes `latent` into a new vector.
    #[cfg(feature = "alloc")]
    pub fn encode_to_vec(self, latent: &[f32]) -> Result<alloc::vec::Vec<u8>, CodecError> {
        let mut out = alloc::vec![0u8; self.payload_len(latent.len())?];
        self.encode(latent, &mut out)?;
        Ok(out)
    }

    /// Decodes `payload` into a new vector.
    #[cfg(feature = "alloc")]
    pub fn decode_to_vec(self, payload: &[u8]) -> Result<alloc::vec::Vec<f32>, CodecError> {
        let mut out = alloc::vec![0f32; self.dim(payload.len())?];
        self.decode(payload, &mut out)?;
        Ok(out)
    }
}
