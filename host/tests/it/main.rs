//! The host's integration tests, one binary (each test binary links tract,
//! and linking them one by one dominated the test build). One module per
//! subject; `common` holds the host's own helpers, `latentcam-testkit` what
//! the edge's tests share too (paths, the pty pair, the broker).

mod common;

mod auth;
mod cli;
mod durability;
mod fewshot_accuracy;
mod fleet;
mod heads;
mod home;
mod hostile;
mod http_security;
mod ingest_suite;
mod load;
mod model_accuracy;
mod observability;
mod operate;
mod serve;
mod train;
