//! The host's integration tests, one binary (each test binary links tract,
//! and linking them one by one dominated the test build). One module per
//! subject; `common` holds the host's shared helpers, `firmware_common` the
//! edge's (a socat pty pair, the mosquitto broker).

mod common;
#[path = "../../../firmware/tests/it/common/mod.rs"]
mod firmware_common;

mod auth;
mod durability;
mod fewshot_accuracy;
mod fleet;
mod heads;
mod hostile;
mod http_security;
mod load;
mod model_accuracy;
mod serve;
mod train;
