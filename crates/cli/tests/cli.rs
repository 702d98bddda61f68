//! The binary's guards that act before any model is loaded.

use std::process::Command;

fn serve(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_localgem"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("LOCALGEM_PYTHON", "false")
        .env_remove("LOCALGEM_API_KEYS")
        .env_remove("LOCALGEM_API_KEYS_FILE")
        .env_remove("LOCALGEM_ALLOW_UNAUTHENTICATED")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_open_server_is_refused_on_a_non_loopback_address() {
    let (ok, err) = serve(&["--addr", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(
        err.contains("refusing to serve 0.0.0.0:0 without API keys"),
        "{err}"
    );
    assert!(err.contains("--allow-unauthenticated"), "{err}");
    let (ok, err) = serve(&["--addr", "[::]:0"]);
    assert!(!ok && err.contains("refusing"), "{err}");
}

#[test]
fn a_keys_file_without_keys_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("keys");
    std::fs::write(&f, "# nothing here\n\n").unwrap();
    let (ok, err) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--api-keys-file",
        f.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("holds no key"), "{err}");
    let (ok, err) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--api-keys-file",
        "/nonexistent/keys",
    ]);
    assert!(!ok && err.contains("cannot read API keys file"), "{err}");
}
