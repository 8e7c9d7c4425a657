//! YAML text -> `serde_json::Value`, plus an index of where each node (by JSON pointer) starts.
//!
//! Built on an event parser with markers, so that every error can carry a line and column.
//! Duplicate keys, non-scalar keys, multiple documents, unknown tags, excessive nesting and alias
//! expansion beyond a node budget are errors.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

use super::error::{ConfigError, Location};
use super::parse::escape_token;

/// Most nodes a document may expand to (aliases included).
const MAX_NODES: usize = 1_000_000;

/// Where a node is in the source.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NodePos {
    /// Position of the mapping key, for mapping members.
    pub key: Option<Location>,
    /// Position of the value.
    pub value: Option<Location>,
}

/// JSON pointer -> source position.
#[derive(Debug, Default)]
pub(crate) struct LocationIndex {
    nodes: HashMap<String, NodePos>,
}

impl LocationIndex {
    /// Position for an error at `pointer`: the key position when `at_key`, else the value's;
    /// falls back to the nearest ancestor that has one.
    pub(crate) fn locate(&self, pointer: &str, at_key: bool) -> Option<Location> {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.nodes.get(p) {
                let loc = if at_key {
                    pos.key.or(pos.value)
                } else {
                    pos.value.or(pos.key)
                };
                if loc.is_some() {
                    return loc;
                }
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

fn loc(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn err_at(span: &Span, pointer: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        pointer: pointer.to_string(),
        message: message.into(),
        location: Some(loc(span)),
    }
}

/// What an event does to the node count.
enum EventKind {
    ContainerEnd,
    Other,
}

/// A container being built.
enum Frame {
    Seq {
        pointer: String,
        items: Vec<Value>,
        anchor: usize,
        /// Nodes in this subtree so far.
        size: usize,
    },
    Map {
        pointer: String,
        map: Map<String, Value>,
        /// The key read, waiting for its value.
        pending_key: Option<String>,
        anchor: usize,
        /// Nodes in this subtree so far.
        size: usize,
    },
}

/// Parses one YAML document into a JSON value and its location index.
pub(crate) fn parse(text: &str) -> Result<(Value, LocationIndex), ConfigError> {
    let mut parser = Parser::new_from_str(text);
    let mut index = LocationIndex::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Value, usize)> = HashMap::new();
    let mut root: Option<Value> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;

    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| ConfigError {
            pointer: String::new(),
            message: if e.info().contains("recursion limit") {
                format!(
                    "document is nested too deeply (the limit is {} levels)",
                    super::parse::MAX_DEPTH
                )
            } else {
                format!("invalid YAML: {}", e.info())
            },
            location: Some(Location {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            }),
        })?;
        let event_kind = match event {
            Event::SequenceEnd | Event::MappingEnd => EventKind::ContainerEnd,
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                nodes = nodes.saturating_add(1);
                EventKind::Other
            }
            _ => EventKind::Other,
        };
        // A node value completed by this event, with its anchor and size.
        let completed: Option<(Value, usize, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(err_at(
                        &span,
                        "",
                        "multiple YAML documents are not supported",
                    ));
                }
                None
            }
            Event::Alias(id) => {
                let Some((value, size)) = anchors.get(&id) else {
                    return Err(err_at(
                        &span,
                        &current_pointer(&stack),
                        "unknown YAML alias",
                    ));
                };
                if let Some(Frame::Map {
                    pending_key: None,
                    pointer,
                    ..
                }) = stack.last()
                {
                    return Err(err_at(
                        &span,
                        pointer,
                        "mapping keys must be plain strings, not aliases",
                    ));
                }
                record(&mut index, &stack, &span);
                Some((value.clone(), 0, *size))
            }
            Event::Scalar(text, style, anchor, tag) => {
                let pointer = current_pointer(&stack);
                if let Some(Frame::Map {
                    pending_key: pending @ None,
                    map,
                    pointer: map_ptr,
                    ..
                }) = stack.last_mut()
                {
                    // A mapping key.
                    let key = text.into_owned();
                    if map.contains_key(&key) {
                        let p = format!("{map_ptr}/{}", escape_token(&key));
                        return Err(err_at(&span, &p, format!("duplicate key '{key}'")));
                    }
                    let p = format!("{map_ptr}/{}", escape_token(&key));
                    index.nodes.entry(p).or_default().key = Some(loc(&span));
                    *pending = Some(key);
                    None
                } else {
                    let value = resolve_scalar(&text, style, tag.as_deref())
                        .map_err(|m| err_at(&span, &pointer, m))?;
                    record(&mut index, &stack, &span);
                    Some((value, anchor, 1))
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if let Some(Frame::Map {
                    pending_key: None,
                    pointer,
                    ..
                }) = stack.last()
                {
                    return Err(err_at(
                        &span,
                        pointer,
                        "mapping keys must be plain strings, not sequences or mappings",
                    ));
                }
                if stack.len() >= super::parse::MAX_DEPTH {
                    return Err(err_at(
                        &span,
                        &current_pointer(&stack),
                        format!(
                            "document is nested too deeply (the limit is {} levels)",
                            super::parse::MAX_DEPTH
                        ),
                    ));
                }
                record(&mut index, &stack, &span);
                let pointer = current_pointer(&stack);
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        pointer,
                        items: Vec::new(),
                        anchor,
                        size: 1,
                    }
                } else {
                    Frame::Map {
                        pointer,
                        map: Map::new(),
                        pending_key: None,
                        anchor,
                        size: 1,
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    anchor,
                    size,
                    ..
                }) => Some((Value::Array(items), anchor, size)),
                Some(Frame::Map {
                    map, anchor, size, ..
                }) => Some((Value::Object(map), anchor, size)),
                None => None,
            },
        };
        if let Some((value, anchor, size)) = completed {
            // Containers were counted at their start; count scalars and alias copies here.
            if !matches!(event_kind, EventKind::ContainerEnd) {
                nodes = nodes.saturating_add(size);
            }
            if nodes > MAX_NODES {
                return Err(err_at(
                    &span,
                    &current_pointer(&stack),
                    format!("document has more than {MAX_NODES} nodes (aliases expanded)"),
                ));
            }
            if anchor != 0 {
                anchors.insert(anchor, (value.clone(), size));
            }
            match stack.last_mut() {
                Some(Frame::Seq {
                    items, size: total, ..
                }) => {
                    items.push(value);
                    *total = total.saturating_add(size);
                }
                Some(Frame::Map {
                    map,
                    pending_key,
                    size: total,
                    ..
                }) => {
                    if let Some(k) = pending_key.take() {
                        map.insert(k, value);
                    }
                    *total = total.saturating_add(size);
                }
                None => root = Some(value),
            }
        }
    }
    Ok((root.unwrap_or(Value::Null), index))
}

/// Pointer of the node that the next value event will produce.
fn current_pointer(stack: &[Frame]) -> String {
    match stack.last() {
        None => String::new(),
        Some(Frame::Seq { pointer, items, .. }) => format!("{pointer}/{}", items.len()),
        Some(Frame::Map {
            pointer,
            pending_key,
            ..
        }) => match pending_key {
            Some(k) => format!("{pointer}/{}", escape_token(k)),
            None => pointer.clone(),
        },
    }
}

/// Records the position of the value that the next event produces.
fn record(index: &mut LocationIndex, stack: &[Frame], span: &Span) {
    index.nodes.entry(current_pointer(stack)).or_default().value = Some(loc(span));
}

/// YAML 1.2 core schema resolution of a scalar.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
            match tag.suffix.as_str() {
                "str" => return Ok(Value::String(text.into())),
                "int" | "float" | "bool" | "null" => {
                    let v = resolve_plain(text);
                    if v.is_string() {
                        return Err(format!("'{text}' is not a valid !!{}", tag.suffix));
                    }
                    return Ok(v);
                }
                other => return Err(format!("unsupported YAML tag '!!{other}'")),
            }
        }
        if !(tag.handle == "!" && tag.suffix.is_empty()) {
            return Err(format!(
                "unsupported YAML tag '{}{}'",
                tag.handle, tag.suffix
            ));
        }
        return Ok(Value::String(text.into()));
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.into()));
    }
    Ok(resolve_plain(text))
}

fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(v) = resolve_int(text) {
        return v;
    }
    if is_float(text)
        && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(n);
    }
    Value::String(text.into())
}

fn resolve_int(text: &str) -> Option<Value> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(b) = digits.strip_prefix("0x") {
        (16, b)
    } else if let Some(b) = digits.strip_prefix("0o") {
        (8, b)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    if radix != 10 && (neg || text.starts_with('+')) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if neg {
        let v = 0i64.checked_sub_unsigned(magnitude)?;
        Some(Value::Number(v.into()))
    } else {
        Some(Value::Number(magnitude.into()))
    }
}

fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    };
    mantissa_ok && exp_ok && (frac.is_some() || exp.is_some())
}
