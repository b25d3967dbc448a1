//! Aligned text tables like `kubectl get` prints: a header in capitals, columns padded to their
//! widest cell and separated by two spaces, `<none>` for empty cells, no trailing blanks.

use crate::format::NONE;

/// A table being built row by row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (upper-cased when rendered).
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_uppercase()).collect(),
            rows: vec![],
        }
    }

    /// Adds a row; missing trailing cells and empty cells print as `<none>`.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, each ending in a newline.
    pub fn render(&self) -> String {
        self.render_indented("")
    }

    /// The table with every line prefixed by `indent` (for sections of `explain`).
    pub fn render_indented(&self, indent: &str) -> String {
        let cell = |row: &[String], i: usize| -> String {
            match row.get(i).map(String::as_str) {
                None | Some("") => NONE.to_string(),
                Some(s) => s.replace('\n', " "),
            }
        };
        let n = self.headers.len();
        let lines: Vec<Vec<String>> = std::iter::once(self.headers.clone())
            .chain(
                self.rows
                    .iter()
                    .map(|r| (0..n).map(|i| cell(r, i)).collect()),
            )
            .collect();
        let widths: Vec<usize> = (0..n)
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in &lines {
            let mut text = String::from(indent);
            for (i, value) in line.iter().enumerate() {
                text.push_str(value);
                if i + 1 < n {
                    let pad = widths[i] - value.chars().count() + 2;
                    text.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_two_space_gaps_and_capital_headers() {
        let mut t = Table::new(&["name", "gpus", "age"]);
        t.push(vec!["alpha".into(), "16".into(), "5m".into()]);
        t.push(vec!["b".into(), "8".into(), "3d".into()]);
        assert_eq!(
            t.render(),
            "NAME   GPUS  AGE\n\
             alpha  16    5m\n\
             b      8     3d\n"
        );
    }

    #[test]
    fn empty_and_missing_cells_print_none() {
        let mut t = Table::new(&["a", "b", "c"]);
        t.push(vec!["x".into(), String::new()]);
        assert_eq!(t.render(), "A  B       C\nx  <none>  <none>\n");
    }

    #[test]
    fn wide_characters_count_once_and_lines_have_no_trailing_blanks() {
        let mut t = Table::new(&["hash", "n"]);
        t.push(vec!["0xabcd…".into(), "1".into()]);
        t.push(vec!["0x1".into(), "".into()]);
        let out = t.render_indented("  ");
        assert_eq!(out, "  HASH     N\n  0xabcd…  1\n  0x1      <none>\n");
        assert!(out.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn a_table_without_rows_is_just_its_header() {
        let t = Table::new(&["name"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "NAME\n");
    }
}
