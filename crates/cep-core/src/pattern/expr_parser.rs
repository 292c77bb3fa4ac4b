//! Expression text -> [`Expr`], with every error naming its position (a 0-based character
//! offset in the expression). Keywords and function names are case-insensitive; unquoted column
//! names are folded to lower case as SQL does, `"Quoted"` ones kept; a variable name is the
//! pattern's symbol (or SUBSET name) as written, or the one that differs from it only in case.

use std::cmp::Ordering;

use super::expr::{Agg, Anchor, Arith, Expr, Func, RowRef, Type, ALL};
use super::predicate::MAX_PREDICATE_DEPTH;
use super::{PatternError, PatternErrorKind, Value};

/// Longest expression text: a condition or measure is a line, not a program.
pub const MAX_EXPRESSION_BYTES: usize = 10_000;

/// Where an expression is used decides what it may say.
pub(super) struct Scope<'a> {
    pub symbols: &'a [String],
    /// SUBSET names and the symbols (bits) each stands for.
    pub subsets: &'a [(String, u64)],
    /// DEFINE: the variable being defined; MEASURES: `None`.
    pub defining: Option<u16>,
    /// Registers a column read, returning its number.
    pub column: &'a mut dyn FnMut(&str) -> u16,
    /// `define.up`, `measures.bottom`: how messages name the expression.
    pub path: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(String),
    Str(String),
    /// Text as written, and whether it was in double quotes.
    Ident(String, bool),
    Op(&'static str),
    End,
}

const OPS: [&str; 18] = ["::", "<=", ">=", "<>", "!=", "||", "=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ",", "."];

const FUNCTIONS: &str = "PREV, NEXT, FIRST, LAST, SUM, AVG, MIN, MAX, COUNT, CLASSIFIER, MATCH_NUMBER, ABS, ROUND, FLOOR, CEIL, SQRT, \
                         LOWER, UPPER, LENGTH, COALESCE, GREATEST, LEAST, NULLIF, CAST";

struct Parser<'s, 'a> {
    text: &'s str,
    toks: Vec<(Tok, usize)>,
    i: usize,
    scope: &'s mut Scope<'a>,
    /// Reading an aggregate's argument: in DEFINE A, `SUM(A.x)` is over A's rows (the row tested
    /// among them), not the row alone as `A.x` is.
    aggregating: bool,
}

fn error(scope: &Scope, text: &str, kind: PatternErrorKind, pos: usize, what: String) -> PatternError {
    PatternError { kind, message: format!("{}: {what} at position {pos}: {}", scope.path, crate::excerpt(text)), position: Some(pos) }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, (usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, start) = (chars[i], i);
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect(), false), start));
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push((Tok::Num(chars[start..i].iter().collect()), start));
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err((start, format!("unterminated {}", if c == '\'' { "string" } else { "quoted name" }))),
                    Some(&q) if q == c && chars.get(i + 1) == Some(&c) => {
                        s.push(c);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&other) => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            out.push((if c == '\'' { Tok::Str(s) } else { Tok::Ident(s, true) }, start));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPS.iter().find(|op| rest.starts_with(**op)) else {
                return Err((start, format!("unexpected '{c}'")));
            };
            i += op.chars().count();
            out.push((Tok::Op(op), start));
        }
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// Parses one DEFINE condition or measure.
pub(super) fn parse(text: &str, scope: &mut Scope) -> Result<Expr, PatternError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(error(
            scope,
            text,
            PatternErrorKind::TooComplex,
            0,
            format!("a {} byte expression is longer than the limit of {MAX_EXPRESSION_BYTES}", text.len()),
        ));
    }
    let toks = lex(text).map_err(|(pos, what)| error(scope, text, PatternErrorKind::BadPredicate, pos, what))?;
    let mut p = Parser { text, toks, i: 0, scope, aggregating: false };
    let e = p.or(0)?;
    if p.peek() != &Tok::End {
        return Err(p.unexpected());
    }
    Ok(e)
}

impl Parser<'_, '_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].0
    }
    fn pos(&self) -> usize {
        self.toks[self.i].1
    }
    fn bad(&self, pos: usize, what: String) -> PatternError {
        error(self.scope, self.text, PatternErrorKind::BadPredicate, pos, what)
    }
    fn unsupported(&self, pos: usize, what: String) -> PatternError {
        error(self.scope, self.text, PatternErrorKind::Unsupported, pos, what)
    }
    fn unexpected(&self) -> PatternError {
        match &self.toks[self.i].0 {
            Tok::End => self.bad(self.pos(), "unexpected end of expression".into()),
            Tok::Num(s) | Tok::Ident(s, _) => self.bad(self.pos(), format!("unexpected {}", crate::excerpt(s))),
            Tok::Str(s) => self.bad(self.pos(), format!("unexpected string {}", crate::excerpt(s))),
            Tok::Op(op) => self.bad(self.pos(), format!("unexpected '{op}'")),
        }
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        let yes = self.is_op(op);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn expect_op(&mut self, op: &str) -> Result<(), PatternError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }
    /// The unquoted keyword here, upper-cased.
    fn keyword(&self) -> Option<String> {
        match self.peek() {
            Tok::Ident(s, false) => Some(s.to_ascii_uppercase()),
            _ => None,
        }
    }
    fn eat_keyword(&mut self, word: &str) -> bool {
        let yes = self.keyword().as_deref() == Some(word);
        if yes {
            self.i += 1;
        }
        yes
    }
    fn nested(&self, depth: usize) -> Result<(), PatternError> {
        crate::check_stack();
        if depth >= MAX_PREDICATE_DEPTH * 4 {
            let mut e = self.bad(self.pos(), format!("expression nested deeper than {} levels", MAX_PREDICATE_DEPTH * 4));
            e.kind = PatternErrorKind::TooComplex;
            return Err(e);
        }
        Ok(())
    }

    fn or(&mut self, depth: usize) -> Result<Expr, PatternError> {
        self.nested(depth)?;
        let mut e = self.and(depth)?;
        while self.eat_keyword("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
        }
        Ok(e)
    }

    fn and(&mut self, depth: usize) -> Result<Expr, PatternError> {
        let mut e = self.not(depth)?;
        while self.eat_keyword("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not(depth)?));
        }
        Ok(e)
    }

    fn not(&mut self, depth: usize) -> Result<Expr, PatternError> {
        if self.eat_keyword("NOT") {
            self.nested(depth + 1)?;
            return Ok(Expr::Not(Box::new(self.not(depth + 1)?)));
        }
        self.comparison(depth)
    }

    fn comparison(&mut self, depth: usize) -> Result<Expr, PatternError> {
        let left = self.concat(depth)?;
        let cmp = match self.peek() {
            Tok::Op("=") => Some((Ordering::Equal, false)),
            Tok::Op("<>") | Tok::Op("!=") => Some((Ordering::Equal, true)),
            Tok::Op("<") => Some((Ordering::Less, false)),
            Tok::Op(">=") => Some((Ordering::Less, true)),
            Tok::Op(">") => Some((Ordering::Greater, false)),
            Tok::Op("<=") => Some((Ordering::Greater, true)),
            _ => None,
        };
        if let Some((ord, negated)) = cmp {
            self.i += 1;
            let right = self.concat(depth)?;
            return Ok(Expr::Cmp(ord, negated, Box::new(left), Box::new(right)));
        }
        if self.eat_keyword("IS") {
            let negated = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return Err(self.unexpected());
            }
            return Ok(Expr::IsNull(Box::new(left), !negated));
        }
        let at = self.i;
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("IN") {
            self.expect_op("(")?;
            let mut list = vec![self.concat(depth + 1)?];
            while self.eat_op(",") {
                list.push(self.concat(depth + 1)?);
            }
            self.expect_op(")")?;
            return Ok(Expr::In(Box::new(left), list, negated));
        }
        if self.eat_keyword("LIKE") {
            let pos = self.pos();
            let Tok::Str(pattern) = self.peek().clone() else {
                return Err(self.bad(pos, "LIKE takes a string literal".into()));
            };
            self.i += 1;
            let re = regex::RegexBuilder::new(&super::predicate::like_to_regex(&pattern))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| self.bad(pos, format!("LIKE pattern: {e}")))?;
            return Ok(Expr::Like(Box::new(left), re, negated));
        }
        if self.eat_keyword("BETWEEN") {
            let low = self.concat(depth)?;
            if !self.eat_keyword("AND") {
                return Err(self.unexpected());
            }
            let high = self.concat(depth)?;
            let within = Expr::And(
                Box::new(Expr::Cmp(Ordering::Less, true, Box::new(left.clone()), Box::new(low))),
                Box::new(Expr::Cmp(Ordering::Greater, true, Box::new(left), Box::new(high))),
            );
            return Ok(if negated { Expr::Not(Box::new(within)) } else { within });
        }
        if negated {
            self.i = at;
            return Err(self.unexpected());
        }
        Ok(left)
    }

    fn concat(&mut self, depth: usize) -> Result<Expr, PatternError> {
        let mut e = self.additive(depth)?;
        while self.eat_op("||") {
            e = Expr::Concat(Box::new(e), Box::new(self.additive(depth)?));
        }
        Ok(e)
    }

    fn additive(&mut self, depth: usize) -> Result<Expr, PatternError> {
        let mut e = self.term(depth)?;
        loop {
            let op = if self.eat_op("+") {
                Arith::Add
            } else if self.eat_op("-") {
                Arith::Sub
            } else {
                return Ok(e);
            };
            e = Expr::Arith(op, Box::new(e), Box::new(self.term(depth)?));
        }
    }

    fn term(&mut self, depth: usize) -> Result<Expr, PatternError> {
        let mut e = self.unary(depth)?;
        loop {
            let op = if self.eat_op("*") {
                Arith::Mul
            } else if self.eat_op("/") {
                Arith::Div
            } else if self.eat_op("%") {
                Arith::Rem
            } else {
                return Ok(e);
            };
            e = Expr::Arith(op, Box::new(e), Box::new(self.unary(depth)?));
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, PatternError> {
        if self.eat_op("-") {
            self.nested(depth + 1)?;
            return Ok(match self.unary(depth + 1)? {
                Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(-i)),
                Expr::Lit(Value::Float(x)) => Expr::Lit(Value::Float(-x)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        if self.eat_op("+") {
            return self.unary(depth);
        }
        let mut e = self.primary(depth)?;
        while self.eat_op("::") {
            e = Expr::Cast(Box::new(e), self.type_name()?);
        }
        Ok(e)
    }

    fn type_name(&mut self) -> Result<Type, PatternError> {
        let pos = self.pos();
        let Some(word) = self.keyword() else { return Err(self.unexpected()) };
        self.i += 1;
        Ok(match word.as_str() {
            "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "INT2" | "INT4" | "INT8" => Type::Int,
            "FLOAT" | "FLOAT4" | "FLOAT8" | "REAL" | "NUMERIC" | "DECIMAL" => Type::Float,
            "DOUBLE" => {
                self.eat_keyword("PRECISION");
                Type::Float
            }
            "TEXT" => Type::Text(None),
            "VARCHAR" => Type::Text(if self.eat_op("(") {
                let n = self.offset()? as u32;
                self.expect_op(")")?;
                Some(n)
            } else {
                None
            }),
            "BOOLEAN" | "BOOL" => Type::Bool,
            other => return Err(self.unsupported(pos, format!("type {other} (casts are to int, bigint, float, numeric, text, boolean)"))),
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, PatternError> {
        self.nested(depth)?;
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Num(s) => {
                self.i += 1;
                if let Ok(i) = s.parse::<i64>() {
                    return Ok(Expr::Lit(Value::Int(i)));
                }
                s.parse::<f64>().map(|x| Expr::Lit(Value::Float(x))).map_err(|_| self.bad(pos, format!("invalid number {}", crate::excerpt(&s))))
            }
            Tok::Str(s) => {
                self.i += 1;
                Ok(Expr::Lit(Value::Text(s)))
            }
            Tok::Op("(") => {
                self.i += 1;
                if self.keyword().as_deref() == Some("SELECT") {
                    return Err(self.unsupported(self.pos(), "a subquery".into()));
                }
                let e = self.or(depth + 1)?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Ident(name, quoted) => {
                self.i += 1;
                if !quoted {
                    match name.to_ascii_uppercase().as_str() {
                        "TRUE" => return Ok(Expr::Lit(Value::Bool(true))),
                        "FALSE" => return Ok(Expr::Lit(Value::Bool(false))),
                        "NULL" => return Ok(Expr::Lit(Value::Null)),
                        "CAST" => {
                            self.expect_op("(")?;
                            let e = self.or(depth + 1)?;
                            if !self.eat_keyword("AS") {
                                return Err(self.unexpected());
                            }
                            let ty = self.type_name()?;
                            self.expect_op(")")?;
                            return Ok(Expr::Cast(Box::new(e), ty));
                        }
                        "RUNNING" | "FINAL" => return self.semantics(name.eq_ignore_ascii_case("FINAL"), pos),
                        "SELECT" => return Err(self.unsupported(pos, "a subquery".into())),
                        _ => {}
                    }
                    if self.is_op("(") {
                        return self.call(&name, pos, false, depth);
                    }
                }
                self.column_after(name, quoted, pos)
            }
            _ => Err(self.unexpected()),
        }
    }

    /// `RUNNING` / `FINAL` before a navigation or aggregate.
    fn semantics(&mut self, whole: bool, pos: usize) -> Result<Expr, PatternError> {
        if whole && self.scope.defining.is_some() {
            return Err(self.unsupported(pos, "FINAL in DEFINE (a condition sees the match only up to its row)".into()));
        }
        let at = self.pos();
        let name = match self.peek().clone() {
            Tok::Ident(name, false)
                if matches!(name.to_ascii_uppercase().as_str(), "FIRST" | "LAST" | "SUM" | "AVG" | "MIN" | "MAX" | "COUNT" | "ARRAY_AGG") =>
            {
                name
            }
            _ => return Err(self.bad(at, "RUNNING and FINAL go before FIRST, LAST or an aggregate".into())),
        };
        self.i += 1;
        self.call(&name, at, whole, 0)
    }

    /// A column reference whose first name has been read: `col`, `var.col`.
    fn column_after(&mut self, first: String, quoted: bool, pos: usize) -> Result<Expr, PatternError> {
        let (row, col) = self.column_ref(first, quoted, pos, false)?;
        Ok(Expr::Col(row, col.expect("not a star")))
    }

    /// `col`, `var.col` (and `var.*` where `star`): the row reference and the column (None: `*`).
    fn column_ref(&mut self, first: String, quoted: bool, pos: usize, star: bool) -> Result<(RowRef, Option<u16>), PatternError> {
        let mut row = RowRef::current();
        let name = if self.eat_op(".") {
            row.vars = self.variable(&first, pos)?;
            let at = self.pos();
            match self.peek().clone() {
                Tok::Ident(col, quoted) => {
                    self.i += 1;
                    fold(col, quoted)
                }
                Tok::Op("*") if star => {
                    self.i += 1;
                    return Ok((self.canonical(row), None));
                }
                _ => return Err(self.bad(at, "expected a column name after the variable".into())),
            }
        } else {
            fold(first, quoted)
        };
        if name.is_empty() {
            return Err(self.bad(pos, "empty column name".into()));
        }
        Ok((self.canonical(row), Some((self.scope.column)(&name))))
    }

    /// In DEFINE, the variable's own last row is the row being tested.
    fn canonical(&self, mut row: RowRef) -> RowRef {
        if let (Some(me), false) = (self.scope.defining, self.aggregating) {
            if row.vars == 1 << me && row.anchor == Anchor::Last && row.offset == 0 {
                row.vars = ALL;
            }
        }
        row
    }

    fn variable(&self, name: &str, pos: usize) -> Result<u64, PatternError> {
        let symbols = self.scope.symbols.iter().enumerate().map(|(i, s)| (s.as_str(), 1u64 << i));
        let all: Vec<(&str, u64)> = symbols.chain(self.scope.subsets.iter().map(|(n, bits)| (n.as_str(), *bits))).collect();
        let found = all.iter().find(|(n, _)| *n == name).or_else(|| all.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)));
        match found {
            Some((_, bits)) => Ok(*bits),
            None => Err(self.bad(
                pos,
                format!(
                    "{} is not a pattern variable (variables: {})",
                    crate::excerpt(name),
                    all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// A non-negative integer literal (the offset of a navigation).
    fn offset(&mut self) -> Result<usize, PatternError> {
        let pos = self.pos();
        if let Tok::Num(s) = self.peek().clone() {
            if let Ok(n) = s.parse::<u32>() {
                self.i += 1;
                return Ok(n as usize);
            }
        }
        Err(self.unsupported(pos, "a navigation offset other than a non-negative integer literal".into()))
    }

    /// After `CLASSIFIER(`: the row whose variable it names (the current one, or the last bound to
    /// the variable given), up to the closing parenthesis.
    fn classifier_of(&mut self) -> Result<RowRef, PatternError> {
        let mut row = RowRef::current();
        if let Tok::Ident(name, _) = self.peek().clone() {
            let pos = self.pos();
            self.i += 1;
            row.vars = self.variable(&name, pos)?;
        }
        if !self.is_op(")") {
            return Err(self.unsupported(self.pos(), "CLASSIFIER of anything but a variable".into()));
        }
        Ok(self.canonical(row))
    }

    /// A navigation of `CLASSIFIER(...)`: its row reference, for the caller to move.
    fn classifier_argument(&mut self) -> Result<Option<RowRef>, PatternError> {
        let is_classifier = self.keyword().as_deref() == Some("CLASSIFIER") && matches!(self.toks.get(self.i + 1), Some((Tok::Op("("), _)));
        if !is_classifier {
            return Ok(None);
        }
        self.i += 2;
        let row = self.classifier_of()?;
        self.expect_op(")")?;
        Ok(Some(row))
    }

    /// What a navigation reads: a column (`Some`) or `CLASSIFIER(...)` (`None`), and of which row.
    fn navigated(&mut self, function: &str) -> Result<(RowRef, Option<u16>), PatternError> {
        if let Some(row) = self.classifier_argument()? {
            return Ok((row, None));
        }
        let (row, col) = self.argument(function, false)?;
        Ok((row, Some(col.expect("not a star"))))
    }

    /// The column reference a navigation or aggregate takes.
    fn argument(&mut self, function: &str, star: bool) -> Result<(RowRef, Option<u16>), PatternError> {
        let pos = self.pos();
        let (first, quoted) = match self.peek().clone() {
            Tok::Ident(name, quoted) => (name, quoted),
            Tok::Op("*") if star => {
                self.i += 1;
                return Ok((RowRef::current(), None));
            }
            _ => {
                return Err(self.unsupported(
                    pos,
                    format!("{function} of an expression (it takes a column, var.column{})", if star { ", * or var.*" } else { "" }),
                ))
            }
        };
        self.i += 1;
        if *self.peek() == Tok::End {
            return Err(self.unexpected());
        }
        if self.is_op("(") || !matches!(self.peek(), Tok::Op(")") | Tok::Op(",") | Tok::Op(".")) {
            return Err(self
                .unsupported(pos, format!("{function} of an expression (it takes a column, var.column{})", if star { ", * or var.*" } else { "" })));
        }
        let r = self.column_ref(first, quoted, pos, star)?;
        if *self.peek() == Tok::End {
            return Err(self.unexpected());
        }
        if !matches!(self.peek(), Tok::Op(")") | Tok::Op(",")) {
            return Err(self.unsupported(pos, format!("{function} of an expression")));
        }
        Ok(r)
    }

    /// An aggregate's argument, after `(`: `*` or `var.*` (COUNT: rows), nothing (`COUNT()`), or
    /// an expression of the row aggregated, whose row references all name one variable (the rows
    /// aggregated) or none (every row of the match).
    fn aggregated(&mut self, func: Agg, whole: bool, depth: usize) -> Result<Expr, PatternError> {
        let star = self.is_op("*")
            || (matches!(self.peek(), Tok::Ident(..))
                && matches!(self.toks.get(self.i + 1), Some((Tok::Op("."), _)))
                && matches!(self.toks.get(self.i + 2), Some((Tok::Op("*"), _))));
        if func == Agg::Count && (star || self.is_op(")")) {
            // COUNT() counts rows, as COUNT(*) does.
            self.aggregating = true;
            let argument = if self.is_op(")") { Ok((RowRef::current(), None)) } else { self.argument("COUNT", true) };
            self.aggregating = false;
            return Ok(Expr::Agg { func, vars: argument?.0.vars, arg: None, whole });
        }
        let pos = self.pos();
        self.aggregating = true;
        let arg = self.or(depth + 1);
        self.aggregating = false;
        let mut arg = arg?;
        let mut vars = None;
        let mut mixed = false;
        arg.walk(&mut |e| {
            if let Expr::Col(row, _) | Expr::Label(row) = e {
                if row.vars != ALL {
                    mixed |= vars.is_some_and(|v| v != row.vars);
                    vars = Some(row.vars);
                }
            }
        });
        if mixed {
            return Err(self.bad(pos, "an aggregate's argument reads one variable's rows (or the match's), not several".into()));
        }
        // Evaluated at each row aggregated: every reference is that row.
        arg.make_current();
        Ok(Expr::Agg { func, vars: vars.unwrap_or(ALL), arg: Some(Box::new(arg)), whole })
    }

    fn call(&mut self, name: &str, pos: usize, whole: bool, depth: usize) -> Result<Expr, PatternError> {
        let upper = name.to_ascii_uppercase();
        self.expect_op("(")?;
        let aggregate = matches!(upper.as_str(), "SUM" | "AVG" | "MIN" | "MAX" | "COUNT" | "ARRAY_AGG");
        if self.aggregating && (aggregate || matches!(upper.as_str(), "PREV" | "NEXT" | "FIRST" | "LAST" | "MATCH_NUMBER")) {
            return Err(self.unsupported(pos, format!("{upper} inside an aggregate")));
        }
        let e = match upper.as_str() {
            "PREV" | "NEXT" => {
                let inner = self.pos();
                // PREV(RUNNING LAST(x)) is PREV(LAST(x)); FINAL is for MEASURES (`semantics`).
                let whole = match self.keyword().as_deref() {
                    Some("RUNNING") => {
                        self.i += 1;
                        false
                    }
                    Some("FINAL") if self.scope.defining.is_none() => {
                        self.i += 1;
                        true
                    }
                    _ => false,
                };
                let (mut row, target) = match self.keyword().as_deref() {
                    Some("FIRST") | Some("LAST") if matches!(self.toks.get(self.i + 1), Some((Tok::Op("("), _))) => {
                        let kw = self.keyword().unwrap();
                        self.i += 1;
                        match self.call(&kw, inner, whole, depth + 1)? {
                            Expr::Col(row, col) => (row, Some(col)),
                            Expr::Label(row) => (row, None),
                            _ => unreachable!("FIRST and LAST give a row reference"),
                        }
                    }
                    _ => self.navigated(&upper)?,
                };
                let n = if self.eat_op(",") { self.offset()? } else { 1 };
                row.step = if upper == "PREV" { -(n as i64) } else { n as i64 };
                at_row(row, target)
            }
            "FIRST" | "LAST" => {
                let (mut row, target) = self.navigated(&upper)?;
                row.anchor = if upper == "FIRST" { Anchor::First } else { Anchor::Last };
                row.offset = if self.eat_op(",") { self.offset()? } else { 0 };
                row.whole = whole;
                at_row(self.canonical(row), target)
            }
            "SUM" | "AVG" | "MIN" | "MAX" | "COUNT" | "ARRAY_AGG" => {
                let func = match upper.as_str() {
                    "SUM" => Agg::Sum,
                    "AVG" => Agg::Avg,
                    "MIN" => Agg::Min,
                    "MAX" => Agg::Max,
                    "ARRAY_AGG" => Agg::Array,
                    _ => Agg::Count,
                };
                if self.eat_keyword("DISTINCT") {
                    return Err(self.unsupported(pos, format!("{upper}(DISTINCT ...)")));
                }
                if func == Agg::Array && self.scope.defining.is_some() {
                    return Err(self.unsupported(pos, "ARRAY_AGG in DEFINE (it is for MEASURES)".into()));
                }
                self.aggregated(func, whole, depth)?
            }
            "CLASSIFIER" => Expr::Label(self.classifier_of()?),
            "MATCH_NUMBER" => {
                if !self.is_op(")") {
                    return Err(self.unsupported(self.pos(), "MATCH_NUMBER with an argument".into()));
                }
                if self.scope.defining.is_some() {
                    return Err(self.unsupported(pos, "MATCH_NUMBER() in DEFINE (it is for MEASURES)".into()));
                }
                Expr::MatchNumber
            }
            _ => self.scalar(&upper, pos, depth)?,
        };
        self.expect_op(")")?;
        Ok(e)
    }

    fn scalar(&mut self, upper: &str, pos: usize, depth: usize) -> Result<Expr, PatternError> {
        let (func, min, max) = match upper {
            "ABS" => (Func::Abs, 1, 1),
            "ROUND" => (Func::Round, 1, 2),
            "FLOOR" => (Func::Floor, 1, 1),
            "CEIL" | "CEILING" => (Func::Ceil, 1, 1),
            "SQRT" => (Func::Sqrt, 1, 1),
            "LOWER" => (Func::Lower, 1, 1),
            "UPPER" => (Func::Upper, 1, 1),
            "LENGTH" | "CHAR_LENGTH" => (Func::Length, 1, 1),
            "COALESCE" => (Func::Coalesce, 1, 100),
            "GREATEST" => (Func::Greatest, 1, 100),
            "LEAST" => (Func::Least, 1, 100),
            "NULLIF" => (Func::Nullif, 2, 2),
            _ => {
                return Err(self.bad(pos, format!("function {} is not one of {FUNCTIONS}", crate::excerpt(upper))));
            }
        };
        let mut args = Vec::new();
        if !self.is_op(")") {
            args.push(self.or(depth + 1)?);
            while self.eat_op(",") {
                args.push(self.or(depth + 1)?);
            }
        }
        if args.len() < min || args.len() > max {
            let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
            return Err(self.bad(pos, format!("{upper} takes {want} argument{}, got {}", if max == 1 { "" } else { "s" }, args.len())));
        }
        Ok(Expr::Call(func, args))
    }
}

/// A column of a row, or (`None`) the variable the row is bound to.
fn at_row(row: RowRef, column: Option<u16>) -> Expr {
    match column {
        Some(col) => Expr::Col(row, col),
        None => Expr::Label(row),
    }
}

fn fold(name: String, quoted: bool) -> String {
    if quoted {
        name
    } else {
        name.to_lowercase()
    }
}
