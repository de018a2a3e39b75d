//! weir's SQL dialect: the generic dialect plus `CREATE STREAM name [(cols)] WITH (...)`, and
//! Flink-style `CREATE TABLE ... WITH ('key' = 'value')`, both parsed by the statement hook.

use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{
    BinaryOperator, ColumnDef, ColumnOption, ColumnOptionDef, CreateTableOptions, DataType, Expr,
    GeneratedAs, GeneratedExpressionMode, Ident, SqlOption, Statement, Value,
};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

#[derive(Debug, Default)]
/// The SQL dialect of rule files: sqlparser's generic dialect plus weir's window and
/// stream syntax.
pub struct WeirDialect {
    generic: GenericDialect,
}

impl Dialect for WeirDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        self.generic.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.generic.is_identifier_part(ch)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '"' || ch == '`'
    }
    fn supports_match_recognize(&self) -> bool {
        true
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }
    fn supports_within_after_array_aggregation(&self) -> bool {
        true
    }

    fn parse_statement(&self, parser: &mut Parser) -> Option<Result<Statement, ParserError>> {
        let [first, second] = parser.peek_tokens_ref::<2>().map(|t| t.token.clone());
        let is_create = matches!(&first, Token::Word(w) if w.keyword == Keyword::CREATE);
        let kind = match &second {
            Token::Word(w) if w.value.eq_ignore_ascii_case("stream") => true,
            Token::Word(w) if w.keyword == Keyword::TABLE => true,
            _ => false,
        };
        if !(is_create && kind) {
            return None;
        }
        parser.next_token();
        parser.next_token();
        Some(parse_create_stream(parser))
    }
}

/// `[IF NOT EXISTS] name [(element, ...)] [WITH (key = value, ...)]`, after `CREATE STREAM`.
fn parse_create_stream(p: &mut Parser) -> Result<Statement, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let mut options = Vec::new();
    let columns = if p.peek_token_ref().token == Token::LParen {
        parse_elements(p, &mut options)?
    } else {
        Vec::new()
    };
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        loop {
            let tok = p.next_token();
            let mut key = match &tok.token {
                Token::Word(w) => w.value.clone(),
                Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
                _ => return p.expected("an option name such as timestamp or watermark", tok),
            };
            while p.consume_token(&Token::Period) {
                key.push('.');
                key.push_str(&p.parse_identifier()?.value);
            }
            p.expect_token(&Token::Eq)?;
            let value = p.parse_expr()?;
            options.push(SqlOption::KeyValue {
                key: Ident::with_span(tok.span, key),
                value,
            });
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen)?;
    }
    Ok(Statement::CreateTable(
        CreateTableBuilder::new(name)
            .if_not_exists(if_not_exists)
            .columns(columns)
            .table_options(CreateTableOptions::With(options))
            .build(),
    ))
}

fn word_is(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w))
}

/// The parenthesised elements of a stream: columns `name TYPE [NOT NULL]`, computed columns
/// `name AS expression` (kept as a generated column), and Flink's `WATERMARK FOR col AS col -
/// INTERVAL ...`, which becomes the `timestamp` and `watermark` options.
fn parse_elements(
    p: &mut Parser,
    options: &mut Vec<SqlOption>,
) -> Result<Vec<ColumnDef>, ParserError> {
    p.expect_token(&Token::LParen)?;
    let mut columns = Vec::new();
    if p.consume_token(&Token::RParen) {
        return Ok(columns);
    }
    loop {
        let [first, second] = p.peek_tokens_with_location::<2>();
        if word_is(&first.token, "watermark")
            && matches!(&second.token, Token::Word(w) if w.keyword == Keyword::FOR)
        {
            p.next_token();
            p.next_token();
            let column = p.parse_identifier()?;
            p.expect_keyword(Keyword::AS)?;
            let expr = p.parse_expr()?;
            let delay = watermark_delay(&column, &expr).ok_or_else(|| {
                ParserError::ParserError(format!(
                    "WATERMARK FOR {column} AS {expr}: weir reads the form WATERMARK FOR {column} AS {column} - INTERVAL '2' SECOND (events up to that late are in order) at Line: {}, Column: {}",
                    first.span.start.line, first.span.start.column
                ))
            })?;
            let at = |s: &str| Ident::with_span(first.span, s);
            options.push(SqlOption::KeyValue {
                key: at("timestamp"),
                value: Expr::value(Value::SingleQuotedString(column.value.clone())),
            });
            options.push(SqlOption::KeyValue {
                key: at("watermark"),
                value: delay,
            });
        } else if matches!(&second.token, Token::Word(w) if w.keyword == Keyword::AS)
            && matches!(&first.token, Token::Word(_))
        {
            let name = p.parse_identifier()?;
            p.expect_keyword(Keyword::AS)?;
            let expr = p.parse_expr()?;
            columns.push(ColumnDef {
                name,
                data_type: DataType::Unspecified,
                options: vec![ColumnOptionDef {
                    name: None,
                    option: ColumnOption::Generated {
                        generated_as: GeneratedAs::ExpStored,
                        sequence_options: None,
                        generation_expr: Some(expr),
                        generation_expr_mode: Some(GeneratedExpressionMode::Virtual),
                        generated_keyword: false,
                    },
                }],
            });
        } else if [
            "primary",
            "constraint",
            "unique",
            "foreign",
            "check",
            "period",
        ]
        .iter()
        .any(|w| word_is(&first.token, w))
        {
            return Err(ParserError::ParserError(format!(
                "{} constraints are not supported on streams at Line: {}, Column: {}",
                first.token, first.span.start.line, first.span.start.column
            )));
        } else {
            columns.push(p.parse_column_def()?);
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen)?;
        return Ok(columns);
    }
}

/// The bounded out-of-orderness of `WATERMARK FOR col AS col [- INTERVAL ...]`, as the
/// interval (zero for `col` alone).
fn watermark_delay(column: &Ident, expr: &Expr) -> Option<Expr> {
    let same =
        |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(&column.value));
    match expr {
        e if same(e) => Some(Expr::value(Value::SingleQuotedString("0 ms".into()))),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if same(left) && matches!(**right, Expr::Interval(_)) => Some((**right).clone()),
        _ => None,
    }
}
