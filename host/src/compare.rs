//! `latentcam-host compare`: do two recordings of the same frames hold the
//! same latents? The cross-build smoke run compares an ARM edge's recording
//! with an x86 edge's; a user compares two devices, two precisions or two
//! firmware versions the same way.

use std::collections::HashMap;

use latentcam_model::encoder::cosine;

use crate::heads::HeadError;
use crate::heads::imagenet::ImagenetHead;

/// How two recordings compare, latent by latent (matched by device and
/// sequence number).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Latents in both.
    pub matched: usize,
    /// Latents only in the first / only in the second.
    pub only_first: usize,
    /// See `only_first`.
    pub only_second: usize,
    /// Lowest cosine similarity over matched latents (1 for none).
    pub min_cosine: f64,
    /// Mean cosine similarity.
    pub mean_cosine: f64,
    /// Matched latents whose ImageNet top-1 class agrees.
    pub top1_agree: usize,
}

/// Compares latents by `(device, seq)`; the ImageNet head, if given,
/// checks that the latents also answer the same.
pub fn compare(
    first: &HashMap<(String, u64), Vec<f32>>,
    second: &HashMap<(String, u64), Vec<f32>>,
    imagenet: Option<&ImagenetHead>,
) -> Result<Comparison, HeadError> {
    let mut c = Comparison {
        min_cosine: 1.0,
        ..Comparison::default()
    };
    let mut sum = 0.0;
    for (key, a) in first {
        let Some(b) = second.get(key) else {
            c.only_first += 1;
            continue;
        };
        let s = cosine(a, b);
        c.matched += 1;
        sum += s;
        c.min_cosine = c.min_cosine.min(s);
        if let Some(head) = imagenet
            && head.predict(a, 1)?[0].class == head.predict(b, 1)?[0].class
        {
            c.top1_agree += 1;
        }
    }
    c.only_second = second.keys().filter(|k| !first.contains_key(*k)).count();
    c.mean_cosine = if c.matched == 0 {
        f64::NAN
    } else {
        sum / c.matched as f64
    };
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_by_device_and_seq() {
        let key = |d: &str, s| (d.to_owned(), s);
        let first = HashMap::from([
            (key("a", 0), vec![1.0, 0.0]),
            (key("a", 1), vec![0.0, 1.0]),
            (key("b", 0), vec![1.0, 1.0]),
        ]);
        let second = HashMap::from([
            (key("a", 0), vec![1.0, 0.0]),
            (key("a", 1), vec![1.0, 1.0]),
            (key("c", 0), vec![1.0, 1.0]),
        ]);
        let c = compare(&first, &second, None).unwrap();
        assert_eq!((c.matched, c.only_first, c.only_second), (2, 1, 1));
        assert!((c.min_cosine - 0.5f64.sqrt()).abs() < 1e-9);
        assert!((c.mean_cosine - (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-9);
    }
}
