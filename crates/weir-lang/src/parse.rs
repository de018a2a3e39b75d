//! From text to sqlparser statements, keeping every error: the text is tokenized once, split at
//! top-level semicolons, and each statement parsed on its own so one mistake does not hide the
//! next. `WITHIN INTERVAL ...` after a `MATCH_RECOGNIZE` pattern (which sqlparser does not know)
//! is lifted out of the tokens here.

use sqlparser::ast::{self, Statement};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::diag::{Diagnostic, Pos};
use crate::dialect::WeirDialect;

/// One parsed statement and what was lifted out of it.
#[derive(Debug)]
pub struct ParsedStatement {
    /// The statement.
    pub statement: Statement,
    /// Where it starts.
    pub pos: Pos,
    /// `WITHIN` bounds in milliseconds, in the order their `MATCH_RECOGNIZE` clauses appear.
    pub within: Vec<(i64, Pos)>,
    /// A window table function in `FROM` (Flink's `TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), ...))`).
    pub window_tvf: Option<WindowTvf>,
}

/// Flink's window table function, lifted out of `FROM`: the statement reads the stream itself,
/// and the binder groups it by this window.
#[derive(Debug, Clone)]
pub struct WindowTvf {
    /// `tumble`, `hop`, `session` or `cumulate`.
    pub kind: String,
    /// The time column of `DESCRIPTOR(...)`.
    pub time: ast::Expr,
    /// The arguments after the descriptor (size, slide, gap, ...).
    pub args: Vec<ast::Expr>,
    /// `TABLE s PARTITION BY k` (a session window's keys).
    pub partition: Vec<ast::Expr>,
    /// Where the window function is written.
    pub pos: Pos,
}

/// Parses every statement of a rule file; the diagnostics name every statement that failed.
pub fn parse(source: &str) -> (Vec<ParsedStatement>, Vec<Diagnostic>) {
    // A byte-order mark (some editors write one) is not part of the first statement.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let dialect = WeirDialect::default();
    let mut diags = Vec::new();
    let tokens = tokenize(&dialect, source, &mut diags);
    let mut out = Vec::new();
    for chunk in split_statements(tokens) {
        let pos = chunk
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| Pos::from(t.span))
            .unwrap_or_default();
        if let Some(d) = too_large(&chunk) {
            diags.push(d);
            continue;
        }
        let (chunk, within, mut errs) = lift_within(chunk);
        diags.append(&mut errs);
        let (chunk, window_tvf) = match lift_window_tvf(&dialect, chunk) {
            Ok(lifted) => lifted,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(chunk);
        match parser.parse_statement() {
            Ok(statement) => {
                if parser.peek_token_ref().token != Token::EOF {
                    let t = parser.peek_token();
                    diags.push(
                        Diagnostic::new(
                            t.span,
                            format!("unexpected '{}' after the statement", t.token),
                        )
                        .hint("end each statement with ';'"),
                    );
                } else {
                    out.push(ParsedStatement {
                        statement,
                        pos,
                        within,
                        window_tvf,
                    });
                }
            }
            Err(e) => diags.push(parser_diagnostic(&e, pos)),
        }
    }
    (out, diags)
}

/// Most operators in one statement: a chain of them nests as deeply as it is long.
pub const MAX_OPERATORS: usize = 1000;
/// Deepest nesting of parentheses and brackets in one statement.
pub const MAX_NESTING: usize = 64;
/// Longest name (of a stream, field, function, ...), in bytes.
pub const MAX_NAME: usize = 128;

/// Refuses, before anything recursive sees it, a statement whose expressions or pattern would
/// nest deeper than the parser, the binder and the operators can follow, or that holds a name
/// longer than names may be (stream names end up in storage keys and topics).
fn too_large(chunk: &[TokenWithSpan]) -> Option<Diagnostic> {
    let (mut depth, mut operators) = (0usize, 0usize);
    for t in chunk {
        match &t.token {
            Token::Word(w) if w.value.len() > MAX_NAME => {
                return Some(
                    Diagnostic::new(t.span, format!("a name longer than {MAX_NAME} bytes"))
                        .hint("names of streams, fields and functions are at most 128 bytes"),
                );
            }
            Token::LParen | Token::LBracket => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(
                        Diagnostic::new(t.span, format!("parentheses nest deeper than {MAX_NESTING}"))
                            .hint("split the expression or pattern, or name parts of it in a rule of their own"),
                    );
                }
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Pipe
            | Token::Ampersand
            | Token::Caret => operators += 1,
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR) => operators += 1,
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return Some(
                Diagnostic::new(t.span, format!("the statement has more than {MAX_OPERATORS} operators"))
                    .hint("a chain of operators nests as deeply as it is long; split it over several rules or use IN (...)"),
            );
        }
    }
    None
}

/// Tokenizes the whole text. A tokenizer error (an unclosed quote, a stray character) is
/// reported and the rest of its line blanked out, so the statements around it are still checked.
fn tokenize(
    dialect: &WeirDialect,
    source: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TokenWithSpan> {
    let mut text = source.to_owned();
    for _ in 0..100 {
        match Tokenizer::new(dialect, &text).tokenize_with_location() {
            Ok(tokens) => return tokens,
            Err(e) => {
                let pos = Pos {
                    line: e.location.line as u32,
                    col: e.location.column as u32,
                };
                diags.push(
                    Diagnostic::new(pos, e.message.clone())
                        .hint("check for an unclosed quote or a stray character"),
                );
                text = blank_rest_of_line(&text, pos);
            }
        }
    }
    Vec::new()
}

/// Replaces the text from `pos` to the end of its line with spaces, keeping every position.
fn blank_rest_of_line(text: &str, pos: Pos) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, line)| {
            if i + 1 != pos.line as usize {
                return line.to_owned();
            }
            line.chars()
                .enumerate()
                .map(|(c, ch)| {
                    if c + 1 >= pos.col as usize && ch != '\n' {
                        ' '
                    } else {
                        ch
                    }
                })
                .collect()
        })
        .collect()
}

/// Splits tokens into statements at semicolons outside parentheses, dropping empty statements.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut cur: Vec<TokenWithSpan> = Vec::new();
    let mut depth = 0i32;
    let mut flush = |cur: &mut Vec<TokenWithSpan>, end: TokenWithSpan| {
        let has_content = cur
            .iter()
            .any(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF));
        let mut stmt = std::mem::take(cur);
        if has_content {
            stmt.push(TokenWithSpan::new(Token::EOF, end.span));
            out.push(stmt);
        }
    };
    for t in tokens {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth <= 0 => {
                flush(&mut cur, t);
                depth = 0;
                continue;
            }
            Token::EOF => {
                flush(&mut cur, t);
                continue;
            }
            _ => {}
        }
        cur.push(t);
    }
    if let Some(last) = cur.last().cloned() {
        flush(&mut cur, last);
    }
    out
}

type Lifted = (Vec<TokenWithSpan>, Vec<(i64, Pos)>, Vec<Diagnostic>);

/// Removes `WITHIN INTERVAL '<n>' [unit]` (and `WITHIN '<duration>'`) from a statement's tokens.
fn lift_within(tokens: Vec<TokenWithSpan>) -> Lifted {
    let mut out = Vec::with_capacity(tokens.len());
    let mut within = Vec::new();
    let mut diags = Vec::new();
    let mut i = 0;
    let word = |t: &TokenWithSpan, w: &str| matches!(&t.token, Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    let next_solid = |from: usize| {
        (from..tokens.len()).find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
    };
    while i < tokens.len() {
        let t = &tokens[i];
        if word(t, "within") {
            if let Some(j) = next_solid(i + 1) {
                if !word(&tokens[j], "group") {
                    let mut k = j;
                    if word(&tokens[j], "interval") {
                        k = next_solid(j + 1).unwrap_or(j);
                    }
                    let text = match &tokens[k].token {
                        Token::SingleQuotedString(s) => Some(s.clone()),
                        _ => None,
                    };
                    let mut end = k;
                    let mut unit = String::new();
                    if let Some(u) = next_solid(k + 1) {
                        if let Token::Word(w) = &tokens[u].token {
                            if weir_core::time::unit_millis(&w.value).is_some() {
                                unit = w.value.clone();
                                end = u;
                            }
                        }
                    }
                    let pos = Pos::from(t.span);
                    match text.map(|s| weir_core::parse_duration(&format!("{s} {unit}"))) {
                        Some(Ok(ms)) if ms > 0 => within.push((ms, pos)),
                        Some(Ok(_)) => {
                            diags.push(Diagnostic::new(pos, "WITHIN needs a positive time bound"))
                        }
                        Some(Err(e)) => diags.push(Diagnostic::new(pos, e)),
                        None => diags.push(
                            Diagnostic::new(pos, "WITHIN needs a time bound")
                                .hint("write WITHIN INTERVAL '10' SECOND after PATTERN (...)"),
                        ),
                    }
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    (out, within, diags)
}

/// Lifts `TABLE(<kind>(TABLE s [PARTITION BY k], DESCRIPTOR(ts), args...))` out of a
/// statement's tokens, leaving `s` in its place.
fn lift_window_tvf(
    dialect: &WeirDialect,
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, Option<WindowTvf>), Diagnostic> {
    let solid: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let word = |k: usize, w: &str| {
        solid.get(k).is_some_and(
            |&i| matches!(&tokens[i].token, Token::Word(x) if x.value.eq_ignore_ascii_case(w)),
        )
    };
    let is = |k: usize, t: &Token| solid.get(k).is_some_and(|&i| tokens[i].token == *t);
    let kinds = ["tumble", "hop", "session", "cumulate"];
    let Some(k) = (0..solid.len()).find(|&k| {
        word(k, "table")
            && is(k + 1, &Token::LParen)
            && kinds.iter().any(|w| word(k + 2, w))
            && is(k + 3, &Token::LParen)
            && word(k + 4, "table")
    }) else {
        return Ok((tokens, None));
    };
    let pos = Pos::from(tokens[solid[k]].span);
    let kind = match &tokens[solid[k + 2]].token {
        Token::Word(w) => w.value.to_ascii_lowercase(),
        _ => unreachable!("checked above"),
    };
    // The function's arguments, split at top-level commas, up to its closing parenthesis.
    let mut args: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
    let mut depth = 0;
    let mut j = solid[k + 4] + 1;
    let close = loop {
        let Some(t) = tokens.get(j) else {
            return Err(Diagnostic::new(
                pos,
                format!("{} has no closing parenthesis", kind.to_uppercase()),
            ));
        };
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => break j,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                args.push(Vec::new());
                j += 1;
                continue;
            }
            _ => {}
        }
        args.last_mut().expect("one at least").push(t.clone());
        j += 1;
    };
    let outer =
        ((close + 1)..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)));
    let Some(outer) = outer.filter(|&i| tokens[i].token == Token::RParen) else {
        return Err(Diagnostic::new(
            pos,
            "TABLE(...) around the window function is not closed",
        ));
    };
    let usage = "write FROM TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end, ...";
    let parse = |toks: &[TokenWithSpan]| -> Result<ast::Expr, Diagnostic> {
        let mut toks = toks.to_vec();
        let end = toks.last().map_or(tokens[close].span, |t| t.span);
        toks.push(TokenWithSpan::new(Token::EOF, end));
        let mut p = Parser::new(dialect).with_tokens_with_locations(toks);
        let e = p.parse_expr().map_err(|e| parser_diagnostic(&e, pos))?;
        match p.peek_token_ref().token {
            Token::EOF => Ok(e),
            _ => Err(
                Diagnostic::new(p.peek_token().span, "unexpected text in a window argument")
                    .hint(usage),
            ),
        }
    };
    if args.len() < 3 {
        return Err(Diagnostic::new(
            pos,
            format!(
                "{} takes TABLE s, DESCRIPTOR(time column) and its lengths",
                kind.to_uppercase()
            ),
        )
        .hint(usage));
    }
    // TABLE s [PARTITION BY k, ...]
    let data = std::mem::take(&mut args[0]);
    let at = |w: &str| {
        data.iter()
            .position(|t| matches!(&t.token, Token::Word(x) if x.value.eq_ignore_ascii_case(w)))
    };
    let (name, partition) = match at("partition") {
        Some(p) if at("by").is_some_and(|b| b > p) => {
            let b = at("by").expect("checked");
            let keys = data[b + 1..]
                .split(|t| t.token == Token::Comma)
                .map(parse)
                .collect::<Result<Vec<_>, _>>()?;
            (data[..p].to_vec(), keys)
        }
        _ => (data, Vec::new()),
    };
    // DESCRIPTOR(col)
    let descriptor: Vec<&TokenWithSpan> = args[1]
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let time = match descriptor[..] {
        [d, open, col, shut]
            if matches!(&d.token, Token::Word(w) if w.value.eq_ignore_ascii_case("descriptor"))
                && open.token == Token::LParen
                && shut.token == Token::RParen =>
        {
            parse(std::slice::from_ref(col))?
        }
        _ => {
            return Err(Diagnostic::new(
                pos,
                "the second argument of a window function is DESCRIPTOR(time column)",
            )
            .hint(usage))
        }
    };
    let rest = args[2..]
        .iter()
        .map(|a| parse(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out: Vec<TokenWithSpan> = tokens[..solid[k]].to_vec();
    out.extend(name);
    out.extend_from_slice(&tokens[outer + 1..]);
    Ok((
        out,
        Some(WindowTvf {
            kind,
            time,
            args: rest,
            partition,
            pos,
        }),
    ))
}

/// Turns sqlparser's message into a positioned diagnostic with a hint where one helps.
fn parser_diagnostic(e: &ParserError, fallback: Pos) -> Diagnostic {
    let msg = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "the statement nests too deeply".to_owned(),
    };
    let (text, pos) = match msg.rfind(" at Line: ") {
        Some(i) => {
            let nums: Vec<u32> = msg[i..]
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|s| s.parse().ok())
                .collect();
            let pos = match nums[..] {
                [line, col, ..] => Pos { line, col },
                _ => fallback,
            };
            (msg[..i].to_owned(), pos)
        }
        None => (msg.clone(), fallback),
    };
    let text = text.replace("sql parser error: ", "");
    let hint = if text.contains("found: EOF") {
        "the statement ends too early: is a closing parenthesis or an expression missing?"
    } else if text.contains("found: STREAM") || text.contains("found: stream") {
        "write CREATE STREAM name (col TYPE, ...) WITH (...)"
    } else if text.contains("Expected: an expression") {
        "an operand is missing, or a keyword is used as a name (quote it with \"...\")"
    } else if text.contains("Expected: end of statement") {
        "is a ';' missing between two statements, or a comma between two items?"
    } else {
        "see docs/language.md for the grammar weir accepts"
    };
    Diagnostic::new(pos, text).hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_parsed_on_its_own() {
        let (stmts, diags) = parse(
            "CREATE STREAM s (a INT) WITH (timestamp = 'a');\nSELECT FROM;\nINSERT INTO o SELECT * FROM s;\nINSERT INTO ;",
        );
        assert_eq!(stmts.len(), 2);
        assert_eq!(diags.len(), 2);
        assert_eq!(diags[0].pos.line, 2);
        assert_eq!(diags[1].pos.line, 4);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_text() {
        let (stmts, diags) = parse("\u{feff}CREATE STREAM s (a INT) WITH (timestamp = 'a');");
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(stmts.len(), 1);
    }

    #[test]
    fn within_is_lifted() {
        let (stmts, diags) = parse(
            "INSERT INTO o SELECT * FROM s MATCH_RECOGNIZE (ORDER BY ts MEASURES A.x AS x PATTERN (A B) WITHIN INTERVAL '10' SECOND DEFINE A AS x > 1)",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(stmts[0].within.len(), 1);
        assert_eq!(stmts[0].within[0].0, 10_000);
    }
}
