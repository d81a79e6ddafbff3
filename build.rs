//! Builds the web console (`web/`: Preact and xterm.js, bundled by esbuild) into
//! `$OUT_DIR/console`, which `src/api/console.rs` embeds: `index.html`, `console.js` and
//! `console.css`, each beside a gzipped copy.
//!
//! The npm packages are installed once per `web/package-lock.json` into
//! `target/console-build/` (shared by every profile, and by the fuzz crate), so a rebuild
//! after changing the console's sources only runs esbuild. Building therefore needs Node.js
//! and npm, and the npm registry the first time. `TASKFOLD_CONSOLE_PREBUILT=DIR` takes the
//! three files from DIR instead (what `node web/build.mjs DIR` wrote), for builders without
//! Node.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `web/build.mjs` writes, and so what the binary embeds.
const OUTPUTS: [&str; 3] = ["index.html", "console.js", "console.css"];

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let web = manifest_dir.join("web");
    let out = PathBuf::from(env("OUT_DIR")).join("console");
    for input in [
        "package.json",
        "package-lock.json",
        "build.mjs",
        "index.html",
        "src",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=TASKFOLD_CONSOLE_PREBUILT");

    // Only what this build writes: `build.mjs` refuses a directory with other files.
    if out.exists() {
        fs::remove_dir_all(&out)
            .unwrap_or_else(|e| fail(&format!("emptying {}: {e}", out.display())));
    }
    fs::create_dir_all(&out).unwrap_or_else(|e| fail(&format!("creating {}: {e}", out.display())));
    match std::env::var_os("TASKFOLD_CONSOLE_PREBUILT") {
        Some(prebuilt) => {
            for name in OUTPUTS {
                let from = Path::new(&prebuilt).join(name);
                fs::copy(&from, out.join(name))
                    .unwrap_or_else(|e| fail(&format!("copying {}: {e}", from.display())));
            }
        }
        None => build(
            &web,
            &manifest_dir.join("target").join("console-build"),
            &out,
        ),
    }
    for name in OUTPUTS {
        gzip(&out.join(name));
    }
}

/// Installs the console's npm packages in `work` (when `package-lock.json` changed), copies
/// its sources there and runs `node build.mjs out`.
fn build(web: &Path, work: &Path, out: &Path) {
    fs::create_dir_all(work).unwrap_or_else(|e| fail(&format!("creating {}: {e}", work.display())));
    // Builds of several profiles at once share `work`: one at a time.
    let lock = fs::File::create(work.join(".lock")).unwrap_or_else(|e| {
        fail(&format!(
            "creating the build lock in {}: {e}",
            work.display()
        ))
    });
    lock.lock()
        .unwrap_or_else(|e| fail(&format!("locking {}: {e}", work.display())));

    let lockfile = read(&web.join("package-lock.json"));
    let installed = work.join("node_modules").join(".taskfold-installed-lock");
    if fs::read(&installed).ok().as_deref() != Some(lockfile.as_slice()) {
        for name in ["package.json", "package-lock.json"] {
            copy(&web.join(name), &work.join(name));
        }
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(work),
            "npm ci",
        );
        fs::write(&installed, &lockfile)
            .unwrap_or_else(|e| fail(&format!("writing {}: {e}", installed.display())));
    }

    copy(&web.join("build.mjs"), &work.join("build.mjs"));
    copy(&web.join("index.html"), &work.join("index.html"));
    let sources = work.join("src");
    if sources.exists() {
        fs::remove_dir_all(&sources)
            .unwrap_or_else(|e| fail(&format!("removing {}: {e}", sources.display())));
    }
    copy_tree(&web.join("src"), &sources);
    run(
        Command::new("node")
            .arg("build.mjs")
            .arg(out)
            .current_dir(work),
        "node build.mjs",
    );
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("{what} failed ({status})")),
        Err(e) => fail(&format!(
            "{what} could not start ({e}): the console is built with Node.js and npm; install \
             them, or set TASKFOLD_CONSOLE_PREBUILT to a directory of a built console"
        )),
    }
}

fn gzip(path: &Path) {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(&read(path))
        .and_then(|()| encoder.flush())
        .unwrap_or_else(|e| fail(&format!("compressing {}: {e}", path.display())));
    let compressed = encoder
        .finish()
        .unwrap_or_else(|e| fail(&format!("compressing {}: {e}", path.display())));
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    fs::write(&name, compressed).unwrap_or_else(|e| fail(&format!("writing {name:?}: {e}")));
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| fail(&format!("creating {}: {e}", to.display())));
    let entries =
        fs::read_dir(from).unwrap_or_else(|e| fail(&format!("reading {}: {e}", from.display())));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| fail(&format!("reading {}: {e}", from.display())));
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            copy(&path, &target);
        }
    }
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap_or_else(|e| {
        fail(&format!(
            "copying {} to {}: {e}",
            from.display(),
            to.display()
        ))
    });
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| fail(&format!("reading {}: {e}", path.display())))
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

fn fail(message: &str) -> ! {
    eprintln!("building the web console: {message}");
    std::process::exit(1);
}
