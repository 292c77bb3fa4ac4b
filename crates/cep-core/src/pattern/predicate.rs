//! `define` JSON -> predicate trees. Everything that can be wrong with a
//! predicate is rejected here, so evaluation is total: NULLs and type
//! mismatches evaluate to false instead of failing inside a trigger.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use regex::Regex;
use serde_json::Value as Json;

use super::expr::{Expr, Frame, Reads};
use super::expr_parser::{self, Scope};
use super::{PatternError, PatternErrorKind, Value};

const OPERATORS: &str = "=, <>, <, <=, >, >=, in, like, ~, is_null";

/// Deepest nesting of `and` / `or` / `not`. Compiling and evaluating recurse once per level.
pub const MAX_PREDICATE_DEPTH: usize = 32;

/// Most conditions (comparisons, `in` values, groups) in one pattern's `define`, so that a
/// 10 MB condition is refused when written instead of being evaluated on every row.
pub const MAX_PREDICATE_NODES: usize = 10_000;

/// Longest `like` / `~` operand. The regex crate parses the whole text before its size limit
/// applies, which for a megabyte takes seconds.
const MAX_REGEX_TEXT: usize = 10_000;

/// Largest compiled regular expression (`like`, `~`), in bytes of the regex crate's program.
const MAX_REGEX_BYTES: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
pub(super) enum Rhs {
    Lit(Value),
    /// Index into the run's context slots (PREV/FIRST values).
    Ctx(u16),
}

#[derive(Debug)]
pub(super) enum Pred {
    Cmp { col: u16, op: CmpOp, rhs: Rhs },
    In { col: u16, vals: Vec<Value> },
    Regex { col: u16, re: Regex },
    IsNull { col: u16, want: bool },
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
}

/// A symbol's condition. `refs` marks predicates that read PREV/FIRST and
/// therefore must be evaluated per run instead of once per event.
#[derive(Debug, Default)]
pub(super) struct SymbolPred {
    pub pred: Option<Pred>,
    pub refs: bool,
    /// A condition written as an SQL expression (`"price < PREV(price)"`), and what it reads.
    pub expr: Option<Expr>,
    pub reads: Reads,
}

impl SymbolPred {
    pub fn uses_refs(&self) -> bool {
        self.refs
    }
    /// An expression that reads more than its own row: only the standard's matching
    /// (`preferred`) evaluates it, with the match's rows (`expr::Frame`).
    pub fn navigation(&self) -> Option<&Expr> {
        self.expr.as_ref().filter(|_| self.reads.navigates)
    }
    /// `ctx` is None when there is no previous row (start of a match).
    #[inline]
    pub fn eval(&self, vals: &[Value], ctx: Option<&[Value]>) -> bool {
        if let Some(e) = &self.expr {
            return e.holds(&Frame::single(vals));
        }
        match &self.pred {
            None => true,
            Some(p) => {
                if self.refs {
                    match ctx {
                        Some(c) => p.eval(vals, c),
                        None => false,
                    }
                } else {
                    p.eval(vals, &[])
                }
            }
        }
    }
}

static NULL: Value = Value::Null;

#[inline]
fn get(vals: &[Value], i: u16) -> &Value {
    vals.get(i as usize).unwrap_or(&NULL)
}

/// SQL-ish comparison collapsed to two-valued logic: None = unknown.
#[inline]
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        (Int(x), Float(y)) => (*x as f64).partial_cmp(y),
        (Float(x), Int(y)) => x.partial_cmp(&(*y as f64)),
        (Text(x), Text(y)) => Some(x.as_str().cmp(y.as_str())),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Pred {
    fn eval(&self, vals: &[Value], ctx: &[Value]) -> bool {
        match self {
            Pred::Cmp { col, op, rhs } => {
                let r = match rhs {
                    Rhs::Lit(v) => v,
                    Rhs::Ctx(i) => get(ctx, *i),
                };
                let Some(o) = compare(get(vals, *col), r) else { return false };
                match op {
                    CmpOp::Eq => o == Ordering::Equal,
                    CmpOp::Ne => o != Ordering::Equal,
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Le => o != Ordering::Greater,
                    CmpOp::Gt => o == Ordering::Greater,
                    CmpOp::Ge => o != Ordering::Less,
                }
            }
            Pred::In { col, vals: set } => {
                let v = get(vals, *col);
                set.iter().any(|s| compare(v, s) == Some(Ordering::Equal))
            }
            Pred::Regex { col, re } => match get(vals, *col) {
                Value::Text(s) => re.is_match(s),
                _ => false,
            },
            Pred::IsNull { col, want } => matches!(get(vals, *col), Value::Null) == *want,
            Pred::And(v) => v.iter().all(|p| p.eval(vals, ctx)),
            Pred::Or(v) => v.iter().any(|p| p.eval(vals, ctx)),
            Pred::Not(p) => !p.eval(vals, ctx),
        }
    }

    fn remap(&mut self, cols: &[u16], ctx: &[u16]) {
        match self {
            Pred::Cmp { col, rhs, .. } => {
                *col = cols[*col as usize];
                if let Rhs::Ctx(i) = rhs {
                    *i = ctx[*i as usize];
                }
            }
            Pred::In { col, .. } | Pred::Regex { col, .. } | Pred::IsNull { col, .. } => *col = cols[*col as usize],
            Pred::And(v) | Pred::Or(v) => v.iter_mut().for_each(|p| p.remap(cols, ctx)),
            Pred::Not(p) => p.remap(cols, ctx),
        }
    }
}

pub(super) struct Defs {
    pub columns: Vec<String>,
    /// Indexed by symbol id; undefined symbols are always true.
    pub preds: Vec<SymbolPred>,
    pub ctx_slots: Vec<(bool, u16)>,
    /// MEASURES: each name and its expression.
    pub measures: Vec<(String, Expr)>,
}

struct Ctx {
    cols: Vec<String>,
    slots: Vec<(bool, String)>,
    refs: bool,
    /// Conditions compiled so far, against [`MAX_PREDICATE_NODES`].
    nodes: usize,
}

impl Ctx {
    fn count(&mut self, n: usize, path: &str) -> Result<(), PatternError> {
        self.nodes += n;
        if self.nodes > MAX_PREDICATE_NODES {
            let mut e = bad(path, format!("define holds more than {MAX_PREDICATE_NODES} conditions"));
            e.kind = PatternErrorKind::TooComplex;
            return Err(e);
        }
        Ok(())
    }

    fn col(&mut self, name: &str) -> u16 {
        match self.cols.iter().position(|c| c == name) {
            Some(i) => i as u16,
            None => {
                self.cols.push(name.to_string());
                (self.cols.len() - 1) as u16
            }
        }
    }
    fn slot(&mut self, prev: bool, name: &str) -> u16 {
        self.col(name);
        self.refs = true;
        match self.slots.iter().position(|(p, c)| *p == prev && c == name) {
            Some(i) => i as u16,
            None => {
                self.slots.push((prev, name.to_string()));
                (self.slots.len() - 1) as u16
            }
        }
    }
}

pub(super) fn is_ident(s: &str) -> bool {
    let mut it = s.chars();
    matches!(it.next(), Some(c) if c.is_ascii_alphabetic() || c == '_') && it.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn bad(path: &str, msg: String) -> PatternError {
    let path = if path.len() > 200 { crate::excerpt(path) } else { path.to_string() };
    PatternError::new(PatternErrorKind::BadPredicate, format!("{path}: {msg}"))
}

/// SUBSET: `{"u": ["c", "d"]}`, a name for the union of some variables, usable wherever a
/// variable is in an expression.
pub(super) fn compile_subsets(subset: &Json, symbols: &[String]) -> Result<Vec<(String, u64)>, PatternError> {
    let obj = match subset {
        Json::Null => return Ok(Vec::new()),
        Json::Object(m) => m,
        _ => return Err(PatternError::option("subset: expected a JSON object mapping a name to an array of pattern variables".into())),
    };
    let mut out = Vec::new();
    for (name, members) in obj {
        if !is_ident(name) || symbols.contains(name) {
            return Err(PatternError::option(format!("subset: {} is not a valid name, or is a pattern variable already", crate::excerpt(name))));
        }
        let Json::Array(members) = members else {
            return Err(PatternError::option(format!("subset.{name}: expected an array of pattern variables")));
        };
        let mut bits = 0u64;
        for m in members {
            match m.as_str().and_then(|m| symbols.iter().position(|s| s == m)) {
                Some(id) => bits |= 1 << id,
                None => {
                    return Err(PatternError::option(format!(
                        "subset.{name}: {} is not a pattern variable (symbols: {})",
                        m.as_str().map_or_else(|| crate::excerpt(&m.to_string()), crate::excerpt),
                        symbols.join(", ")
                    )))
                }
            }
        }
        if bits == 0 {
            return Err(PatternError::option(format!("subset.{name}: empty")));
        }
        out.push((name.clone(), bits));
    }
    Ok(out)
}

/// A condition or measure written as an SQL expression.
fn expression(
    cx: &mut Ctx,
    text: &str,
    symbols: &[String],
    subsets: &[(String, u64)],
    defining: Option<u16>,
    path: &str,
) -> Result<Expr, PatternError> {
    let mut column = |name: &str| cx.col(name);
    expr_parser::parse(text, &mut Scope { symbols, subsets, defining, column: &mut column, path })
}

/// MEASURES: `{"name": "expression", ...}`, in the object's order.
fn compile_measures(cx: &mut Ctx, measures: &Json, symbols: &[String], subsets: &[(String, u64)]) -> Result<Vec<(String, Expr)>, PatternError> {
    let obj = match measures {
        Json::Null => return Ok(Vec::new()),
        Json::Object(m) => m,
        _ => return Err(bad("measures", "expected a JSON object mapping a name to an expression".into())),
    };
    let mut out = Vec::new();
    for (name, text) in obj {
        let path = format!("measures.{name}");
        let Json::String(text) = text else {
            return Err(bad(&path, format!("expected an expression as a string, got {}", crate::excerpt(&text.to_string()))));
        };
        cx.count(1, &path)?;
        out.push((name.clone(), expression(cx, text, symbols, subsets, None, &path)?));
    }
    Ok(out)
}

pub(super) fn compile_define(define: &Json, symbols: &[String], subsets: &[(String, u64)], measures: &Json) -> Result<Defs, PatternError> {
    let obj = match define {
        Json::Null => None,
        Json::Object(m) => Some(m),
        _ => return Err(bad("define", "expected a JSON object mapping symbol -> predicate".into())),
    };
    let mut cx = Ctx { cols: vec![], slots: vec![], refs: false, nodes: 0 };
    let mut preds: Vec<SymbolPred> = symbols.iter().map(|_| SymbolPred::default()).collect();
    if let Some(obj) = obj {
        // Names first, so a typo in a symbol name is reported as such even
        // when some other predicate is also malformed.
        for name in obj.keys() {
            if !is_ident(name) {
                return Err(PatternError::new(
                    PatternErrorKind::UnknownSymbol,
                    format!("define.{name}: {name:?} is not a valid symbol name ([A-Za-z_][A-Za-z0-9_]*)"),
                ));
            }
            if !symbols.contains(name) {
                return Err(PatternError::new(
                    PatternErrorKind::UnusedDefine,
                    format!("define.{name}: symbol {name:?} is defined but not used in the pattern (symbols: {})", symbols.join(", ")),
                ));
            }
        }
        for (name, body) in obj {
            let id = symbols.iter().position(|s| s == name).expect("checked above");
            let path = format!("define.{name}");
            cx.refs = false;
            preds[id] = match body {
                Json::Bool(true) => SymbolPred::default(),
                Json::Object(_) => SymbolPred { pred: Some(object(&mut cx, body, &path, 0)?), refs: cx.refs, ..SymbolPred::default() },
                Json::String(text) => {
                    cx.count(1, &path)?;
                    let e = expression(&mut cx, text, symbols, subsets, Some(id as u16), &path)?;
                    let reads = e.reads();
                    SymbolPred { refs: reads.navigates, expr: Some(e), reads, pred: None }
                }
                _ => return Err(bad(&path, "expected an object of column conditions, an SQL expression as a string, or true".into())),
            };
        }
    }
    let mut measures = compile_measures(&mut cx, measures, symbols, subsets)?;
    // Columns in alphabetical order: stable regardless of JSON key order.
    let sorted: BTreeSet<&String> = cx.cols.iter().collect();
    let columns: Vec<String> = sorted.into_iter().cloned().collect();
    let col_map: Vec<u16> = cx.cols.iter().map(|c| columns.iter().position(|x| x == c).unwrap() as u16).collect();
    let ctx_map: Vec<u16> = (0..cx.slots.len() as u16).collect();
    for p in preds.iter_mut() {
        if let Some(pred) = &mut p.pred {
            pred.remap(&col_map, &ctx_map);
        }
        if let Some(e) = &mut p.expr {
            e.remap(&col_map);
        }
    }
    measures.iter_mut().for_each(|(_, e)| e.remap(&col_map));
    let ctx_slots = cx.slots.iter().map(|(prev, c)| (*prev, columns.iter().position(|x| x == c).unwrap() as u16)).collect();
    Ok(Defs { columns, preds, ctx_slots, measures })
}

/// `{col: cond, ..., "or": [..], "and": [..], "not": {..}}`, all ANDed.
fn object(cx: &mut Ctx, body: &Json, path: &str, depth: usize) -> Result<Pred, PatternError> {
    crate::check_stack();
    if depth >= MAX_PREDICATE_DEPTH {
        let mut e = bad(path, format!("conditions nested deeper than {MAX_PREDICATE_DEPTH} levels"));
        e.kind = PatternErrorKind::TooComplex;
        return Err(e);
    }
    cx.count(1, path)?;
    let Json::Object(m) = body else {
        return Err(bad(path, "expected an object".into()));
    };
    if m.is_empty() {
        return Err(bad(path, "empty condition object".into()));
    }
    let mut all = Vec::new();
    for (k, v) in m {
        let p = format!("{path}.{k}");
        match k.as_str() {
            "or" | "and" => {
                let Json::Array(items) = v else {
                    return Err(bad(&p, "expected an array of conditions".into()));
                };
                if items.is_empty() {
                    return Err(bad(&p, "empty array".into()));
                }
                let mut sub = Vec::new();
                for (i, it) in items.iter().enumerate() {
                    sub.push(object(cx, it, &format!("{p}[{i}]"), depth + 1)?);
                }
                all.push(if k == "or" { Pred::Or(sub) } else { Pred::And(sub) });
            }
            "not" => all.push(Pred::Not(Box::new(object(cx, v, &p, depth + 1)?))),
            col => column(cx, col, v, &p, &mut all)?,
        }
    }
    Ok(if all.len() == 1 { all.pop().unwrap() } else { Pred::And(all) })
}

fn column(cx: &mut Ctx, name: &str, v: &Json, path: &str, all: &mut Vec<Pred>) -> Result<(), PatternError> {
    if name.is_empty() {
        return Err(bad(path, "empty column name".into()));
    }
    match v {
        // `{"col": null}` reads naturally as "col is null"; `= null` would
        // never be true under SQL rules.
        Json::Null => {
            let col = cx.col(name);
            all.push(Pred::IsNull { col, want: true });
        }
        Json::Object(ops) => {
            if ops.is_empty() {
                return Err(bad(path, "empty operator object".into()));
            }
            for (op, rhs) in ops {
                all.push(operator(cx, name, op, rhs, path)?);
            }
        }
        _ => {
            let rhs = rhs_value(cx, v, path)?;
            let col = cx.col(name);
            all.push(Pred::Cmp { col, op: CmpOp::Eq, rhs });
        }
    }
    Ok(())
}

fn operator(cx: &mut Ctx, name: &str, op: &str, rhs: &Json, path: &str) -> Result<Pred, PatternError> {
    let cmp = match op {
        "=" | "==" => Some(CmpOp::Eq),
        "<>" | "!=" => Some(CmpOp::Ne),
        "<" => Some(CmpOp::Lt),
        "<=" => Some(CmpOp::Le),
        ">" => Some(CmpOp::Gt),
        ">=" => Some(CmpOp::Ge),
        _ => None,
    };
    let p = format!("{path}.{op}");
    if let Some(op) = cmp {
        if rhs.is_null() {
            return Err(bad(&p, "comparison with null is never true; use {\"is_null\": true}".into()));
        }
        let rhs = rhs_value(cx, rhs, &p)?;
        return Ok(Pred::Cmp { col: cx.col(name), op, rhs });
    }
    match op {
        "in" => {
            let Json::Array(items) = rhs else {
                return Err(bad(&p, format!("expected an array of literals, got {}", crate::excerpt(&rhs.to_string()))));
            };
            cx.count(items.len(), &p)?;
            let mut vals = Vec::new();
            for it in items {
                if let Json::String(s) = it {
                    if ref_prefix(s).is_some() {
                        return Err(bad(&p, format!("reference {} is not supported inside 'in'", crate::excerpt(s))));
                    }
                }
                match rhs_value(cx, it, &p)? {
                    Rhs::Lit(v) => vals.push(v),
                    Rhs::Ctx(_) => unreachable!(),
                }
            }
            Ok(Pred::In { col: cx.col(name), vals })
        }
        "like" | "~" => {
            let Json::String(s) = rhs else {
                return Err(bad(&p, format!("expected a string pattern, got {}", crate::excerpt(&rhs.to_string()))));
            };
            if s.len() > MAX_REGEX_TEXT {
                let mut e = bad(&p, format!("a {} byte pattern is longer than the limit of {MAX_REGEX_TEXT}", s.len()));
                e.kind = PatternErrorKind::TooComplex;
                return Err(e);
            }
            let src = if op == "like" { like_to_regex(s) } else { s.clone() };
            let re = regex::RegexBuilder::new(&src)
                .size_limit(MAX_REGEX_BYTES)
                .build()
                .map_err(|e| bad(&p, format!("invalid regular expression {}: {e}", crate::excerpt(s))))?;
            Ok(Pred::Regex { col: cx.col(name), re })
        }
        "is_null" => {
            let Json::Bool(want) = rhs else {
                return Err(bad(&p, format!("expected true or false, got {}", crate::excerpt(&rhs.to_string()))));
            };
            Ok(Pred::IsNull { col: cx.col(name), want: *want })
        }
        _ => Err(bad(path, format!("operator {} is not one of {OPERATORS}", crate::excerpt(op)))),
    }
}

fn ref_prefix(s: &str) -> Option<(bool, &str)> {
    if let Some(c) = s.strip_prefix("PREV.") {
        Some((true, c))
    } else {
        s.strip_prefix("FIRST.").map(|c| (false, c))
    }
}

fn rhs_value(cx: &mut Ctx, v: &Json, path: &str) -> Result<Rhs, PatternError> {
    Ok(match v {
        Json::Bool(b) => Rhs::Lit(Value::Bool(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Rhs::Lit(Value::Int(i)),
            None => Rhs::Lit(Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => match ref_prefix(s) {
            Some((prev, col)) => {
                if !is_ident(col) {
                    return Err(bad(
                        path,
                        format!("{} looks like a reference but {} is not a valid column name", crate::excerpt(s), crate::excerpt(col)),
                    ));
                }
                Rhs::Ctx(cx.slot(prev, col))
            }
            None => Rhs::Lit(Value::Text(s.clone())),
        },
        Json::Null => Rhs::Lit(Value::Null),
        Json::Array(_) | Json::Object(_) => {
            return Err(bad(path, format!("expected a literal or \"PREV.col\"/\"FIRST.col\", got {}", crate::excerpt(&v.to_string()))));
        }
    })
}

/// SQL LIKE: `%` any run, `_` one char, backslash escapes (PostgreSQL default).
pub(super) fn like_to_regex(s: &str) -> String {
    let mut out = String::from("(?s)^");
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => {
                if let Some(n) = it.next() {
                    out.push_str(&regex::escape(&n.to_string()));
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}
