//! Tidy tests: the architecture rules of ARCHITECTURE.md, checked by reading the sources, so
//! that a change that breaks one fails `cargo test` instead of waiting for a reviewer.

use std::path::{Path, PathBuf};

/// The crate's root folder.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `folder`, with its path relative to the crate's root.
fn rust_files(folder: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| {
            panic!("cannot list {}: {error}", dir.display());
        });
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
                let relative = path
                    .strip_prefix(root())
                    .expect("below the root")
                    .to_string_lossy()
                    .replace('\\', "/");
                found.push((relative, text));
            }
        }
    }
    found.sort();
    found
}

/// Whether `path` belongs to the command line (the binary's side).
fn is_command_line(path: &str) -> bool {
    path == "src/main.rs" || path.starts_with("src/cli/")
}

/// The lines of `text` that use `name` as a path or an import in code: `name::…` or
/// `use name` outside comments and not right after a quote (a log target such as
/// `"sqlx::postgres::notice"` is a string, not a use).
fn code_uses<'a>(text: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let path = format!("{name}::");
    let import = format!("use {name}");
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| {
            line.trim_start().starts_with(&import)
                || line.match_indices(&path).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    !matches!(before, Some('"') | Some(':')) && !is_identifier(before)
                })
        })
        .map(|(index, line)| (index + 1, line))
        .collect()
}

fn is_identifier(character: Option<char>) -> bool {
    character.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// **Architecture invariant:** nothing below the command line knows there is one. Only
/// `src/main.rs` and `src/cli/` use `anyhow`, `clap` or the command line's types; the
/// library returns typed errors (`thiserror`).
#[test]
fn only_the_command_line_uses_anyhow_clap_or_its_own_types() {
    let mut offences = Vec::new();
    for (path, text) in rust_files(&root().join("src")) {
        if is_command_line(&path) || path == "src/tidy.rs" {
            continue;
        }
        for name in ["anyhow", "clap", "crate::cli", "contractd::cli"] {
            for (line, code) in code_uses(&text, name) {
                offences.push(format!("{path}:{line}: {}", code.trim()));
            }
        }
        if text.contains("#[derive(Parser") || text.contains("clap::") {
            offences.push(format!("{path}: declares command-line arguments"));
        }
    }
    assert!(
        offences.is_empty(),
        "the library must not know the command line:\n{}",
        offences.join("\n")
    );
}

/// **Architecture invariant:** only `storage` knows SQL: no other module imports `sqlx`.
#[test]
fn only_storage_uses_sqlx() {
    let mut offences = Vec::new();
    for (path, text) in rust_files(&root().join("src")) {
        if path.starts_with("src/storage/") || path == "src/tidy.rs" {
            continue;
        }
        for (line, code) in code_uses(&text, "sqlx") {
            offences.push(format!("{path}:{line}: {}", code.trim()));
        }
    }
    assert!(
        offences.is_empty(),
        "SQL belongs in src/storage:\n{}",
        offences.join("\n")
    );
}

/// **Architecture invariant:** the rules (`calendar`, `contract`, `lifecycle`) are pure
/// functions of (contract, business date): no clock, no runtime, no files, no database.
#[test]
fn the_rules_do_no_io_and_read_no_clock() {
    let forbidden = [
        "Utc::now",
        "Local::now",
        "SystemTime",
        "Instant::now",
        "tokio::",
        "std::fs",
        "std::net",
        "sqlx",
        "std::env",
    ];
    let mut offences = Vec::new();
    for folder in ["src/calendar", "src/contract", "src/lifecycle"] {
        for (path, text) in rust_files(&root().join(folder)) {
            for (index, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for word in forbidden {
                    if line.contains(word) {
                        offences.push(format!("{path}:{}: {}", index + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the rules must stay pure:\n{}",
        offences.join("\n")
    );
}

/// **Architecture invariant:** the repository is the product: nothing in it refers to files
/// outside it (the product's rules are in `docs/rules.md`).
#[test]
fn nothing_refers_outside_the_repository() {
    let mut files = rust_files(&root().join("src"));
    for folder in ["tests", "benches", "examples"] {
        files.extend(rust_files(&root().join(folder)));
    }
    for document in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root().join(document)).expect("a document");
        files.push((document.to_string(), text));
    }
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "md") {
            let text = std::fs::read_to_string(&path).expect("a document");
            files.push((
                format!("docs/{}", path.file_name().unwrap().to_string_lossy()),
                text,
            ));
        }
    }
    // The folder beside the checkout that held the original rules, spelt in two pieces so
    // that this check does not itself read as a reference to it.
    let beside = concat!("..", "/shared");
    let outside = [beside, "SPEC.md", "SPEC section", "SPEC §", "(SPEC "];
    let mut offences = Vec::new();
    for (path, text) in &files {
        if path == "src/tidy.rs" {
            continue;
        }
        for (index, line) in text.lines().enumerate() {
            if outside.iter().any(|word| line.contains(word)) {
                offences.push(format!("{path}:{}: {}", index + 1, line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "refer to docs/rules.md, not to files outside the repository:\n{}",
        offences.join("\n")
    );
}

/// **Architecture invariant:** no dead dependencies: every crate in `[dependencies]` is
/// used by the library or the binary.
#[test]
fn every_dependency_is_used() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let section = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] section");
    let sources: String = rust_files(&root().join("src"))
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    let mut unused = Vec::new();
    for line in section.lines() {
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let crate_name = name.replace('-', "_");
        if code_uses(&sources, &crate_name).is_empty()
            && !sources.contains(&format!("{crate_name}!"))
        {
            unused.push(name.to_string());
        }
    }
    assert!(unused.is_empty(), "dependencies nothing uses: {unused:?}");
}
