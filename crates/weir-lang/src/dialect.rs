//! weir's SQL dialect: the generic dialect plus `CREATE STREAM name [(cols)] WITH (...)`, and
//! Flink-style `CREATE TABLE ... WITH ('key' = 'value')`, both parsed by the statement hook.

use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{CreateTableOptions, Ident, SqlOption, Statement};
use sqlparser::dialect::{Dialect, GenericDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

#[derive(Debug, Default)]
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

/// `[IF NOT EXISTS] name [(col type, ...)] [WITH (key = value, ...)]`, after `CREATE STREAM`.
fn parse_create_stream(p: &mut Parser) -> Result<Statement, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false)?;
    let columns = if p.peek_token_ref().token == Token::LParen {
        p.parse_columns()?.0
    } else {
        Vec::new()
    };
    let mut options = Vec::new();
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
