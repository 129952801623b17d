//! Protocol buffers text format (Triton's `config.pbtxt`) read into a schemaless tree:
//! fields in order, scalars as their text, nested messages as trees. Fields weft does not
//! know are kept and ignored by the reader, so any valid model configuration parses.

/// A field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number, an identifier (enum value, `true`) or a string's contents.
    Scalar(String),
    Message(Message),
}

/// A message: its fields in order; a repeated field appears once per element.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message(pub Vec<(String, Value)>);

impl Message {
    /// Every value of field `name`.
    pub fn all<'a>(&'a self, name: &str) -> impl DoubleEndedIterator<Item = &'a Value> + 'a {
        let name = name.to_string();
        self.0.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The last value of a singular message field (protobuf's merge rule: last one wins).
    pub fn message(&self, name: &str) -> Option<&Message> {
        self.all(name).rev().find_map(|v| match v {
            Value::Message(m) => Some(m),
            Value::Scalar(_) => None,
        })
    }

    /// The last value of a scalar field.
    pub fn scalar(&self, name: &str) -> Option<&str> {
        self.all(name).rev().find_map(|v| match v {
            Value::Scalar(s) => Some(s.as_str()),
            Value::Message(_) => None,
        })
    }

    /// A scalar field as an unsigned number; an error names the field when it is not one.
    pub fn uint(&self, name: &str) -> Result<Option<u64>, String> {
        self.scalar(name)
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| format!("{name}: '{s}' is not a whole number"))
            })
            .transpose()
    }

    /// Every element of a repeated unsigned field.
    pub fn uints(&self, name: &str) -> Result<Vec<u64>, String> {
        self.all(name)
            .map(|v| match v {
                Value::Scalar(s) => s
                    .parse::<u64>()
                    .map_err(|_| format!("{name}: '{s}' is not a whole number")),
                Value::Message(_) => Err(format!("{name}: a message where a number belongs")),
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Number(String),
    Str(String),
    Punct(char),
}

fn tokenize(text: &str) -> Result<Vec<(Token, usize)>, String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut line = 1;
    while let Some(&(i, c)) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while chars.peek().is_some_and(|&(_, c)| c != '\n') {
                    chars.next();
                }
            }
            '{' | '}' | '[' | ']' | ':' | ',' | ';' | '<' | '>' => {
                out.push((Token::Punct(c), line));
                chars.next();
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some((_, '\n')) => return Err(format!("line {line}: unterminated string")),
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, e)) => s.push(e),
                            None => return Err(format!("line {line}: unterminated string")),
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push((Token::Str(s), line));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '+' => {
                let start = i;
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == '-' || d == '.' || d == '+' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &text[start..end];
                let first = word.chars().next().unwrap_or('a');
                let token = if first.is_ascii_digit() || first == '-' || first == '+' || first == '.' {
                    Token::Number(word.to_string())
                } else {
                    Token::Ident(word.to_string())
                };
                out.push((token, line));
            }
            other => return Err(format!("line {line}: unexpected character '{other}'")),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.tokens.get(self.at).or(self.tokens.last()).map_or(1, |(_, l)| *l)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn error(&self, what: &str) -> String {
        format!("line {}: {what}", self.line())
    }

    /// Fields until `close` (or the end of the text at the top level).
    fn message(&mut self, close: Option<char>) -> Result<Message, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.error("messages nested too deeply"));
        }
        let mut fields = Vec::new();
        loop {
            match (self.peek().cloned(), close) {
                (None, None) => break,
                (None, Some(c)) => return Err(self.error(&format!("missing '{c}'"))),
                (Some(Token::Punct(p)), Some(c)) if p == c => {
                    self.at += 1;
                    break;
                }
                (Some(Token::Ident(name)), _) => {
                    self.at += 1;
                    self.field(name, &mut fields)?;
                    // fields may be separated by ',' or ';'
                    let _ = self.eat(',') || self.eat(';');
                }
                (Some(t), _) => return Err(self.error(&format!("expected a field name, found {t:?}"))),
            }
        }
        self.depth -= 1;
        Ok(Message(fields))
    }

    fn field(&mut self, name: String, fields: &mut Vec<(String, Value)>) -> Result<(), String> {
        let colon = self.eat(':');
        if self.eat('[') {
            if !self.eat(']') {
                loop {
                    let v = self.value(colon, &name)?;
                    fields.push((name.clone(), v));
                    if self.eat(']') {
                        break;
                    }
                    if !self.eat(',') {
                        return Err(self.error(&format!("expected ',' or ']' in the list of '{name}'")));
                    }
                }
            }
            return Ok(());
        }
        let v = self.value(colon, &name)?;
        fields.push((name, v));
        Ok(())
    }

    fn value(&mut self, colon: bool, name: &str) -> Result<Value, String> {
        if self.eat('{') {
            return Ok(Value::Message(self.message(Some('}'))?));
        }
        if self.eat('<') {
            return Ok(Value::Message(self.message(Some('>'))?));
        }
        if !colon {
            return Err(self.error(&format!("expected ':' or '{{' after '{name}'")));
        }
        match self.peek().cloned() {
            Some(Token::Number(n)) | Some(Token::Ident(n)) => {
                self.at += 1;
                Ok(Value::Scalar(n))
            }
            Some(Token::Str(mut s)) => {
                self.at += 1;
                // adjacent strings concatenate
                while let Some(Token::Str(more)) = self.peek().cloned() {
                    s.push_str(&more);
                    self.at += 1;
                }
                Ok(Value::Scalar(s))
            }
            _ => Err(self.error(&format!("'{name}' has no value"))),
        }
    }
}

/// Parses protobuf text format; an error names the line.
pub fn parse(text: &str) -> Result<Message, String> {
    let mut p = Parser {
        tokens: tokenize(text)?,
        at: 0,
        depth: 0,
    };
    p.message(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_messages_lists_and_comments() {
        let m = parse(
            "name: \"resnet\" # the name\n\
             max_batch_size: 8\n\
             input [ { name: 'in' dims: [3, 224, 224] }, { name: \"b\" } ]\n\
             instance_group [{ count: 2, kind: KIND_CPU }]\n\
             dynamic_batching < max_queue_delay_microseconds: 100; >\n\
             version_policy { specific { versions: 1 versions: [4, 5] } }\n\
             parameters { key: \"x\" value: { string_value: \"a\" \"b\" } }",
        )
        .unwrap();
        assert_eq!(m.scalar("name"), Some("resnet"));
        assert_eq!(m.uint("max_batch_size"), Ok(Some(8)));
        assert_eq!(m.all("input").count(), 2);
        let first = match m.all("input").next() {
            Some(Value::Message(i)) => i.clone(),
            _ => Message::default(),
        };
        assert_eq!(first.uints("dims"), Ok(vec![3, 224, 224]));
        assert_eq!(
            m.message("instance_group").and_then(|g| g.scalar("kind")),
            Some("KIND_CPU")
        );
        assert_eq!(
            m.message("dynamic_batching")
                .map(|d| d.uint("max_queue_delay_microseconds")),
            Some(Ok(Some(100)))
        );
        let versions = m
            .message("version_policy")
            .and_then(|p| p.message("specific"))
            .map(|s| s.uints("versions"));
        assert_eq!(versions, Some(Ok(vec![1, 4, 5])));
        let value = m
            .message("parameters")
            .and_then(|p| p.message("value"))
            .and_then(|v| v.scalar("string_value"));
        assert_eq!(value, Some("ab"));
        // a word in a comment or a string is not a field
        let m = parse("# latest { }\nname: \"all\"").unwrap();
        assert!(m.message("latest").is_none() && m.message("all").is_none());
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line) in [
            ("a: 1\nb {", "line 2"),
            ("a: \"x", "line 1"),
            ("a: 1\n\nb: [1 2]", "line 3"),
            ("a 1", "line 1"),
            ("a: 1 }", "line 1"),
            ("a: @", "line 1"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(line), "{text:?}: {e}");
        }
        assert!(parse(&"a { ".repeat(100)).is_err());
        assert_eq!(parse("").unwrap(), Message::default());
        assert!(parse("n: x").unwrap().uint("n").is_err());
    }
}
