//! With the `tflite` feature, lets the edge binary find
//! libtensorflowlite_c.so beside itself or in `../lib` when run directly
//! (deployed, or from target/<profile>/ after scripts/with-tflite.sh copied
//! the library there). `cargo run`/`test`/`bench` need no rpath: cargo puts
//! tflitec's output directory on the library path. See firmware/TFLITE.md.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let tflite = std::env::var_os("CARGO_FEATURE_TFLITE").is_some();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if tflite && matches!(os.as_str(), "linux" | "android") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN:$ORIGIN/../lib");
    }
}
