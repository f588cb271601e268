//! Aligned text tables and readable byte counts for human output.

/// How a column is aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table: a header row and data rows, columns separated by two spaces.
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            columns: columns.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (i, ((w, (_, align)), c)) in widths.iter().zip(&self.columns).zip(cells).enumerate()
            {
                if i > 0 {
                    l.push_str("  ");
                }
                let fill = " ".repeat(w - width(c));
                match align {
                    Align::Left => {
                        l.push_str(c);
                        if i + 1 < n {
                            l.push_str(&fill);
                        }
                    }
                    Align::Right => {
                        l.push_str(&fill);
                        l.push_str(c);
                    }
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(self.columns.iter().map(|(h, _)| h.as_str()).collect());
        for r in &self.rows {
            line(
                (0..n)
                    .map(|i| r.get(i).map_or("", String::as_str))
                    .collect(),
            );
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// A byte count for people: `512 B`, `4 KiB`, `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut unit = 0;
    let mut scale = 1024u64;
    while unit + 1 < UNITS.len() && n >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    if n % scale == 0 {
        format!("{} {}", n / scale, UNITS[unit])
    } else {
        format!("{:.1} {}", n as f64 / scale as f64, UNITS[unit])
    }
}

/// Parses a byte count: plain digits, or digits followed by `K`/`KiB`,
/// `M`/`MiB` or `G`/`GiB` (powers of 1024; case does not matter).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{s}' is not a byte count (examples: 2048, 2K, 64KiB, 1M)"
        ));
    }
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size suffix '{other}' in '{s}'; use K, KiB, M, MiB, G or GiB"
            ))
        }
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{s}' is too large"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(20 << 20), "20 MiB");
        assert_eq!(bytes((5 << 30) + (1 << 29)), "5.5 GiB");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("2048"), Ok(2048));
        assert_eq!(parse_bytes("2K"), Ok(2048));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("K").is_err());
        assert!(parse_bytes("12Q").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999999999999").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("BLOCKS", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["/a".into(), "5".into(), "x".into()]);
        t.row(vec!["/longer".into(), "1024".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME     BLOCKS  NOTE\n/a            5  x\n/longer    1024\n"
        );
    }
}
