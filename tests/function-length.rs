//! The house rule that a function stays short enough to hold in one's head: no function in the workspace's
//! source (tests, benchmarks and `#[cfg(test)]` modules aside) runs over 70 lines. The code is rustfmt-formatted,
//! so a function ends at the first line that closes its block at its own indentation.

mod support;

use std::path::{Path, PathBuf};

use support::workspace_root;

const LINES_MAX: usize = 70;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source tree reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(name, first line, length)` of each function over the limit in `text`.
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut test_module_indent: Option<usize> = None;
    for (at, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if let Some(open) = test_module_indent {
            if line.trim_start().starts_with('}') && indent == open {
                test_module_indent = None;
            }
            continue;
        }
        if line.trim() == "#[cfg(test)]" {
            test_module_indent = Some(indent);
            continue;
        }
        let Some(name) = function_name(line.trim_start()) else {
            continue;
        };
        // A declaration, or a whole function on one line (`fn stub() {}`).
        if line.trim_end().ends_with(';') || line.trim_end().ends_with("{}") {
            continue;
        }
        let closing = " ".repeat(indent) + "}";
        let end = lines[at..]
            .iter()
            .position(|l| l.trim_end() == closing)
            .map_or(lines.len() - at, |n| n + 1);
        if end > LINES_MAX {
            found.push((name, at + 1, end));
        }
    }
    found
}

fn function_name(line: &str) -> Option<String> {
    let mut rest = line;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    Some(rest.split(['(', '<']).next()?.to_owned())
}

#[test]
fn no_function_outside_tests_runs_over_seventy_lines() {
    let root = workspace_root();
    let mut files = Vec::new();
    source_files(&root.join("proto/src"), &mut files);
    for krate in std::fs::read_dir(root.join("crates")).expect("crates/ reads") {
        let src = krate.expect("a crate").path().join("src");
        if src.is_dir() {
            source_files(&src, &mut files);
        }
    }
    assert!(
        files.len() > 40,
        "the source was found: {} files",
        files.len()
    );
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for (name, line, length) in long_functions(&text) {
            long.push(format!("{}:{line} {name} ({length} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {LINES_MAX} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_measure_finds_a_long_function_and_skips_test_modules() {
    let body = "    let x = 1;\n".repeat(80);
    let text = format!(
        "pub fn long() {{\n{body}}}\n\nfn short() {{\n}}\n\nfn stub() {{}}\n{body}\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&text), [("long".to_owned(), 1, 82)]);
}
