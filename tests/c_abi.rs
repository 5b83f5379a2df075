//! Builds the C ABI test program and the C example against the committed header and the cdylib
//! that `cargo test` just built, and runs them (rustls-ffi pattern, STYLE.md §24).
//!
//! The bundle parts run when `tests/fixtures/tiny` exists and ONNX Runtime is found
//! (`ORT_DYLIB_PATH`); otherwise only the no-bundle checks run. Without a C compiler the tests
//! print `skipped:` and pass. scripts/test-bindings.sh runs the same program under valgrind.
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding libs1_mini.so: the test binary lives in `<target>/<profile>/deps/`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn have_cc() -> bool {
    Command::new("cc").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn bundle() -> Option<PathBuf> {
    let b = root().join("tests/fixtures/tiny");
    let ort = std::env::var_os("ORT_DYLIB_PATH").is_some();
    (b.join("manifest.json").exists() && ort).then_some(b)
}

fn compile(src: &Path, out: &Path) {
    let lib = lib_dir();
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(src)
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .args(["-ls1_mini", "-lpthread"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .status()
        .unwrap();
    assert!(status.success(), "cc {} failed", src.display());
}

#[test]
fn c_abi_test_program_passes() {
    if !have_cc() {
        println!("skipped: no C compiler (cc)");
        return;
    }
    if !lib_dir().join("libs1_mini.so").exists() {
        println!("skipped: libs1_mini.so not built in {}", lib_dir().display());
        return;
    }
    let exe = lib_dir().join("c_abi_test");
    compile(&root().join("tests/c/abi_test.c"), &exe);
    let mut cmd = Command::new(&exe);
    match bundle() {
        Some(b) => {
            cmd.arg(b);
        }
        None => println!("skipped: bundle part (no tests/fixtures/tiny or ORT_DYLIB_PATH)"),
    }
    let out = cmd.output().unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tests/c/abi_test.c failed");
}

#[test]
fn c_example_writes_wav() {
    let Some(bundle) = bundle() else {
        println!("skipped: no tests/fixtures/tiny or ORT_DYLIB_PATH");
        return;
    };
    if !have_cc() || !lib_dir().join("libs1_mini.so").exists() {
        println!("skipped: no C compiler or libs1_mini.so");
        return;
    }
    let exe = lib_dir().join("c_example_synth");
    compile(&root().join("examples/c/synth.c"), &exe);
    let wav = lib_dir().join("c_example.wav");
    let status = Command::new(&exe).arg(&bundle).arg(&wav).arg("Hello from C.").status().unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&wav).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 44100);
    assert!(bytes.len() > 44, "no samples");
}
