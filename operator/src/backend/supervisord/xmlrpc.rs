//! A small XML-RPC codec: what supervisord's `/RPC2` speaks (calls with string/int/bool
//! parameters; responses with scalars, arrays, structs, faults).
//!
//! Hand-written instead of a crate: the subset is small, the only peer is supervisord, and it
//! keeps the dependency tree (and the operator's RSS) small.

use std::collections::BTreeMap;
use std::fmt::Write;

/// An XML-RPC value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `<int>` / `<i4>` / `<i8>`.
    Int(i64),
    /// `<boolean>`.
    Bool(bool),
    /// `<string>` or bare text.
    Str(String),
    /// `<double>`.
    Double(f64),
    /// `<array>`.
    Array(Vec<Value>),
    /// `<struct>`.
    Struct(BTreeMap<String, Value>),
    /// `<nil/>`.
    Nil,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The array items, if this is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// A struct member.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Struct(m) => m.get(key),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

/// Decoding failure or an XML-RPC fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum XmlRpcError {
    /// The server answered with a `<fault>`.
    #[error("fault {code}: {message}")]
    Fault {
        /// `faultCode`.
        code: i64,
        /// `faultString`.
        message: String,
    },
    /// The body is not a well-formed XML-RPC response.
    #[error("malformed XML-RPC response at byte {at}: {message}")]
    Malformed {
        /// Byte offset.
        at: usize,
        /// What was wrong.
        message: String,
    },
}

/// Encode a method call.
pub fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><methodCall><methodName>");
    escape_into(&mut out, method);
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        encode_value(&mut out, p);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

fn encode_value(out: &mut String, v: &Value) {
    out.push_str("<value>");
    match v {
        Value::Int(i) => {
            let _ = write!(out, "<int>{i}</int>");
        }
        Value::Bool(b) => {
            let _ = write!(out, "<boolean>{}</boolean>", u8::from(*b));
        }
        Value::Str(s) => {
            out.push_str("<string>");
            escape_into(out, s);
            out.push_str("</string>");
        }
        Value::Double(d) => {
            let _ = write!(out, "<double>{d}</double>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                encode_value(out, i);
            }
            out.push_str("</data></array>");
        }
        Value::Struct(m) => {
            out.push_str("<struct>");
            for (k, v) in m {
                out.push_str("<member><name>");
                escape_into(out, k);
                out.push_str("</name>");
                encode_value(out, v);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
        Value::Nil => out.push_str("<nil/>"),
    }
    out.push_str("</value>");
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Decode a method response: the single return value, or the fault as an error.
pub fn decode_response(body: &str) -> Result<Value, XmlRpcError> {
    let mut p = Parser { s: body, pos: 0 };
    p.skip_prolog();
    p.open("methodResponse")?;
    let result = match p.peek_tag()? {
        Tag::Open(name) if name == "params" => {
            p.open("params")?;
            p.open("param")?;
            let v = p.value()?;
            p.close("param")?;
            p.close("params")?;
            Ok(v)
        }
        Tag::Open(name) if name == "fault" => {
            p.open("fault")?;
            let v = p.value()?;
            p.close("fault")?;
            let code = v.get("faultCode").and_then(Value::as_int).unwrap_or(0);
            let message = v
                .get("faultString")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Err(XmlRpcError::Fault { code, message })
        }
        _ => return Err(p.err("expected <params> or <fault>")),
    };
    p.close("methodResponse")?;
    result
}

enum Tag {
    Open(String),
    Close(String),
    Empty(String),
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> XmlRpcError {
        XmlRpcError::Malformed {
            at: self.pos,
            message: message.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        let rest = &self.s[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn skip_prolog(&mut self) {
        self.skip_ws();
        if self.s[self.pos..].starts_with("<?")
            && let Some(end) = self.s[self.pos..].find("?>")
        {
            self.pos += end + 2;
        }
    }

    /// Read the next tag (after whitespace) without consuming it.
    fn peek_tag(&mut self) -> Result<Tag, XmlRpcError> {
        let save = self.pos;
        let t = self.tag();
        self.pos = save;
        t
    }

    fn tag(&mut self) -> Result<Tag, XmlRpcError> {
        self.skip_ws();
        let rest = &self.s[self.pos..];
        if !rest.starts_with('<') {
            return Err(self.err("expected a tag"));
        }
        let end = rest.find('>').ok_or_else(|| self.err("unterminated tag"))?;
        let inner = &rest[1..end];
        self.pos += end + 1;
        if let Some(name) = inner.strip_prefix('/') {
            Ok(Tag::Close(name.trim().to_string()))
        } else if let Some(name) = inner.strip_suffix('/') {
            Ok(Tag::Empty(name.trim().to_string()))
        } else {
            let name = inner.split_whitespace().next().unwrap_or("");
            Ok(Tag::Open(name.to_string()))
        }
    }

    fn open(&mut self, name: &str) -> Result<(), XmlRpcError> {
        match self.tag()? {
            Tag::Open(n) if n == name => Ok(()),
            _ => Err(self.err(&format!("expected <{name}>"))),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), XmlRpcError> {
        match self.tag()? {
            Tag::Close(n) if n == name => Ok(()),
            _ => Err(self.err(&format!("expected </{name}>"))),
        }
    }

    /// Raw text up to the next `<`, unescaped.
    fn text(&mut self) -> Result<String, XmlRpcError> {
        let rest = &self.s[self.pos..];
        let end = rest
            .find('<')
            .ok_or_else(|| self.err("unterminated text"))?;
        self.pos += end;
        unescape(&rest[..end]).ok_or_else(|| self.err("bad entity"))
    }

    fn value(&mut self) -> Result<Value, XmlRpcError> {
        match self.tag()? {
            Tag::Open(n) if n == "value" => {}
            Tag::Empty(n) if n == "value" => return Ok(Value::Str(String::new())),
            _ => return Err(self.err("expected <value>")),
        }
        // Bare text is a string.
        let text_start = self.pos;
        let text = self.text()?;
        if self.s[self.pos..].starts_with("</value>") {
            self.pos += "</value>".len();
            return Ok(Value::Str(text));
        }
        self.pos = text_start;
        let v = match self.tag()? {
            Tag::Empty(n) if n == "nil" => Value::Nil,
            Tag::Empty(n) if n == "string" => Value::Str(String::new()),
            Tag::Open(n) => {
                let v = match n.as_str() {
                    "string" => Value::Str(self.text()?),
                    "int" | "i4" | "i8" => {
                        let t = self.text()?;
                        Value::Int(t.trim().parse().map_err(|_| self.err("bad integer"))?)
                    }
                    "boolean" => Value::Bool(self.text()?.trim() == "1"),
                    "double" => {
                        let t = self.text()?;
                        Value::Double(t.trim().parse().map_err(|_| self.err("bad double"))?)
                    }
                    "array" => {
                        self.open("data")?;
                        let mut items = vec![];
                        loop {
                            if let Tag::Close(_) = self.peek_tag()? {
                                break;
                            }
                            items.push(self.value()?);
                        }
                        self.close("data")?;
                        Value::Array(items)
                    }
                    "struct" => {
                        let mut m = BTreeMap::new();
                        loop {
                            if let Tag::Close(_) = self.peek_tag()? {
                                break;
                            }
                            self.open("member")?;
                            self.open("name")?;
                            let k = self.text()?;
                            self.close("name")?;
                            let v = self.value()?;
                            self.close("member")?;
                            m.insert(k, v);
                        }
                        Value::Struct(m)
                    }
                    other => return Err(self.err(&format!("unknown type <{other}>"))),
                };
                self.close(&n)?;
                v
            }
            _ => return Err(self.err("expected a typed value")),
        };
        self.close("value")?;
        Ok(v)
    }
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('&') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';')?;
        let ent = &after[..end];
        match ent {
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "amp" => out.push('&'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    ent.strip_prefix('#')?.parse().ok()?
                };
                out.push(char::from_u32(code)?);
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_call_with_escaping() {
        let body = encode_call(
            "supervisor.startProcess",
            &["a<&>".into(), false.into(), 3.into()],
        );
        assert_eq!(
            body,
            "<?xml version=\"1.0\"?><methodCall><methodName>supervisor.startProcess</methodName>\
             <params><param><value><string>a&lt;&amp;&gt;</string></value></param>\
             <param><value><boolean>0</boolean></value></param>\
             <param><value><int>3</int></value></param></params></methodCall>"
        );
    }

    #[test]
    fn decodes_supervisord_process_info() {
        // As supervisord 4.2.5 sends it (whitespace included).
        let body = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n\
            <value><struct>\n<member>\n<name>name</name>\n<value><string>kresd0</string></value>\n</member>\n\
            <member>\n<name>pid</name>\n<value><int>31516</int></value>\n</member>\n\
            <member>\n<name>spawnerr</name>\n<value><string></string></value>\n</member>\n\
            <member>\n<name>ok</name>\n<value><boolean>1</boolean></value>\n</member>\n\
            <member>\n<name>desc</name>\n<value>a &amp; b &#60;c&#x3e;</value>\n</member>\n\
            </struct></value>\n</data></array></value>\n</param>\n</params>\n</methodResponse>\n";
        let v = decode_response(body).expect("decodes");
        let items = v.as_array().expect("array");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].get("name").and_then(Value::as_str), Some("kresd0"));
        assert_eq!(items[0].get("pid").and_then(Value::as_int), Some(31516));
        assert_eq!(items[0].get("spawnerr").and_then(Value::as_str), Some(""));
        assert_eq!(items[0].get("ok").and_then(Value::as_bool), Some(true));
        assert_eq!(
            items[0].get("desc").and_then(Value::as_str),
            Some("a & b <c>")
        );
    }

    #[test]
    fn decodes_a_fault() {
        let body = "<?xml version='1.0'?><methodResponse><fault><value><struct>\
            <member><name>faultCode</name><value><int>91</int></value></member>\
            <member><name>faultString</name><value><string>STILL_RUNNING: a</string></value></member>\
            </struct></value></fault></methodResponse>";
        assert_eq!(
            decode_response(body),
            Err(XmlRpcError::Fault {
                code: 91,
                message: "STILL_RUNNING: a".into()
            })
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for body in [
            "",
            "<",
            "<methodResponse>",
            "<methodResponse><params><param><value><int>x",
            "<methodResponse><params><param><value><array><data><value>",
            "&",
            "<a><b></c>",
        ] {
            assert!(decode_response(body).is_err(), "{body}");
        }
    }

    #[test]
    fn nested_arrays_round_trip_through_the_encoder() {
        let v = Value::Array(vec![
            Value::Array(vec!["a".into()]),
            Value::Nil,
            Value::Double(1.5),
        ]);
        let mut s = String::from("<methodResponse><params><param>");
        encode_value(&mut s, &v);
        s.push_str("</param></params></methodResponse>");
        assert_eq!(decode_response(&s), Ok(v));
    }
}
