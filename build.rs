//! Build script: a `dynamic-backends` build finds llama.cpp's shared libraries in its own
//! folder first (rpath `$ORIGIN`), so a bundle of the binary and its libraries runs as is.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dynamic = std::env::var_os("CARGO_FEATURE_DYNAMIC_BACKENDS").is_some();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if dynamic && (os == "linux" || os == "android" || os.ends_with("bsd")) {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
    } else if dynamic && (os == "macos" || os == "ios") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,@executable_path");
    }
}
