//! Position (Glushkov) automaton: one state per symbol occurrence, no
//! epsilon moves, so a run is just "the position of its last row" and a step
//! is a scan of that position's out-edges.
//!
//! Absences (`!x`) do not get positions: they become guard bits on the
//! edges that jump over them. A run remembers which guards were violated
//! since its last row (`poison`) and may not use edges carrying them.

use super::parser::Node;
use super::{PatternError, PatternErrorKind};

/// Keeps the expanded automaton (after `{n,m}` copies) small enough for u16
/// positions and cheap per-run scans.
const MAX_POSITIONS: usize = 1000;

/// Keeps building and every run's step bounded: `(a|b|...)*` over many alternatives links every
/// last position to every first one.
const MAX_EDGES: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Accept {
    No,
    /// Accepting as soon as the run gets here.
    Eager,
    /// Accepting once `within` has elapsed without an event violating the
    /// guard bits (trailing absence).
    Deferred(u32),
}

#[derive(Debug)]
pub(super) struct Nfa {
    /// Symbol id of each position.
    pub sym: Vec<u16>,
    /// Out-edges of position p are `edges[off[p]..off[p+1]]`: (target, guard).
    pub off: Vec<u32>,
    pub edges: Vec<(u16, u32)>,
    pub accept: Vec<Accept>,
    /// Positions a run may start at.
    pub first: Vec<u16>,
    /// Symbol id of each absence bit.
    pub absences: Vec<u16>,
    /// Per position: union of guard bits on its edges and deferred accept.
    pub guards: Vec<u32>,
    /// The pattern can match no row at all (`a*`): only the standard's matching, which has empty
    /// matches, runs it.
    pub nullable: bool,
}

impl Nfa {
    pub fn has_deferred(&self) -> bool {
        self.accept.iter().any(|a| matches!(a, Accept::Deferred(_)))
    }
    #[inline]
    pub fn out(&self, p: u16) -> &[(u16, u32)] {
        &self.edges[self.off[p as usize] as usize..self.off[p as usize + 1] as usize]
    }
    /// Whether a run at `p` with these violated guards can still progress.
    pub fn alive(&self, p: u16, poison: u32, sealed: bool) -> bool {
        if let Accept::Deferred(g) = self.accept[p as usize] {
            if g & poison == 0 {
                return true;
            }
        }
        !sealed && self.out(p).iter().any(|&(_, g)| g & poison == 0)
    }
}

struct Frag {
    first: Vec<u16>,
    last: Vec<u16>,
    nullable: bool,
}

impl Frag {
    fn empty() -> Frag {
        Frag { first: vec![], last: vec![], nullable: true }
    }
}

struct Builder<'a> {
    symbols: &'a [String],
    text: &'a str,
    sym: Vec<u16>,
    follow: Vec<Vec<(u16, u32)>>,
    /// Every edge made so far, so that a duplicate is found in constant time.
    linked: std::collections::HashSet<(u16, u16, u32)>,
}

impl Builder<'_> {
    fn new_pos(&mut self, s: &str) -> Result<u16, PatternError> {
        if self.sym.len() >= MAX_POSITIONS {
            return Err(PatternError {
                kind: PatternErrorKind::TooComplex,
                message: format!(
                    "pattern: too large after expanding quantifiers (more than {MAX_POSITIONS} positions): {}",
                    crate::excerpt(self.text)
                ),
                position: None,
            });
        }
        let id = self.symbols.iter().position(|x| x == s).expect("collected") as u16;
        self.sym.push(id);
        self.follow.push(Vec::new());
        Ok((self.sym.len() - 1) as u16)
    }

    fn link(&mut self, from: &[u16], to: &[u16], guard: u32) -> Result<(), PatternError> {
        for &p in from {
            for &q in to {
                if self.linked.insert((p, q, guard)) {
                    if self.linked.len() > MAX_EDGES {
                        return Err(PatternError {
                            kind: PatternErrorKind::TooComplex,
                            message: format!(
                                "pattern: too many transitions (more than {MAX_EDGES}); use fewer alternatives under a quantifier: {}",
                                crate::excerpt(self.text)
                            ),
                            position: None,
                        });
                    }
                    self.follow[p as usize].push((q, guard));
                }
            }
        }
        Ok(())
    }

    fn concat(&mut self, a: Frag, b: Frag) -> Result<Frag, PatternError> {
        self.link(&a.last, &b.first, 0)?;
        let mut first = a.first.clone();
        if a.nullable {
            first.extend(b.first.iter().copied().filter(|q| !a.first.contains(q)));
        }
        let mut last = b.last.clone();
        if b.nullable {
            last.extend(a.last.iter().copied().filter(|q| !b.last.contains(q)));
        }
        Ok(Frag { first, last, nullable: a.nullable && b.nullable })
    }

    /// Optional chain X (X (X)?)? — nested so that each copy can only follow
    /// the previous one, which keeps runs unambiguous.
    fn opt_chain(&mut self, n: &Node, k: u32) -> Result<Frag, PatternError> {
        if k == 0 {
            return Ok(Frag::empty());
        }
        let f = self.frag(n)?;
        let rest = self.opt_chain(n, k - 1)?;
        let mut c = self.concat(f, rest)?;
        c.nullable = true;
        Ok(c)
    }

    fn frag(&mut self, n: &Node) -> Result<Frag, PatternError> {
        Ok(match n {
            Node::Sym(s) => {
                let p = self.new_pos(s)?;
                Frag { first: vec![p], last: vec![p], nullable: false }
            }
            Node::Absent(_) => unreachable!("absences are handled at the top level"),
            // Anchors and exclusions only mean something to the standard's matching (`preferred`);
            // a pattern with them never runs eagerly (see `compile`).
            Node::Anchor(_) => Frag::empty(),
            Node::Exclude(node) => self.frag(node)?,
            Node::Concat(items) => {
                let mut acc = Frag::empty();
                for it in items {
                    let f = self.frag(it)?;
                    acc = self.concat(acc, f)?;
                }
                acc
            }
            Node::Alt(alts) => {
                let mut acc = Frag { first: vec![], last: vec![], nullable: false };
                for a in alts {
                    let f = self.frag(a)?;
                    acc.first.extend(f.first);
                    acc.last.extend(f.last);
                    acc.nullable |= f.nullable;
                }
                acc
            }
            // Reluctance only matters to the standard's preferred matches (`preferred`); a pattern
            // that has it never runs eagerly (see `compile`).
            Node::Repeat { node, min, max, .. } => {
                let mut acc = Frag::empty();
                for i in 0..*min {
                    let f = self.frag(node)?;
                    if i + 1 == *min && max.is_none() {
                        self.link(&f.last, &f.first, 0)?;
                    }
                    acc = self.concat(acc, f)?;
                }
                match max {
                    None if *min == 0 => {
                        let mut f = self.frag(node)?;
                        self.link(&f.last, &f.first, 0)?;
                        f.nullable = true;
                        acc = self.concat(acc, f)?;
                    }
                    None => {}
                    Some(mx) => {
                        let f = self.opt_chain(node, mx - min)?;
                        acc = self.concat(acc, f)?;
                    }
                }
                acc
            }
        })
    }
}

pub(super) fn build(ast: &Node, symbols: &[String], text: &str) -> Result<Nfa, PatternError> {
    let mut b = Builder { symbols, text, sym: vec![], follow: vec![], linked: Default::default() };
    let items: Vec<&Node> = match ast {
        Node::Concat(v) => v.iter().collect(),
        other => vec![other],
    };
    let mut absences: Vec<u16> = Vec::new();
    // Positions whose outgoing edges are not yet linked, with the guard bits
    // of the absences crossed since them.
    let mut pending: Vec<(u16, u32)> = Vec::new();
    let mut first: Vec<u16> = Vec::new();
    let mut start_open = true;
    for it in items {
        if let Node::Absent(s) = it {
            if absences.len() >= 32 {
                return Err(PatternError {
                    kind: PatternErrorKind::Syntax,
                    message: format!("pattern: too many absences (at most 32): {}", crate::excerpt(text)),
                    position: None,
                });
            }
            let bit = 1u32 << absences.len();
            absences.push(symbols.iter().position(|x| x == s).unwrap() as u16);
            for (_, g) in pending.iter_mut() {
                *g |= bit;
            }
            continue;
        }
        let f = b.frag(it)?;
        for &(p, g) in &pending {
            b.link(&[p], &f.first, g)?;
        }
        if start_open {
            first.extend(f.first.iter().copied());
        }
        if f.nullable {
            pending.extend(f.last.iter().map(|&p| (p, 0)));
        } else {
            pending = f.last.iter().map(|&p| (p, 0)).collect();
            start_open = false;
        }
    }
    let n = b.sym.len();
    let mut accept = vec![Accept::No; n];
    for &(p, g) in &pending {
        accept[p as usize] = if g == 0 { Accept::Eager } else { Accept::Deferred(g) };
    }
    let mut off = Vec::with_capacity(n + 1);
    let mut edges = Vec::new();
    let mut guards = vec![0u32; n];
    for p in 0..n {
        off.push(edges.len() as u32);
        for &(q, g) in &b.follow[p] {
            edges.push((q, g));
            guards[p] |= g;
        }
        if let Accept::Deferred(g) = accept[p] {
            guards[p] |= g;
        }
    }
    off.push(edges.len() as u32);
    Ok(Nfa { sym: b.sym, off, edges, accept, first, absences, guards, nullable: start_open })
}
