//! Secrets out of what is shown: the password of every `scheme://user:password@host` URL, and
//! the value of every option that holds a secret, are replaced by `***` in listings, status
//! documents, errors and logs.

use std::borrow::Cow;

/// Options whose values are secrets, wherever they appear as `name = 'value'`.
pub const SECRET_OPTIONS: &[&str] = &["password", "token", "secret", "sasl_password", "nkey"];

/// `text` with every URL password and secret option value replaced by `***`.
pub fn secrets(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if text.contains("://") {
        out = Cow::Owned(url_passwords(&out));
    }
    if SECRET_OPTIONS.iter().any(|o| out.contains(o)) {
        out = Cow::Owned(option_values(&out));
    }
    out
}

/// `scheme://user:password@` → `scheme://user:***@`.
fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace, quote or the end.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"' || c == ',')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(a), Some(c)) if c < a => {
                out.push_str(&authority[..=c]);
                out.push_str("***");
                out.push_str(&authority[a..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `password = 'x'` (any case, any spacing, single or double quotes) → `password = '***'`.
fn option_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let found = SECRET_OPTIONS
            .iter()
            .filter_map(|o| lower[i..].find(o).map(|p| (i + p, o.len())))
            .min();
        let Some((start, len)) = found else { break };
        let after = &text[start + len..];
        let spaced = after.trim_start();
        let Some(value) = spaced.strip_prefix('=').map(str::trim_start) else {
            out.push_str(&text[i..start + len]);
            i = start + len;
            continue;
        };
        let quote = value.chars().next().filter(|q| *q == '\'' || *q == '"');
        let Some(q) = quote else {
            out.push_str(&text[i..start + len]);
            i = start + len;
            continue;
        };
        let open = text.len() - value.len();
        let close = text[open + 1..]
            .find(q)
            .map_or(text.len(), |p| open + 1 + p);
        out.push_str(&text[i..=open]);
        out.push_str("***");
        i = close;
    }
    out.push_str(&text[i.min(text.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::secrets;

    #[test]
    fn passwords_are_hidden_and_the_rest_kept() {
        let cases = [
            (
                "CREATE STREAM s WITH (connector = 'amqp', url = 'amqps://guest:s3cret@rabbit:5671/%2f');",
                "CREATE STREAM s WITH (connector = 'amqp', url = 'amqps://guest:***@rabbit:5671/%2f');",
            ),
            ("mqtt://u:p@h:1883 and nats://h:4222", "mqtt://u:***@h:1883 and nats://h:4222"),
            ("http://host:8080/path", "http://host:8080/path"),
            ("WITH (password = \"p'w\", token='abc', x = 'y')", "WITH (password = \"***\", token='***', x = 'y')"),
            ("PASSWORD='x' passwords are fine", "PASSWORD='***' passwords are fine"),
            ("no secrets here", "no secrets here"),
        ];
        for (text, shown) in cases {
            assert_eq!(secrets(text), shown, "{text}");
        }
    }
}
