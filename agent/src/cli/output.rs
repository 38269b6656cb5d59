//! Printing results: a table for humans (colours only on a terminal) or the contract JSON.

use std::io::{IsTerminal, Write};

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use mesh_proto::{CheckId, Status};
use serde::Serialize;

use super::Output;
use crate::probe::Outcome;

/// One line of results.
#[derive(Debug)]
pub(super) struct Row<'a> {
    pub(super) id: &'a CheckId,
    pub(super) outcome: &'a Outcome,
}

/// The JSON document of `pom check --output json` (a contract).
#[derive(Debug, Serialize)]
struct Report<'a> {
    results: Vec<JsonResult<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonResult<'a> {
    id: &'a CheckId,
    target: &'a str,
    kind: mesh_proto::CheckKind,
    status: Status,
    latency_ms: u64,
    detail: &'a str,
}

pub(super) fn print(rows: &[Row<'_>], format: Output) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match format {
        Output::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report(rows))?;
            writeln!(stdout)?;
        }
        Output::Table => {
            let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
            writeln!(stdout, "{}", table(rows, colour).trim_fmt())?;
            writeln!(stdout, "{}", summary(rows))?;
        }
    }
    Ok(())
}

fn report<'a>(rows: &'a [Row<'a>]) -> Report<'a> {
    Report {
        results: rows
            .iter()
            .map(|row| JsonResult {
                id: row.id,
                target: row.id.target(),
                kind: row.id.kind(),
                status: row.outcome.status,
                latency_ms: u64::try_from(row.outcome.latency.as_millis()).unwrap_or(u64::MAX),
                detail: &row.outcome.detail,
            })
            .collect(),
    }
}

fn table(rows: &[Row<'_>], colour: bool) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    if colour {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        table.force_no_tty();
    }
    table.set_header(["CHECK", "STATUS", "LATENCY", "DETAIL"]);
    for row in rows {
        let mut status = Cell::new(row.outcome.status);
        if colour {
            status = status.fg(match row.outcome.status {
                Status::Operational => Color::Green,
                Status::Degraded => Color::Yellow,
                Status::Error => Color::Red,
                Status::Unreachable => Color::Magenta,
            });
        }
        table.add_row(vec![
            Cell::new(row.id),
            status,
            Cell::new(format!("{} ms", row.outcome.latency.as_millis())),
            Cell::new(&row.outcome.detail),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

fn summary(rows: &[Row<'_>]) -> String {
    let parts: Vec<String> = Status::ALL
        .into_iter()
        .filter_map(|status| {
            let n = rows.iter().filter(|r| r.outcome.status == status).count();
            (n > 0).then(|| format!("{n} {status}"))
        })
        .collect();
    format!("\n{} checks: {}", rows.len(), parts.join(", "))
}
