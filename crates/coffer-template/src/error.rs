//! Template errors, in Go's format: `template: NAME:LINE:COL: message` when parsing and
//! `template: NAME:LINE:COL: executing "NAME" at <NODE>: message` when rendering.
//!
//! Guarantees: a message names positions, types, function names, field names and secret paths,
//! never a data value: `<NODE>` shows a field chain, variable or function name, with string
//! literals elided, because the template text itself may carry values (e.g. the data of a
//! write-style `secret` call). LINE is 1-based; COL is the byte offset within the line, counted
//! from 0, as Go's `ErrorContext` reports it.

/// A parse or render failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("template: {name}:{line}:{col}: {message}")]
    Parse { name: String, line: usize, col: usize, message: String },
    #[error("template: {name}:{line}:{col}: executing \"{name}\" at <{node}>: {message}")]
    Render { name: String, line: usize, col: usize, node: String, message: String },
}

/// Line (1-based) and column (0-based byte offset in the line) of byte offset `pos`.
pub(crate) fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(src.len());
    while !src.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &src[..pos];
    let line = 1 + before.matches('\n').count();
    let col = before.rfind('\n').map_or(pos, |nl| pos - nl - 1);
    (line, col)
}

impl Error {
    pub(crate) fn parse(name: &str, src: &str, pos: usize, message: impl Into<String>) -> Self {
        let (line, col) = line_col(src, pos);
        Error::Parse { name: name.to_owned(), line, col, message: message.into() }
    }

    /// The message alone, without the position prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::Parse { message, .. } | Error::Render { message, .. } => message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_byte_offsets_within_the_line_as_go_reports_them() {
        assert_eq!(line_col("{{.x}}", 2), (1, 2));
        assert_eq!(line_col("a\nbc{{.x}}", 6), (2, 4));
        assert_eq!(line_col("é", 1), (1, 0));
    }
}
