//! A YAML tree that remembers where every node came from, built from yaml-rust2's events.
//!
//! Why not a serde deserializer: serde stops at the first error, and veer must report every
//! problem of a file in one pass, each with its line and column.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::Pos;

/// Largest manifest input veer reads, in bytes.
pub const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// Most nodes one stream may expand to, aliases included: stops "billion laughs" inputs.
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 256;

/// A node with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// YAML content.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar and whether it was quoted/block (then it is always a string).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys kept in order with their positions; duplicates are listed in [`Document::duplicates`].
    Map(Vec<(Node, Node)>),
}

/// One document of a stream.
#[derive(Debug)]
pub struct Document {
    pub root: Node,
    /// Every key that repeats a key of the same mapping, anywhere in the document. Found here,
    /// not by the readers, because a document veer does not act on is never read field by field,
    /// and two resources pasted together without `---` are exactly such a document: its keys
    /// repeat, and whichever `kind` won, the other resource was lost without a word.
    pub duplicates: Vec<DuplicateKey>,
}

/// A mapping key seen a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Where the repeat is.
    pub pos: Pos,
    /// Where the key was first.
    pub first: Pos,
    /// The key's path from the document's root (`spec.ports[0].port`).
    pub path: String,
}

/// Why a stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub pos: Pos,
    pub message: String,
}

/// Reads every document of `text`. Documents before a syntax error are returned with the error.
pub fn load(text: &str) -> (Vec<Document>, Option<LoadError>) {
    if text.len() > MAX_INPUT_BYTES {
        return (
            Vec::new(),
            Some(LoadError {
                pos: Pos { line: 1, col: 1 },
                message: format!("input is {} bytes; veer reads at most {} bytes per file", text.len(), MAX_INPUT_BYTES),
            }),
        );
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Pull events one at a time: `Parser::load` recurses once per nesting level and a deeply
    // nested input would overflow the stack before any depth limit could stop it.
    let mut error = None;
    loop {
        match parser.next_token() {
            Ok((ev, mark)) => {
                let end = ev == Event::StreamEnd;
                builder.on_event(ev, mark);
                if end || builder.error.is_some() {
                    break;
                }
            }
            Err(e) => {
                let message = format!("YAML syntax: {}", e.info());
                let mut at = pos(e.marker());
                // yaml-rust2 marks a tab after the offending character.
                if e.info().contains("tab") && at.col > 1 {
                    at.col -= 1;
                }
                error = Some(LoadError { pos: clamp(text, at), message });
                break;
            }
        }
    }
    if let Some(e) = builder.error.take() {
        error = Some(LoadError { pos: clamp(text, e.pos), message: e.message });
    }
    (builder.docs, error)
}

/// Keeps a position inside the text: the end of input is reported on the last line.
fn clamp(text: &str, at: Pos) -> Pos {
    let lines: Vec<&str> = text.lines().collect();
    if at.line > lines.len() && !lines.is_empty() {
        let last = lines[lines.len() - 1];
        return Pos { line: lines.len(), col: last.chars().count() + 1 };
    }
    at
}

fn pos(m: &Marker) -> Pos {
    // yaml-rust2 reports 1-based lines and 0-based columns.
    Pos { line: m.line(), col: m.col() + 1 }
}

enum Frame {
    Seq(Node, Vec<Node>, usize),
    Map(Node, Vec<(Node, Node)>, Option<Node>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Document>,
    /// The duplicate keys of the document being built.
    duplicates: Vec<DuplicateKey>,
    nodes: usize,
    error: Option<LoadError>,
}

impl Builder {
    fn fail(&mut self, at: Pos, message: String) {
        if self.error.is_none() {
            self.error = Some(LoadError { pos: at, message });
        }
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(Document { root: node, duplicates: std::mem::take(&mut self.duplicates) }),
            Some(Frame::Seq(_, items, _)) => items.push(node),
            Some(Frame::Map(_, entries, key, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl Builder {
    /// Records every scalar key of a finished mapping that an earlier key of it repeats.
    /// Complex keys (`? [a, b]`) are never field names, so they are not compared.
    fn find_duplicates(&mut self, entries: &[(Node, Node)]) {
        let mut keys: Vec<(&str, usize)> = entries.iter().enumerate().filter_map(|(i, (k, _))| k.scalar().map(|s| (s, i))).collect();
        // Sorted by key, then by place: each run of one key starts with its first occurrence.
        // O(n log n), so a mapping of 100,000 keys costs no more than reading it.
        keys.sort_unstable();
        let mut found = Vec::new();
        let mut run: Option<(&str, usize)> = None;
        for &(key, i) in &keys {
            match run {
                Some((k, first)) if k == key => found.push((i, first)),
                _ => run = Some((key, i)),
            }
        }
        if found.is_empty() {
            return;
        }
        let parent = self.path();
        found.sort_unstable();
        for (later, first) in found {
            let (Some((key, _)), Some((first_key, _))) = (entries.get(later), entries.get(first)) else { continue };
            let name = key.scalar().unwrap_or_default();
            let path = if parent.is_empty() { name.to_string() } else { format!("{parent}.{name}") };
            self.duplicates.push(DuplicateKey { pos: key.pos, first: first_key.pos, path });
        }
    }

    /// The path from the document's root to the node being built (`spec.ports[0]`).
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Map(_, _, Some(key), _) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key.scalar().unwrap_or("?"));
                }
                Frame::Map(_, _, None, _) => {}
                Frame::Seq(_, items, _) => path.push_str(&format!("[{}]", items.len())),
            }
        }
        path
    }
}

fn count_nodes(n: &Node) -> usize {
    match &n.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = pos(&mark);
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.fail(at, format!("document expands to more than {MAX_NODES} nodes; refusing (alias bomb?)"));
            return;
        }
        if self.stack.len() > MAX_DEPTH {
            self.fail(at, format!("nesting deeper than {MAX_DEPTH} levels"));
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                self.complete(Node { pos: at, value: Value::Scalar { text, plain } }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Seq(Node { pos: at, value: Value::Seq(Vec::new()) }, Vec::new(), anchor));
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(Node { pos: at, value: Value::Map(Vec::new()) }, Vec::new(), None, anchor));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(mut node, items, anchor)) = self.stack.pop() {
                    node.value = Value::Seq(items);
                    self.complete(node, anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(mut node, entries, _, anchor)) = self.stack.pop() {
                    self.find_duplicates(&entries);
                    // yaml-rust2 marks a block mapping's start after its first key; the key's
                    // own position is where a reader looks.
                    if let Some((first, _)) = entries.first() {
                        node.pos = first.pos;
                    }
                    node.value = Value::Map(entries);
                    self.complete(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(target) => {
                    let size = count_nodes(target);
                    self.nodes = self.nodes.saturating_add(size);
                    if self.nodes > MAX_NODES {
                        self.fail(at, format!("aliases expand to more than {MAX_NODES} nodes; refusing (alias bomb)"));
                        return;
                    }
                    let mut copy = target.clone();
                    copy.pos = at;
                    self.complete(copy, 0);
                }
                None => self.fail(at, "alias to an unknown anchor".into()),
            },
            Event::DocumentEnd => self.anchors.clear(),
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::Nothing => {}
        }
    }
}

// === impl Node ===

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar { text, plain } => {
                if !plain {
                    "string"
                } else if is_null(text) {
                    "null"
                } else if text == "true" || text == "false" {
                    "boolean"
                } else if text.parse::<f64>().is_ok() {
                    "number"
                } else {
                    "string"
                }
            }
            Value::Seq(_) => "list",
            Value::Map(_) => "mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null(text))
    }

    /// Looks up a key in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.scalar() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let (docs, err) = load("a: 1\nb:\n  c: x\n");
        assert!(err.is_none());
        let root = &docs[0].root;
        let c = root.get("b").and_then(|b| b.get("c")).map(|n| n.pos);
        assert_eq!(c, Some(Pos { line: 3, col: 6 }));
    }

    #[test]
    fn multi_document_streams_and_errors_keep_earlier_documents() {
        let (docs, err) = load("a: 1\n---\nb: 2\n---\nc: [\n");
        assert_eq!(docs.len(), 2);
        assert!(err.is_some());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let (_, err) = load(&s);
        let err = err.map(|e| e.message).unwrap_or_default();
        assert!(err.contains("alias bomb"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth_with_their_path_and_first_place() {
        let (docs, err) = load("a: 1\nb:\n  - c: 1\n    d: 2\n    c: 3\na: 4\n? [x]\n: 1\n? [x]\n: 2\n");
        assert!(err.is_none());
        let dups = &docs[0].duplicates;
        assert_eq!(
            dups,
            &vec![
                DuplicateKey { pos: Pos { line: 5, col: 5 }, first: Pos { line: 3, col: 5 }, path: "b[0].c".into() },
                DuplicateKey { pos: Pos { line: 6, col: 1 }, first: Pos { line: 1, col: 1 }, path: "a".into() },
            ]
        );
    }

    #[test]
    fn quoted_scalars_are_strings() {
        let (docs, _) = load("a: \"true\"\nb: true\n");
        assert_eq!(docs[0].root.get("a").map(Node::kind_name), Some("string"));
        assert_eq!(docs[0].root.get("b").map(Node::kind_name), Some("boolean"));
    }
}
