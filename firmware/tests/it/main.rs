//! The edge's integration tests, one binary (each test binary links tract,
//! and linking them one by one dominated the test build). One module per
//! subject; `common` holds what several share (a socat pty pair, the
//! mosquitto broker, the qemu runner for cross builds).

mod doctor;
mod encoder_backends;
mod encoder_parity;
mod links;
mod mqtt;
mod picture;
mod pipeline;
mod secure;
mod sources;
mod spool;
