//! `dumpwatch delete-artifacts` on real files: deletes what is under --under, removes the
//! capture directories it empties, succeeds on what is already gone, and refuses paths outside,
//! `..`, and symlinks that lead out.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).arg("delete-artifacts").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn file(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"dump bytes").unwrap();
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn deletes_under_dir_removes_empty_captures_and_is_idempotent() {
    let store = tempfile::tempdir().unwrap();
    let pod = store.path().join("shop/orders-1");
    let (core, dac, other) =
        (pod.join("c1/core.42.zst"), pod.join("c1/libmscordaccore.so.zst"), pod.join("c2/core.7.zst"));
    for f in [&core, &dac, &other] {
        file(f);
    }
    let under = pod.to_str().unwrap();
    let (ok, stdout, stderr) = run(&["--under", under, &uri(&core), &uri(&dac)]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("deleted {}", core.display())), "{stdout}");
    assert!(!core.exists() && !dac.exists());
    assert!(!pod.join("c1").exists(), "the emptied capture directory is removed");
    assert!(other.exists() && pod.exists(), "another capture and --under itself stay");

    let (ok, stdout, stderr) = run(&["--under", under, &uri(&core)]);
    assert!(ok, "already gone is success: {stderr}");
    assert!(stdout.contains("already gone"), "{stdout}");
    // Even with the whole pod directory gone.
    std::fs::remove_dir_all(&pod).unwrap();
    assert!(run(&["--under", under, &uri(&other)]).0);
}

#[test]
fn refuses_outside_paths_dot_dot_and_symlink_escapes() {
    let store = tempfile::tempdir().unwrap();
    let pod = store.path().join("shop/orders-1");
    let neighbour = store.path().join("shop/orders-2/c9/core.1.zst");
    file(&neighbour);
    file(&pod.join("c1/core.42.zst"));
    let under = pod.to_str().unwrap();

    // Another pod's file, directly and through `..`.
    let (ok, _, stderr) = run(&["--under", under, &uri(&neighbour)]);
    assert!(!ok && stderr.contains("not under"), "{stderr}");
    let dotdot = format!("file://{}/../orders-2/c9/core.1.zst", pod.display());
    let (ok, _, stderr) = run(&["--under", under, &dotdot]);
    assert!(!ok && stderr.contains("without . or .."), "{stderr}");

    // A directory symlink inside the pod's own directory that leads to the neighbour.
    symlink(neighbour.parent().unwrap(), pod.join("evil")).unwrap();
    let (ok, _, stderr) = run(&["--under", under, &uri(&pod.join("evil/core.1.zst"))]);
    assert!(!ok && stderr.contains("symlink out of"), "{stderr}");

    // A file symlink is removed itself; its target is not followed.
    let link = pod.join("c1/link.zst");
    symlink(&neighbour, &link).unwrap();
    let (ok, _, stderr) = run(&["--under", under, &uri(&link)]);
    assert!(ok, "{stderr}");
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert!(neighbour.exists(), "the neighbour's file survives everything");

    // Not file://, relative, a directory: refused with a reason; the good URI is still done.
    let good = pod.join("c1/core.42.zst");
    let (ok, stdout, stderr) =
        run(&["--under", under, "s3://bucket/k", "file://relative/x", &uri(&pod.join("c1")), &uri(&good)]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("3 of 4 artifacts not deleted"), "{stderr}");
    assert!(stderr.contains("not a file:// URI") && stderr.contains("a directory"), "{stderr}");
    assert!(!good.exists(), "{stdout}");
}

#[test]
fn help_teaches_what_is_checked() {
    let out = Command::new(env!("CARGO_BIN_EXE_dumpwatch")).args(["delete-artifacts", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--under <DIR>") && help.contains("symlinks") && help.contains("Example"), "{help}");
}
