//! Task heads: what the host computes from each latent.
//!
//! Every head implements [`Head`]; the ingest runs every configured head on
//! every latent and reports each head's result as JSON under the head's
//! name. Heads that keep per-device state (anomaly) key it by
//! [`LatentRef::device`].

pub mod anomaly;
pub mod fewshot;
pub mod imagenet;
pub mod linear;
pub mod search;
pub mod state_file;
pub mod trained;

pub use linear::HeadError;

/// One decoded latent and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct LatentRef<'a> {
    /// Device id from the device's `Hello`.
    pub device: &'a str,
    /// The latent's sequence number.
    pub seq: u64,
    /// Capture time on the device, microseconds (device clock).
    pub capture_us: u64,
    /// The latent values (decoded from the wire codec).
    pub latent: &'a [f32],
}

/// A task head run on every latent.
pub trait Head: Send {
    /// Short name, the key of this head's result (`imagenet`, `fewshot`…).
    fn name(&self) -> &str;

    /// The head's result for one latent, as JSON.
    fn run(&mut self, input: &LatentRef<'_>) -> Result<serde_json::Value, HeadError>;

    /// Results for several latents (possibly of several devices) in
    /// arrival order. Must equal calling [`Head::run`] on each in turn;
    /// heads whose maths gains from a batch (the ImageNet head streams its
    /// weights once per batch) override it.
    fn run_batch(&mut self, inputs: &[LatentRef<'_>]) -> Vec<Result<serde_json::Value, HeadError>> {
        inputs.iter().map(|input| self.run(input)).collect()
    }
}
