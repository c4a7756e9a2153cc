//! Linear heads on latents: `logits = W · latent + b`, loaded from the
//! `LCHEAD01` format (models/README.md) and fitted on stored latents.
//!
//! Format (little-endian): `b"LCHEAD01"`, `in_dim: u32`, `out_dim: u32`,
//! `weight: f32[out_dim][in_dim]`, `bias: f32[out_dim]`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LCHEAD01";
const HEADER_LEN: usize = 16;
/// Refuse absurd dimensions from a damaged or hostile file before allocating.
const MAX_DIM: u32 = 1 << 16;

/// Errors loading, saving or fitting a head.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a head.
    #[error("{path} is not a latentcam head file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A line of a labels file (the CSV that `train` reads) that is not a
    /// labelled latent.
    #[error(
        "labels file {path}, line {line}: {reason}; write one `device,seq,label` or \
         `seq,label` per line (a `seq,label` header and `#` comments may appear)"
    )]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// The line, counting from 1.
        line: usize,
        /// What is wrong with it, quoting it.
        reason: String,
    },
    /// One of the host's own state files (few-shot store, similarity
    /// index) is damaged: a checksum or a structural check failed
    /// somewhere other than a torn final write. The host moves such a file
    /// aside and starts afresh (see [`super::state_file`]).
    #[error(
        "{path} is damaged: {reason}; move it aside to start afresh (`serve` does so by itself)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong, and at which byte.
        reason: String,
    },
    /// A latent of the wrong dimension.
    #[error("latent has {got} values, the head expects {expected}")]
    Dimension {
        /// Expected.
        expected: usize,
        /// Given.
        got: usize,
    },
    /// Training data is unusable.
    #[error("cannot fit a head: {0}")]
    Training(String),
    /// The recording holding the latents could not be read.
    #[error(transparent)]
    Recording(#[from] crate::recording::RecordingError),
    /// An input or setting a head cannot use: a latent with non-finite
    /// values or no direction (all zeros), a reserved or over-long name, an
    /// option out of range. The message says which and why.
    #[error("{0}")]
    Invalid(String),
}

/// A linear classifier head.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    in_dim: usize,
    out_dim: usize,
    /// Row-major `[out_dim][in_dim]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl LinearHead {
    /// A head from its parts; `weight` is row-major `[out_dim][in_dim]`.
    pub fn new(in_dim: usize, out_dim: usize, weight: Vec<f32>, bias: Vec<f32>) -> Self {
        assert_eq!(weight.len(), in_dim * out_dim);
        assert_eq!(bias.len(), out_dim);
        Self {
            in_dim,
            out_dim,
            weight,
            bias,
        }
    }

    /// Loads a head file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, HeadError> {
        let path = path.as_ref();
        let io_err = |source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let format_err = |reason: String| HeadError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header).map_err(|_| {
            format_err(format!(
                "shorter than its {HEADER_LEN}-byte header ({file_len} bytes)"
            ))
        })?;
        if &header[..8] != MAGIC {
            return Err(format_err("wrong magic (expected LCHEAD01)".into()));
        }
        let in_dim = u32::from_le_bytes(header[8..12].try_into().unwrap());
        let out_dim = u32::from_le_bytes(header[12..16].try_into().unwrap());
        if in_dim == 0 || out_dim == 0 || in_dim > MAX_DIM || out_dim > MAX_DIM {
            return Err(format_err(format!("implausible shape {out_dim}x{in_dim}")));
        }
        // The header is checked against the file's length before anything
        // is allocated: a damaged or hostile 16-byte file may claim a
        // 65536x65536 head (16 GiB).
        let expected = 4 * (u64::from(in_dim) * u64::from(out_dim) + u64::from(out_dim));
        let body_len = file_len.saturating_sub(HEADER_LEN as u64);
        if body_len != expected {
            return Err(format_err(format!(
                "its header says {out_dim}x{in_dim}, which needs {expected} bytes after the \
                 header, but the file has {body_len}; the file is truncated or damaged, or \
                 not a head"
            )));
        }
        let (in_dim, out_dim) = (in_dim as usize, out_dim as usize);
        let mut body = vec![0u8; expected as usize];
        file.read_exact(&mut body).map_err(io_err)?;
        let values: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(format_err("holds NaN or infinite weights".into()));
        }
        let bias = values[in_dim * out_dim..].to_vec();
        let mut weight = values;
        weight.truncate(in_dim * out_dim);
        Ok(Self::new(in_dim, out_dim, weight, bias))
    }

    /// Writes the head in the `LCHEAD01` format.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), HeadError> {
        let path = path.as_ref();
        let io_err = |source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = io::BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
        out.write_all(MAGIC).map_err(io_err)?;
        out.write_all(&(self.in_dim as u32).to_le_bytes())
            .map_err(io_err)?;
        out.write_all(&(self.out_dim as u32).to_le_bytes())
            .map_err(io_err)?;
        for v in self.weight.iter().chain(&self.bias) {
            out.write_all(&v.to_le_bytes()).map_err(io_err)?;
        }
        out.flush().map_err(io_err)
    }

    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Number of outputs (classes).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Logits for one latent.
    pub fn logits(&self, latent: &[f32], out: &mut [f32]) -> Result<(), HeadError> {
        if latent.len() != self.in_dim {
            return Err(HeadError::Dimension {
                expected: self.in_dim,
                got: latent.len(),
            });
        }
        for ((o, row), b) in out
            .iter_mut()
            .zip(self.weight.chunks_exact(self.in_dim))
            .zip(&self.bias)
        {
            *o = b + dot(row, latent);
        }
        Ok(())
    }

    /// Logits for several latents at once: `out` holds `out_dim` logits
    /// per latent, latent after latent. The weights (5 MB for the ImageNet
    /// head, more than a core's cache) are streamed once per batch instead
    /// of once per latent. Each logit is bit-identical to [`Self::logits`].
    pub fn logits_batch(&self, latents: &[&[f32]], out: &mut [f32]) -> Result<(), HeadError> {
        if let Some(bad) = latents.iter().find(|l| l.len() != self.in_dim) {
            return Err(HeadError::Dimension {
                expected: self.in_dim,
                got: bad.len(),
            });
        }
        assert_eq!(out.len(), latents.len() * self.out_dim, "output size");
        for (o, (row, b)) in self
            .weight
            .chunks_exact(self.in_dim)
            .zip(&self.bias)
            .enumerate()
        {
            let mut first = 0;
            for group in latents.chunks(4) {
                let sums = dot4(row, group);
                for (i, sum) in sums.iter().take(group.len()).enumerate() {
                    out[(first + i) * self.out_dim + o] = b + sum;
                }
                first += group.len();
            }
        }
        Ok(())
    }

    /// Softmax probabilities for one latent.
    pub fn probabilities(&self, latent: &[f32]) -> Result<Vec<f32>, HeadError> {
        let mut out = vec![0f32; self.out_dim];
        self.logits(latent, &mut out)?;
        softmax_in_place(&mut out);
        Ok(out)
    }

    /// The `k` most probable classes, best first, with probabilities.
    pub fn top_k(&self, latent: &[f32], k: usize) -> Result<Vec<(usize, f32)>, HeadError> {
        let p = self.probabilities(latent)?;
        Ok(top_k(&p, k))
    }
}

/// Dot product with four independent accumulators, which lets the compiler
/// vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// [`dot`] of one row with up to four vectors, sharing each load of the
/// row; every result is bit-identical to `dot(row, v)` (same lanes, same
/// order of additions).
fn dot4(row: &[f32], vs: &[&[f32]]) -> [f32; 4] {
    let mut out = [0f32; 4];
    let &[a, b, c, d] = vs else {
        // Ragged tail of a batch: one at a time.
        for (o, x) in out.iter_mut().zip(vs) {
            *o = dot(row, x);
        }
        return out;
    };
    let v = [a, b, c, d];
    let mut acc = [[0f32; 8]; 4];
    let chunks = row.len() / 8;
    for i in 0..chunks {
        let r = &row[i * 8..i * 8 + 8];
        for (a, x) in acc.iter_mut().zip(&v) {
            let x = &x[i * 8..i * 8 + 8];
            for j in 0..8 {
                a[j] += r[j] * x[j];
            }
        }
    }
    for ((o, a), x) in out.iter_mut().zip(&acc).zip(&v) {
        let mut sum: f32 = a.iter().sum();
        for i in chunks * 8..row.len() {
            sum += row[i] * x[i];
        }
        *o = sum;
    }
    out
}

/// Numerically stable softmax.
pub fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// Indices and values of the `k` largest entries, largest first.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut indexed: Vec<(usize, f32)> = values.iter().cloned().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1));
    indexed.truncate(k);
    indexed
}

/// Options for [`fit_softmax`].
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Full-batch Adam steps.
    pub epochs: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// L2 penalty on the weights.
    pub l2: f32,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            epochs: 300,
            learning_rate: 0.01,
            l2: 1e-4,
        }
    }
}

/// Fits a multinomial logistic-regression head on latents (rows of
/// `features`, each `dim` long) with full-batch Adam. Features are
/// standardised internally and the scaling folded into the returned head, so
/// it applies to raw latents.
pub fn fit_softmax(
    features: &[f32],
    dim: usize,
    labels: &[usize],
    classes: usize,
    options: &FitOptions,
) -> Result<LinearHead, HeadError> {
    fit_softmax_with(features, dim, labels, classes, options, &mut |_| {})
}

/// [`fit_softmax`], calling `step_done` with the number of each step
/// (1 to `options.epochs`) when it is done: a full-batch step over many
/// latents takes long enough to show progress.
pub fn fit_softmax_with(
    features: &[f32],
    dim: usize,
    labels: &[usize],
    classes: usize,
    options: &FitOptions,
    step_done: &mut dyn FnMut(usize),
) -> Result<LinearHead, HeadError> {
    let n = labels.len();
    if n == 0 || dim == 0 || features.len() != n * dim {
        return Err(HeadError::Training(format!(
            "{} feature values for {n} labels of dimension {dim}",
            features.len()
        )));
    }
    if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(HeadError::Training(format!(
            "label {bad} out of range for {classes} classes"
        )));
    }
    // Standardise each feature.
    let mut mean = vec![0f32; dim];
    let mut inv_std = vec![0f32; dim];
    for row in features.chunks_exact(dim) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / n as f32;
        }
    }
    for row in features.chunks_exact(dim) {
        for ((s, x), m) in inv_std.iter_mut().zip(row).zip(&mean) {
            *s += (x - m) * (x - m) / n as f32;
        }
    }
    for s in inv_std.iter_mut() {
        *s = 1.0 / (s.sqrt() + 1e-6);
    }
    let x: Vec<f32> = features
        .chunks_exact(dim)
        .flat_map(|row| {
            row.iter()
                .zip(&mean)
                .zip(&inv_std)
                .map(|((v, m), s)| (v - m) * s)
                .collect::<Vec<_>>()
        })
        .collect();

    let params = classes * dim + classes;
    let mut w = vec![0f32; params];
    let (mut m1, mut m2) = (vec![0f32; params], vec![0f32; params]);
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut grad = vec![0f32; params];
    let mut logits = vec![0f32; classes];
    for step in 1..=options.epochs {
        grad.iter_mut().for_each(|g| *g = 0.0);
        for (row, &label) in x.chunks_exact(dim).zip(labels) {
            for (c, l) in logits.iter_mut().enumerate() {
                *l = w[classes * dim + c] + dot(&w[c * dim..(c + 1) * dim], row);
            }
            softmax_in_place(&mut logits);
            logits[label] -= 1.0;
            for (c, &err) in logits.iter().enumerate() {
                let e = err / n as f32;
                for (g, v) in grad[c * dim..(c + 1) * dim].iter_mut().zip(row) {
                    *g += e * v;
                }
                grad[classes * dim + c] += e;
            }
        }
        for (g, wi) in grad[..classes * dim].iter_mut().zip(&w) {
            *g += options.l2 * wi;
        }
        let (b1t, b2t) = (1.0 - beta1.powi(step as i32), 1.0 - beta2.powi(step as i32));
        for i in 0..params {
            m1[i] = beta1 * m1[i] + (1.0 - beta1) * grad[i];
            m2[i] = beta2 * m2[i] + (1.0 - beta2) * grad[i] * grad[i];
            w[i] -= options.learning_rate * (m1[i] / b1t) / ((m2[i] / b2t).sqrt() + eps);
        }
        step_done(step);
    }
    // Fold the standardisation into the weights: w·((x−m)·s) = (w·s)·x − w·(m·s).
    let mut weight = vec![0f32; classes * dim];
    let mut bias = w[classes * dim..].to_vec();
    for c in 0..classes {
        for j in 0..dim {
            let scaled = w[c * dim + j] * inv_std[j];
            weight[c * dim + j] = scaled;
            bias[c] -= scaled * mean[j];
        }
    }
    Ok(LinearHead::new(dim, classes, weight, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("lchead-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let head = LinearHead::new(3, 2, vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0], vec![0.1, -0.2]);
        let path = dir.join("h.bin");
        head.save(&path).unwrap();
        assert_eq!(LinearHead::load(&path).unwrap(), head);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            LinearHead::load(&path),
            Err(HeadError::Format { .. })
        ));
        bytes[0] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            LinearHead::load(&path)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        // A header claiming a 65536x65536 head (16 GiB) in a 16-byte file
        // is refused from the file's length, before anything is allocated.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&65536u32.to_le_bytes());
        huge.extend_from_slice(&65536u32.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        let err = LinearHead::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("65536x65536") && err.contains("file has 0"),
            "{err}"
        );
        // A body longer than the header says is refused too.
        let mut long = std::fs::read(&path).unwrap();
        long.truncate(8);
        long.extend_from_slice(&3u32.to_le_bytes());
        long.extend_from_slice(&2u32.to_le_bytes());
        long.extend_from_slice(&[0u8; 4 * 8 + 4]);
        std::fs::write(&path, &long).unwrap();
        let err = LinearHead::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("needs 32 bytes") && err.contains("has 36"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn batched_logits_are_bit_identical_to_single_ones() {
        // A deterministic pseudo-random head and batch (xorshift).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let (in_dim, out_dim) = (37, 11); // not multiples of 8 or 4
        let weight = (0..in_dim * out_dim).map(|_| next()).collect();
        let bias = (0..out_dim).map(|_| next()).collect();
        let head = LinearHead::new(in_dim, out_dim, weight, bias);
        for n in 1..=9 {
            let latents: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..in_dim).map(|_| next()).collect())
                .collect();
            let refs: Vec<&[f32]> = latents.iter().map(Vec::as_slice).collect();
            let mut batch = vec![0f32; n * out_dim];
            head.logits_batch(&refs, &mut batch).unwrap();
            for (latent, got) in latents.iter().zip(batch.chunks_exact(out_dim)) {
                let mut single = vec![0f32; out_dim];
                head.logits(latent, &mut single).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(&single), "batch of {n}");
            }
        }
        let short = [0f32; 3];
        assert!(matches!(
            head.logits_batch(&[&short], &mut [0f32; 11]),
            Err(HeadError::Dimension { got: 3, .. })
        ));
    }

    #[test]
    fn logits_and_top_k() {
        let head = LinearHead::new(
            2,
            3,
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            vec![0.0, 0.0, -5.0],
        );
        let top = head.top_k(&[2.0, 1.0], 2).unwrap();
        assert_eq!(top[0].0, 0);
        assert_eq!(top[1].0, 1);
        assert!(top[0].1 > top[1].1);
        assert!(head.top_k(&[1.0], 1).is_err());
    }

    #[test]
    fn fit_separates_gaussian_blobs() {
        // Three classes in 4-D, centred at distinct corners.
        let mut state = 12345u64;
        let mut noise = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let centres = [
            [3.0, 0.0, 0.0, 1.0],
            [0.0, 3.0, 0.0, 1.0],
            [0.0, 0.0, 3.0, 1.0],
        ];
        let (mut features, mut labels) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let c = i % 3;
            features.extend(centres[c].iter().map(|v| v + noise()));
            labels.push(c);
        }
        let head = fit_softmax(&features, 4, &labels, 3, &FitOptions::default()).unwrap();
        let correct = features
            .chunks_exact(4)
            .zip(&labels)
            .filter(|(x, l)| head.top_k(x, 1).unwrap()[0].0 == **l)
            .count();
        assert_eq!(correct, 300);
    }
}
