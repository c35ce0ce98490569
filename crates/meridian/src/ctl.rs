//! `meridian ctl ...`: the admin API from the command line.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use meridian_admin::client::{encode_query, request, HttpResponse};
use serde_json::{json, Value};

/// What `meridian ctl` does.
#[derive(Subcommand)]
pub enum Action {
    /// Show the topology: nodes, roles, health, lag, last failover.
    Status,
    /// Promote a replica now (the best candidate, or --to NODE); the old primary is fenced.
    Failover {
        /// The node to promote.
        #[arg(long)]
        to: Option<String>,
    },
    /// Planned switchover to NODE without losing writes.
    Switchover {
        /// The node to promote.
        #[arg(long)]
        to: String,
    },
    /// Lift the fence on NODE (after it was rejoined as a replica).
    Unfence {
        /// The fenced node.
        node: String,
    },
    /// Show the failover and fencing history.
    Events,
    /// Re-read the configuration file and apply it (as SIGHUP does); shows the changed keys and
    /// those that need a restart, or the errors that kept the running configuration.
    Reload,
    /// Show each replica's replication lag.
    Lag,
    /// Show where a statement would be routed, and why.
    Route {
        /// The SQL text.
        sql: String,
        /// Database used for function volatility lookups.
        #[arg(long)]
        database: Option<String>,
        /// Consistency mode: session, eventual or strong.
        #[arg(long)]
        consistency: Option<String>,
    },
    /// Compare per-table checksums between the primary and the other nodes.
    ConsistencyCheck {
        /// Database to check.
        #[arg(long)]
        database: Option<String>,
        /// A table to check (repeatable; default: every user table).
        #[arg(long = "table")]
        tables: Vec<String>,
    },
}

/// Runs one `ctl` action against the admin API at `base`.
pub async fn run(base: &str, token: Option<&str>, json_out: bool, action: Action) -> ExitCode {
    let (method, path, body, timeout) = match &action {
        Action::Status => ("GET", "/api/v1/status".to_string(), None, 10),
        Action::Lag => ("GET", "/api/v1/lag".to_string(), None, 10),
        Action::Events => ("GET", "/api/v1/events".to_string(), None, 10),
        Action::Route {
            sql,
            database,
            consistency,
        } => {
            let mut p = format!("/api/v1/route?sql={}", encode_query(sql));
            if let Some(d) = database {
                p.push_str(&format!("&database={}", encode_query(d)));
            }
            if let Some(c) = consistency {
                p.push_str(&format!("&consistency={}", encode_query(c)));
            }
            ("GET", p, None, 10)
        }
        Action::Failover { to } => (
            "POST",
            "/api/v1/failover".to_string(),
            Some(json!({ "to": to })),
            120,
        ),
        Action::Switchover { to } => (
            "POST",
            "/api/v1/switchover".to_string(),
            Some(json!({ "to": to })),
            120,
        ),
        Action::Unfence { node } => (
            "POST",
            "/api/v1/unfence".to_string(),
            Some(json!({ "node": node })),
            10,
        ),
        Action::Reload => ("POST", "/api/v1/reload".to_string(), None, 60),
        Action::ConsistencyCheck { database, tables } => {
            let mut b = json!({});
            if let Some(d) = database {
                b["database"] = json!(d);
            }
            if !tables.is_empty() {
                b["tables"] = json!(tables);
            }
            (
                "POST",
                "/api/v1/consistency-check".to_string(),
                Some(b),
                600,
            )
        }
    };
    let body = body.map(|b| b.to_string());
    let response = request(
        base,
        method,
        &path,
        token,
        body.as_deref(),
        Duration::from_secs(timeout),
    )
    .await;
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let value = match response.json() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: HTTP {}: {e}", response.status);
            return ExitCode::FAILURE;
        }
    };
    if !(200..300).contains(&response.status) {
        report_error(&response, &value);
        return ExitCode::FAILURE;
    }
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    print!("{}", render(&action, &value));
    match &action {
        Action::ConsistencyCheck { .. } if value["consistent"] != json!(true) => ExitCode::from(3),
        _ => ExitCode::SUCCESS,
    }
}

fn report_error(response: &HttpResponse, value: &Value) {
    // A refused reload lists one error per key.
    if let Some(errors) = value["errors"].as_array().filter(|e| !e.is_empty()) {
        eprintln!(
            "error: HTTP {}: configuration refused; the running one stays",
            response.status
        );
        for e in errors {
            eprintln!("  {}", s(e));
        }
        return;
    }
    let message = value["error"].as_str().unwrap_or("request failed");
    eprintln!("error: HTTP {}: {message}", response.status);
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|x| x.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return "-".into();
    };
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn render(action: &Action, v: &Value) -> String {
    match action {
        Action::Status => render_status(v),
        Action::Lag => {
            let mut rows = vec![
                vec!["REPLICA", "HEALTH", "LSN", "LAG", "LAG_MS", "IN_LIMITS"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ];
            for r in v["replicas"].as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&r["name"]),
                    if r["healthy"] == json!(true) {
                        "up"
                    } else {
                        "down"
                    }
                    .into(),
                    s(&r["lsn"]),
                    bytes(&r["lag_bytes"]),
                    s(&r["lag_ms"]),
                    if r["within_limits"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                ]);
            }
            format!("primary: {}\n{}", s(&v["primary"]), table(&rows))
        }
        Action::Events => {
            let mut out = String::new();
            for e in v["events"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}  {:<11} {:<6} {}\n",
                    crate::ctl::time_of(e["at_ms"].as_u64().unwrap_or(0)),
                    s(&e["kind"]),
                    s(&e["node"]),
                    s(&e["message"])
                ));
            }
            if out.is_empty() {
                out.push_str("no events\n");
            }
            out
        }
        Action::Route { .. } => format!(
            "{} {} ({})\nclassified as {} ({})\n",
            s(&v["target"]),
            s(&v["node"]),
            s(&v["reason"]),
            s(&v["classification"]["kind"]),
            s(&v["classification"]["reason"]),
        ),
        Action::Failover { .. } | Action::Switchover { .. } => format!(
            "promoted {} in {} ms; fenced {}\n",
            s(&v["new_primary"]),
            s(&v["duration_ms"]),
            s(&v["fenced"])
        ),
        Action::Unfence { node } => format!("{node} unfenced\n"),
        Action::Reload => {
            let list = |k: &str| {
                let keys: Vec<String> = v[k].as_array().into_iter().flatten().map(s).collect();
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            };
            let mut out = format!("reloaded; changed: {}\n", list("changed"));
            if v["restart_required"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                out.push_str(&format!(
                    "changed but kept until restart: {}\n",
                    list("restart_required")
                ));
            }
            out
        }
        Action::ConsistencyCheck { .. } => {
            let mut rows = vec![["TABLE", "NODE", "STATUS", "ROWS", "DETAIL"]
                .map(String::from)
                .to_vec()];
            for t in v["tables"].as_array().into_iter().flatten() {
                let nodes = t["nodes"].as_array().cloned().unwrap_or_default();
                if nodes.is_empty() {
                    rows.push(vec![
                        s(&t["table"]),
                        "-".into(),
                        s(&t["status"]),
                        "-".into(),
                        s(&t["error"]),
                    ]);
                }
                for n in nodes {
                    rows.push(vec![
                        s(&t["table"]),
                        s(&n["node"]),
                        s(&n["status"]),
                        s(&n["rows"]),
                        s(&n["error"]),
                    ]);
                }
            }
            format!(
                "database {} on primary {}: {}\n{}",
                s(&v["database"]),
                s(&v["primary"]),
                if v["consistent"] == json!(true) {
                    "consistent"
                } else {
                    "NOT consistent"
                },
                table(&rows)
            )
        }
    }
}

fn render_status(v: &Value) -> String {
    let mut out = format!(
        "primary: {}   acknowledged LSN: {}   region: {}\n",
        s(&v["primary"]),
        s(&v["acknowledged_lsn"]),
        s(&v["region"])
    );
    let last = &v["last_failover"];
    if last.is_null() {
        out.push_str("last failover: none\n\n");
    } else {
        out.push_str(&format!(
            "last failover: {} {}\n\n",
            time_of(last["at_ms"].as_u64().unwrap_or(0)),
            s(&last["message"])
        ));
    }
    let mut rows = vec![[
        "NODE", "ROLE", "HEALTH", "FENCED", "REGION", "ADDRESS", "LSN", "LAG", "LAG_MS", "RTT_MS",
    ]
    .map(String::from)
    .to_vec()];
    for n in v["nodes"].as_array().into_iter().flatten() {
        let replica = n["role"] == json!("replica");
        rows.push(vec![
            s(&n["name"]),
            s(&n["role"]),
            if n["healthy"] == json!(true) {
                "up"
            } else {
                "DOWN"
            }
            .into(),
            if n["fenced"] == json!(true) {
                "FENCED"
            } else {
                "-"
            }
            .into(),
            s(&n["region"]),
            format!("{}:{}", s(&n["host"]), s(&n["port"])),
            s(&n["lsn"]),
            if replica {
                bytes(&n["lag_bytes"])
            } else {
                "-".into()
            },
            if replica { s(&n["lag_ms"]) } else { "-".into() },
            n["rtt_ms"]
                .as_f64()
                .map_or("-".into(), |r| format!("{r:.2}")),
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn time_of(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_of_formats_utc() {
        assert_eq!(super::time_of(0), "1970-01-01 00:00:00");
        assert_eq!(super::time_of(1_700_000_000_000), "2023-11-14 22:13:20");
    }
}
