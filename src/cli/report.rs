//! `report generate <daily|weekly|monthly> [--format human|csv] [--count N]`.

use clap::{Subcommand, ValueEnum};
use pro_engine::reports::{self, ReportKind};
use pro_engine::store::sqlite;

use super::{Access, CliResult, Global, config_and_db, db_error};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Counts of payments per period, newest first.
    Generate {
        /// How the payments are grouped (weeks are ISO weeks).
        #[arg(value_enum)]
        period: Period,
        /// Output layout.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// How many periods to show (a negative number drops that many from the end).
        #[arg(long, default_value_t = 7, allow_negative_numbers = true)]
        count: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Csv,
}

impl From<Period> for ReportKind {
    fn from(p: Period) -> Self {
        match p {
            Period::Daily => ReportKind::Daily,
            Period::Weekly => ReportKind::Weekly,
            Period::Monthly => ReportKind::Monthly,
        }
    }
}

pub fn run(global: &Global, command: Command) -> CliResult {
    let Command::Generate { period, format, count } = command;
    let (_, mut db) = config_and_db(global, Access::Read)?;
    let report = sqlite::read(&mut db.conn, |tx| reports::generate(tx, period.into(), count)).map_err(db_error)?;
    let text = match format {
        Format::Human => reports::render_human(&report),
        Format::Csv => reports::render_csv(&report),
    };
    super::emit(&format!("{text}\n"));
    Ok(())
}
