//! The SQL examples of README.md and docs/*.md, run as written so that none can rot.
//!
//! For each file: a fresh database with pg_cep, then every ```sql block of the file in order, in
//! one session, each statement on its own in autocommit as psql would send it (simple-query
//! protocol, so `BEGIN; ...; COMMIT;` in a block works as in psql). A block fenced ```sql no-run
//! is shown but not run: one meant to show an error, or one that needs what the page cannot give.

use pg_cep_e2e::TestDb;
use std::path::{Path, PathBuf};

struct Block {
    /// 1-based, counting every ```sql block of the file (run or not).
    number: usize,
    /// The line of the opening fence.
    line: usize,
    run: bool,
    text: String,
}

fn sql_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(block) = open.as_mut() {
            if trimmed.starts_with("```") {
                blocks.push(open.take().unwrap());
            } else {
                block.text.push_str(line);
                block.text.push('\n');
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            let words: Vec<&str> = info.split_whitespace().collect();
            if words.first() == Some(&"sql") {
                let number = blocks.len() + 1;
                open = Some(Block { number, line: i + 1, run: !words.contains(&"no-run"), text: String::new() });
            } else if !words.is_empty() {
                // Another language's block: skip to its closing fence.
                open = Some(Block { number: 0, line: i + 1, run: false, text: String::new() });
            }
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    blocks.into_iter().filter(|b| b.number > 0).collect()
}

/// Splits SQL into statements as psql does: at semicolons outside quotes, dollar quotes,
/// comments and parentheses.
fn statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'$' => {
                // A dollar quote: $$ or $tag$ (a tag does not start with a digit).
                let tag_end = b[i + 1..].iter().position(|&c| !(c.is_ascii_alphanumeric() || c == b'_')).map(|p| i + 1 + p);
                if let Some(e) = tag_end {
                    if b[e] == b'$' && !b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(p) => i = e + 1 + p + tag.len() - 1,
                            None => i = b.len(),
                        }
                    }
                }
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            b';' if depth == 0 => {
                out.push(sql[start..=i].to_string());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(sql[start.min(sql.len())..].to_string());
    out.into_iter().filter(|s| !only_comments(s)).collect()
}

fn only_comments(s: &str) -> bool {
    s.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with("--") || l == ";"
    })
}

fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn sql_examples_in_the_docs_run_as_written() {
    let mut failures = Vec::new();
    let (mut ran, mut skipped) = (0, 0);
    for path in doc_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let shown = if path.parent().unwrap().ends_with("docs") { format!("docs/{name}") } else { name };
        let text = std::fs::read_to_string(&path).unwrap();
        let blocks = sql_blocks(&text);
        if blocks.iter().all(|b| !b.run) {
            skipped += blocks.len();
            continue;
        }
        let db = TestDb::new("docs");
        let mut client = db.connect();
        for block in &blocks {
            if !block.run {
                skipped += 1;
                continue;
            }
            ran += 1;
            for stmt in statements(&block.text) {
                if let Err(e) = client.batch_execute(&stmt) {
                    let why = match e.as_db_error() {
                        Some(d) => format!(
                            "{} ({}): {}{}",
                            d.severity(),
                            d.code().code(),
                            d.message(),
                            d.detail().map(|x| format!("\nDETAIL: {x}")).unwrap_or_default()
                        ),
                        None => e.to_string(),
                    };
                    failures.push(format!("{shown}, SQL block {} (line {}):\n{}\n{why}", block.number, block.line, stmt.trim()));
                    // Leave a transaction the block opened, so the next blocks report their own errors.
                    let _ = client.batch_execute("ROLLBACK");
                    break;
                }
            }
        }
        drop(client);
        drop(db);
    }
    eprintln!("docs examples: {ran} SQL blocks run, {skipped} marked no-run");
    assert!(ran > 0, "no SQL block was found");
    assert!(failures.is_empty(), "{} example(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn the_statement_splitter_keeps_quoted_semicolons() {
    let s = statements("SELECT 'a;b'; SELECT $$x;y$$; -- c;\nSELECT \"q;\" FROM t;\nDO $f$ BEGIN PERFORM 1; END $f$;\n-- only a comment\n");
    assert_eq!(s.len(), 4, "{s:?}");
    assert!(s[3].contains("PERFORM 1; END"));
}
