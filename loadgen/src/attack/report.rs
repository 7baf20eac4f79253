//! The result of one `attack` run ([`AttackReport`]: the server, the real clients and
//! the attacker) and its text ([`render`]); the attackers' own parts are
//! [`LockoutReport`] and [`BruteforceReport`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{AttackMode, BruteforceReport, BudgetsArg, LockoutReport, ATTACKER_ADDR};

/// The server an attack ran against.
#[derive(Clone, Debug, Serialize)]
pub struct ServerSettings {
    /// Backend it ran on.
    pub runtime: Option<String>,
    /// Shards.
    pub shards: usize,
    /// `max_connections`.
    pub max_connections: usize,
    /// `max_pending`.
    pub max_pending: usize,
    /// `max_pending_per_source`.
    pub max_pending_per_source: usize,
    /// `max_auth_failures_per_source`.
    pub max_auth_failures_per_source: u32,
    /// `auth_failure_delay`, ms.
    pub auth_failure_delay_ms: u64,
    /// `auth_timeout`, ms.
    pub auth_timeout_ms: u64,
}

/// What the real clients got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientReport {
    /// Logins started.
    pub attempted: u64,
    /// Logged in.
    pub succeeded: u64,
    /// Refused with an AUTH_FAILURE, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Failed otherwise (closed without a reason, timed out, socket errors), by cause.
    pub failed: BTreeMap<String, u64>,
    /// Refused "server full …".
    pub server_full: u64,
    /// `succeeded` / `attempted`, percent.
    pub success_pct: f64,
    /// Slowest successful login, ms.
    pub max_login_ms: f64,
}

/// The result of one `attack` run.
#[derive(Clone, Debug, Serialize)]
pub struct AttackReport {
    /// The attack.
    pub mode: AttackMode,
    /// The login budgets asked for.
    pub budgets: BudgetsArg,
    /// The codec spoken.
    pub codec: String,
    /// Attacking sockets.
    pub attackers: usize,
    /// How long the attack ran, seconds.
    pub attack_s: f64,
    /// This process's open-files limit (soft) during the run.
    pub open_files_limit: u64,
    /// The server.
    pub server: ServerSettings,
    /// The real clients.
    pub clients: ClientReport,
    /// lockout: the attacker.
    pub lockout: Option<LockoutReport>,
    /// bruteforce: the guesser and the server's count.
    pub bruteforce: Option<BruteforceReport>,
    /// The server's log.
    pub server_log: PathBuf,
}

/// The report as text.
pub fn render(r: &AttackReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let srv = &r.server;
    let _ = writeln!(
        s,
        "attack {:?} ({} budgets, {}): {} attacking sockets from {ATTACKER_ADDR}, {:.1} s",
        r.mode,
        match r.budgets {
            BudgetsArg::Engine => "engine",
            BudgetsArg::Off => "off",
        },
        r.codec,
        r.attackers,
        r.attack_s
    );
    let _ = writeln!(
        s,
        "server: runtime {} shards {} max_connections {} max_pending {} max_pending_per_source {} \
         max_auth_failures_per_source {} auth_failure_delay {} ms auth_timeout {} ms",
        srv.runtime.as_deref().unwrap_or("?"),
        srv.shards,
        srv.max_connections,
        srv.max_pending,
        srv.max_pending_per_source,
        srv.max_auth_failures_per_source,
        srv.auth_failure_delay_ms,
        srv.auth_timeout_ms
    );
    let c = &r.clients;
    let _ = writeln!(
        s,
        "real logins: attempted {} succeeded {} ({:.1} %) server-full {} slowest {:.0} ms",
        c.attempted, c.succeeded, c.success_pct, c.server_full, c.max_login_ms
    );
    for (why, n) in &c.refused {
        let _ = writeln!(s, "  refused {n}: {why}");
    }
    for (why, n) in &c.failed {
        let _ = writeln!(s, "  failed {n}: {why}");
    }
    if let Some(l) = &r.lockout {
        let _ = writeln!(
            s,
            "attacker: opened {} closed by the server {} (bytes received {}) open at the end {}",
            l.opened, l.closed_by_server, l.bytes_received, l.open_at_end
        );
        for (why, n) in &l.open_errors {
            let _ = writeln!(s, "  open error {n}: {why}");
        }
    }
    if let Some(b) = &r.bruteforce {
        let _ = writeln!(
            s,
            "guesser: connections {} guesses {} ({:.1}/s, second half {:.1}/s; answered {})",
            b.connections,
            b.guesses,
            b.guesses_per_s,
            b.guesses_per_s_second_half,
            b.guesses_answered
        );
        let _ = writeln!(
            s,
            "server counted failed logins: {} ({:.1}/s, second half {:.1}/s)",
            b.server_failures, b.server_failures_per_s, b.server_failures_per_s_second_half
        );
        for (why, n) in &b.refused {
            let _ = writeln!(s, "  refused {n}: {why}");
        }
        for (why, n) in &b.failed {
            let _ = writeln!(s, "  failed {n}: {why}");
        }
    }
    let _ = writeln!(
        s,
        "open-files limit {}; server log {}",
        r.open_files_limit,
        r.server_log.display()
    );
    s
}
