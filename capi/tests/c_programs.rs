//! The C ABI from C: `examples/c/steer.c` built against the shared library and run on the
//! default model, and `tests/hostile.c` (hostile arguments to every call) built against
//! the static library and run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("capi/ is in the repository").into()
}

/// The folder cargo put libmood.so and libmood.a in (this test runs from its deps/ folder),
/// after building them: `cargo test` builds a package's rlib for its tests, not its C
/// libraries, which are built here the way a user builds them (cargo does nothing when they
/// are up to date).
fn lib_dir() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "mood-capi"])
            .current_dir(root())
            .status()
            .expect("cargo");
        assert!(status.success(), "cargo build -p mood-capi failed");
    });
    let exe = std::env::current_exe().expect("the test's path");
    let deps = exe.parent().expect("deps/");
    let dir = deps.parent().expect("the profile's folder").to_path_buf();
    assert!(dir.join("libmood.so").exists(), "no libmood.so in {}", dir.display());
    dir
}

fn default_model() -> PathBuf {
    let model = root().join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(model.exists(), "the default model is missing: run models/setup.sh");
    model
}

/// Compiles `source` with warnings as errors; `link` are the linker's arguments.
fn compile(source: &Path, out: &Path, link: &[String]) {
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(root().join("capi/include"))
        .arg(source)
        .arg("-o")
        .arg(out)
        .args(link)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "cannot compile {}", source.display());
}

#[test]
fn the_c_example_steers_with_the_shared_library() {
    let dir = lib_dir();
    let exe = std::env::temp_dir().join(format!("mood-steer-{}", std::process::id()));
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let link = vec![format!("-L{}", dir.display()), "-lmood".into(), rpath];
    compile(&root().join("examples/c/steer.c"), &exe, &link);
    let out = Command::new(&exe).arg(default_model()).current_dir(root()).output().unwrap();
    let _ = std::fs::remove_file(&exe);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let texts: Vec<&str> = stdout
        .split("(poet, scientist) = ")
        .skip(1)
        .map(|part| part.split_once("The ocean").map_or("", |(_, t)| t.trim()))
        .collect();
    assert_eq!(texts.len(), 3, "{stdout}");
    assert!(texts.iter().all(|t| t.len() > 20), "every weighting decodes text: {stdout}");
    assert_ne!(texts[0], texts[2], "the weights steer the text: {stdout}");
}

#[test]
fn hostile_arguments_get_status_codes_and_messages() {
    let dir = lib_dir();
    let exe = std::env::temp_dir().join(format!("mood-hostile-{}", std::process::id()));
    // The static library, with what llama.cpp and the Rust runtime need from the system.
    let link: Vec<String> = [
        dir.join("libmood.a").display().to_string(),
        "-lstdc++".into(),
        "-lgomp".into(),
        "-lm".into(),
        "-lpthread".into(),
        "-ldl".into(),
    ]
    .into();
    compile(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile.c"), &exe, &link);
    let out = Command::new(&exe).arg(default_model()).current_dir(root()).output().unwrap();
    let _ = std::fs::remove_file(&exe);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    let passed: usize = last.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= 50 && last.ends_with(" 0 failed"), "{stdout}");
}
