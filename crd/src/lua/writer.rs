//! An append-only Lua text buffer with helpers that keep user data quoted.
//!
//! Only static text (chosen by the renderer) is written raw; user strings go through
//! [`quote`](super::quote) via [`str_list`] or explicit calls.

use super::quote;

/// The Lua being rendered.
#[derive(Debug, Default)]
pub(crate) struct LuaOut {
    text: String,
}

impl LuaOut {
    /// Start a section with a static heading comment.
    pub(crate) fn section(&mut self, title: &'static str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str("-- ");
        self.text.push_str(title);
        self.text.push('\n');
    }

    /// Append one line of Lua built by the renderer.
    pub(crate) fn line(&mut self, code: impl AsRef<str>) {
        self.text.push_str(code.as_ref());
        self.text.push('\n');
    }

    /// The finished text.
    pub(crate) fn finish(self) -> String {
        self.text
    }
}

/// `{'a', 'b'}` from user strings, each quoted.
pub(crate) fn str_list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let quoted: Vec<String> = items.into_iter().map(|s| quote(s.as_ref())).collect();
    format!("{{{}}}", quoted.join(", "))
}

/// `{todname('a'), todname('b')}` from domain names, each quoted.
pub(crate) fn dname_list<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let quoted: Vec<String> = items
        .into_iter()
        .map(|s| format!("todname({})", quote(s.as_ref())))
        .collect();
    format!("{{{}}}", quoted.join(", "))
}

/// Lua boolean literal.
pub(crate) fn lua_bool(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_quote_every_item() {
        assert_eq!(str_list(["a", "b'c"]), r"{'a', 'b\'c'}");
        assert_eq!(str_list(Vec::<String>::new()), "{}");
        assert_eq!(dname_list(["x.test."]), "{todname('x.test.')}");
    }

    #[test]
    fn sections_are_separated() {
        let mut o = LuaOut::default();
        o.section("one");
        o.line("a = 1");
        o.section("two");
        assert_eq!(o.finish(), "-- one\na = 1\n\n-- two\n");
    }
}
