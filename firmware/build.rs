//! With the `tflite` or `litert` feature, lets the edge binary find
//! libtensorflowlite_c.so / libLiteRt.so without a system install: beside
//! itself (target/<profile>/ after scripts/with-tflite.sh copied the library
//! there), in `../lib/latentcam` (where a package's install.sh puts it, the
//! binary being in /usr/bin) or in `../lib`. `cargo run`/`test`/`bench`
//! need no rpath: cargo puts the build scripts' output directories on the
//! library path. See firmware/TFLITE.md.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let native = ["CARGO_FEATURE_TFLITE", "CARGO_FEATURE_LITERT"]
        .iter()
        .any(|feature| std::env::var_os(feature).is_some());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if native && matches!(os.as_str(), "linux" | "android") {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN:$ORIGIN/../lib/latentcam:$ORIGIN/../lib"
        );
    }
}
