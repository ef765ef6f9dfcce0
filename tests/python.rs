//! The Python package: built with maturin into a virtual environment under `target/`
//! (sharing this build's `target/`), then its pytest suite (`python/tests`) and the
//! notebook-style example (`examples/python/steer.py`) run.

mod common;

use common::root;
use std::path::PathBuf;
use std::process::Command;

/// The virtual environment with the package installed from this checkout.
fn environment() -> PathBuf {
    let env = root().join("target/python-env");
    let python = env.join("bin/python");
    if !python.exists() {
        // The system's numpy, pytest, hypothesis and maturin (models/setup.sh) are seen.
        let made = Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&env)
            .status()
            .expect("python3");
        assert!(made.success(), "cannot make a virtual environment");
    }
    let installed = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps"])
        .arg(root().join("python"))
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .status()
        .expect("pip");
    assert!(installed.success(), "pip install ./python failed (see above)");
    python
}

#[test]
fn the_python_package_passes_its_tests_and_its_example_runs() {
    let python = environment();
    let tests = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests"])
        .env("MOOD_BINARY", env!("CARGO_BIN_EXE_mood"))
        .current_dir(root())
        .status()
        .expect("pytest");
    assert!(tests.success(), "the Python tests failed (see above)");
    let example = Command::new(&python)
        .arg("examples/python/steer.py")
        .current_dir(root())
        .output()
        .expect("the example");
    let stdout = String::from_utf8_lossy(&example.stdout);
    assert!(example.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&example.stderr));
    for weights in ["[1, 0]: The ocean", "[0.5, 0.5]: The ocean", "[0, 1]: The ocean"] {
        assert!(stdout.lines().any(|l| l.starts_with(weights)), "{weights}: {stdout}");
    }
    assert!(stdout.contains("by hand: The forest"), "{stdout}");
}
