//! `quotad audit query`: read a key's audit records straight from the SQLite file.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};

use super::{AuditError, AuditPage, AuditQuery, AuditReader, AuditRecord};
use crate::config::AuditConfig;
use crate::quota::KeyId;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The page as the HTTP API returns it: `{"records": [...], "next_cursor": ...}`.
    Json,
    /// A header line and one line per record (RFC 4180 quoting).
    Csv,
}

/// `quotad audit …`: read the audit log without the HTTP admin token.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print a key's audit records, newest first.
    Query {
        /// The key's id (32 hex characters).
        key_id: String,
        /// Earliest instant, inclusive (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Latest instant, exclusive (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Records per page, 1-1000.
        #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
        limit: u32,
        /// Continue after a previous page (its next_cursor).
        #[arg(long)]
        cursor: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

/// Why `quotad audit` failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    /// An argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// The audit log could not be read.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

impl AuditCliError {
    /// The process exit code: 64 (EX_USAGE) for bad arguments, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditCliError::Usage(_) => 64,
            AuditCliError::Audit(e) if e.is_client_error() => 64,
            _ => 1,
        }
    }
}

/// Runs one `audit` subcommand against `config.db_path`, printing to `out`; with
/// CSV, the cursor of the next page (if any) goes to `note`.
pub async fn run_audit(
    config: &AuditConfig,
    cmd: AuditCommand,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), AuditCliError> {
    let AuditCommand::Query {
        key_id,
        from,
        to,
        limit,
        cursor,
        format,
    } = cmd;
    let query = AuditQuery {
        key_id: KeyId::parse(&key_id).ok_or_else(|| {
            AuditCliError::Usage("KEY_ID must be 32 lowercase hex characters".into())
        })?,
        from: from.as_deref().map(|t| instant("--from", t)).transpose()?,
        to: to.as_deref().map(|t| instant("--to", t)).transpose()?,
        limit: Some(limit),
        cursor,
    };
    let page = AuditReader::open(&config.db_path)?.query(query).await?;
    match format {
        Format::Json => writeln!(out, "{}", to_json(&page))?,
        Format::Csv => {
            write_csv(out, &page.records)?;
            if let Some(next) = &page.next_cursor {
                writeln!(note, "more records: --cursor {next}")?;
            }
        }
    }
    Ok(())
}

fn to_json(page: &AuditPage) -> String {
    serde_json::to_string_pretty(page).expect("an audit page always serializes")
}

fn instant(flag: &str, text: &str) -> Result<DateTime<Utc>, AuditCliError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|_| AuditCliError::Usage(format!("{flag} must be an RFC 3339 instant")))
}

const COLUMNS: [&str; 13] = [
    "audit_id",
    "key_id",
    "tier",
    "timestamp",
    "endpoint",
    "cost",
    "used_after",
    "outcome",
    "idempotency_key",
    "request",
    "response",
    "error",
    "processing_ms",
];

/// Writes records as CSV (quoted where RFC 4180 needs it, `\n` line ends); JSON values
/// are written as JSON text, absent ones empty.
pub fn write_csv(out: &mut dyn Write, records: &[AuditRecord]) -> std::io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(COLUMNS)?;
    for r in records {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        let fields = [
            Some(r.audit_id.clone()),
            Some(r.key_id.clone()),
            Some(r.tier.clone()),
            Some(r.timestamp.clone()),
            Some(r.endpoint.clone()),
            Some(r.cost.to_string()),
            Some(r.used_after.to_string()),
            Some(r.outcome.clone()),
            r.idempotency_key.clone(),
            json(&r.request),
            json(&r.response),
            r.error.clone(),
            r.processing_ms.map(|p| p.to_string()),
        ];
        csv.write_record(fields.iter().map(|f| f.as_deref().unwrap_or("")))?;
    }
    csv.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(endpoint: &str, request: Option<serde_json::Value>) -> AuditRecord {
        AuditRecord {
            audit_id: "q007-1-0".into(),
            key_id: "0".repeat(32),
            tier: "free".into(),
            timestamp: "2026-11-10T12:00:00.000Z".into(),
            endpoint: endpoint.into(),
            cost: 2,
            used_after: 5,
            outcome: "allowed".into(),
            idempotency_key: None,
            request,
            response: None,
            error: None,
            processing_ms: Some(1.5),
        }
    }

    fn csv_of(records: &[AuditRecord]) -> String {
        let mut out = Vec::new();
        write_csv(&mut out, records).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        let json = serde_json::json!({"a": 1, "b": "c"});
        let text = csv_of(&[record("/v1/x", Some(json))]);
        let zeros = "0".repeat(32);
        assert_eq!(
            text.lines().nth(1).unwrap(),
            format!(
                r#"q007-1-0,{zeros},free,2026-11-10T12:00:00.000Z,/v1/x,2,5,allowed,,"{{""a"":1,""b"":""c""}}",,,1.5"#
            )
        );
    }

    #[test]
    fn csv_of_no_records_is_the_header_line() {
        let text = csv_of(&[]);
        assert_eq!(
            text,
            "audit_id,key_id,tier,timestamp,endpoint,cost,used_after,outcome,\
             idempotency_key,request,response,error,processing_ms\n"
        );
    }

    #[test]
    fn csv_fields_with_line_breaks_read_back_whole() {
        let text = csv_of(&[record("/a,\"b\"\r\nc", None)]);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(&rows[0][4], "/a,\"b\"\r\nc");
    }
}
