//! Task heads: what the host computes from each latent.

pub mod imagenet;
pub mod linear;
