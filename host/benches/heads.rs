//! The inner loops of the host's task heads, with the machine's
//! single-precision matrix-multiply speed measured as their peer in the same
//! process, so results read as ratios.
//!
//! * `imagenet-head/logits-1`, `imagenet-head/logits-batch-32`: the shipped
//!   ImageNet head (`LinearHead`, 1000x1280) on one real latent and on a
//!   batch of 32. Throughput is in FLOP (2 x in x out x batch), so
//!   criterion's `elem/s` reads as FLOP/s.
//! * `imagenet-head/sgemm-<m>x<k>x<n>`: `matrixmultiply::sgemm` (single
//!   thread) on the head's shapes (m = 1 and 32 latents, k = 1280 inputs,
//!   n = 1000 classes, reading the head's weights in their own layout), and
//!   `imagenet-head/sgemm-1024` on a 1024-cube, the machine's practical peak.
//!   Same FLOP throughput.
//! * `fewshot-head/prototype-100`, `fewshot-head/knn-5-of-500`: labelling a
//!   latent against 100 labels of 5 examples each (throughput: prototypes or
//!   examples compared).
//! * `search-head/top10-of-100000`: exact cosine top-10 over 100 000 stored
//!   latents (throughput: vectors scanned). An index this size is scanned
//!   on all cores (`search::PARALLEL_MIN`), so this one is not single-threaded.
//!
//! Run with `cargo bench -p latentcam-host --bench heads`. Queries are the
//! reference latents of the fixture photos; the few-shot and search stores
//! are those latents with every value jittered, so they keep real latents'
//! spread (half of the values exactly zero, the rest mostly below 3).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use latentcam_firmware::manifest::{Manifest, default_models_dir};
use latentcam_host::heads::fewshot::{FewShotHead, FewShotOptions, FewShotStore, Method};
use latentcam_host::heads::imagenet::ImagenetHead;
use latentcam_host::heads::search::LatentIndex;

/// Latents in the batched head bench: the ingest's largest batch
/// (`ingest::MAX_BATCH`), kept literal so the bench name stays put.
const BATCH: usize = 32;
/// Side of the square matrix multiply that gives the machine's peak.
const SQUARE: usize = 1024;
/// Labels and examples per label in the few-shot store.
const FEWSHOT_LABELS: usize = 100;
const FEWSHOT_EXAMPLES: usize = 5;
/// Latents in the search index.
const INDEX_LEN: usize = 100_000;

/// The fp32 latents of the reference photos.
fn reference_latents(manifest: &Manifest) -> Vec<Vec<f32>> {
    latentcam_testkit::Reference::load_from(&manifest.root().join("efficientnet-lite0/fixtures"))
        .photos
        .into_iter()
        .map(|photo| photo.fp32_latent)
        .collect()
}

/// Endless variations on real latents: each value scaled by a factor in
/// [0.5, 1.5), so zeros stay zeros and the spread stays real (xorshift,
/// deterministic).
struct Jitter<'a> {
    bases: &'a [Vec<f32>],
    next: usize,
    state: u64,
}

impl<'a> Jitter<'a> {
    fn new(bases: &'a [Vec<f32>]) -> Self {
        Self {
            bases,
            next: 0,
            state: 0x2545_f491_4f6c_dd1d,
        }
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 40) as f32 / (1u64 << 24) as f32
    }

    fn latent(&mut self) -> Vec<f32> {
        let base = &self.bases[self.next % self.bases.len()];
        self.next += 1;
        base.iter().map(|&v| v * (0.5 + self.uniform())).collect()
    }
}

/// `c = a · b` for row-major `a` (m×k) and `b` given by its strides, with
/// matrixmultiply's single-threaded sgemm.
fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    (b_row_stride, b_col_stride): (usize, usize),
    c: &mut [f32],
) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    // SAFETY: the assertions above keep every index the strides reach
    // (a: row-major m×k; b: k×n, strides fit a k×n buffer in either layout;
    // c: row-major m×n) inside the slices, and `c` is borrowed mutably so it
    // aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            b_row_stride as isize,
            b_col_stride as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

fn imagenet_head(c: &mut Criterion) {
    let manifest = Manifest::load(default_models_dir()).expect("models/manifest.toml");
    let head = ImagenetHead::from_manifest(&manifest)
        .expect("ImageNet head")
        .head;
    let (in_dim, out_dim) = (head.in_dim(), head.out_dim());
    let latents = reference_latents(&manifest);
    let batch: Vec<&[f32]> = latents
        .iter()
        .map(Vec::as_slice)
        .cycle()
        .take(BATCH)
        .collect();
    let flops = |m: usize| Throughput::Elements((2 * in_dim * out_dim * m) as u64);

    let mut group = c.benchmark_group("imagenet-head");
    group.throughput(flops(1));
    let mut logits = vec![0f32; out_dim];
    group.bench_function("logits-1", |b| {
        b.iter(|| head.logits(black_box(batch[0]), &mut logits).unwrap())
    });
    group.throughput(flops(BATCH));
    let mut logits = vec![0f32; BATCH * out_dim];
    group.bench_function(format!("logits-batch-{BATCH}"), |b| {
        b.iter(|| head.logits_batch(black_box(&batch), &mut logits).unwrap())
    });

    // The head's weights are not public, so the peer multiplies a weight
    // matrix of the same shape and layout (row-major out×in, read as the
    // k×n matrix Wᵀ through its strides) with values of the same size.
    let mut random = Jitter::new(&latents);
    let weight: Vec<f32> = (0..in_dim * out_dim)
        .map(|_| 0.1 * random.uniform() - 0.05)
        .collect();
    let weight_t_strides = (1, in_dim);
    for m in [1, BATCH] {
        let a: Vec<f32> = batch[..m].concat();
        let mut out = vec![0f32; m * out_dim];
        group.throughput(flops(m));
        group.bench_function(format!("sgemm-{m}x{in_dim}x{out_dim}"), |b| {
            b.iter(|| {
                sgemm(
                    m,
                    in_dim,
                    out_dim,
                    black_box(&a),
                    &weight,
                    weight_t_strides,
                    &mut out,
                )
            })
        });
    }
    let square: Vec<f32> = (0..SQUARE * SQUARE).map(|_| random.uniform()).collect();
    let mut out = vec![0f32; SQUARE * SQUARE];
    // One multiply takes tens of milliseconds: fewer, longer samples.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements((2 * SQUARE * SQUARE * SQUARE) as u64));
    group.bench_function(format!("sgemm-{SQUARE}"), |b| {
        b.iter(|| {
            sgemm(
                SQUARE,
                SQUARE,
                SQUARE,
                black_box(&square),
                &square,
                (SQUARE, 1),
                &mut out,
            )
        })
    });
    group.finish();
}

fn fewshot_head(c: &mut Criterion) {
    let manifest = Manifest::load(default_models_dir()).expect("models/manifest.toml");
    let latents = reference_latents(&manifest);
    let mut jitter = Jitter::new(&latents);
    let mut store = FewShotStore::new(manifest.latent_dim).unwrap();
    for label in 0..FEWSHOT_LABELS {
        for _ in 0..FEWSHOT_EXAMPLES {
            store
                .add(&format!("label-{label:03}"), &jitter.latent())
                .unwrap();
        }
    }
    let query = &latents[0];

    let mut group = c.benchmark_group("fewshot-head");
    let prototype = FewShotHead::new(store.clone(), FewShotOptions::default()).unwrap();
    group.throughput(Throughput::Elements(FEWSHOT_LABELS as u64));
    group.bench_function(format!("prototype-{FEWSHOT_LABELS}"), |b| {
        b.iter(|| prototype.classify(black_box(query)).unwrap())
    });
    let k = 5;
    let knn = FewShotHead::new(
        store,
        FewShotOptions {
            method: Method::Knn { k },
            ..FewShotOptions::default()
        },
    )
    .unwrap();
    let examples = FEWSHOT_LABELS * FEWSHOT_EXAMPLES;
    group.throughput(Throughput::Elements(examples as u64));
    group.bench_function(format!("knn-{k}-of-{examples}"), |b| {
        b.iter(|| knn.classify(black_box(query)).unwrap())
    });
    group.finish();
}

fn search_head(c: &mut Criterion) {
    let manifest = Manifest::load(default_models_dir()).expect("models/manifest.toml");
    let latents = reference_latents(&manifest);
    let mut jitter = Jitter::new(&latents);
    let mut index = LatentIndex::new(manifest.latent_dim, INDEX_LEN).unwrap();
    for seq in 0..INDEX_LEN as u64 {
        index
            .add("bench-camera", seq, seq * 33_333, &jitter.latent())
            .unwrap();
    }
    let query = &latents[0];

    let mut group = c.benchmark_group("search-head");
    // A query takes tens of milliseconds: fewer, longer samples.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(INDEX_LEN as u64));
    group.bench_function(format!("top10-of-{INDEX_LEN}"), |b| {
        b.iter(|| index.search(black_box(query), 10).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = imagenet_head, fewshot_head, search_head
}
criterion_main!(benches);
