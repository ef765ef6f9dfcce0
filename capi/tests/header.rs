//! `include/mood.h` is what cbindgen generates from `src/lib.rs` with `cbindgen.toml`: the
//! header always declares what the library exports. After changing the ABI, regenerate it
//! with `MOOD_WRITE_HEADER=1 cargo test --release -p mood-capi --test header`.

use std::path::Path;

#[test]
fn the_checked_in_header_is_the_generated_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads src/lib.rs")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");
    let path = dir.join("include/mood.h");
    if std::env::var_os("MOOD_WRITE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/mood.h");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/mood.h differs from what cbindgen generates from src/lib.rs; regenerate it \
         with MOOD_WRITE_HEADER=1 cargo test --release -p mood-capi --test header"
    );
    for name in ["mood_open", "mood_generate", "mood_cancel", "mood_last_error", "MOOD_OK"] {
        assert!(generated.contains(name), "{name} is missing from the header");
    }
}
