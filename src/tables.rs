//! Rendering database tables as upstream's box grids (`print_tables`).

use pro_engine::domain::time::format_readable;
use pro_engine::domain::types::{PaymentProvider, PaymentStatus, ProPlan};
use pro_engine::store::sqlite::{Cell, TableDump};

const MAX_TEXT: usize = 128;

/// Text of one cell, following upstream's rules (BLOBs always as hex).
pub fn render_cell(table: &str, column: &str, cell: &Cell) -> String {
    match cell {
        Cell::Null => "None".into(),
        Cell::Blob(b) => hex::encode(b),
        Cell::Text(t) => {
            let t: String = t.chars().filter(|c| !matches!(c, '\n' | '\r' | '\t')).collect();
            let len = t.chars().count();
            if len > MAX_TEXT { format!("{}...({len})", t.chars().take(MAX_TEXT).collect::<String>()) } else { t }
        }
        Cell::Int(v) if column.ends_with("unix_ts_ms") => format!("{v} ({})", format_readable(*v)),
        Cell::Int(v) if column.ends_with("_s") => format!("{v} ({:.2} days)", *v as f64 / 86_400.0),
        Cell::Int(v) if column == "payment_provider" => match PaymentProvider::from_i64(*v) {
            Some(PaymentProvider::Google) => "Google Play Store (1)".into(),
            Some(PaymentProvider::Apple) => "iOS App Store (2)".into(),
            Some(PaymentProvider::Rangeproof) => "Rangeproof (3)".into(),
            Some(PaymentProvider::Nil) => " Nil (0)".into(),
            None => format!("Unknown ({v})"),
        },
        Cell::Int(v) if table == "payments" && column == "status" => {
            PaymentStatus::from_i64(*v).map_or(format!("Unknown ({v})"), |s| format!("{} ({v})", s.name()))
        }
        Cell::Int(v) if table == "payments" && column == "plan" => {
            ProPlan::from_i64(*v).map_or(format!("Unknown ({v})"), |p| format!("{} ({v})", p.name()))
        }
        Cell::Int(v) if table == "payments" && column == "auto_renewing" => {
            if *v != 0 {
                "Yes".into()
            } else {
                "No (0)".into()
            }
        }
        Cell::Int(v) => v.to_string(),
        Cell::Real(v) => v.to_string(),
    }
}

/// `Table: <name>` followed by the grid.
pub fn render_table(t: &TableDump) -> String {
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| r.iter().zip(&t.columns).map(|(c, col)| render_cell(&t.name, col, c)).collect())
        .collect();
    let widths: Vec<usize> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].chars().count()).chain([h.chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |l: &str, m: &str, r: &str| {
        let segs: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}\n", segs.join(m))
    };
    let row = |cells: &[String]| {
        let segs: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!(" {c}{} ", " ".repeat(w - c.chars().count()))).collect();
        format!("│{}│\n", segs.join("│"))
    };
    let mut out = format!("Table: {}\n", t.name);
    out.push_str(&line("┌", "┬", "┐"));
    out.push_str(&row(&t.columns));
    out.push_str(&line("├", "┼", "┤"));
    for r in &rows {
        out.push_str(&row(r));
    }
    out.push_str(&line("└", "┴", "┘"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_matches_upstream() {
        let t = TableDump {
            name: "revocations".into(),
            columns: vec!["gen_index".into(), "creation_unix_ts_ms".into(), "expiry_unix_ts_ms".into()],
            rows: vec![vec![Cell::Int(3), Cell::Int(1796411541000), Cell::Int(1796600000000)]],
        };
        let want = "Table: revocations
┌───────────┬───────────────────────────────────────┬───────────────────────────────────────┐
│ gen_index │ creation_unix_ts_ms                   │ expiry_unix_ts_ms                     │
├───────────┼───────────────────────────────────────┼───────────────────────────────────────┤
│ 3         │ 1796411541000 (26-12-04 19:12:21.000) │ 1796600000000 (26-12-06 23:33:20.000) │
└───────────┴───────────────────────────────────────┴───────────────────────────────────────┘
";
        assert_eq!(render_table(&t), want);
        let empty = TableDump {
            name: "apple_notification_uuid_history".into(),
            columns: vec!["uuid".into(), "expiry_unix_ts_ms".into()],
            rows: vec![],
        };
        assert_eq!(
            render_table(&empty),
            "Table: apple_notification_uuid_history\n┌──────┬───────────────────┐\n│ uuid │ expiry_unix_ts_ms │\n├──────┼───────────────────┤\n└──────┴───────────────────┘\n"
        );
    }

    #[test]
    fn cell_rules() {
        assert_eq!(render_cell("payments", "payment_provider", &Cell::Int(0)), " Nil (0)");
        assert_eq!(render_cell("payments", "status", &Cell::Int(2)), "Redeemed (2)");
        assert_eq!(render_cell("payments", "plan", &Cell::Int(3)), "TwelveMonth (3)");
        assert_eq!(render_cell("payments", "auto_renewing", &Cell::Int(0)), "No (0)");
        assert_eq!(render_cell("payments", "auto_renewing", &Cell::Int(1)), "Yes");
        assert_eq!(render_cell("users", "auto_renewing", &Cell::Int(1)), "1");
        assert_eq!(render_cell("x", "retry_s", &Cell::Int(86400)), "86400 (1.00 days)");
        assert_eq!(render_cell("x", "k", &Cell::Blob(vec![0xcd, 0x01])), "cd01");
        assert_eq!(render_cell("x", "k", &Cell::Null), "None");
        let long = "a\tb".repeat(100);
        assert_eq!(render_cell("x", "k", &Cell::Text(long)), format!("{}...(200)", "ab".repeat(64)));
    }
}
