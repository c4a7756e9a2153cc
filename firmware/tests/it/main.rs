//! The edge's integration tests, one binary (each test binary links tract,
//! and linking them one by one dominated the test build). One module per
//! subject; what several share (a socat pty pair, the mosquitto broker, the
//! qemu runner for cross builds) is in `latentcam-testkit`.

mod doctor;
mod encoder_backends;
mod encoder_parity;
mod link_suite;
mod links;
mod mqtt;
mod picture;
mod pipeline;
mod secure;
mod sources;
mod spool;
mod tools;
