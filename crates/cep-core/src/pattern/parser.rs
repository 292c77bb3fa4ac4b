//! Pattern text -> AST. Positions are 0-based character offsets so that
//! error messages can point at the offending token.

use super::{PatternError, PatternErrorKind};

/// Upper bound for `{n}` / `{n,m}` counts, to keep the expanded NFA small.
pub(super) const MAX_REPEAT: u32 = 100;

/// Longest pattern text. The NFA holds at most 1,000 positions, so no useful pattern is longer.
pub const MAX_PATTERN_BYTES: usize = 10_000;

/// Deepest nesting of `( )`. The parser recurses once per level: without a bound a pattern
/// nested 20,000 deep overflows the backend's stack.
pub const MAX_NESTING: usize = 32;

#[derive(Debug, Clone)]
pub(super) enum Node {
    Sym(String),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    /// `reluctant` (`a*?`, `a+?`, `a??`, `a{n,m}?`): as few rounds as the rest allows.
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
        reluctant: bool,
    },
    Absent(String),
    /// `^` (the partition's start, `false`) or `$` (its end, `true`): matches no row.
    Anchor(bool),
    /// `{- ... -}`: matched as usual, but its rows are left out of ALL ROWS PER MATCH.
    Exclude(Box<Node>),
}

/// Most items of one `PERMUTE`: it stands for every ordering of them (5! = 120 alternatives).
const MAX_PERMUTE: usize = 5;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    LParen,
    RParen,
    Bar,
    Bang,
    Comma,
    Caret,
    Dollar,
    ExcludeOpen,
    ExcludeClose,
    Quant(u32, Option<u32>),
    End,
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(Tok, usize, String)>, // token, char position, source text
    i: usize,
}

fn syntax(text: &str, pos: usize, what: String) -> PatternError {
    PatternError {
        kind: PatternErrorKind::Syntax,
        message: format!("pattern: {what} at position {pos}: {}", crate::excerpt(text)),
        position: Some(pos),
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize, String)>, PatternError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push((Tok::Ident(s.clone()), start, s));
            continue;
        }
        let pair: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if pair == "{-" || pair == "-}" {
            out.push((if pair == "{-" { Tok::ExcludeOpen } else { Tok::ExcludeClose }, start, pair));
            i += 2;
            continue;
        }
        let simple = match c {
            ',' => Some(Tok::Comma),
            '^' => Some(Tok::Caret),
            '$' => Some(Tok::Dollar),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '|' => Some(Tok::Bar),
            '!' => Some(Tok::Bang),
            '+' => Some(Tok::Quant(1, None)),
            '*' => Some(Tok::Quant(0, None)),
            '?' => Some(Tok::Quant(0, Some(1))),
            _ => None,
        };
        if let Some(t) = simple {
            out.push((t, start, c.to_string()));
            i += 1;
            continue;
        }
        if c == '{' {
            // {n} {n,} {n,m} {,m}
            let close = chars[i..].iter().position(|&c| c == '}').map(|k| i + k);
            let Some(close) = close else {
                return Err(syntax(text, start, "unterminated '{'".into()));
            };
            let inner: String = chars[i + 1..close].iter().collect();
            let src: String = chars[start..=close].iter().collect();
            let bad = || syntax(text, start, format!("invalid quantifier '{src}'"));
            let num = |s: &str| -> Result<u32, PatternError> {
                let s = s.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let n: u32 = s.parse().map_err(|_| bad())?;
                if n > MAX_REPEAT {
                    return Err(syntax(text, start, format!("quantifier '{src}' exceeds the limit of {MAX_REPEAT}")));
                }
                Ok(n)
            };
            let (min, max) = match inner.split_once(',') {
                None => {
                    let n = num(&inner)?;
                    (n, Some(n))
                }
                Some((a, b)) => {
                    let min = if a.trim().is_empty() { 0 } else { num(a)? };
                    // `{,}` is `*`, as the standard writes it.
                    let max = if b.trim().is_empty() { None } else { Some(num(b)?) };
                    (min, max)
                }
            };
            if max == Some(0) || max.is_some_and(|m| m < min) {
                return Err(bad());
            }
            out.push((Tok::Quant(min, max), start, src));
            i = close + 1;
            continue;
        }
        if c == '"' {
            // The standard's quoted variable keeps its case where unquoted ones are upper-cased;
            // pg_cep keeps every variable as written, so quoting would mean nothing here.
            let mut e = syntax(text, start, "quoted pattern variables (\"b\"): write the variable unquoted, as it is named in define".into());
            e.kind = PatternErrorKind::Unsupported;
            return Err(e);
        }
        return Err(syntax(text, start, format!("unexpected '{c}'")));
    }
    out.push((Tok::End, chars.len(), String::new()));
    Ok(out)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }
    fn pos(&self) -> usize {
        self.toks[self.i].1
    }
    fn unexpected(&self) -> PatternError {
        let (t, pos, src) = &self.toks[self.i];
        if *t == Tok::End {
            syntax(self.text, *pos, "unexpected end of pattern".into())
        } else {
            syntax(self.text, *pos, format!("unexpected '{src}'"))
        }
    }

    /// The parser recurses once per level of `( )`: bounded, so the backend's stack is.
    fn nested(&self, depth: usize, pos: usize) -> Result<(), PatternError> {
        if depth + 1 > MAX_NESTING {
            let mut e = syntax(self.text, pos, format!("parentheses nested deeper than {MAX_NESTING} levels"));
            e.kind = PatternErrorKind::TooComplex;
            return Err(e);
        }
        Ok(())
    }

    fn alt(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut alts = vec![self.seq(depth)?];
        while *self.peek() == Tok::Bar {
            self.i += 1;
            alts.push(self.seq(depth)?);
        }
        Ok(if alts.len() == 1 { alts.pop().unwrap() } else { Node::Alt(alts) })
    }

    fn seq(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Tok::Ident(_) | Tok::LParen | Tok::Bang | Tok::Caret | Tok::Dollar | Tok::ExcludeOpen = self.peek() {
            items.push(self.item(depth, items.is_empty())?);
        }
        if items.is_empty() {
            return Err(self.unexpected());
        }
        Ok(if items.len() == 1 { items.pop().unwrap() } else { Node::Concat(items) })
    }

    fn item(&mut self, depth: usize, first: bool) -> Result<Node, PatternError> {
        crate::check_stack();
        let pos = self.pos();
        if *self.peek() == Tok::Bang {
            if depth > 0 {
                return Err(syntax(self.text, pos, "absence '!' is only allowed at the top level, not inside ( )".into()));
            }
            if first {
                return Err(syntax(self.text, pos, "a pattern cannot start with an absence '!'".into()));
            }
            self.i += 1;
            let Tok::Ident(name) = self.peek().clone() else {
                return Err(self.unexpected());
            };
            self.i += 1;
            if let Tok::Quant(..) = self.peek() {
                return Err(syntax(self.text, self.pos(), "an absence cannot be quantified".into()));
            }
            return Ok(Node::Absent(name));
        }
        let node = match self.peek().clone() {
            Tok::Caret | Tok::Dollar => {
                let end = *self.peek() == Tok::Dollar;
                self.i += 1;
                Node::Anchor(end)
            }
            Tok::Ident(name) if name.eq_ignore_ascii_case("permute") && self.toks[self.i + 1].0 == Tok::LParen => {
                self.nested(depth, pos)?;
                self.i += 2;
                let mut items = vec![self.alt(depth + 1)?];
                while *self.peek() == Tok::Comma {
                    self.i += 1;
                    items.push(self.alt(depth + 1)?);
                }
                if *self.peek() != Tok::RParen {
                    return Err(self.unexpected());
                }
                self.i += 1;
                if items.len() > MAX_PERMUTE {
                    let mut e = syntax(self.text, pos, format!("PERMUTE of {} items (at most {MAX_PERMUTE})", items.len()));
                    e.kind = PatternErrorKind::TooComplex;
                    return Err(e);
                }
                permutations(items)
            }
            Tok::Ident(name) => {
                self.i += 1;
                Node::Sym(name)
            }
            Tok::LParen | Tok::ExcludeOpen => {
                self.nested(depth, pos)?;
                let exclude = *self.peek() == Tok::ExcludeOpen;
                let close = if exclude { Tok::ExcludeClose } else { Tok::RParen };
                self.i += 1;
                // `()` is the empty pattern, which matches no row.
                let inner = if *self.peek() == close { Node::Concat(Vec::new()) } else { self.alt(depth + 1)? };
                if *self.peek() != close {
                    return Err(self.unexpected());
                }
                self.i += 1;
                if exclude {
                    Node::Exclude(Box::new(inner))
                } else {
                    inner
                }
            }
            _ => return Err(self.unexpected()),
        };
        if let Tok::Quant(min, max) = *self.peek() {
            self.i += 1;
            // A `?` right after a quantifier makes it reluctant, as in the standard and in regexes.
            let reluctant = self.toks[self.i].2 == "?";
            if reluctant {
                self.i += 1;
            }
            if let Tok::Quant(..) = self.peek() {
                return Err(syntax(self.text, self.pos(), "a quantifier cannot follow a quantifier".into()));
            }
            return Ok(Node::Repeat { node: Box::new(node), min, max, reluctant });
        }
        Ok(node)
    }
}

pub(super) fn parse(text: &str) -> Result<Node, PatternError> {
    if text.len() > MAX_PATTERN_BYTES {
        return Err(PatternError {
            kind: PatternErrorKind::TooComplex,
            message: format!("pattern: {} bytes is longer than the limit of {MAX_PATTERN_BYTES}", text.len()),
            position: None,
        });
    }
    let toks = lex(text)?;
    let mut p = Parser { text, toks, i: 0 };
    let node = p.alt(0)?;
    if *p.peek() != Tok::End {
        return Err(p.unexpected());
    }
    if let Node::Alt(alts) = &node {
        if alts.iter().any(contains_absent) {
            let pos = text.find('!').unwrap_or(0);
            let pos = text[..pos].chars().count();
            return Err(syntax(text, pos, "absence '!' cannot be used inside an alternation".into()));
        }
    }
    Ok(node)
}

/// `PERMUTE(a, b, c)`: every ordering of the items as alternatives, in lexicographic order of
/// their positions, so the first ordering that matches is the preferred one (as the standard says).
fn permutations(items: Vec<Node>) -> Node {
    fn orderings(rest: &[usize], out: &mut Vec<Vec<usize>>, prefix: &mut Vec<usize>) {
        if rest.is_empty() {
            out.push(prefix.clone());
        }
        for (k, &i) in rest.iter().enumerate() {
            prefix.push(i);
            let others: Vec<usize> = rest.iter().enumerate().filter(|(j, _)| *j != k).map(|(_, &i)| i).collect();
            orderings(&others, out, prefix);
            prefix.pop();
        }
    }
    let mut all = Vec::new();
    orderings(&(0..items.len()).collect::<Vec<_>>(), &mut all, &mut Vec::new());
    let mut alts: Vec<Node> = all.into_iter().map(|order| Node::Concat(order.into_iter().map(|i| items[i].clone()).collect())).collect();
    if alts.len() == 1 {
        alts.pop().unwrap()
    } else {
        Node::Alt(alts)
    }
}

fn contains_absent(n: &Node) -> bool {
    match n {
        Node::Absent(_) => true,
        Node::Sym(_) | Node::Anchor(_) => false,
        Node::Concat(v) | Node::Alt(v) => v.iter().any(contains_absent),
        Node::Repeat { node, .. } | Node::Exclude(node) => contains_absent(node),
    }
}

/// Where the pattern uses a construct only the SQL standard's matching gives a meaning to (a
/// reluctant quantifier): its name, for the error when the pattern would run eagerly.
pub(super) fn standard_only(n: &Node) -> Option<&'static str> {
    match n {
        Node::Repeat { reluctant: true, .. } => Some("reluctant quantifiers (*? +? ?? {n,m}?)"),
        Node::Anchor(_) => Some("anchors (^ $)"),
        Node::Exclude(_) => Some("exclusions ({- -})"),
        Node::Repeat { node, .. } => standard_only(node),
        Node::Concat(v) | Node::Alt(v) => v.iter().find_map(standard_only),
        Node::Sym(_) | Node::Absent(_) => None,
    }
}

/// Where the pattern has what only a partition's whole rows give a meaning to (an anchor, whose
/// `$` a live stream never reaches), for the error when it would run live.
pub(super) fn history_only(n: &Node) -> bool {
    match n {
        Node::Anchor(_) => true,
        Node::Repeat { node, .. } | Node::Exclude(node) => history_only(node),
        Node::Concat(v) | Node::Alt(v) => v.iter().any(history_only),
        Node::Sym(_) | Node::Absent(_) => false,
    }
}

/// Symbols in order of first appearance; this order defines symbol ids.
pub(super) fn collect_symbols(n: &Node, out: &mut Vec<String>) {
    match n {
        Node::Sym(s) | Node::Absent(s) => {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        Node::Concat(v) | Node::Alt(v) => v.iter().for_each(|c| collect_symbols(c, out)),
        Node::Repeat { node, .. } | Node::Exclude(node) => collect_symbols(node, out),
        Node::Anchor(_) => {}
    }
}
