//! Subscription filters (PROTOCOL.md §7 "Filters", **ext**): MongoDB-style criteria over a
//! publication's envelope.
//!
//! Place in the data path: `subscription_update → **filter** (compile) → fanout index`, then
//! `publication → shard → **filter** (match) → subscriber's queue`. A client's criteria for
//! one topic are compiled once, when it subscribes, into a small tree ([`Filter`]); the shard
//! parses each publication's JSON at most once ([`parse_document`]) and asks every filtered
//! subscriber's tree whether it matches. Nothing here allocates while matching.
//!
//! The language, over the envelope `{c, t, p, id, ts, v, tp, e, o, pri}`:
//!
//! - `{"p.kind": "buy"}`: implicit equality at a dotted path (`p.items.0.sku` indexes arrays);
//!   several keys must all hold;
//! - `{"p.price": {"$gt": 10, "$lte": 20}}`: operators, all of which must hold: `$eq $ne $gt
//!   $lt $gte $lte $in $nin $regex $exists $contains $startswith $endswith`;
//! - `{"$and": [criteria, ...]}`, `{"$or": [criteria, ...]}`, nested.
//!
//! Semantics, chosen to be predictable rather than clever: equality is deep and numbers
//! compare by value (`1` equals `1.0`), booleans are not numbers; `$gt`-family operators
//! compare numbers with numbers and strings with strings (byte order), anything else is no
//! match; `$regex`, `$startswith` and `$endswith` look at strings only; `$contains` is a
//! substring test on strings and an element test on arrays; a missing path matches only
//! `$ne`, `$nin` and `$exists: false`; `null` is a value, present when written. An array is
//! not searched implicitly: `{"p.tags": "a"}` is false for `["a", "b"]`; use `$contains`.
//!
//! Bounds: criteria nest at most [`MAX_DEPTH`] `$and`/`$or` levels and hold at most
//! [`MAX_TERMS`] terms (paths, operators and literal values), at most [`MAX_REGEXES`]
//! regexes of at most [`MAX_REGEX_LEN`] bytes each, compiled under [`REGEX_SIZE_LIMIT`].
//! Anything else, including an unknown operator, is refused with [`Error::InvalidFilter`]
//! when the client subscribes, never at delivery.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

use regex::{Regex, RegexBuilder};
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::envelope::{nesting_exceeds, MAX_NESTING};
use crate::Error;

/// Compiled criteria for one subscription.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
}

impl Filter {
    /// Compiles `criteria` (a JSON object), taking regexes from the shard's `regexes`.
    ///
    /// Errors with [`Error::InvalidFilter`] naming the first problem: criteria that are not
    /// an object, an unknown operator, an operand of the wrong kind, a bad path or regex, or
    /// criteria over the bounds in the module docs.
    pub fn compile(criteria: &Value, regexes: &mut RegexCache) -> Result<Filter, Error> {
        let mut compiler = Compiler { regexes, terms: 0, regex_count: 0 };
        let root = compiler.criteria(criteria, 1)?;
        Ok(Filter { root })
    }

    /// Whether the filter lets everything through (`{}`): the subscription needs none.
    pub fn matches_all(&self) -> bool {
        matches!(&self.root, Node::All(nodes) if nodes.is_empty())
    }

    /// Whether a publication, given as its parsed envelope, passes the filter.
    pub fn matches(&self, envelope: &Value) -> bool {
        self.root.matches(envelope)
    }
}

/// Parses a publication's envelope JSON for [`Filter::matches`]; once per publication.
///
/// Errors with [`Error::InvalidMessage`] when the text is not JSON or nests deeper than
/// [`MAX_NESTING`] (sonic-rs parses recursively).
pub fn parse_document(json: &[u8]) -> Result<Value, Error> {
    if nesting_exceeds(json, MAX_NESTING) {
        return Err(Error::InvalidMessage("publication is nested too deeply to filter".into()));
    }
    sonic_rs::from_slice(json).map_err(|_| Error::InvalidMessage("publication is not JSON".into()))
}

/// The regexes a shard has compiled, by pattern, shared by every filter that uses them.
///
/// Holds at most [`RegexCache::CAPACITY`] patterns and forgets the oldest first. A regex
/// stays valid in the filters that use it after the cache forgot it: a [`Regex`] is a
/// reference-counted handle, so a thousand subscribers of one pattern share one program.
#[derive(Debug, Default)]
pub struct RegexCache {
    compiled: HashMap<Box<str>, Regex>,
    /// Patterns in the order they were compiled, oldest first.
    order: VecDeque<Box<str>>,
}

impl RegexCache {
    /// Patterns kept at most.
    pub const CAPACITY: usize = 256;

    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled regex for `pattern`, from the cache or compiled now under the bounds of
    /// the module docs.
    pub fn compile(&mut self, pattern: &str) -> Result<Regex, Error> {
        if let Some(regex) = self.compiled.get(pattern) {
            return Ok(regex.clone());
        }
        if pattern.len() > MAX_REGEX_LEN {
            return Err(bad(format!("$regex is longer than {MAX_REGEX_LEN} bytes")));
        }
        let regex = RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| bad(format!("$regex does not compile: {}", first_line(&e.to_string()))))?;
        if self.order.len() >= Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.compiled.remove(&oldest);
            }
        }
        self.order.push_back(pattern.into());
        self.compiled.insert(pattern.into(), regex.clone());
        Ok(regex)
    }

    /// The number of patterns cached.
    pub fn len(&self) -> usize {
        self.compiled.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.compiled.is_empty()
    }
}

/// One node of compiled criteria.
#[derive(Debug, Clone)]
enum Node {
    /// Every child holds (`$and`, and the keys of one criteria object).
    All(Vec<Node>),
    /// At least one child holds (`$or`).
    Any(Vec<Node>),
    /// Tests on the value at one path.
    Field(Box<Field>),
}

impl Node {
    fn matches(&self, envelope: &Value) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|node| node.matches(envelope)),
            Node::Any(nodes) => nodes.iter().any(|node| node.matches(envelope)),
            Node::Field(field) => {
                let value = lookup(envelope, &field.path);
                field.tests.iter().all(|test| test.passes(value))
            }
        }
    }
}

/// A path and the tests its value must all pass.
#[derive(Debug, Clone)]
struct Field {
    path: Box<[Segment]>,
    tests: Vec<Test>,
}

/// One step of a dotted path: an object key, which also indexes arrays when it is a number.
#[derive(Debug, Clone)]
struct Segment {
    key: Box<str>,
    index: Option<usize>,
}

/// One operator with its operand.
#[derive(Debug, Clone)]
enum Test {
    Eq(Literal),
    Ne(Literal),
    Compare(Comparison, Bound),
    In(Box<[Literal]>),
    Nin(Box<[Literal]>),
    Regex(Regex),
    Exists(bool),
    Contains(Literal),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
}

impl Test {
    /// Whether `value` (`None` when the path is missing) passes.
    fn passes(&self, value: Option<&Value>) -> bool {
        let Some(value) = value else {
            return matches!(self, Test::Ne(_) | Test::Nin(_) | Test::Exists(false));
        };
        match self {
            Test::Eq(literal) => literal.equals(value),
            Test::Ne(literal) => !literal.equals(value),
            Test::Compare(op, bound) => bound.compare(value).is_some_and(|o| op.accepts(o)),
            Test::In(literals) => literals.iter().any(|l| l.equals(value)),
            Test::Nin(literals) => !literals.iter().any(|l| l.equals(value)),
            Test::Regex(regex) => value.as_str().is_some_and(|s| regex.is_match(s)),
            Test::Exists(wanted) => *wanted,
            Test::Contains(literal) => contains(value, literal),
            Test::StartsWith(prefix) => value.as_str().is_some_and(|s| s.starts_with(&**prefix)),
            Test::EndsWith(suffix) => value.as_str().is_some_and(|s| s.ends_with(&**suffix)),
        }
    }
}

/// `$gt`, `$lt`, `$gte` or `$lte`.
#[derive(Debug, Clone, Copy)]
enum Comparison {
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Comparison {
    /// Whether `value.cmp(bound)` being `ordering` satisfies the operator.
    fn accepts(self, ordering: Ordering) -> bool {
        match self {
            Comparison::Gt => ordering == Ordering::Greater,
            Comparison::Lt => ordering == Ordering::Less,
            Comparison::Gte => ordering != Ordering::Less,
            Comparison::Lte => ordering != Ordering::Greater,
        }
    }
}

/// The operand of a comparison: a number or a string.
#[derive(Debug, Clone)]
enum Bound {
    Number(Number),
    Text(Box<str>),
}

impl Bound {
    /// How `value` orders against the bound; `None` when their kinds differ.
    fn compare(&self, value: &Value) -> Option<Ordering> {
        match self {
            Bound::Number(bound) => number_of(value)?.compare(*bound),
            Bound::Text(bound) => Some(value.as_str()?.cmp(bound)),
        }
    }
}

/// A JSON number: integers exactly, other numbers as f64.
#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i128),
    Float(f64),
}

impl Number {
    fn compare(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            _ => self.as_f64().partial_cmp(&other.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Number::Int(n) => n as f64,
            Number::Float(f) => f,
        }
    }
}

/// A JSON value from the criteria, copied out of the client's message.
#[derive(Debug, Clone)]
enum Literal {
    Null,
    Bool(bool),
    Number(Number),
    Text(Box<str>),
    Array(Box<[Literal]>),
    Object(Box<[(Box<str>, Literal)]>),
}

impl Literal {
    /// Deep equality with a document value; numbers by value, object keys in any order.
    fn equals(&self, value: &Value) -> bool {
        match self {
            Literal::Null => value.is_null(),
            Literal::Bool(b) => value.as_bool() == Some(*b),
            Literal::Number(n) => {
                number_of(value).and_then(|v| v.compare(*n)).is_some_and(|o| o.is_eq())
            }
            Literal::Text(s) => value.as_str() == Some(&**s),
            Literal::Array(items) => value.as_array().is_some_and(|array| {
                array.len() == items.len()
                    && array.iter().zip(items.iter()).all(|(v, l)| l.equals(v))
            }),
            Literal::Object(members) => value.as_object().is_some_and(|object| {
                object.len() == members.len()
                    && members.iter().all(|(k, l)| object.get(k).is_some_and(|v| l.equals(v)))
            }),
        }
    }
}

/// Compiles criteria while counting what they cost against the bounds.
struct Compiler<'a> {
    regexes: &'a mut RegexCache,
    terms: usize,
    regex_count: usize,
}

impl Compiler<'_> {
    /// One criteria object at `$and`/`$or` depth `depth` (the outermost is 1).
    fn criteria(&mut self, value: &Value, depth: usize) -> Result<Node, Error> {
        if depth > MAX_DEPTH {
            return Err(bad(format!("$and/$or nest deeper than {MAX_DEPTH} levels")));
        }
        let object = value.as_object().ok_or_else(|| bad("criteria must be an object".into()))?;
        let mut nodes = Vec::with_capacity(object.len());
        for (key, operand) in object.iter() {
            self.spend(1)?;
            let node = match key {
                "$and" => Node::All(self.list(key, operand, depth)?),
                "$or" => Node::Any(self.list(key, operand, depth)?),
                _ if key.starts_with('$') => return Err(unknown(key)),
                path => {
                    let path = parse_path(path)?;
                    Node::Field(Box::new(Field { path, tests: self.tests(operand)? }))
                }
            };
            nodes.push(node);
        }
        if nodes.len() == 1 {
            return Ok(nodes.remove(0));
        }
        Ok(Node::All(nodes))
    }

    /// The non-empty array of criteria of `$and` or `$or`.
    fn list(&mut self, op: &str, operand: &Value, depth: usize) -> Result<Vec<Node>, Error> {
        let items = operand.as_array().filter(|a| !a.is_empty());
        let items = items.ok_or_else(|| bad(format!("{op} needs a non-empty array")))?;
        items.iter().map(|item| self.criteria(item, depth + 1)).collect()
    }

    /// The tests of one path: an operator object, or a literal meaning equality.
    fn tests(&mut self, operand: &Value) -> Result<Vec<Test>, Error> {
        let operators = operand.as_object().filter(|o| o.iter().any(|(k, _)| k.starts_with('$')));
        let Some(operators) = operators else {
            return Ok(vec![Test::Eq(self.literal(operand)?)]);
        };
        if !operators.iter().all(|(k, _)| k.starts_with('$')) {
            return Err(bad("an operator object cannot also hold plain keys".into()));
        }
        operators.iter().map(|(op, arg)| self.test(op, arg)).collect()
    }

    fn test(&mut self, op: &str, arg: &Value) -> Result<Test, Error> {
        self.spend(1)?;
        let test = match op {
            "$eq" => Test::Eq(self.literal(arg)?),
            "$ne" => Test::Ne(self.literal(arg)?),
            "$gt" => Test::Compare(Comparison::Gt, bound(op, arg)?),
            "$lt" => Test::Compare(Comparison::Lt, bound(op, arg)?),
            "$gte" => Test::Compare(Comparison::Gte, bound(op, arg)?),
            "$lte" => Test::Compare(Comparison::Lte, bound(op, arg)?),
            "$in" => Test::In(self.literals(op, arg)?),
            "$nin" => Test::Nin(self.literals(op, arg)?),
            "$regex" => Test::Regex(self.regex(text(op, arg)?)?),
            "$exists" => Test::Exists(arg.as_bool().ok_or_else(|| needs(op, "true or false"))?),
            "$contains" => Test::Contains(self.literal(arg)?),
            "$startswith" => Test::StartsWith(text(op, arg)?.into()),
            "$endswith" => Test::EndsWith(text(op, arg)?.into()),
            _ => return Err(unknown(op)),
        };
        Ok(test)
    }

    fn literals(&mut self, op: &str, arg: &Value) -> Result<Box<[Literal]>, Error> {
        let items = arg.as_array().ok_or_else(|| needs(op, "an array"))?;
        items.iter().map(|item| self.literal(item)).collect()
    }

    /// Copies a JSON value; its nesting was bounded when the message was parsed.
    fn literal(&mut self, value: &Value) -> Result<Literal, Error> {
        self.spend(1)?;
        if value.is_null() {
            return Ok(Literal::Null);
        }
        if let Some(b) = value.as_bool() {
            return Ok(Literal::Bool(b));
        }
        if let Some(n) = number_of(value) {
            return Ok(Literal::Number(n));
        }
        if let Some(s) = value.as_str() {
            return Ok(Literal::Text(s.into()));
        }
        if let Some(items) = value.as_array() {
            let items = items.iter().map(|item| self.literal(item));
            return Ok(Literal::Array(items.collect::<Result<_, _>>()?));
        }
        let object = value.as_object().ok_or_else(|| bad("unsupported value".into()))?;
        let members = object.iter().map(|(k, v)| Ok((Box::from(k), self.literal(v)?)));
        Ok(Literal::Object(members.collect::<Result<_, Error>>()?))
    }

    fn regex(&mut self, pattern: &str) -> Result<Regex, Error> {
        self.regex_count += 1;
        if self.regex_count > MAX_REGEXES {
            return Err(bad(format!("more than {MAX_REGEXES} $regex operators")));
        }
        self.regexes.compile(pattern)
    }

    fn spend(&mut self, terms: usize) -> Result<(), Error> {
        self.terms += terms;
        if self.terms > MAX_TERMS {
            return Err(bad(format!("criteria hold more than {MAX_TERMS} terms")));
        }
        Ok(())
    }
}

/// A dotted path such as `p.items.0.sku`.
fn parse_path(path: &str) -> Result<Box<[Segment]>, Error> {
    let segments: Vec<&str> = path.split('.').collect();
    if segments.len() > MAX_PATH_SEGMENTS {
        return Err(bad(format!("path {path:?} has more than {MAX_PATH_SEGMENTS} segments")));
    }
    if segments.iter().any(|s| s.is_empty()) {
        return Err(bad(format!("path {path:?} has an empty segment")));
    }
    let segment = |key: &str| Segment {
        key: key.into(),
        index: key.bytes().all(|b| b.is_ascii_digit()).then(|| key.parse().ok()).flatten(),
    };
    Ok(segments.into_iter().map(segment).collect())
}

/// The value at `path` in `envelope`, if every step exists.
fn lookup<'v>(envelope: &'v Value, path: &[Segment]) -> Option<&'v Value> {
    path.iter().try_fold(envelope, |at, segment| {
        if let Some(object) = at.as_object() {
            return object.get(&segment.key);
        }
        at.as_array()?.get(segment.index?)
    })
}

/// `$contains`: a substring of a string, or an element of an array.
fn contains(value: &Value, literal: &Literal) -> bool {
    if let (Some(haystack), Literal::Text(needle)) = (value.as_str(), literal) {
        return haystack.contains(&**needle);
    }
    value.as_array().is_some_and(|items| items.iter().any(|item| literal.equals(item)))
}

fn number_of(value: &Value) -> Option<Number> {
    if let Some(n) = value.as_u64() {
        return Some(Number::Int(i128::from(n)));
    }
    if let Some(n) = value.as_i64() {
        return Some(Number::Int(i128::from(n)));
    }
    value.as_f64().map(Number::Float)
}

fn bound(op: &str, arg: &Value) -> Result<Bound, Error> {
    if let Some(n) = number_of(arg) {
        return Ok(Bound::Number(n));
    }
    let s = arg.as_str().ok_or_else(|| needs(op, "a number or a string"))?;
    Ok(Bound::Text(s.into()))
}

fn text<'v>(op: &str, arg: &'v Value) -> Result<&'v str, Error> {
    arg.as_str().ok_or_else(|| needs(op, "a string"))
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| l.starts_with("error:")).unwrap_or(text).trim()
}

fn bad(reason: String) -> Error {
    Error::InvalidFilter(reason)
}

fn unknown(op: &str) -> Error {
    bad(format!("unknown operator {op}"))
}

fn needs(op: &str, what: &str) -> Error {
    bad(format!("{op} needs {what}"))
}

/// Deepest nesting of `$and`/`$or`, the outermost criteria object being level 1.
pub const MAX_DEPTH: usize = 8;
/// Most paths, operators and literal values (each array element and object member counts)
/// in one subscription's criteria.
pub const MAX_TERMS: usize = 256;
/// Most `$regex` operators in one subscription's criteria.
pub const MAX_REGEXES: usize = 8;
/// Longest `$regex` pattern, in bytes.
pub const MAX_REGEX_LEN: usize = 512;
/// Bound on a compiled regex program and on its lazy DFA cache each (the `regex` crate's
/// `size_limit` and `dfa_size_limit`), in bytes.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Most segments in a dotted path.
pub const MAX_PATH_SEGMENTS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// A publication envelope like the shard writes.
    const DOC: &str = concat!(
        r#"{"c":"U","t":"trade","p":{"price":105.5,"qty":3,"kind":"buy","sym":"AAPL","#,
        r#""tags":["hot","us"],"meta":{"venue":"X","ok":true,"none":null},"#,
        r#""items":[{"sku":"a1"},{"sku":"b2"}],"big":18446744073709551615,"neg":-4},"#,
        r#""id":"m1","ts":"2026-01-15T10:30:00.123Z","v":1,"tp":"trades","e":"0000002a","o":7}"#
    );

    fn doc() -> Value {
        parse_document(DOC.as_bytes()).expect("the test document parses")
    }

    fn compile(criteria: &str) -> Result<Filter, Error> {
        let value: Value = sonic_rs::from_str(criteria).expect("criteria are JSON");
        Filter::compile(&value, &mut RegexCache::new())
    }

    fn check(criteria: &str) -> bool {
        compile(criteria).unwrap_or_else(|e| panic!("{criteria}: {e}")).matches(&doc())
    }

    fn assert_all(table: &[(&str, bool)]) {
        for (criteria, expected) in table {
            assert_eq!(check(criteria), *expected, "{criteria}");
        }
    }

    fn refused(criteria: &str) -> String {
        match compile(criteria) {
            Err(Error::InvalidFilter(reason)) => reason,
            other => panic!("{criteria}: expected InvalidFilter, got {other:?}"),
        }
    }

    #[test]
    fn implicit_equality_at_paths() {
        assert_all(&[
            (r#"{"p.kind":"buy"}"#, true),
            (r#"{"p.kind":"sell"}"#, false),
            (r#"{"t":"trade","tp":"trades","o":7}"#, true),
            (r#"{"t":"trade","o":8}"#, false),
            (r#"{"p.qty":3.0}"#, true),
            (r#"{"p.meta.ok":true}"#, true),
            (r#"{"p.meta.ok":1}"#, false),
            (r#"{"p.meta.none":null}"#, true),
            (r#"{"p.meta":{"ok":true,"none":null,"venue":"X"}}"#, true),
            (r#"{"p.meta":{"ok":true}}"#, false),
            (r#"{"p.tags":["hot","us"]}"#, true),
            (r#"{"p.tags":["us","hot"]}"#, false),
            (r#"{"p.tags":"hot"}"#, false),
            (r#"{"p.items.1.sku":"b2"}"#, true),
            (r#"{"p.items.2.sku":"b2"}"#, false),
            (r#"{"p.big":18446744073709551615}"#, true),
            (r#"{"p.big":18446744073709551614}"#, false),
        ]);
    }

    #[test]
    fn eq_and_ne() {
        assert_all(&[
            (r#"{"p.kind":{"$eq":"buy"}}"#, true),
            (r#"{"p.price":{"$eq":105.5}}"#, true),
            (r#"{"p.meta":{"$eq":{"venue":"X","none":null,"ok":true}}}"#, true),
            (r#"{"p.kind":{"$ne":"buy"}}"#, false),
            (r#"{"p.kind":{"$ne":"sell"}}"#, true),
            (r#"{"p.qty":{"$ne":"3"}}"#, true),
            (r#"{"p.missing":{"$ne":1}}"#, true),
            (r#"{"p.missing":{"$eq":null}}"#, false),
        ]);
    }

    #[test]
    fn comparisons_of_numbers_and_strings() {
        assert_all(&[
            (r#"{"p.price":{"$gt":100}}"#, true),
            (r#"{"p.price":{"$gt":105.5}}"#, false),
            (r#"{"p.price":{"$gte":105.5}}"#, true),
            (r#"{"p.price":{"$lt":105.6}}"#, true),
            (r#"{"p.price":{"$lte":105}}"#, false),
            (r#"{"p.qty":{"$gt":2,"$lt":4}}"#, true),
            (r#"{"p.qty":{"$gt":3,"$lt":4}}"#, false),
            (r#"{"p.neg":{"$lt":0}}"#, true),
            (r#"{"p.big":{"$gt":18446744073709551614}}"#, true),
            (r#"{"p.sym":{"$gt":"AAAA","$lt":"AAPM"}}"#, true),
            (r#"{"p.sym":{"$gte":"b"}}"#, false),
            (r#"{"o":{"$gte":7,"$lte":7}}"#, true),
        ]);
    }

    #[test]
    fn type_mismatches_never_match() {
        assert_all(&[
            (r#"{"p.price":{"$gt":"100"}}"#, false),
            (r#"{"p.sym":{"$gt":1}}"#, false),
            (r#"{"p.meta":{"$lt":1}}"#, false),
            (r#"{"p.meta.ok":{"$gte":0}}"#, false),
            (r#"{"p.qty":{"$regex":"3"}}"#, false),
            (r#"{"p.qty":{"$startswith":"3"}}"#, false),
            (r#"{"p.qty":{"$endswith":"3"}}"#, false),
            (r#"{"p.qty":{"$contains":"3"}}"#, false),
            (r#"{"p.qty":"3"}"#, false),
            (r#"{"p.kind.x":"buy"}"#, false),
            (r#"{"p.tags.x":"hot"}"#, false),
        ]);
    }

    #[test]
    fn in_and_nin() {
        assert_all(&[
            (r#"{"p.kind":{"$in":["sell","buy"]}}"#, true),
            (r#"{"p.kind":{"$in":["sell"]}}"#, false),
            (r#"{"p.qty":{"$in":[1,3.0]}}"#, true),
            (r#"{"p.kind":{"$in":[]}}"#, false),
            (r#"{"p.tags":{"$in":[["hot","us"]]}}"#, true),
            (r#"{"p.kind":{"$nin":["sell"]}}"#, true),
            (r#"{"p.kind":{"$nin":["buy","sell"]}}"#, false),
            (r#"{"p.missing":{"$nin":[1]}}"#, true),
            (r#"{"p.missing":{"$in":[null]}}"#, false),
        ]);
    }

    #[test]
    fn regex_and_string_operators() {
        assert_all(&[
            (r#"{"p.sym":{"$regex":"^AA"}}"#, true),
            (r#"{"p.sym":{"$regex":"^aa"}}"#, false),
            (r#"{"p.sym":{"$regex":"(?i)^aa"}}"#, true),
            (r#"{"ts":{"$regex":"^2026-01-15T"}}"#, true),
            (r#"{"p.sym":{"$startswith":"AA","$endswith":"PL"}}"#, true),
            (r#"{"p.sym":{"$startswith":"PL"}}"#, false),
            (r#"{"p.sym":{"$endswith":""}}"#, true),
            (r#"{"p.kind":{"$contains":"uy"}}"#, true),
            (r#"{"p.kind":{"$contains":"x"}}"#, false),
            (r#"{"p.tags":{"$contains":"us"}}"#, true),
            (r#"{"p.tags":{"$contains":"u"}}"#, false),
            (r#"{"p.items":{"$contains":{"sku":"a1"}}}"#, true),
        ]);
    }

    #[test]
    fn exists_and_missing_paths() {
        assert_all(&[
            (r#"{"p.meta.none":{"$exists":true}}"#, true),
            (r#"{"p.meta.gone":{"$exists":true}}"#, false),
            (r#"{"p.meta.gone":{"$exists":false}}"#, true),
            (r#"{"pri":{"$exists":false}}"#, true),
            (r#"{"p.gone":"x"}"#, false),
            (r#"{"p.gone":{"$gt":1}}"#, false),
            (r#"{"p.gone":{"$regex":"."}}"#, false),
            (r#"{"p.gone":{"$contains":"x"}}"#, false),
            (r#"{"nope.deeper.still":{"$exists":false}}"#, true),
        ]);
    }

    #[test]
    fn and_or_and_their_combinations() {
        assert_all(&[
            (r#"{}"#, true),
            (r#"{"$and":[{"p.kind":"buy"},{"p.qty":{"$gte":3}}]}"#, true),
            (r#"{"$and":[{"p.kind":"buy"},{"p.qty":{"$gt":3}}]}"#, false),
            (r#"{"$or":[{"p.kind":"sell"},{"p.qty":3}]}"#, true),
            (r#"{"$or":[{"p.kind":"sell"},{"p.qty":4}]}"#, false),
            (
                r#"{"p.sym":"AAPL","$or":[{"p.price":{"$lt":100}},{"p.tags":{"$contains":"h"}}]}"#,
                false,
            ),
            (
                r#"{"p.sym":"AAPL","$or":[{"p.price":{"$lt":100}},{"p.tags":{"$contains":"us"}}]}"#,
                true,
            ),
            (r#"{"p.sym":"MSFT","$or":[{"p.price":{"$lt":100}},{"p.qty":3}]}"#, false),
            (
                r#"{"$or":[{"$and":[{"p.kind":"buy"},{"o":9}]},{"$and":[{"t":"trade"},{"o":7}]}]}"#,
                true,
            ),
            (
                r#"{"$or":[{"$and":[{"p.kind":"buy"},{"o":9}]},{"$and":[{"t":"x"},{"o":7}]}]}"#,
                false,
            ),
            (r#"{"$and":[{"$or":[{"o":1},{"o":2}]},{"t":"trade"}]}"#, false),
        ]);
    }

    #[test]
    fn empty_criteria_let_everything_through() {
        assert!(compile("{}").expect("compiles").matches_all());
        assert!(!compile(r#"{"t":"x"}"#).expect("compiles").matches_all());
    }

    #[test]
    fn refuses_malformed_criteria() {
        let table = [
            (r#"[]"#, "criteria must be an object"),
            (r#""p.x""#, "criteria must be an object"),
            (r#"{"$nor":[{"a":1}]}"#, "unknown operator $nor"),
            (r#"{"p.x":{"$foo":1}}"#, "unknown operator $foo"),
            (r#"{"p.x":{"$gt":1,"y":2}}"#, "cannot also hold plain keys"),
            (r#"{"$and":[]}"#, "$and needs a non-empty array"),
            (r#"{"$or":{"a":1}}"#, "$or needs a non-empty array"),
            (r#"{"$or":[1]}"#, "criteria must be an object"),
            (r#"{"p.x":{"$in":1}}"#, "$in needs an array"),
            (r#"{"p.x":{"$nin":"a"}}"#, "$nin needs an array"),
            (r#"{"p.x":{"$gt":true}}"#, "$gt needs a number or a string"),
            (r#"{"p.x":{"$lte":null}}"#, "$lte needs a number or a string"),
            (r#"{"p.x":{"$regex":1}}"#, "$regex needs a string"),
            (r#"{"p.x":{"$exists":1}}"#, "$exists needs true or false"),
            (r#"{"p.x":{"$startswith":1}}"#, "$startswith needs a string"),
            (r#"{"p.x":{"$endswith":[]}}"#, "$endswith needs a string"),
            (r#"{"p..x":1}"#, "empty segment"),
            (r#"{"":1}"#, "empty segment"),
            (r#"{".p":1}"#, "empty segment"),
        ];
        for (criteria, reason) in table {
            let got = refused(criteria);
            assert!(got.contains(reason), "{criteria}: {got:?} lacks {reason:?}");
        }
    }

    #[test]
    fn refuses_bad_regexes() {
        assert!(refused(r#"{"p.x":{"$regex":"("}}"#).contains("does not compile"));
        assert!(refused(r#"{"p.x":{"$regex":"a{1,99999}"}}"#).contains("does not compile"));
        let long = format!(r#"{{"p.x":{{"$regex":"{}"}}}}"#, "a".repeat(MAX_REGEX_LEN + 1));
        assert!(refused(&long).contains("longer than"));
        let many: Vec<String> =
            (0..=MAX_REGEXES).map(|i| format!(r#"{{"p.x":{{"$regex":"{i}"}}}}"#)).collect();
        let criteria = format!(r#"{{"$or":[{}]}}"#, many.join(","));
        assert!(refused(&criteria).contains("$regex operators"));
    }

    #[test]
    fn refuses_criteria_too_deep_or_too_large() {
        let nest = |levels: usize| {
            let mut criteria = r#"{"t":"trade"}"#.to_owned();
            for _ in 1..levels {
                criteria = format!(r#"{{"$and":[{criteria}]}}"#);
            }
            criteria
        };
        assert!(check(&nest(MAX_DEPTH)));
        assert!(refused(&nest(MAX_DEPTH + 1)).contains("nest deeper"));

        let list: Vec<String> = (0..MAX_TERMS).map(|i| i.to_string()).collect();
        let criteria = format!(r#"{{"p.qty":{{"$in":[{}]}}}}"#, list.join(","));
        assert!(refused(&criteria).contains("more than 256 terms"));
        let list: Vec<String> = (0..MAX_TERMS - 4).map(|i| i.to_string()).collect();
        let criteria = format!(r#"{{"p.qty":{{"$in":[{}]}}}}"#, list.join(","));
        assert!(check(&criteria));

        let path = vec!["a"; MAX_PATH_SEGMENTS + 1].join(".");
        assert!(refused(&format!(r#"{{"{path}":1}}"#)).contains("segments"));
    }

    #[test]
    fn regex_cache_shares_and_forgets_oldest() {
        let mut cache = RegexCache::new();
        let first = cache.compile("^a").expect("compiles");
        let again = cache.compile("^a").expect("cached");
        assert_eq!(first.as_str(), again.as_str());
        assert_eq!(cache.len(), 1);
        for i in 0..RegexCache::CAPACITY {
            cache.compile(&format!("^x{i}")).expect("compiles");
        }
        assert_eq!(cache.len(), RegexCache::CAPACITY);
        assert!(!cache.compiled.contains_key("^a"), "the oldest pattern was forgotten");
        assert!(first.is_match("abc"), "a forgotten regex still works where it is used");
        assert!(cache.compile("(").is_err());
        assert_eq!(cache.len(), RegexCache::CAPACITY, "failures are not cached");
    }

    #[test]
    fn parse_document_refuses_deep_or_bad_json() {
        let deep = format!("{}{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
        assert!(parse_document(deep.as_bytes()).is_err());
        assert!(parse_document(b"{").is_err());
        assert!(parse_document(b"{}").is_ok());
    }

    #[test]
    fn filters_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Filter>();
    }
}
