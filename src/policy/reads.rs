//! Which costly parts of the input document a policy can read.
//!
//! Request headers and query parameters are most of the work of building the input (a string
//! pair per header, and dropping them again after the evaluation), and the downstream address
//! costs the filter a host call; a policy that never reads them, like the built-in pack, should
//! not pay for them. This module finds, from the policy's tokens, whether any reference to
//! `input` can reach `input.request.headers`, `input.request.query` or `input.source`, and
//! whether the policy names `input` at all. It is conservative: any use of `input` it cannot read as a plain
//! chain of constant keys (bare `input`, `input.request` as a whole, `input[x]`, an import of
//! `input` or `input.request`) counts as reading everything, so a policy always sees every
//! part it might read.
//!
//! The tokens come from regorus's own lexer (exported under `regorus::unstable`), so comments,
//! strings and raw strings are told apart exactly as the policy compiler tells them apart; a
//! regorus upgrade that changes that module fails to build here rather than going unnoticed.

use regorus::unstable::{Lexer, Token, TokenKind};
use regorus::Source;

use super::input::key;
pub use super::input::InputReads;

/// What every module together reads; a module that does not lex reads everything (it will
/// not compile either).
pub fn analyse<'a>(modules: impl IntoIterator<Item = (&'a str, &'a str)>) -> InputReads {
    modules
        .into_iter()
        .map(|(name, text)| module_reads(name, text).unwrap_or(InputReads::ALL))
        .fold(InputReads::NONE, InputReads::union)
}

fn module_reads(name: &str, text: &str) -> Option<InputReads> {
    let source = Source::from_contents(name.to_owned(), text.to_owned()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut tokens: Vec<Token> = Vec::new();
    loop {
        let t = lexer.next_token().ok()?;
        if matches!(t.0, TokenKind::Eof) {
            break;
        }
        tokens.push(t);
    }
    let mut reads = InputReads::NONE;
    for (i, t) in tokens.iter().enumerate() {
        if !matches!(t.0, TokenKind::Ident) || t.1.text() != "input" {
            continue;
        }
        // `x.input` is a key named "input", not the input document.
        if i > 0 && is_symbol(&tokens[i - 1], ".") {
            continue;
        }
        reads = reads.union(chain_reads(&tokens[i + 1..]));
        if reads == InputReads::ALL {
            break;
        }
    }
    Some(reads)
}

/// What one reference `input<rest>` reads.
fn chain_reads(rest: &[Token]) -> InputReads {
    let keys = constant_keys(rest, 2);
    match keys.as_slice() {
        [Some(top), Some(field)] if top == key::REQUEST => InputReads {
            any: true,
            headers: field == key::HEADERS,
            query: field == key::QUERY,
            source: false,
        },
        [Some(top), ..] if top == key::SOURCE => InputReads {
            any: true,
            source: true,
            ..InputReads::NONE
        },
        [Some(top), ..] if top != key::REQUEST => InputReads {
            any: true,
            ..InputReads::NONE
        },
        _ => InputReads::ALL,
    }
}

/// Up to `n` leading keys of a reference: `.name` and `["name"]` are constant keys; anything
/// else that indexes (`[x]`, `[1]`) is `None` and ends the chain; a non-indexing token ends it.
fn constant_keys(rest: &[Token], n: usize) -> Vec<Option<String>> {
    let mut keys = Vec::new();
    let mut i = 0;
    while keys.len() < n {
        match rest.get(i..) {
            Some([dot, name, ..]) if is_symbol(dot, ".") && matches!(name.0, TokenKind::Ident) => {
                keys.push(Some(name.1.text().to_owned()));
                i += 2;
            }
            // A string key is read as written only when it has no escape: the token's text is
            // the source between the quotes, so `"he\u0061ders"` would compare unequal to
            // `headers` while naming it. An escaped key counts as unknown (reads everything).
            Some([open, key, close, ..])
                if is_symbol(open, "[")
                    && (matches!(key.0, TokenKind::RawString)
                        || (matches!(key.0, TokenKind::String)
                            && !key.1.text().contains('\\')))
                    && is_symbol(close, "]") =>
            {
                keys.push(Some(key.1.text().to_owned()));
                i += 3;
            }
            Some([open, ..]) if is_symbol(open, "[") => {
                keys.push(None);
                break;
            }
            _ => break,
        }
    }
    keys
}

fn is_symbol(t: &Token, s: &str) -> bool {
    matches!(t.0, TokenKind::Symbol) && t.1.text() == s
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn reads(body: &str) -> InputReads {
        analyse([(
            "p.rego",
            format!("package p\nimport rego.v1\n{body}\n").as_str(),
        )])
    }

    /// Reads `input`, none of its costly parts.
    const SOME: InputReads = InputReads {
        any: true,
        ..InputReads::NONE
    };

    #[test]
    fn narrow_references_read_only_what_they_name() {
        let r = reads(r#"allow if input.request.method == "GET""#);
        assert_eq!(r, SOME);
        let r = reads(r#"allow if input.token.sub == input.resource.owner"#);
        assert_eq!(r, SOME);
        let headers = InputReads {
            headers: true,
            ..SOME
        };
        let query = InputReads {
            query: true,
            ..SOME
        };
        let source = InputReads {
            source: true,
            ..SOME
        };
        let r = reads(r#"allow if input.request.headers["x-api-key"] == "k""#);
        assert_eq!(r, headers);
        let r = reads(r#"allow if input["request"]["query"].page == "2""#);
        assert_eq!(r, query);
        let r = reads("allow if input.request[`headers`].a");
        assert_eq!(r, headers);
        let r = reads(r#"allow if net.cidr_contains("10.0.0.0/8", input.source.address)"#);
        assert_eq!(r, source);
        assert_eq!(reads("allow if input.source"), source);
    }

    #[test]
    fn anything_unclear_reads_everything() {
        for body in [
            "allow if count(input) > 0",
            "allow if input.request.method; x := input.request",
            "allow if { some k; input.request[k] }",
            "allow if { some k; input[k].headers }",
            "allow if walk(input, [p, v])",
            "import input.request as r\nallow if r.headers",
            "import input\nallow if input.request.method",
            "allow if object.get(input, [\"request\", \"headers\"], {})",
            "allow if input.request[\"he\\u0061ders\"][\"x-block\"]",
            "allow if input[\"\\u0073ource\"].address",
        ] {
            assert_eq!(reads(body), InputReads::ALL, "{body}");
        }
    }

    #[test]
    fn comments_strings_and_other_keys_are_not_references() {
        let r = reads(
            "# input.request.headers\nmsg := \"input.request.headers\"\nraw := `input.request.query`\nallow if data.x.input.request.headers",
        );
        assert_eq!(r, InputReads::NONE);
    }

    #[test]
    fn a_policy_that_never_names_input_reads_nothing_at_all() {
        assert_eq!(reads("allow := true"), InputReads::NONE);
        assert_eq!(reads("allow if data.flags.open"), InputReads::NONE);
        assert!(reads("allow if { x := input; x }").any);
        assert!(reads("allow if data.p.q with input as {}").any);
    }

    #[test]
    fn the_builtin_pack_reads_neither_headers_nor_query() {
        assert_eq!(
            analyse([(super::super::BUILTIN_NAME, super::super::BUILTIN_PACK)]),
            SOME
        );
    }

    #[test]
    fn a_module_that_does_not_lex_reads_everything() {
        assert_eq!(
            analyse([("p.rego", "package p\nx := \"unterminated")]),
            InputReads::ALL
        );
    }
}
