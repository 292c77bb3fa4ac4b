//! DEFINE conditions and MEASURES written as SQL expressions (`"price < PREV(price)"`,
//! `"LAST(down.price, 1)"`, `"AVG(up.price)"`), evaluated over a match's rows.
//!
//! The standard's meaning, which `cep.match_recognize` follows: in DEFINE a row is tested as if
//! bound to the variable being defined, so `A.price` and a bare `price` are that row's, an
//! aggregate over `A` includes it, and `B.price` is the last row bound to `B` so far. `PREV` and
//! `NEXT` move by rows of the partition (so `PREV` on a match's first row reads the row before the
//! match); `FIRST` and `LAST` move among the match's rows (of one variable, or all of them). In
//! MEASURES the same references are running (up to the row measured) unless marked `FINAL`.
//!
//! Evaluation never fails, as inside a trigger it must not: a NULL, a type mismatch, an overflow or
//! a division by zero gives NULL, and a condition holds only when it is true.

use std::cell::Cell;
use std::cmp::Ordering;

use regex::Regex;

use super::predicate::compare;
use super::{Event, Value};

/// `vars` of every row, whatever it is bound to.
pub(super) const ALL: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Anchor {
    First,
    Last,
}

/// Which row a column reference reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RowRef {
    /// Among the match's rows bound to `vars` (bits of symbol ids, `ALL` for every row), the
    /// `offset`-th from the first or from the last.
    pub anchor: Anchor,
    pub vars: u64,
    pub offset: usize,
    /// `PREV` (negative) and `NEXT` (positive): that many rows of the partition away.
    pub step: i64,
    /// `FINAL`: over the whole match, even when measuring an earlier row.
    pub whole: bool,
}

impl RowRef {
    /// The row being tested (DEFINE) or measured (MEASURES).
    pub fn current() -> Self {
        RowRef { anchor: Anchor::Last, vars: ALL, offset: 0, step: 0, whole: false }
    }
    fn is_current(&self) -> bool {
        *self == RowRef::current()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Agg {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    /// `ARRAY_AGG`: the values in row order (NULLs kept), a JSON array in MEASURES.
    Array,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Func {
    Abs,
    Round,
    Floor,
    Ceil,
    Sqrt,
    Lower,
    Upper,
    Length,
    Coalesce,
    Greatest,
    Least,
    Nullif,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    Int,
    Float,
    /// `varchar(n)` keeps the first n characters.
    Text(Option<u32>),
    Bool,
}

#[derive(Clone, Debug)]
pub(super) enum Expr {
    Lit(Value),
    Col(RowRef, u16),
    /// Over the match's rows bound to `vars` (running, or the whole match when `whole`): `arg`
    /// evaluated at each of them (its row references are that row), or with `None` the rows
    /// counted (`COUNT(*)`, `COUNT(A.*)`).
    Agg {
        func: Agg,
        vars: u64,
        arg: Option<Box<Expr>>,
        whole: bool,
    },
    /// `CLASSIFIER()`: the variable a row is bound to (`CLASSIFIER(U)`: the last row bound to `U`).
    Label(RowRef),
    MatchNumber,
    Neg(Box<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Ordering, bool /* negated */, Box<Expr>, Box<Expr>),
    /// `<=` is `Cmp(Greater, negated)`: every comparison is "is (not) this ordering".
    Arith(Arith, Box<Expr>, Box<Expr>),
    Concat(Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<Expr>, bool),
    Like(Box<Expr>, Regex, bool),
    Call(Func, Vec<Expr>),
    Cast(Box<Expr>, Type),
}

/// The rows an expression reads, and where in them it is evaluated.
pub(super) struct Frame<'a> {
    /// The partition's rows at hand (for one row alone: `one`).
    pub rows: &'a [Event],
    pub one: Option<&'a [Value]>,
    /// The match's first row, the row evaluated, and the match's last row (FINAL reads to it).
    pub start: usize,
    pub at: usize,
    pub end: usize,
    /// The symbol each row from `start` to `end` is bound to (empty when no reference needs it).
    pub labels: &'a [u16],
    pub symbols: &'a [String],
    pub match_number: i64,
    /// No row will follow `rows`; otherwise a reference past them marks the frame `undecided`.
    pub complete: bool,
    pub undecided: Cell<bool>,
    /// An empty match: it has no rows, so every row reference is NULL and every count 0.
    pub empty: bool,
}

impl<'a> Frame<'a> {
    /// One row alone: what a condition that reads only its own row needs.
    pub fn single(values: &'a [Value]) -> Self {
        Frame {
            rows: &[],
            one: Some(values),
            start: 0,
            at: 0,
            end: 0,
            labels: &[],
            symbols: &[],
            match_number: 0,
            complete: true,
            undecided: Cell::new(false),
            empty: false,
        }
    }

    /// A DEFINE condition testing row `at` as bound to the last of `labels`, after the rows
    /// bound from `start` on: the match so far, nothing after it.
    pub fn define(rows: &'a [Event], start: usize, at: usize, labels: &'a [u16], symbols: &'a [String], complete: bool) -> Self {
        Frame { rows, one: None, start, at, end: at, labels, symbols, match_number: 0, complete, undecided: Cell::new(false), empty: false }
    }

    fn values(&self, i: usize) -> Option<&[Value]> {
        match self.one {
            Some(v) => (i == self.at).then_some(v),
            None => self.rows.get(i).map(|e| e.values.as_slice()),
        }
    }

    fn len(&self) -> usize {
        if self.one.is_some() {
            1
        } else {
            self.rows.len()
        }
    }

    fn label(&self, i: usize) -> Option<u16> {
        self.labels.get(i.checked_sub(self.start)?).copied()
    }

    /// The rows of the match up to the current row (or its last, `whole`) bound to `vars`.
    fn bound(&self, vars: u64, whole: bool) -> impl DoubleEndedIterator<Item = usize> + '_ {
        let last = if whole { self.end } else { self.at };
        let past = if self.empty { self.start } else { last + 1 };
        (self.start..past).filter(move |&i| vars == ALL || self.label(i).is_some_and(|s| vars >> s & 1 == 1))
    }

    fn row(&self, r: &RowRef) -> Option<usize> {
        if self.empty {
            return None;
        }
        // FIRST counts from the match's first row wherever it is measured (as Trino does): only
        // LAST depends on how far the match has got.
        let last = if r.whole || r.anchor == Anchor::First { self.end } else { self.at };
        let base = if r.vars == ALL {
            match r.anchor {
                Anchor::First => Some(self.start + r.offset).filter(|&i| i <= last),
                Anchor::Last => last.checked_sub(r.offset).filter(|&i| i >= self.start),
            }
        } else {
            let mut bound = self.bound(r.vars, r.whole || r.anchor == Anchor::First);
            match r.anchor {
                Anchor::First => bound.nth(r.offset),
                Anchor::Last => bound.nth_back(r.offset),
            }
        }?;
        let target = usize::try_from(base as i64 + r.step).ok()?;
        if target >= self.len() {
            if !self.complete {
                self.undecided.set(true);
            }
            return None;
        }
        Some(target)
    }

    /// The same match evaluated at row `i` (an aggregate's argument, at each row aggregated).
    fn at_row(&self, i: usize) -> Frame<'a> {
        Frame {
            rows: self.rows,
            one: self.one,
            start: self.start,
            at: i,
            end: self.end,
            labels: self.labels,
            symbols: self.symbols,
            match_number: self.match_number,
            complete: self.complete,
            undecided: Cell::new(false),
            empty: self.empty,
        }
    }

    fn column(&self, i: usize, col: u16) -> Value {
        self.values(i).and_then(|v| v.get(col as usize)).cloned().unwrap_or(Value::Null)
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

impl Expr {
    /// A DEFINE condition holds only when it is true (NULL is not).
    pub fn holds(&self, f: &Frame) -> bool {
        matches!(self.eval(f), Value::Bool(true))
    }

    pub fn eval(&self, f: &Frame) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Col(r, col) => match f.row(r) {
                Some(i) => f.column(i, *col),
                None => Value::Null,
            },
            Expr::Agg { func, vars, arg, whole } => aggregate(f, *func, *vars, arg.as_deref(), *whole),
            Expr::Label(r) => match f.row(r).and_then(|i| f.label(i)) {
                Some(s) => f.symbols.get(s as usize).map_or(Value::Null, |n| Value::Text(n.clone())),
                None => Value::Null,
            },
            Expr::MatchNumber => Value::Int(f.match_number),
            Expr::Neg(e) => match e.eval(f) {
                Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
                Value::Float(x) => Value::Float(-x),
                _ => Value::Null,
            },
            Expr::Not(e) => truth(&e.eval(f)).map_or(Value::Null, |b| Value::Bool(!b)),
            Expr::And(a, b) => match (truth(&a.eval(f)), truth(&b.eval(f))) {
                (Some(false), _) | (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            },
            Expr::Or(a, b) => match (truth(&a.eval(f)), truth(&b.eval(f))) {
                (Some(true), _) | (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            },
            Expr::Cmp(ord, negated, a, b) => match compare(&a.eval(f), &b.eval(f)) {
                Some(o) => Value::Bool((o == *ord) != *negated),
                None => Value::Null,
            },
            Expr::Arith(op, a, b) => arith(*op, a.eval(f), b.eval(f)),
            Expr::Concat(a, b) => match (text(&a.eval(f)), text(&b.eval(f))) {
                (Some(a), Some(b)) => Value::Text(a + &b),
                _ => Value::Null,
            },
            Expr::IsNull(e, want) => Value::Bool(matches!(e.eval(f), Value::Null) == *want),
            Expr::In(e, list, negated) => {
                let v = e.eval(f);
                if v == Value::Null {
                    return Value::Null;
                }
                let mut unknown = false;
                for item in list {
                    match compare(&v, &item.eval(f)) {
                        Some(Ordering::Equal) => return Value::Bool(!negated),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                }
            }
            Expr::Like(e, re, negated) => match e.eval(f) {
                Value::Text(s) => Value::Bool(re.is_match(&s) != *negated),
                _ => Value::Null,
            },
            Expr::Call(func, args) => call(*func, args.iter().map(|a| a.eval(f)).collect()),
            Expr::Cast(e, ty) => cast(e.eval(f), *ty),
        }
    }

    /// Visits every node, for what compiling needs to know about an expression.
    pub fn walk(&self, visit: &mut dyn FnMut(&Expr)) {
        visit(self);
        match self {
            Expr::Neg(e) | Expr::Not(e) | Expr::IsNull(e, _) | Expr::Like(e, _, _) | Expr::Cast(e, _) => e.walk(visit),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, _, a, b) | Expr::Arith(_, a, b) | Expr::Concat(a, b) => {
                a.walk(visit);
                b.walk(visit);
            }
            Expr::In(e, list, _) => {
                e.walk(visit);
                list.iter().for_each(|i| i.walk(visit));
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.walk(visit)),
            Expr::Agg { arg: Some(arg), .. } => arg.walk(visit),
            Expr::Lit(_) | Expr::Col(..) | Expr::Agg { arg: None, .. } | Expr::Label(_) | Expr::MatchNumber => {}
        }
    }

    /// [`Expr::walk`], to change each expression in place.
    pub fn walk_mut(&mut self, visit: &mut dyn FnMut(&mut Expr)) {
        visit(self);
        match self {
            Expr::Neg(e) | Expr::Not(e) | Expr::IsNull(e, _) | Expr::Like(e, _, _) | Expr::Cast(e, _) => e.walk_mut(visit),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, _, a, b) | Expr::Arith(_, a, b) | Expr::Concat(a, b) => {
                a.walk_mut(visit);
                b.walk_mut(visit);
            }
            Expr::In(e, list, _) => {
                e.walk_mut(visit);
                list.iter_mut().for_each(|i| i.walk_mut(visit));
            }
            Expr::Call(_, args) => args.iter_mut().for_each(|a| a.walk_mut(visit)),
            Expr::Agg { arg: Some(arg), .. } => arg.walk_mut(visit),
            Expr::Lit(_) | Expr::Col(..) | Expr::Agg { arg: None, .. } | Expr::Label(_) | Expr::MatchNumber => {}
        }
    }

    /// Every row reference made the row evaluated: an aggregate's argument, evaluated at each row
    /// it aggregates.
    pub fn make_current(&mut self) {
        self.walk_mut(&mut |e| {
            if let Expr::Col(row, _) | Expr::Label(row) = e {
                *row = RowRef::current();
            }
        });
    }

    /// Column numbers after the pattern's columns are sorted (`map[old] = new`).
    pub fn remap(&mut self, map: &[u16]) {
        self.walk_mut(&mut |e| {
            if let Expr::Col(_, col) = e {
                *col = map[*col as usize];
            }
        });
    }

    /// What evaluating it needs beyond the row itself.
    pub fn reads(&self) -> Reads {
        let mut r = Reads::default();
        self.walk(&mut |e| match e {
            Expr::Col(row, _) => {
                if !row.is_current() {
                    r.navigates = true;
                }
                if row.vars != ALL {
                    r.labels |= row.vars;
                }
                if row.step < 0 {
                    r.back = r.back.max(row.step.unsigned_abs() as usize);
                }
                r.ahead |= row.step > 0;
            }
            Expr::Agg { vars, .. } => {
                r.navigates = true;
                if *vars != ALL {
                    r.labels |= vars;
                }
            }
            Expr::Label(row) => {
                r.navigates = true;
                r.labels = ALL;
                if row.step < 0 {
                    r.back = r.back.max(row.step.unsigned_abs() as usize);
                }
                r.ahead |= row.step > 0;
            }
            Expr::MatchNumber => {
                r.navigates = true;
                r.numbers = true;
            }
            _ => {}
        });
        r
    }
}

/// What an expression reads beyond its own row.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Reads {
    /// Another row, an aggregate, or the match itself: it needs the standard's matching.
    pub navigates: bool,
    /// Symbols whose rows it tells apart (`ALL`: every symbol), so threads of the matcher that
    /// bound those symbols differently are not the same thread.
    pub labels: u64,
    /// Most rows `PREV` reaches back.
    pub back: usize,
    /// `NEXT` reads a row after the one evaluated.
    pub ahead: bool,
    /// `MATCH_NUMBER()`.
    pub numbers: bool,
}

fn aggregate(f: &Frame, func: Agg, vars: u64, arg: Option<&Expr>, whole: bool) -> Value {
    let rows = f.bound(vars, whole);
    let Some(arg) = arg else {
        return Value::Int(rows.count() as i64);
    };
    let value_at = |i: usize| match arg {
        // A column is read directly: the common case, and the hot one in DEFINE.
        Expr::Col(_, col) => f.column(i, *col),
        arg => arg.eval(&f.at_row(i)),
    };
    if func == Agg::Array {
        return Value::Array(rows.map(value_at).collect());
    }
    let values = rows.map(value_at).filter(|v| *v != Value::Null);
    match func {
        Agg::Array => unreachable!("above"),
        Agg::Count => Value::Int(values.count() as i64),
        Agg::Min => extreme(values, Ordering::Less),
        Agg::Max => extreme(values, Ordering::Greater),
        Agg::Sum | Agg::Avg => {
            let (mut int, mut float, mut n, mut all_int) = (0i64, 0f64, 0i64, true);
            for v in values {
                match v {
                    Value::Int(i) if all_int => match int.checked_add(i) {
                        Some(s) => int = s,
                        None => {
                            all_int = false;
                            float = int as f64 + i as f64;
                        }
                    },
                    Value::Int(i) => float += i as f64,
                    Value::Float(x) => {
                        if all_int {
                            all_int = false;
                            float = int as f64;
                        }
                        float += x;
                    }
                    _ => return Value::Null,
                }
                n += 1;
            }
            match (func, n) {
                (_, 0) => Value::Null,
                (Agg::Sum, _) if all_int => Value::Int(int),
                (Agg::Sum, _) => Value::Float(float),
                _ => Value::Float(if all_int { int as f64 } else { float } / n as f64),
            }
        }
    }
}

/// The least (`Less`) or greatest (`Greater`) of non-NULL values: MIN and MAX, LEAST and GREATEST.
/// Values that do not compare (text with a number) give NULL.
fn extreme(values: impl Iterator<Item = Value>, want: Ordering) -> Value {
    let mut best: Option<Value> = None;
    for v in values {
        match &best {
            None => best = Some(v),
            Some(b) => match compare(&v, b) {
                Some(o) if o == want => best = Some(v),
                Some(_) => {}
                None => return Value::Null,
            },
        }
    }
    best.unwrap_or(Value::Null)
}

fn arith(op: Arith, a: Value, b: Value) -> Value {
    if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let r = match op {
            Arith::Add => x.checked_add(y),
            Arith::Sub => x.checked_sub(y),
            Arith::Mul => x.checked_mul(y),
            // SQL's integer division truncates toward zero; by zero it is NULL here, not an error.
            Arith::Div => x.checked_div(y),
            Arith::Rem => x.checked_rem(y),
        };
        return r.map_or(Value::Null, Value::Int);
    }
    let (Some(x), Some(y)) = (number(&a), number(&b)) else { return Value::Null };
    let r = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div if y == 0.0 => return Value::Null,
        Arith::Div => x / y,
        Arith::Rem if y == 0.0 => return Value::Null,
        Arith::Rem => x % y,
    };
    Value::Float(r)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(x) => Some(x.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(_) => None,
    }
}

fn call(func: Func, args: Vec<Value>) -> Value {
    let num = |i: usize| args.get(i).and_then(number);
    match func {
        Func::Abs => match args.first() {
            Some(Value::Int(i)) => i.checked_abs().map_or(Value::Null, Value::Int),
            _ => num(0).map_or(Value::Null, |x| Value::Float(x.abs())),
        },
        Func::Round => match (args.first(), args.get(1)) {
            (Some(Value::Int(i)), None) => Value::Int(*i),
            (_, None) => num(0).map_or(Value::Null, |x| Value::Float(x.round())),
            (_, Some(Value::Int(d))) if (-18..=18).contains(d) => {
                let scale = 10f64.powi(*d as i32);
                num(0).map_or(Value::Null, |x| Value::Float((x * scale).round() / scale))
            }
            _ => Value::Null,
        },
        Func::Floor | Func::Ceil => match args.first() {
            Some(Value::Int(i)) => Value::Int(*i),
            _ => num(0).map_or(Value::Null, |x| Value::Float(if func == Func::Floor { x.floor() } else { x.ceil() })),
        },
        Func::Sqrt => num(0).filter(|x| *x >= 0.0).map_or(Value::Null, |x| Value::Float(x.sqrt())),
        Func::Lower | Func::Upper | Func::Length => match args.first() {
            Some(Value::Text(s)) => match func {
                Func::Lower => Value::Text(s.to_lowercase()),
                Func::Upper => Value::Text(s.to_uppercase()),
                _ => Value::Int(s.chars().count() as i64),
            },
            _ => Value::Null,
        },
        Func::Coalesce => args.into_iter().find(|v| *v != Value::Null).unwrap_or(Value::Null),
        Func::Greatest => extreme(args.into_iter().filter(|v| *v != Value::Null), Ordering::Greater),
        Func::Least => extreme(args.into_iter().filter(|v| *v != Value::Null), Ordering::Less),
        Func::Nullif => match (args.first(), args.get(1)) {
            (Some(a), Some(b)) if compare(a, b) == Some(Ordering::Equal) => Value::Null,
            (Some(a), _) => a.clone(),
            _ => Value::Null,
        },
    }
}

fn cast(v: Value, ty: Type) -> Value {
    match (ty, v) {
        (_, Value::Null) => Value::Null,
        (Type::Int, Value::Int(i)) => Value::Int(i),
        (Type::Int, Value::Float(x)) => {
            let r = x.round();
            if r.is_finite() && r >= i64::MIN as f64 && r < i64::MAX as f64 {
                Value::Int(r as i64)
            } else {
                Value::Null
            }
        }
        (Type::Int, Value::Text(s)) => s.trim().parse().map_or(Value::Null, Value::Int),
        (Type::Int, Value::Bool(b)) => Value::Int(b as i64),
        (Type::Float, v) => match v {
            Value::Text(s) => s.trim().parse().map_or(Value::Null, Value::Float),
            v => number(&v).map_or(Value::Null, Value::Float),
        },
        (Type::Text(n), v) => match text(&v) {
            Some(s) => Value::Text(match n {
                Some(n) => s.chars().take(n as usize).collect(),
                None => s,
            }),
            None => Value::Null,
        },
        (Type::Bool, Value::Bool(b)) => Value::Bool(b),
        (Type::Bool, Value::Int(i)) => Value::Bool(i != 0),
        (Type::Bool, Value::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "on" | "1" => Value::Bool(true),
            "f" | "false" | "no" | "off" | "0" => Value::Bool(false),
            _ => Value::Null,
        },
        (Type::Bool, Value::Float(_)) => Value::Null,
        (_, Value::Array(_)) => Value::Null,
    }
}

/// A measured value as JSON: what `cep.match_recognize` returns in `measures`.
pub fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(s) => s.clone().into(),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
    }
}
