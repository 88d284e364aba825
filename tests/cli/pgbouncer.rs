//! Every command through PgBouncer in transaction mode (a PgBouncer of the test's own, see
//! `tests/support/pgbouncer.rs`), configured as `docs/operations.md` says: `database.url` at
//! the pooler, `database.direct_url` at the server, `database.transaction_pooler = true`.
//! Each command runs also straight on a second database, the same way; both must answer
//! alike and end in the same contracts.

use serde_json::json;

use crate::harness::{contractd, jsonl, minimal, run_command, with_line, Outcome, TestDb};
use crate::support::pgbouncer::PgBouncer;
use crate::support::webhooks::{always, webhooks_config, Receiver, Reply};
use crate::support::Backend;

/// The configuration file both databases' commands read (in their own directories): one
/// webhook endpoint, so that the outbox is written and delivered too.
const CONFIG: &str = "contractd.toml";

/// The same database twice: one reached through the pooler, one (a copy made by running
/// the same commands) straight.
struct Pair {
    bouncer: PgBouncer,
    pooled: TestDb,
    direct: TestDb,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            bouncer: PgBouncer::start(),
            pooled: TestDb::new(Backend::Postgres),
            direct: TestDb::new(Backend::Postgres),
        }
    }

    /// `contractd ARGS…` with `database.url` at the pooler and `env` on top of the pooler
    /// settings.
    fn through_pooler_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = contractd(self.pooled.dir.path());
        command
            .env(
                "CONTRACTD__DATABASE__URL",
                self.bouncer.url(&self.pooled.url),
            )
            .env("CONTRACTD__DATABASE__DIRECT_URL", &self.pooled.url)
            .env("CONTRACTD__DATABASE__TRANSACTION_POOLER", "true")
            .envs(env.iter().copied())
            .args(args);
        run_command(command)
    }

    /// Run `--config CONFIG ARGS…` through the pooler and straight; both must exit 0 and
    /// print the same (`same_output`) or at least the same number of lines. Returns the
    /// pooled outcome.
    fn both(&self, args: &[&str], same_output: bool) -> Outcome {
        let args: Vec<&str> = ["--config", CONFIG].iter().chain(args).copied().collect();
        let args = args.as_slice();
        let pooled = self.through_pooler_with(args, &[]);
        pooled.expect_code(0);
        let direct = self.direct.run(args);
        direct.expect_code(0);
        if same_output {
            // `history` ends each line with the instant the event was recorded.
            let recorded = |text: &str| -> Vec<String> {
                text.lines()
                    .map(|line| match args.contains(&"history") {
                        true => line.rsplit_once("  ").map_or(line, |(rest, _)| rest),
                        false => line,
                    })
                    .map(str::to_string)
                    .collect()
            };
            assert_eq!(
                recorded(&pooled.stdout),
                recorded(&direct.stdout),
                "contractd {args:?}: through PgBouncer and straight differ"
            );
        } else {
            assert_eq!(
                pooled.stdout.lines().count(),
                direct.stdout.lines().count(),
                "contractd {args:?}: through PgBouncer\n{}\nstraight\n{}",
                pooled.stdout,
                direct.stdout
            );
        }
        pooled
    }
}

/// A fixed term with auto extension, a notice month: extended on 1 Dec unless cancelled.
fn extending(reference: &str) -> serde_json::Value {
    json!({
        "ref": reference,
        "customer": "Customer",
        "time_zone": "Europe/Berlin",
        "start_date": "2025-01-01",
        "end_date": "2025-12-31",
        "notice_period": "1M",
        "cancellation_window": "end_of_term",
        "auto_extend": true,
        "extension_term": "1Y",
    })
}

#[test]
fn every_command_works_through_pgbouncer_in_transaction_mode() {
    let pair = Pair::new();
    let receiver = Receiver::start(always(Reply::Status(204)));
    let config = webhooks_config(&[("timeout_ms", 5000)], &[("crm", &receiver.url())]);
    pair.pooled.write_file(CONFIG, &config);
    pair.direct.write_file(CONFIG, &config);
    let migrated = pair.both(&["migrate"], true);
    assert!(migrated.stdout.contains("migrations applied"));
    // The endpoint starts at the end of the feed when first seen: from here on.
    pair.both(&["deliver"], true);

    let records = [
        extending("EXT"),
        extending("CANCEL"),
        extending("REVOKE"),
        with_line("END"),
        minimal("OPEN"),
    ];
    let file = "contracts.jsonl";
    std::fs::write(pair.pooled.dir.path().join(file), jsonl(&records)).expect("write");
    std::fs::write(pair.direct.dir.path().join(file), jsonl(&records)).expect("write");
    let imported = pair.both(&["import", file], true);
    assert!(
        imported.stdout.contains("imported 5 contracts"),
        "{}",
        imported.stdout
    );

    // Importing again is refused on both, and nothing changes.
    let again = pair.through_pooler_with(&["import", file], &[]);
    assert_ne!(again.code, 0, "{}", again.stderr);
    assert_eq!(pair.pooled.count("contracts"), 5);

    let now = "2025-11-20T10:00:00Z";
    pair.both(&["cancel", "CANCEL", "REVOKE", "--now", now], true);
    pair.both(&["revoke", "REVOKE", "--now", now], true);
    pair.both(
        &[
            "end",
            "END",
            "--end-date",
            "2025-11-30",
            "--reason",
            "moving",
            "--now",
            now,
        ],
        true,
    );
    // A refusal is the same through the pooler: exit 3, the same words.
    let refused = pair.through_pooler_with(&["revoke", "EXT", "--now", now], &[]);
    let refused_direct = pair.direct.run(&["revoke", "EXT", "--now", now]);
    refused.expect_code(refused_direct.code);
    assert_eq!(refused.stderr, refused_direct.stderr);

    // The sweeps of the days after: extension, expiry, executed cancellation.
    for day in ["2025-12-01", "2026-01-01", "2026-01-02"] {
        pair.both(&["run", "--as-of", day], false);
    }
    pair.both(&["run", "--as-of", "2026-01-02"], false);
    pair.both(&["runs", "--limit", "100"], false);
    for reference in ["EXT", "CANCEL", "REVOKE", "END", "OPEN"] {
        pair.both(&["show", reference], true);
        pair.both(&["history", reference], true);
    }
    let export = pair.both(&["export"], true);
    assert_eq!(export.json_lines().len(), 5);
    let history = pair.both(&["history", "CANCEL"], true);
    assert!(
        history.stdout.contains("cancellation_executed"),
        "{}",
        history.stdout
    );
    let events = pair.both(&["events"], false);
    assert!(events.stdout.lines().count() > 5, "{}", events.stdout);
    // The webhook outbox: fanned out, claimed, sent and recorded through the pooler.
    let pooled = pair.through_pooler_with(&["--config", CONFIG, "deliver"], &[]);
    pooled.expect_code(0);
    let sent = receiver.count();
    pair.direct
        .run(&["--config", CONFIG, "deliver"])
        .expect_code(0);
    assert!(
        sent > 5,
        "deliveries through PgBouncer: {sent}\n{}\n{}",
        pooled.stdout,
        pooled.stderr
    );
    assert_eq!(receiver.count(), 2 * sent, "{}", receiver.summary());
    pair.both(&["deliveries", "--limit", "1000"], false);
    // Every event once, the same on both.
    assert_eq!(
        pair.pooled.counts(&["contract_events", "job_runs"]),
        pair.direct.counts(&["contract_events", "job_runs"])
    );
}

/// Without `direct_url`, a brand-new database behind the pooler cannot be migrated: exit 1,
/// a message that says what to set, and no table created. With the migrations applied
/// (straight), commands through the pooler need no `direct_url`.
#[test]
fn pending_migrations_through_the_pooler_ask_for_direct_url() {
    let pair = Pair::new();
    let mut command = contractd(pair.pooled.dir.path());
    command
        .env(
            "CONTRACTD__DATABASE__URL",
            pair.bouncer.url(&pair.pooled.url),
        )
        .env("CONTRACTD__DATABASE__TRANSACTION_POOLER", "true")
        .arg("show")
        .arg("X");
    let without = run_command(command);
    without.expect_code(1);
    without.expect_stderr(&["set database.direct_url"]);
    assert_eq!(
        pair.pooled.count("pg_tables WHERE schemaname = 'public'"),
        0,
        "a table was created without the migrator's lock"
    );

    pair.pooled.run(&["migrate"]).expect_code(0);
    let mut command = contractd(pair.pooled.dir.path());
    command
        .env(
            "CONTRACTD__DATABASE__URL",
            pair.bouncer.url(&pair.pooled.url),
        )
        .env("CONTRACTD__DATABASE__TRANSACTION_POOLER", "true")
        .arg("export");
    run_command(command).expect_code(0);
}

/// Through the pooler without `transaction_pooler`, as a new user would first try: the named
/// statements collide on the shared server connections, and the error says what to set.
#[test]
fn without_the_setting_the_error_says_what_to_set() {
    let pair = Pair::new();
    pair.pooled.run(&["migrate"]).expect_code(0);
    let mut failures = Vec::new();
    for _ in 0..6 {
        let outcome = pair.through_pooler_with(
            &["export"],
            &[("CONTRACTD__DATABASE__TRANSACTION_POOLER", "false")],
        );
        if outcome.code != 0 {
            failures.push(outcome);
        }
    }
    assert!(
        !failures.is_empty(),
        "six commands through PgBouncer all passed"
    );
    for failure in &failures {
        failure.expect_code(1);
        failure.expect_stderr(&[
            "prepared statement \"sqlx_s_",
            "set database.transaction_pooler = true",
        ]);
    }
}
