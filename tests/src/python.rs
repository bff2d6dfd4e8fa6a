//! A Python virtualenv holding the third-party peers the interoperability
//! tests drive (slixmpp; Comet, the reference VTP broker), created under the
//! target directory on first use so a fresh clone needs nothing but
//! `python3`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Packages the interoperability tests import, pinned so a new release
/// cannot change what the tests exercise.
/// Comet 3.1.0 is the current release and runs on Python 3.11.
const PACKAGES: &[&str] = &["slixmpp==1.17.0", "comet==3.1.0"];

/// The virtualenv's interpreter, with [`PACKAGES`] installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = super::node::vomesh_bin()
            .parent()
            .expect("the binary lives in the target directory")
            .join("py-venv");
        let python = venv.join("bin").join("python");
        let ready = venv.join(".installed");
        if std::fs::read_to_string(&ready).ok().as_deref() != Some(&PACKAGES.join(" ")) {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PACKAGES));
            std::fs::write(&ready, PACKAGES.join(" ")).expect("marking the virtualenv ready");
        }
        python
    })
}

/// A program the virtualenv installed (`twistd`, `comet-sendvo`).
pub fn program(name: &str) -> PathBuf {
    python()
        .parent()
        .expect("the interpreter lives in the virtualenv's bin")
        .join(name)
}

/// A script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed with {status}");
}
