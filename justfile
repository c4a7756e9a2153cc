# Thin wrappers over scripts/: CI and the README call the scripts directly,
# so `just` is a convenience, never a requirement.

# Run every test (installs what the tests need).
test:
    bash scripts/test.sh

# The end-to-end demo.
demo:
    bash scripts/demo.sh

# fmt, clippy and docs, warnings denied.
lint:
    bash scripts/lint.sh

# Fuzz every wire target (default 60 s each).
fuzz seconds="60":
    bash scripts/fuzz.sh {{seconds}}

# Release build of the edge program for 64-bit Raspberry Pi OS / Jetson.
cross-aarch64:
    bash scripts/setup.sh
    cargo build --release --locked --target aarch64-unknown-linux-gnu -p latentcam-firmware

# Release build of the edge program for 32-bit Raspberry Pi OS.
cross-armv7:
    bash scripts/setup.sh
    cargo build --release --locked --target armv7-unknown-linux-gnueabihf -p latentcam-firmware

# Benchmarks (criterion).
bench:
    cargo bench --workspace --locked
