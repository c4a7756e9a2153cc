//! The wire crate's integration tests, one binary: golden bytes of every
//! message, property round trips, and the stream decoder fed in chunks and
//! through noise.

mod common;

mod golden;
mod limits;
mod roundtrip;
mod stream;
