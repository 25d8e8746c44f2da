//! The contract's path templates as a tree of segments: a request's normalised path finds its
//! declared path, literal segments before templated ones (OpenAPI: "concrete paths are matched
//! before their templated counterparts"), literal segments compared ASCII-case-insensitively as
//! every path rule of apiguard is.

use std::collections::BTreeMap;

/// Why a path template cannot be enforced exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateError {
    NotAbsolute,
    /// `{x}` must be a whole segment (`/files/{name}.json` is refused).
    PartialSegment,
    EmptySegment,
    /// Another template has the same shape (`/a/{x}` and `/a/{y}`): which one a request
    /// matches would be a guess.
    Ambiguous,
}

impl TemplateError {
    pub fn says(self) -> &'static str {
        match self {
            TemplateError::NotAbsolute => "a path template starts with '/'",
            TemplateError::PartialSegment => {
                "a templated parameter must be a whole segment (`/a/{x}`, not `/a/{x}.json`)"
            }
            TemplateError::EmptySegment => "a path template has no empty segment",
            TemplateError::Ambiguous => {
                "another path template has the same shape: which one a request matches would be a guess"
            }
        }
    }
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// A path parameter, by name.
    Param(String),
}

/// Splits a template into segments (a trailing `/` is a last empty literal segment).
pub fn parse(template: &str) -> Result<Vec<Segment>, TemplateError> {
    let rest = template
        .strip_prefix('/')
        .ok_or(TemplateError::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.is_empty() && i != last {
                return Err(TemplateError::EmptySegment);
            }
            match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                    Ok(Segment::Param(name.to_owned()))
                }
                _ if s.contains(['{', '}']) => Err(TemplateError::PartialSegment),
                _ => Ok(Segment::Literal((*s).to_owned())),
            }
        })
        .collect()
}

#[derive(Debug, Default)]
struct Node {
    /// By the segment lowercased: its spelling in the document, and the node.
    literal: BTreeMap<String, (String, Node)>,
    param: Option<Box<Node>>,
    /// The declared path ending here.
    path: Option<usize>,
}

/// The declared paths.
#[derive(Debug, Default)]
pub struct Routes {
    root: Node,
}

impl Routes {
    /// Adds declared path number `index`.
    pub fn insert(&mut self, segments: &[Segment], index: usize) -> Result<(), TemplateError> {
        let mut node = &mut self.root;
        for s in segments {
            node = match s {
                Segment::Literal(l) => {
                    &mut node
                        .literal
                        .entry(l.to_ascii_lowercase())
                        .or_insert_with(|| (l.clone(), Node::default()))
                        .1
                }
                Segment::Param(_) => node.param.get_or_insert_with(Box::default),
            };
        }
        if node.path.is_some() {
            return Err(TemplateError::Ambiguous);
        }
        node.path = Some(index);
        Ok(())
    }

    /// The declared path a normalised path matches, and the raw values of its templated
    /// segments in order. Literal segments win over templated ones, backtracking when a literal
    /// branch leads nowhere. `Err`: the path matches a literal segment only in another case
    /// where a template would take it too (`/users/ME` beside `/users/me` and `/users/{id}`):
    /// a case-sensitive backend routes it to the template, a case-insensitive one to the
    /// literal, so either reading would be a guess.
    pub fn find<'p>(&self, path: &'p str) -> Result<Option<(usize, Vec<&'p str>)>, Ambiguous> {
        let Some(rest) = path.strip_prefix('/') else {
            return Ok(None);
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut values = Vec::new();
        Ok(find(&self.root, &parts, &mut values)?.map(|i| (i, values)))
    }
}

/// A path whose match depends on the backend's case rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

fn find<'p>(
    node: &Node,
    parts: &[&'p str],
    values: &mut Vec<&'p str>,
) -> Result<Option<usize>, Ambiguous> {
    let Some((first, rest)) = parts.split_first() else {
        return Ok(node.path);
    };
    if let Some((spelling, next)) = node.literal.get(&first.to_ascii_lowercase()) {
        if spelling != first && node.param.is_some() {
            return Err(Ambiguous);
        }
        if let Some(found) = find(next, rest, values)? {
            return Ok(Some(found));
        }
    }
    let Some(next) = node.param.as_deref() else {
        return Ok(None);
    };
    // A parameter takes a whole, non-empty segment.
    if first.is_empty() {
        return Ok(None);
    }
    values.push(first);
    let found = find(next, rest, values)?;
    if found.is_none() {
        values.pop();
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn routes(templates: &[&str]) -> Routes {
        let mut r = Routes::default();
        for (i, t) in templates.iter().enumerate() {
            r.insert(&parse(t).unwrap(), i).unwrap();
        }
        r
    }

    #[test]
    fn literal_segments_win_and_parameters_take_whole_segments() {
        let r = routes(&["/users/{id}", "/users/me", "/users/{id}/posts", "/", "/a/"]);
        fn found<'p>(r: &Routes, p: &'p str) -> Option<(usize, Vec<&'p str>)> {
            r.find(p).unwrap()
        }
        let find = |p: &'static str| found(&r, p);
        assert_eq!(find("/users/me"), Some((1, vec![])));
        assert_eq!(
            find("/USERS/me"),
            Some((1, vec![])),
            "no template beside `users`"
        );
        assert_eq!(find("/users/7"), Some((0, vec!["7"])));
        assert_eq!(find("/users/me/posts"), Some((2, vec!["me"])));
        assert_eq!(find("/"), Some((3, vec![])));
        assert_eq!(find("/a/"), Some((4, vec![])));
        assert_eq!(find("/a"), None);
        assert_eq!(find("/users"), None);
        assert_eq!(find("/users/"), None, "an empty segment is no parameter");
        assert_eq!(find("/users/7/posts/8"), None);
        // `ME`: the literal to a case-insensitive backend, `{id}` to a case-sensitive one.
        assert_eq!(r.find("/users/ME"), Err(Ambiguous));
    }

    #[test]
    fn templates_that_cannot_be_enforced_exactly_are_refused() {
        assert_eq!(parse("a/{x}"), Err(TemplateError::NotAbsolute));
        assert_eq!(
            parse("/files/{name}.json"),
            Err(TemplateError::PartialSegment)
        );
        assert_eq!(parse("/a/{}"), Err(TemplateError::PartialSegment));
        assert_eq!(parse("/a//b"), Err(TemplateError::EmptySegment));
        let mut r = routes(&["/a/{x}"]);
        assert_eq!(
            r.insert(&parse("/A/{y}").unwrap(), 1),
            Err(TemplateError::Ambiguous)
        );
    }
}
