//! A tiny read-only DOM over `quick-xml` events, enough for AWS query-protocol responses.
//!
//! quick-xml was picked over roxmltree: it is already in our dependency cache, actively
//! maintained, has no dependencies of its own with default features off, and streams, so the
//! DOM below keeps only element names (without namespace prefixes), text and children.

use quick_xml::events::Event;
use quick_xml::Reader;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Element {
    /// Local name, namespace prefix dropped.
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// First direct child with this name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// All direct children with this name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// Walks direct children: `path(&["DBInstances", "DBInstance"])`.
    pub fn path(&self, path: &[&str]) -> Option<&Element> {
        let mut cur = self;
        for p in path {
            cur = cur.child(p)?;
        }
        Some(cur)
    }
    /// Trimmed text of the element at `path`.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.path(path).map(|e| e.text.trim())
    }
    /// First element with this name anywhere below (depth first), or self.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
    /// The items of an AWS list: children of `list` named `member` / `item` / anything.
    pub fn items(&self) -> impl Iterator<Item = &Element> {
        self.children.iter()
    }
}

/// Parses a whole document and returns its root element.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(s) => stack.push(Element {
                name: s.local_name().as_ref().to_string(),
                ..Default::default()
            }),
            Event::Empty(s) => {
                let el = Element {
                    name: s.local_name().as_ref().to_string(),
                    ..Default::default()
                };
                top(&mut stack)?.children.push(el);
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err("malformed XML: unbalanced end tag".into());
                }
                let el = stack.pop().expect("checked length");
                top(&mut stack)?.children.push(el);
            }
            Event::Text(t) => top(&mut stack)?.text.push_str(&t.xml10_content()),
            Event::CData(c) => top(&mut stack)?.text.push_str(&c.into_inner()),
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    _ => match r.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(format!("malformed XML: unknown entity &{};", other)),
                    },
                };
                top(&mut stack)?.text.push(ch);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err("malformed XML: document ends inside an element".into());
    }
    let doc = stack.pop().expect("one element");
    doc.children
        .into_iter()
        .next()
        .ok_or_else(|| "empty XML document".to_string())
}

fn top(stack: &mut [Element]) -> Result<&mut Element, String> {
    stack.last_mut().ok_or_else(|| "malformed XML".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_elements_entities_and_namespaces() {
        let doc = parse(
            r#"<?xml version="1.0"?><a:R xmlns:a="x"><L><member>1 &amp; 2</member><member>&#65;</member></L><E/></a:R>"#,
        )
        .unwrap();
        assert_eq!(doc.name, "R");
        let items: Vec<_> = doc
            .child("L")
            .unwrap()
            .children_named("member")
            .map(|e| e.text.clone())
            .collect();
        assert_eq!(items, vec!["1 & 2", "A"]);
        assert!(doc.child("E").is_some());
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
    }
}
