//! The layering rule: shared vocabulary sits below the code that uses it, and nothing reaches
//! up for it.
//!
//! - `model`, `auth`, `log`, `metrics` and `blobs` import nothing from `engine`,
//!   `projections`, `api`, `worker` or `client`;
//! - `engine` imports nothing from `api`, `worker` or `client`, and `projections` (which the
//!   engine runs) nothing from those nor from `engine`;
//! - `worker` and `client` reach the queue over HTTP only: they import nothing from `engine`,
//!   `api`, `projections` or `log`.
//!
//! Every `.rs` file under `src/` is read; every path that starts with `crate::`, `self::` or
//! `super::`, in a `use` (grouped, nested, over several lines) or inline in code, is resolved to
//! the top-level module it names. Comments and literals are skipped, and `super::` counts the
//! inline modules (`mod tests { … }`) it starts in.

use std::path::{Path, PathBuf};

/// What the shared vocabulary may not import: everything that uses it.
const ABOVE_THE_VOCABULARY: &[&str] = &["engine", "projections", "api", "worker", "client"];

/// What each layer may not import: (layer, forbidden top-level modules).
const RULES: &[(&str, &[&str])] = &[
    ("model", ABOVE_THE_VOCABULARY),
    ("auth", ABOVE_THE_VOCABULARY),
    ("log", ABOVE_THE_VOCABULARY),
    ("metrics", ABOVE_THE_VOCABULARY),
    ("blobs", ABOVE_THE_VOCABULARY),
    ("engine", &["api", "worker", "client"]),
    ("projections", &["engine", "api", "worker", "client"]),
    ("worker", &["engine", "api", "projections", "log"]),
    ("client", &["engine", "api", "projections", "log"]),
];

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSeparator,
    OpenBrace,
    CloseBrace,
    Comma,
    Star,
    /// Any other punctuation or literal: it ends a path.
    Other,
}

/// The tokens of `source` with their line numbers, without comments, strings and characters.
fn tokenize(source: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut at = 0;
    // Moves past `count` characters, counting the lines they end.
    let advance = |at: &mut usize, line: &mut usize, count: usize| {
        for _ in 0..count {
            if chars.get(*at) == Some(&'\n') {
                *line += 1;
            }
            *at += 1;
        }
    };
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        if c.is_whitespace() {
            advance(&mut at, &mut line, 1);
        } else if c == '/' && next == Some('/') {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while at < chars.len() {
                if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                    depth += 1;
                    advance(&mut at, &mut line, 2);
                } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                    depth -= 1;
                    advance(&mut at, &mut line, 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    advance(&mut at, &mut line, 1);
                }
            }
        } else if c == '"' {
            let start = line;
            advance(&mut at, &mut line, 1);
            while at < chars.len() && chars[at] != '"' {
                let step = if chars[at] == '\\' { 2 } else { 1 };
                advance(&mut at, &mut line, step);
            }
            advance(&mut at, &mut line, 1);
            tokens.push((Token::Other, start));
        } else if let Some((quote, hashes)) = raw_string_at(&chars, at) {
            let start = line;
            at = quote + 1;
            loop {
                if at >= chars.len() {
                    break;
                }
                if chars[at] == '"'
                    && (1..=hashes).all(|offset| chars.get(at + offset) == Some(&'#'))
                {
                    at += 1 + hashes;
                    break;
                }
                advance(&mut at, &mut line, 1);
            }
            tokens.push((Token::Other, start));
        } else if c == '\'' {
            // A character literal (`'x'`, `'\n'`, `'\u{1F600}'`) or a lifetime (`'a`).
            if next == Some('\\') {
                // The escaped character may itself be a quote.
                at += 3;
                while at < chars.len() && chars[at] != '\'' {
                    at += 1;
                }
                at += 1;
            } else if chars.get(at + 2) == Some(&'\'') {
                at += 3;
            } else {
                at += 1;
                while at < chars.len() && is_ident_char(chars[at]) {
                    at += 1;
                }
            }
            tokens.push((Token::Other, line));
        } else if is_ident_start(c) {
            let start = at;
            while at < chars.len() && is_ident_char(chars[at]) {
                at += 1;
            }
            let ident: String = chars[start..at].iter().collect();
            let ident = ident.strip_prefix("r#").unwrap_or(&ident).to_owned();
            tokens.push((Token::Ident(ident), line));
        } else if c.is_ascii_digit() {
            while at < chars.len() && (is_ident_char(chars[at]) || chars[at] == '.') {
                // `1..2` is a range, not a number.
                if chars[at] == '.' && chars.get(at + 1) == Some(&'.') {
                    break;
                }
                at += 1;
            }
            tokens.push((Token::Other, line));
        } else if c == ':' && next == Some(':') {
            at += 2;
            tokens.push((Token::PathSeparator, line));
        } else {
            at += 1;
            tokens.push((
                match c {
                    '{' => Token::OpenBrace,
                    '}' => Token::CloseBrace,
                    ',' => Token::Comma,
                    '*' => Token::Star,
                    _ => Token::Other,
                },
                line,
            ));
        }
    }
    tokens
}

/// Where the opening quote is and how many `#` close the string, if a raw string (`r"…"`,
/// `r#"…"#`, `br"…"`) starts at `at` rather than an identifier (`r#type`, `bar`).
fn raw_string_at(chars: &[char], at: usize) -> Option<(usize, usize)> {
    if at > 0 && is_ident_char(chars[at - 1]) {
        return None;
    }
    let r = match chars.get(at) {
        Some('r') => at,
        Some('b') if chars.get(at + 1) == Some(&'r') => at + 1,
        _ => return None,
    };
    let mut after = r + 1;
    while chars.get(after) == Some(&'#') {
        after += 1;
    }
    (chars.get(after) == Some(&'"')).then_some((after, after - r - 1))
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '#'
}

/// A path found in a file, as written (groups expanded), and the inline modules it sits in.
#[derive(Debug, PartialEq)]
struct FoundPath {
    line: usize,
    segments: Vec<String>,
    inline_modules: Vec<String>,
}

/// Every path starting with `crate`, `self` or `super` in `tokens`, groups expanded into one
/// path per item.
fn paths(tokens: &[(Token, usize)]) -> Vec<FoundPath> {
    let mut found = Vec::new();
    // Inline modules open at this point, with the brace depth their body starts at.
    let mut modules: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut index = 0;
    while index < tokens.len() {
        match &tokens[index].0 {
            Token::OpenBrace => depth += 1,
            Token::CloseBrace => {
                depth -= 1;
                if modules.last().is_some_and(|(_, body)| *body > depth) {
                    modules.pop();
                }
            }
            Token::Ident(keyword)
                if keyword == "mod"
                    && matches!(tokens.get(index + 2), Some((Token::OpenBrace, _))) =>
            {
                if let Some((Token::Ident(name), _)) = tokens.get(index + 1) {
                    modules.push((name.clone(), depth + 1));
                }
            }
            Token::Ident(start)
                if matches!(start.as_str(), "crate" | "self" | "super")
                    && matches!(tokens.get(index + 1), Some((Token::PathSeparator, _)))
                    && !matches!(
                        index.checked_sub(1).map(|before| &tokens[before].0),
                        Some(Token::PathSeparator)
                    ) =>
            {
                let inline_modules: Vec<String> =
                    modules.iter().map(|(name, _)| name.clone()).collect();
                let mut expanded = Vec::new();
                let end = path_tree(tokens, index, Vec::new(), &mut expanded);
                for (line, segments) in expanded {
                    found.push(FoundPath {
                        line,
                        segments,
                        inline_modules: inline_modules.clone(),
                    });
                }
                index = end;
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    found
}

/// Reads the path (or `use` tree) starting at `index` after `prefix`, pushing each complete
/// path with the line of its last segment; returns the index after it.
fn path_tree(
    tokens: &[(Token, usize)],
    mut index: usize,
    prefix: Vec<String>,
    expanded: &mut Vec<(usize, Vec<String>)>,
) -> usize {
    let mut segments = prefix;
    let mut line = tokens.get(index).map_or(0, |(_, line)| *line);
    loop {
        match tokens.get(index) {
            Some((Token::Ident(ident), at)) => {
                line = *at;
                // `{self, …}` in a group names the group's prefix.
                if ident != "self" || segments.is_empty() {
                    segments.push(ident.clone());
                }
                index += 1;
            }
            Some((Token::Star, at)) => {
                segments.push("*".to_owned());
                expanded.push((*at, segments));
                return index + 1;
            }
            Some((Token::OpenBrace, _)) => {
                index += 1;
                loop {
                    match tokens.get(index) {
                        Some((Token::CloseBrace, _)) => return index + 1,
                        Some((Token::Comma, _)) => index += 1,
                        None => return index,
                        Some(_) => {
                            let before = index;
                            index = path_tree(tokens, index, segments.clone(), expanded);
                            if index == before {
                                index += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                if !segments.is_empty() {
                    expanded.push((line, segments));
                }
                return index;
            }
        }
        // `as` ends a use item; `::` goes on; anything else ends the path.
        match tokens.get(index) {
            Some((Token::PathSeparator, _)) => index += 1,
            _ => {
                expanded.push((line, segments));
                return index;
            }
        }
    }
}

/// The module path of the file at `relative` (under `src/`): `engine/shard.rs` is
/// `["engine", "shard"]`, `log/embedded/mod.rs` is `["log", "embedded"]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut module: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|component| component.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        module.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        module.pop();
    }
    module
}

/// The top-level module `segments` names from within `module`; `None` for a path that names
/// no module below the crate root (`crate::SomeItem` is then the root's own item).
fn resolve(module: &[String], segments: &[String]) -> Result<Option<String>, String> {
    let mut absolute: Vec<String> = match segments.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        Some("self") => module.to_vec(),
        Some("super") => {
            let climbs = segments.iter().take_while(|s| *s == "super").count();
            if climbs > module.len() {
                return Err("climbs above the crate root".to_owned());
            }
            module[..module.len() - climbs].to_vec()
        }
        _ => return Ok(None),
    };
    let skip = match segments.first().map(String::as_str) {
        Some("super") => segments.iter().take_while(|s| *s == "super").count(),
        _ => 1,
    };
    absolute.extend(segments[skip..].iter().cloned());
    Ok(absolute.into_iter().next())
}

/// The violations in one file's `source`, as `file:line: message`.
fn violations_in(relative: &Path, source: &str) -> Vec<String> {
    let file_module = module_of(relative);
    let Some(layer) = file_module.first() else {
        return Vec::new();
    };
    let Some((_, forbidden)) = RULES.iter().find(|(name, _)| name == layer) else {
        return Vec::new();
    };
    let mut violations = Vec::new();
    for path in paths(&tokenize(source)) {
        let mut module = file_module.clone();
        module.extend(path.inline_modules.iter().cloned());
        let written = path.segments.join("::");
        let place = format!("src/{}:{}", relative.display(), path.line);
        match resolve(&module, &path.segments) {
            Err(problem) => violations.push(format!("{place}: `{written}` {problem}")),
            Ok(Some(target)) if target == "*" => violations.push(format!(
                "{place}: `{written}` imports everything at the crate root into `{layer}`"
            )),
            Ok(Some(target)) if forbidden.contains(&target.as_str()) => violations.push(format!(
                "{place}: `{written}`: `{layer}` may not import from `{target}`"
            )),
            Ok(_) => {}
        }
    }
    violations
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn no_layer_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        violations.extend(violations_in(file.strip_prefix(&src).unwrap(), &source));
    }
    assert!(
        violations.is_empty(),
        "{} import(s) break the layering rule:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// A renamed module must not silently escape the rules.
#[test]
fn every_layer_the_rules_name_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (layer, _) in RULES {
        assert!(
            src.join(layer).is_dir() || src.join(format!("{layer}.rs")).is_file(),
            "the rules name `{layer}`, which is not a module under src/"
        );
    }
}

fn check(file: &str, source: &str) -> Vec<String> {
    violations_in(Path::new(file), source)
}

#[test]
fn grouped_nested_and_multi_line_uses_are_read() {
    let source = "use crate::model::Slugid;\n\
                  use crate::{\n    model::{Event, Task},\n    api::{self, ApiError},\n};\n\
                  pub(crate) use crate::engine::Engine as Queue;\n";
    assert_eq!(
        check("log/writer.rs", source),
        [
            "src/log/writer.rs:4: `crate::api`: `log` may not import from `api`",
            "src/log/writer.rs:4: `crate::api::ApiError`: `log` may not import from `api`",
            "src/log/writer.rs:6: `crate::engine::Engine`: `log` may not import from `engine`",
        ]
    );
}

#[test]
fn inline_paths_are_read_and_comments_and_literals_are_not() {
    let source = "// crate::api::x\n/* crate::api::y /* nested */ crate::api::z */\n\
                  fn f() {\n    let s = \"crate::api::blobs\";\n    let r = r#\"crate::api\"#;\n\
                  let c = '\"';\n    crate::api::blobs::task_dir(dir, id);\n}\n";
    assert_eq!(
        check("engine/shard.rs", source),
        [
            "src/engine/shard.rs:7: `crate::api::blobs::task_dir`: `engine` may not import from `api`"
        ]
    );
}

#[test]
fn super_paths_climb_from_inline_modules() {
    let source = "use super::Error;\nmod tests {\n    use super::super::Error;\n    \
                  use super::super::super::api::ApiError;\n}\nuse super::super::engine::X;\n";
    assert_eq!(
        check("auth/clients.rs", source),
        [
            "src/auth/clients.rs:4: `super::super::super::api::ApiError`: `auth` may not \
             import from `api`",
            "src/auth/clients.rs:6: `super::super::engine::X`: `auth` may not import from \
             `engine`",
        ]
    );
    assert_eq!(
        check("worker/mod.rs", "use super::*;\nuse super::super::x;\n"),
        [
            "src/worker/mod.rs:1: `super::*` imports everything at the crate root into `worker`",
            "src/worker/mod.rs:2: `super::super::x` climbs above the crate root",
        ]
    );
}

#[test]
fn allowed_imports_pass() {
    let source = "use crate::client::QueueClient;\nuse crate::model::{Slugid, exchange::Exchange};\n\
                  use crate::auth::Credentials;\nuse self::inner::X;\n";
    assert!(check("worker/task_run.rs", source).is_empty());
    assert!(check("api/events.rs", "use crate::engine::Engine;\n").is_empty());
}
