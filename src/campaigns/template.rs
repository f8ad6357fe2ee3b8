//! A campaign's message: text in any language with `{field}` placeholders filled in from the
//! customer's record (`{{` and `}}` write braces). A field nobody knows is refused when the
//! campaign is saved, naming it, not discovered when the first message goes out.

use std::fmt;

/// A customer field a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The customer's name.
    Name,
    Company,
    /// The display name of the customer's assigned agent.
    Agent,
    /// The customer code (`C000123`).
    Code,
    /// Years since the occasion (the anniversary of becoming a customer, or the age).
    Years,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::Name,
        Field::Company,
        Field::Agent,
        Field::Code,
        Field::Years,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Company => "company",
            Field::Agent => "agent",
            Field::Code => "code",
            Field::Years => "years",
        }
    }

    fn of(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Why a template is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown field {{{0}}}: a template may use {{name}}, {{company}}, {{agent}}, {{code}} and {{years}}")]
    UnknownField(String),
    #[error("a {{ at character {0} is not closed (write {{{{ for a brace)")]
    Unclosed(usize),
    #[error("a }} at character {0} closes nothing (write }}}} for a brace)")]
    Stray(usize),
    #[error("the message is empty")]
    Empty,
}

/// What a template is filled in with, for one customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values<'a> {
    pub name: &'a str,
    pub company: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub code: &'a str,
    pub years: Option<u32>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        if text.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut key = String::new();
                    let mut closed = false;
                    for (_, k) in chars.by_ref() {
                        if k == '}' {
                            closed = true;
                            break;
                        }
                        key.push(k);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed(text[..i].chars().count()));
                    }
                    let key = key.trim();
                    let field = Field::of(key)
                        .ok_or_else(|| TemplateError::UnknownField(key.to_string()))?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(field));
                }
                '}' => return Err(TemplateError::Stray(text[..i].chars().count())),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template { pieces })
    }

    /// The fields it names, in order (for the preview).
    pub fn fields(&self) -> impl Iterator<Item = Field> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(*f),
            Piece::Text(_) => None,
        })
    }

    /// The text for one customer. A field the customer's record lacks is left out, and the
    /// space it leaves is not doubled.
    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => {
                    if out.ends_with(' ') && t.starts_with(' ') {
                        out.push_str(&t[1..]);
                    } else {
                        out.push_str(t);
                    }
                }
                Piece::Field(f) => match f {
                    Field::Name => out.push_str(v.name),
                    Field::Company => out.push_str(v.company.unwrap_or("")),
                    Field::Agent => out.push_str(v.agent.unwrap_or("")),
                    Field::Code => out.push_str(v.code),
                    Field::Years => {
                        if let Some(y) = v.years {
                            out.push_str(&y.to_string());
                        }
                    }
                },
            }
        }
        out.trim().to_string()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                Piece::Field(x) => write!(f, "{{{}}}", x.key())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            name: "王芳",
            company: Some("星辰科技"),
            agent: Some("李娜"),
            code: "C000042",
            years: Some(5),
        }
    }

    #[test]
    fn fields_are_filled_in_any_language() {
        let t = Template::parse("{name}，生日快乐！{company} 祝您万事如意。—— {agent}").unwrap();
        assert_eq!(
            t.render(&values()),
            "王芳，生日快乐！星辰科技 祝您万事如意。—— 李娜"
        );
        let t = Template::parse("Dear {name}, {years} years with us today. {{thanks}}").unwrap();
        assert_eq!(
            t.render(&values()),
            "Dear 王芳, 5 years with us today. {thanks}"
        );
        assert_eq!(
            t.to_string(),
            "Dear {name}, {years} years with us today. {{thanks}}"
        );
    }

    #[test]
    fn a_missing_value_leaves_no_double_space() {
        let t = Template::parse("Happy birthday {name} from {company} and {agent}").unwrap();
        let v = Values {
            company: None,
            ..values()
        };
        assert_eq!(t.render(&v), "Happy birthday 王芳 from and 李娜");
    }

    #[test]
    fn unknown_fields_and_broken_braces_are_refused_by_name() {
        let e = Template::parse("Hi {nmae}!").unwrap_err();
        assert_eq!(e, TemplateError::UnknownField("nmae".into()));
        assert!(e.to_string().contains("{nmae}"), "{e}");
        assert_eq!(
            Template::parse("Hi {name").unwrap_err(),
            TemplateError::Unclosed(3)
        );
        assert_eq!(
            Template::parse("Hi }").unwrap_err(),
            TemplateError::Stray(3)
        );
        assert_eq!(Template::parse("  ").unwrap_err(), TemplateError::Empty);
        let fields: Vec<Field> = Template::parse("{ name } {years}")
            .unwrap()
            .fields()
            .collect();
        assert_eq!(fields, [Field::Name, Field::Years]);
    }
}
