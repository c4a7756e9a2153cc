//! Few-shot classification: name a thing from a handful of examples.
//!
//! A [`FewShotStore`] holds, for each label, the L2-normalised latents of
//! the frames enrolled under it (`latentcam-host enroll --label mug a.jpg
//! b.jpg` adds to it). A [`FewShotHead`] labels each latent by cosine
//! similarity to the store, either to each label's prototype (the
//! renormalised mean of its examples) or by a vote of the `k` nearest
//! examples ([`Method`]). Below [`FewShotOptions::threshold`] the answer is
//! [`UNKNOWN`].
//!
//! # Choosing the threshold
//!
//! On the shipped EfficientNet-Lite0 encoder (raw latents, no centring),
//! crops and mirror images of the photo a prototype was enrolled from score
//! about 0.78–0.96 against it, another photo of the same kind of object
//! (two different jeeps) about 0.55, and unrelated photos 0.1–0.35. The
//! default [`DEFAULT_THRESHOLD`] of 0.5 therefore accepts "the same kind of
//! thing" and rejects the rest; raise it towards 0.75 to accept only the
//! enrolled objects themselves. The nearest-example similarity of k-NN runs
//! a little higher than the prototype similarity for the same query.
//!
//! # File format
//!
//! Little-endian, written whole to a temporary file, synced and renamed
//! over the old one (and the directory synced), so an interrupted save
//! leaves the previous set intact and a store file has no torn tail:
//!
//! ```text
//! magic    b"LCFEWS02"
//! dim      u32              latent dimension
//! labels   u32              number of labels, then for each, sorted by name:
//!   name_len u32 (1..=256)  name: UTF-8 bytes
//!   count    u32 (>= 1)     examples: f32[count][dim], each L2-normalised
//! crc      u32              CRC-32C of every byte before it
//! ```
//!
//! `LCFEWS01` files (the same without `crc`) are still read; the next save
//! writes `LCFEWS02`. A file that fails its checksum or a structural check
//! is [`HeadError::Damaged`]; `serve` moves it aside and starts with an
//! empty store ([`FewShotStore::load_or_quarantine`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::linear::HeadError;
use super::search::{dot_wide as dot, normalize_in_place, unit_vector};
use super::state_file;
use super::{Head, LatentRef};

const MAGIC: &[u8; 8] = b"LCFEWS02";
/// The first format, without a checksum; still read.
const MAGIC_V1: &[u8; 8] = b"LCFEWS01";
/// Refuses absurd sizes from a damaged file before allocating.
const MAX_DIM: usize = 1 << 16;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// The label reported below the threshold; it cannot be enrolled.
pub const UNKNOWN: &str = "unknown";
/// Default similarity below which a latent is [`UNKNOWN`] (see the module
/// documentation for how it was chosen).
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// Most examples a store holds, all labels together (51 MB of latents at
/// 1280 dimensions, and a classification scans them all). Enrolment beyond
/// it is refused with a message saying so; the file cannot grow further.
pub const MAX_EXAMPLES: usize = 10_000;

/// Enrolled examples: label → L2-normalised latents.
#[derive(Debug, Clone, PartialEq)]
pub struct FewShotStore {
    dim: usize,
    /// Each label's examples, concatenated (`count × dim`).
    labels: BTreeMap<String, Vec<f32>>,
}

impl FewShotStore {
    /// An empty store for latents of `dim` values.
    pub fn new(dim: usize) -> Result<Self, HeadError> {
        if dim == 0 || dim > MAX_DIM {
            return Err(HeadError::Invalid(format!(
                "few-shot dimension {dim} is not in 1..={MAX_DIM}"
            )));
        }
        Ok(Self {
            dim,
            labels: BTreeMap::new(),
        })
    }

    /// Loads a store file, checking that it holds `dim`-value latents. A
    /// file that fails its checksum or a structural check is
    /// [`HeadError::Damaged`]; one of another kind or another model's
    /// dimension is [`HeadError::Format`].
    pub fn load(path: impl AsRef<Path>, dim: usize) -> Result<Self, HeadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Self::from_file_bytes(&bytes).map_err(|e| match e {
            Unreadable::Foreign(reason) => HeadError::Format {
                path: path.to_path_buf(),
                reason,
            },
            Unreadable::Damaged(reason) => HeadError::Damaged {
                path: path.to_path_buf(),
                reason,
            },
        })?;
        if store.dim != dim {
            return Err(HeadError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "holds {}-dimensional latents but the model gives {dim}; enrol into a new \
                     file for this model",
                    store.dim
                ),
            });
        }
        Ok(store)
    }

    /// Loads `path` if it exists, or returns an empty store for `dim`-value
    /// latents if it does not (the first `enroll`).
    pub fn load_or_default(path: impl AsRef<Path>, dim: usize) -> Result<Self, HeadError> {
        let path = path.as_ref();
        match Self::load(path, dim) {
            Err(HeadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Self::new(dim)
            }
            other => other,
        }
    }

    /// As [`load_or_default`](Self::load_or_default), for the host's own
    /// store (`serve`): a damaged file does not stop the host. It is renamed
    /// aside to `<name>.damaged-<unix seconds>`, an ERROR says what was
    /// wrong and where the file went, and the store starts empty. Returns
    /// the store and, when one was moved, where the damaged file is now.
    /// A store for another model (another dimension) is still an error:
    /// it is not damaged, it is the wrong file.
    pub fn load_or_quarantine(
        path: impl AsRef<Path>,
        dim: usize,
    ) -> Result<(Self, Option<PathBuf>), HeadError> {
        let path = path.as_ref();
        state_file::open_or_quarantine(
            path,
            "few-shot store",
            "starting with an empty store (enrol again, or inspect the moved file)",
            || Self::load_or_default(path, dim),
            || Self::new(dim),
        )
    }

    /// Writes the store (see the module documentation for the format),
    /// replacing `path` only once the new file is complete and on disk.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), HeadError> {
        let path = path.as_ref();
        state_file::replace_durably(path, &self.to_bytes()).map_err(|source| HeadError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Adds one example under `label`, normalising it; returns how many
    /// examples the label now has.
    pub fn add(&mut self, label: &str, latent: &[f32]) -> Result<usize, HeadError> {
        check_label(label)?;
        if latent.len() != self.dim {
            return Err(HeadError::Dimension {
                expected: self.dim,
                got: latent.len(),
            });
        }
        let held: usize = self.labels.values().map(|v| v.len() / self.dim).sum();
        if held >= MAX_EXAMPLES {
            return Err(HeadError::Invalid(format!(
                "the few-shot store holds {held} examples, its limit ({MAX_EXAMPLES}); enrol \
                 into a new store file, or fewer examples per label"
            )));
        }
        let unit = unit_vector(latent)?;
        let examples = self.labels.entry(label.to_owned()).or_default();
        examples.extend_from_slice(&unit);
        Ok(examples.len() / self.dim)
    }

    /// Removes a label and its examples; returns whether it was enrolled.
    pub fn remove(&mut self, label: &str) -> bool {
        self.labels.remove(label).is_some()
    }

    /// Latent dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether nothing is enrolled.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Labels with their number of examples, sorted by label.
    pub fn labels(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.labels
            .iter()
            .map(|(label, examples)| (label.as_str(), examples.len() / self.dim))
    }

    /// The normalised examples of `label`, one slice each.
    pub fn examples(&self, label: &str) -> impl Iterator<Item = &[f32]> + '_ {
        self.labels
            .get(label)
            .map(|e| e.as_slice())
            .unwrap_or_default()
            .chunks_exact(self.dim)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let values: usize = self.labels.values().map(Vec::len).sum();
        let mut out = Vec::with_capacity(16 + 8 * self.labels.len() + 4 * values);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u32).to_le_bytes());
        out.extend_from_slice(&(self.labels.len() as u32).to_le_bytes());
        for (label, examples) in &self.labels {
            out.extend_from_slice(&(label.len() as u32).to_le_bytes());
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(&((examples.len() / self.dim) as u32).to_le_bytes());
            for v in examples {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let crc = state_file::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A store from a whole file's bytes, checking its checksum (v2).
    fn from_file_bytes(bytes: &[u8]) -> Result<Self, Unreadable> {
        let magic = bytes.get(..8).unwrap_or(bytes);
        let body = if magic == MAGIC_V1 {
            bytes
        } else if magic == MAGIC {
            if bytes.len() < 12 {
                return Err(Unreadable::Damaged(format!(
                    "{} bytes, shorter than a header and checksum",
                    bytes.len()
                )));
            }
            let (body, crc) = bytes.split_at(bytes.len() - 4);
            let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
            let computed = state_file::crc32c(body);
            if stored != computed {
                return Err(Unreadable::Damaged(format!(
                    "checksum mismatch over its {} bytes (CRC-32C {computed:08x}, stored \
                     {stored:08x}): the file was changed or damaged after it was saved",
                    bytes.len()
                )));
            }
            body
        } else if let Some((family, kind)) = state_file::latentcam_kind(magic) {
            return Err(Unreadable::Foreign(if family == "LCFEWS" {
                format!(
                    "format {} is newer than this build reads (LCFEWS01, LCFEWS02); use the \
                     latentcam that wrote it",
                    String::from_utf8_lossy(magic)
                )
            } else {
                format!("this is {kind}, not a few-shot enrolment store")
            }));
        } else {
            return Err(Unreadable::Damaged(format!(
                "wrong magic {:?} (expected LCFEWS02)",
                String::from_utf8_lossy(magic)
            )));
        };
        Self::parse(body).map_err(Unreadable::Damaged)
    }

    /// Parses the store without its checksum (the magic is checked by the
    /// caller).
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut cursor = Cursor { bytes, at: 0 };
        cursor.take(8, "magic")?;
        let dim = cursor.u32("dimension")? as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(format!("implausible dimension {dim}"));
        }
        let count = cursor.u32("label count")?;
        let mut labels = BTreeMap::new();
        for _ in 0..count {
            let at = cursor.at;
            let len = cursor.u32("label length")? as usize;
            if len == 0 || len > MAX_LABEL_LEN {
                return Err(format!(
                    "byte {at}: label length {len} is not in 1..={MAX_LABEL_LEN}"
                ));
            }
            let label = std::str::from_utf8(cursor.take(len, "label")?)
                .map_err(|_| format!("byte {at}: label is not UTF-8"))?
                .to_owned();
            check_label(&label).map_err(|e| format!("byte {at}: {e}"))?;
            let examples = cursor.u32("example count")? as usize;
            if examples == 0 {
                return Err(format!("label {label:?} has no examples"));
            }
            let raw = cursor.take(examples.saturating_mul(dim).saturating_mul(4), "examples")?;
            let mut values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            for example in values.chunks_exact_mut(dim) {
                normalize_in_place(example)
                    .map_err(|e| format!("an example of label {label:?}: {e}"))?;
            }
            if labels.insert(label.clone(), values).is_some() {
                return Err(format!("label {label:?} appears twice"));
            }
        }
        if cursor.at != bytes.len() {
            return Err(format!(
                "{} unexpected bytes after the last label",
                bytes.len() - cursor.at
            ));
        }
        Ok(Self { dim, labels })
    }
}

/// Why a file's bytes are not a store.
enum Unreadable {
    /// Another kind of latentcam file: the wrong path was given.
    Foreign(String),
    /// A store that failed a check.
    Damaged(String),
}

fn check_label(label: &str) -> Result<(), HeadError> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(HeadError::Invalid(format!(
            "label of {} bytes; labels are 1 to {MAX_LABEL_LEN} bytes",
            label.len()
        )));
    }
    if label == UNKNOWN {
        return Err(HeadError::Invalid(format!(
            "the label {UNKNOWN:?} is what the head reports for unrecognised latents; choose \
             another name"
        )));
    }
    Ok(())
}

/// Reads a byte slice front to back, saying what was missing when it ends.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "ends at byte {} inside the {what} (truncated file)",
                self.bytes.len()
            ));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
}

/// How a [`FewShotHead`] compares a latent with the enrolled examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// Cosine similarity to each label's prototype: the mean of its
    /// normalised examples, renormalised. Robust to a stray example and
    /// cheap (one dot product per label). The reported similarity is the
    /// best prototype's.
    Prototype,
    /// The `k` most similar examples vote, each with its similarity as
    /// weight. Follows labels whose examples are varied (several views)
    /// better than one mean does. The reported similarity is that of the
    /// winning label's most similar example.
    Knn {
        /// Examples that vote (at least 1).
        k: usize,
    },
}

impl Method {
    /// `prototype` or `knn`, as in the head's JSON result.
    pub fn name(self) -> &'static str {
        match self {
            Method::Prototype => "prototype",
            Method::Knn { .. } => "knn",
        }
    }
}

/// Settings of a [`FewShotHead`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FewShotOptions {
    /// How latents are compared with the examples.
    pub method: Method,
    /// Similarity below which the answer is [`UNKNOWN`], in `[-1, 1]`.
    pub threshold: f32,
}

impl Default for FewShotOptions {
    fn default() -> Self {
        Self {
            method: Method::Prototype,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

/// What a [`FewShotHead`] made of one latent.
#[derive(Debug, Clone, PartialEq)]
pub struct FewShotMatch {
    /// The most similar label, whether or not it reached the threshold;
    /// `None` when nothing is enrolled.
    pub closest: Option<String>,
    /// Its similarity (see [`Method`] for which); `None` when nothing is
    /// enrolled.
    pub similarity: Option<f32>,
    /// Whether the similarity reached the threshold.
    pub known: bool,
}

impl FewShotMatch {
    /// The closest label if it reached the threshold, else [`UNKNOWN`].
    pub fn label(&self) -> &str {
        match (&self.closest, self.known) {
            (Some(label), true) => label,
            _ => UNKNOWN,
        }
    }
}

/// Labels latents from a [`FewShotStore`].
#[derive(Debug, Clone)]
pub struct FewShotHead {
    store: FewShotStore,
    options: FewShotOptions,
    /// Label → unit prototype, kept in step with the store.
    prototypes: Vec<(String, Vec<f32>)>,
}

impl FewShotHead {
    /// A head over `store`.
    pub fn new(store: FewShotStore, options: FewShotOptions) -> Result<Self, HeadError> {
        if let Method::Knn { k: 0 } = options.method {
            return Err(HeadError::Invalid("k-NN needs k of at least 1".into()));
        }
        if !(-1.0..=1.0).contains(&options.threshold) {
            return Err(HeadError::Invalid(format!(
                "few-shot threshold {} is not a cosine similarity in [-1, 1]",
                options.threshold
            )));
        }
        let mut head = Self {
            store,
            options,
            prototypes: Vec::new(),
        };
        head.prototypes = head
            .store
            .labels()
            .map(|(label, _)| (label.to_owned(), head.prototype_of(label)))
            .collect();
        Ok(head)
    }

    /// The enrolled examples.
    pub fn store(&self) -> &FewShotStore {
        &self.store
    }

    /// The settings.
    pub fn options(&self) -> FewShotOptions {
        self.options
    }

    /// Enrols one more example (as [`FewShotStore::add`]); returns how many
    /// examples the label now has.
    pub fn enroll(&mut self, label: &str, latent: &[f32]) -> Result<usize, HeadError> {
        let count = self.store.add(label, latent)?;
        let prototype = self.prototype_of(label);
        match self
            .prototypes
            .binary_search_by(|(l, _)| l.as_str().cmp(label))
        {
            Ok(i) => self.prototypes[i].1 = prototype,
            Err(i) => self.prototypes.insert(i, (label.to_owned(), prototype)),
        }
        Ok(count)
    }

    /// Labels one latent.
    pub fn classify(&self, latent: &[f32]) -> Result<FewShotMatch, HeadError> {
        if latent.len() != self.store.dim {
            return Err(HeadError::Dimension {
                expected: self.store.dim,
                got: latent.len(),
            });
        }
        let query = unit_vector(latent)?;
        let best = match self.options.method {
            Method::Prototype => self
                .prototypes
                .iter()
                .map(|(label, prototype)| (label.as_str(), dot(&query, prototype)))
                .max_by(|a, b| a.1.total_cmp(&b.1)),
            Method::Knn { k } => self.knn(&query, k),
        };
        Ok(match best {
            Some((label, similarity)) => FewShotMatch {
                closest: Some(label.to_owned()),
                similarity: Some(similarity),
                known: similarity >= self.options.threshold,
            },
            None => FewShotMatch {
                closest: None,
                similarity: None,
                known: false,
            },
        })
    }

    /// The winning label of a similarity-weighted vote of the `k` nearest
    /// examples, with its nearest example's similarity.
    fn knn(&self, query: &[f32], k: usize) -> Option<(&str, f32)> {
        let mut nearest: Vec<(f32, &str)> = self
            .store
            .labels
            .keys()
            .flat_map(|label| {
                self.store
                    .examples(label)
                    .map(move |example| (dot(query, example), label.as_str()))
            })
            .collect();
        nearest.sort_by(|a, b| b.0.total_cmp(&a.0));
        nearest.truncate(k);
        // label → (vote, best similarity); sorted by similarity, so the
        // first similarity seen for a label is its best.
        let mut votes: Vec<(&str, f32, f32)> = Vec::new();
        for (similarity, label) in nearest {
            match votes.iter_mut().find(|v| v.0 == label) {
                Some(v) => v.1 += similarity,
                None => votes.push((label, similarity, similarity)),
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)))
            .map(|(label, _, best)| (label, best))
    }

    fn prototype_of(&self, label: &str) -> Vec<f32> {
        let mut sum = vec![0f32; self.store.dim];
        for example in self.store.examples(label) {
            sum.iter_mut().zip(example).for_each(|(s, v)| *s += v);
        }
        // The mean of unit vectors is zero only for examples that cancel
        // exactly; keep the zero vector then, which matches nothing.
        let _ = normalize_in_place(&mut sum);
        sum
    }
}

/// `{"label": "mug", "similarity": 0.83, "closest": "mug", "method":
/// "prototype"}`; `label` is `"unknown"` below the threshold, and
/// `similarity` and `closest` are null when nothing is enrolled.
impl Head for FewShotHead {
    fn name(&self) -> &str {
        "fewshot"
    }

    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        let found = self.classify(input.latent)?;
        Ok(serde_json::json!({
            "label": found.label(),
            "similarity": found.similarity,
            "closest": found.closest,
            "method": self.options.method.name(),
        }))
    }
}

/// A few-shot head shared between the head worker and the HTTP API, so
/// examples enrolled while the host runs label the very next latent. With
/// a store path, every enrolment is written to the store before it takes
/// effect.
#[derive(Debug, Clone)]
pub struct SharedFewShot {
    head: std::sync::Arc<std::sync::Mutex<FewShotHead>>,
    path: Option<std::path::PathBuf>,
}

impl SharedFewShot {
    /// Shares `head`, saving enrolments to `path` if given.
    pub fn new(head: FewShotHead, path: Option<std::path::PathBuf>) -> Self {
        Self {
            head: std::sync::Arc::new(std::sync::Mutex::new(head)),
            path,
        }
    }

    /// Locks the head.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FewShotHead> {
        self.head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Enrols one example: written to the store file first (all or
    /// nothing), then used; returns how many examples the label now has.
    pub fn enroll(&self, label: &str, latent: &[f32]) -> Result<usize, HeadError> {
        let mut head = self.lock();
        let mut next = head.clone();
        let count = next.enroll(label, latent)?;
        if let Some(path) = &self.path {
            next.store.save(path)?;
        }
        *head = next;
        Ok(count)
    }
}

impl Head for SharedFewShot {
    fn name(&self) -> &str {
        "fewshot"
    }

    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError> {
        self.lock().run(input)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lcfews-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn store() -> FewShotStore {
        let mut store = FewShotStore::new(3).unwrap();
        store.add("x", &[1.0, 0.1, 0.0]).unwrap();
        store.add("x", &[1.0, -0.1, 0.0]).unwrap();
        store.add("y", &[0.0, 2.0, 0.0]).unwrap();
        store
    }

    #[test]
    fn enrolment_stops_at_the_store_limit() {
        let mut store = FewShotStore::new(2).unwrap();
        for i in 0..MAX_EXAMPLES {
            let label = if i % 2 == 0 { "a" } else { "b" };
            store.add(label, &[1.0, i as f32]).unwrap();
        }
        let err = store.add("c", &[1.0, 0.5]).unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        assert_eq!(store.len(), 2, "the refused label was not created");
    }

    #[test]
    fn prototype_and_knn_pick_the_nearest_label() {
        for method in [
            Method::Prototype,
            Method::Knn { k: 1 },
            Method::Knn { k: 3 },
        ] {
            let head = FewShotHead::new(
                store(),
                FewShotOptions {
                    method,
                    threshold: 0.9,
                },
            )
            .unwrap();
            let m = head.classify(&[3.0, 0.0, 0.0]).unwrap();
            assert_eq!(m.label(), "x", "{method:?}");
            assert!(m.similarity.unwrap() > 0.99);
            let m = head.classify(&[0.1, 1.0, 0.0]).unwrap();
            assert_eq!(m.label(), "y", "{method:?}");
            let m = head.classify(&[0.0, 0.0, 1.0]).unwrap();
            assert_eq!(m.label(), UNKNOWN, "{method:?}");
            assert!(m.closest.is_some() && !m.known);
        }
    }

    #[test]
    fn knn_votes_by_weight() {
        let mut store = FewShotStore::new(2).unwrap();
        store.add("near", &[1.0, 0.0]).unwrap();
        for _ in 0..3 {
            store.add("many", &[1.0, 0.3]).unwrap();
        }
        let options = |k| FewShotOptions {
            method: Method::Knn { k },
            threshold: 0.0,
        };
        let one = FewShotHead::new(store.clone(), options(1)).unwrap();
        assert_eq!(one.classify(&[1.0, 0.0]).unwrap().label(), "near");
        let four = FewShotHead::new(store, options(4)).unwrap();
        let m = four.classify(&[1.0, 0.0]).unwrap();
        assert_eq!(m.label(), "many");
        // Reported similarity is the winner's nearest example.
        assert!((m.similarity.unwrap() - 1.0 / 1.09f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn enroll_updates_prototypes_and_json() {
        let mut head =
            FewShotHead::new(FewShotStore::new(3).unwrap(), FewShotOptions::default()).unwrap();
        let input = LatentRef {
            device: "d",
            seq: 0,
            capture_us: 0,
            latent: &[0.0, 0.0, 1.0],
        };
        let empty = head.run(&input).unwrap();
        assert_eq!(empty["label"], UNKNOWN);
        assert!(empty["similarity"].is_null());
        assert_eq!(head.enroll("z", &[0.0, 0.0, 5.0]).unwrap(), 1);
        assert_eq!(head.enroll("z", &[0.0, 0.1, 5.0]).unwrap(), 2);
        let value = head.run(&input).unwrap();
        assert_eq!(value["label"], "z");
        assert_eq!(value["method"], "prototype");
        assert!(value["similarity"].as_f64().unwrap() > 0.99);
    }

    #[test]
    fn rejects_bad_input() {
        let mut store = store();
        assert!(matches!(
            store.add("x", &[1.0, 2.0]),
            Err(HeadError::Dimension {
                expected: 3,
                got: 2
            })
        ));
        assert!(matches!(
            store.add(UNKNOWN, &[1.0, 0.0, 0.0]),
            Err(HeadError::Invalid(_))
        ));
        assert!(store.add("", &[1.0, 0.0, 0.0]).is_err());
        assert!(store.add("x", &[0.0, 0.0, 0.0]).is_err());
        assert!(store.add("x", &[f32::INFINITY, 0.0, 0.0]).is_err());
        let head = FewShotHead::new(store.clone(), FewShotOptions::default()).unwrap();
        assert!(matches!(
            head.classify(&[1.0; 4]),
            Err(HeadError::Dimension { .. })
        ));
        assert!(head.classify(&[f32::NAN; 3]).is_err());
        let bad = |method, threshold| {
            FewShotHead::new(store.clone(), FewShotOptions { method, threshold })
        };
        assert!(bad(Method::Knn { k: 0 }, 0.5).is_err());
        assert!(bad(Method::Prototype, f32::NAN).is_err());
        assert!(bad(Method::Prototype, 1.5).is_err());
    }

    #[test]
    fn save_load_roundtrip_and_damage() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("enrolled.lcfs");
        let missing = FewShotStore::load_or_default(&path, 3).unwrap();
        assert!(missing.is_empty());
        let store = store();
        store.save(&path).unwrap();
        let loaded = FewShotStore::load_or_default(&path, 3).unwrap();
        assert_eq!(loaded, store);
        assert_eq!(
            loaded.labels().collect::<Vec<_>>(),
            vec![("x", 2), ("y", 1)]
        );
        assert!(!dir.join("enrolled.lcfs.tmp").exists());

        let err = FewShotStore::load(&path, 4).unwrap_err().to_string();
        assert!(
            err.contains("enrolled.lcfs") && err.contains("3-dimensional"),
            "{err}"
        );
        let good = std::fs::read(&path).unwrap();
        assert_eq!(&good[..8], b"LCFEWS02");
        // One flipped bit anywhere, or a byte missing: the checksum fails.
        for at in [9, 30, good.len() - 7, good.len() - 1] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            let err = FewShotStore::load(&path, 3).unwrap_err();
            assert!(matches!(err, HeadError::Damaged { .. }), "byte {at}: {err}");
            assert!(err.to_string().contains("checksum"), "{err}");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            FewShotStore::load(&path, 3),
            Err(HeadError::Damaged { .. })
        ));
        // The first format (no checksum) is still read, and checked.
        let mut v1 = good[..good.len() - 4].to_vec();
        v1[..8].copy_from_slice(MAGIC_V1);
        std::fs::write(&path, &v1).unwrap();
        assert_eq!(FewShotStore::load(&path, 3).unwrap(), store);
        v1.pop();
        std::fs::write(&path, &v1).unwrap();
        let err = FewShotStore::load(&path, 3).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&path, b"LCFEWS01\x03\0\0\0\x01\0\0\0\xff\xff\xff\xff").unwrap();
        assert!(matches!(
            FewShotStore::load(&path, 3),
            Err(HeadError::Damaged { .. })
        ));
        // Garbage is damage; another latentcam file or a newer format is the
        // wrong file, not damage.
        let mut bytes = good.clone();
        bytes[0] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        let err = FewShotStore::load_or_default(&path, 3).unwrap_err();
        assert!(
            matches!(err, HeadError::Damaged { .. }) && err.to_string().contains("magic"),
            "{err}"
        );
        for (magic, says) in [(b"LCINDX02", "similarity index"), (b"LCFEWS07", "newer")] {
            bytes[..8].copy_from_slice(magic);
            std::fs::write(&path, &bytes).unwrap();
            let err = FewShotStore::load(&path, 3).unwrap_err();
            assert!(
                matches!(err, HeadError::Format { .. }) && err.to_string().contains(says),
                "{err}"
            );
        }
        // A directory where the file should be: an I/O error naming it.
        let err = FewShotStore::load_or_default(&dir, 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&dir.display().to_string()), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_damaged_store_is_moved_aside_and_the_host_starts_empty() {
        let dir = temp_dir("quarantine");
        let path = dir.join("enrolled.lcfs");
        store().save(&path).unwrap();
        let (loaded, moved) = FewShotStore::load_or_quarantine(&path, 3).unwrap();
        assert_eq!((loaded, moved), (store(), None));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (loaded, moved) = FewShotStore::load_or_quarantine(&path, 3).unwrap();
        assert!(loaded.is_empty());
        let moved = moved.expect("the damaged file was moved");
        assert!(!path.exists());
        assert_eq!(std::fs::read(&moved).unwrap(), bytes, "kept as it was");
        assert!(
            moved
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("enrolled.lcfs.damaged-"),
            "{moved:?}"
        );
        // Another model's store is not damage: an error, and left in place.
        FewShotStore::new(4).unwrap().save(&path).unwrap();
        assert!(matches!(
            FewShotStore::load_or_quarantine(&path, 3),
            Err(HeadError::Format { .. })
        ));
        assert!(path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
