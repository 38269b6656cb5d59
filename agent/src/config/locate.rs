//! Maps a key path (`targets[2].health.interval`) back to its `line:column` in the source text.
//!
//! serde reports syntax and type errors with toml's own span; the rules checked after parsing
//! know only which key they concern. This module re-reads the document with toml's spanned
//! parser and walks the path. When the key itself is absent (a default was used), it points at
//! the nearest enclosing table that is present, which is where the operator would add the key.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Seg;

/// The byte range in `text` that best matches `path`.
pub(super) fn span_of(text: &str, path: &[Seg]) -> Range<usize> {
    let Ok(doc) = DeTable::parse(text) else {
        return 0..0;
    };
    let root: &DeTable<'_> = doc.get_ref();
    let mut best = doc.span();
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        let next = match (seg, value.map(Spanned::get_ref)) {
            (Seg::Key(key), None) => root.get(*key),
            (Seg::Key(key), Some(DeValue::Table(t))) => t.get(*key),
            (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        best = next.span();
        value = Some(next);
    }
    // toml gives a table the span of its whole body; point at its first line instead.
    best.start..best.end.min(best.start + 1)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"[agent]
name = "a"

[[targets]]
name = "one"

[[targets]]
name = "two"
  [targets.health]
  interval = "1s"
"#;

    fn at(path: &[Seg]) -> (usize, usize) {
        line_col(DOC, span_of(DOC, path).start)
    }

    #[test]
    fn finds_nested_keys_in_arrays_of_tables() {
        assert_eq!(at(&[Seg::Key("agent"), Seg::Key("name")]), (2, 8));
        assert_eq!(
            at(&[Seg::Key("targets"), Seg::Index(1), Seg::Key("name")]),
            (8, 8)
        );
        assert_eq!(
            at(&[
                Seg::Key("targets"),
                Seg::Index(1),
                Seg::Key("health"),
                Seg::Key("interval")
            ]),
            (10, 14)
        );
    }

    #[test]
    fn falls_back_to_the_enclosing_table() {
        let (line, _) = at(&[
            Seg::Key("targets"),
            Seg::Index(1),
            Seg::Key("health"),
            Seg::Key("timeout"),
        ]);
        assert!((8..=10).contains(&line), "line {line}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
