//! Issue 3 ("Foundation"), configuration and usage through the real binary: a wrong value is
//! an error at start (exit 2) naming its key and writing nothing; the layers win in order
//! (defaults < file < environment < `--database-url`); the default database is an SQLite
//! file created on first use; credentials are never printed; usage errors exit 2.

use std::path::Path;

use crate::harness::{contractd, minimal, run_command, Outcome, TestDb};
use crate::support::Backend;
use serde_json::json;
use tempfile::TempDir;

crate::both_databases! {
    backend: [
        unknown_zone_in_run_is_a_usage_error,
        migrate_twice_is_fine,
        default_time_zone_layers_default_file_environment,
        database_url_layers_file_environment_flag,
    ],
}

/// Run `contractd ARGS…` in a new, empty directory with `env`; the directory is returned so
/// the caller can see what was created in it.
fn run_in_empty_dir(args: &[&str], env: &[(&str, &str)]) -> (Outcome, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut command = contractd(dir.path());
    command.args(args).envs(env.iter().copied());
    (run_command(command), dir)
}

/// A configuration error: exit 2, every needle (the key, the value) on stderr, nothing on
/// stdout, and no database created.
fn config_error(args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> Outcome {
    let (outcome, dir) = run_in_empty_dir(args, env);
    outcome.expect_code(2).expect_stderr(needles);
    assert_eq!(outcome.stdout, "", "{args:?} printed on stdout");
    assert_nothing_created(dir.path(), &outcome);
    outcome
}

fn assert_nothing_created(dir: &Path, outcome: &Outcome) {
    let created: Vec<String> = std::fs::read_dir(dir)
        .expect("read the test directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| !name.ends_with(".toml") && !name.ends_with(".jsonl"))
        .collect();
    assert!(
        created.is_empty(),
        "contractd {:?} created {created:?} although its configuration is wrong",
        outcome.args
    );
}

/// A configuration file in `dir`.
fn config_file(dir: &Path, name: &str, toml: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, toml).expect("write the configuration file");
    path.to_str().expect("UTF-8 path").to_string()
}

#[test]
fn unknown_default_time_zone_names_the_key() {
    config_error(
        &["export"],
        &[("CONTRACTD__CONTRACTS__DEFAULT_TIME_ZONE", "Mars/Base")],
        &["contracts.default_time_zone", "Mars/Base"],
    );
}

#[test]
fn unsupported_database_url_names_the_key() {
    config_error(
        &["--database-url", "mysql://x", "export"],
        &[],
        &["database.url", "mysql://x"],
    );
    config_error(
        &["export"],
        &[("CONTRACTD__DATABASE__URL", "mysql://x")],
        &["database.url", "mysql://x"],
    );
}

#[test]
fn bad_cron_tick_names_the_key() {
    config_error(
        &["export"],
        &[("CONTRACTD__SCHEDULER__TICK", "every minute")],
        &["scheduler.tick", "every minute"],
    );
}

#[test]
fn zero_batch_size_names_the_key() {
    config_error(
        &["export"],
        &[("CONTRACTD__SWEEP__BATCH_SIZE", "0")],
        &["sweep.batch_size"],
    );
}

#[test]
fn bad_log_format_names_the_key() {
    config_error(
        &["export"],
        &[("CONTRACTD__LOG__FORMAT", "xml")],
        &["log.format", "xml"],
    );
}

#[test]
fn other_unusable_values_name_their_keys() {
    for (variable, value, key) in [
        ("CONTRACTD__SERVER__LISTEN", "nonsense", "server.listen"),
        ("CONTRACTD__LOG__LEVEL", "info,[[[", "log.level"),
        (
            "CONTRACTD__DATABASE__MAX_CONNECTIONS",
            "0",
            "database.max_connections",
        ),
        (
            "CONTRACTD__SWEEP__LEASE_SECONDS",
            "1",
            "sweep.lease_seconds",
        ),
        ("CONTRACTD__SWEEP__BATCH_SIZE", "100001", "sweep.batch_size"),
        (
            "CONTRACTD__SWEEP__PARALLEL_ZONES",
            "0",
            "sweep.parallel_zones",
        ),
        // Zero would make every PostgreSQL connection time out at once.
        (
            "CONTRACTD__DATABASE__CONNECT_TIMEOUT_MS",
            "0",
            "database.connect_timeout_ms",
        ),
    ] {
        config_error(&["export"], &[(variable, value)], &[key]);
    }
}

#[test]
fn wrong_type_names_the_key() {
    config_error(
        &["export"],
        &[("CONTRACTD__SWEEP__BATCH_SIZE", "abc")],
        &["sweep.batch_size", "abc"],
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = config_file(dir.path(), "typed.toml", "[sweep]\nbatch_size = \"many\"\n");
    config_error(&["--config", &file, "export"], &[], &["batch_size", "many"]);
}

#[test]
fn missing_config_file_is_an_error() {
    config_error(&["--config", "/nope.toml", "export"], &[], &["/nope.toml"]);
}

#[test]
fn unknown_keys_in_the_config_file_are_errors() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let nested = config_file(
        dir.path(),
        "nested.toml",
        "[database]\nurll = \"sqlite://x.db\"\n",
    );
    config_error(&["--config", &nested, "export"], &[], &["urll", "database"]);
    let section = config_file(dir.path(), "section.toml", "[bogus]\nkey = 1\n");
    config_error(&["--config", &section, "export"], &[], &["bogus"]);
    let broken = config_file(dir.path(), "broken.toml", "[database\nurl = \n");
    config_error(&["--config", &broken, "export"], &[], &["broken.toml"]);
}

#[test]
fn unknown_environment_key_is_an_error() {
    config_error(
        &["export"],
        &[("CONTRACTD__SWEEP__BATCH_SIZ", "10")],
        &["batch_siz"],
    );
}

/// With no URL anywhere, the shipped default applies: `contractd.db` in the working
/// directory, created on first use.
#[test]
fn default_database_is_an_sqlite_file_created_on_first_use() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = dir.path().join("contractd.db");
    assert!(!database.exists());
    let run = |args: &[&str]| {
        let mut command = contractd(dir.path());
        command.args(args);
        run_command(command)
    };
    run(&["migrate"]).expect_code(0);
    assert!(database.is_file(), "contractd.db was not created");
    std::fs::write(
        dir.path().join("one.jsonl"),
        format!("{}\n", minimal("HERE")),
    )
    .expect("write");
    run(&["import", "one.jsonl"]).expect_code(0);
    let export = run(&["export"]);
    export.expect_code(0);
    assert_eq!(export.exported_refs(), ["HERE"]);
}

/// The password of a PostgreSQL URL appears nowhere, whichever way the URL fails.
#[test]
fn password_in_a_postgres_url_is_never_printed() {
    let secret = "s3cret";
    let refused = "postgres://user:s3cret@127.0.0.1:1/db";
    let fast = [("CONTRACTD__DATABASE__CONNECT_TIMEOUT_MS", "200")];
    let mut outcomes = Vec::new();
    for args in [
        &["--database-url", refused, "export"][..],
        &["--database-url", refused, "run", "--as-of", "2025-01-01"][..],
        &["--database-url", refused, "migrate"][..],
    ] {
        let (outcome, _dir) = run_in_empty_dir(args, &fast);
        outcome.expect_code(1).expect_stderr(&["127.0.0.1:1"]);
        outcomes.push(outcome);
    }
    let (outcome, _dir) = run_in_empty_dir(
        &["export"],
        &[
            fast[0],
            ("CONTRACTD__DATABASE__URL", refused),
            ("RUST_LOG", "debug"),
        ],
    );
    outcome.expect_code(1);
    outcomes.push(outcome);
    for bad in [
        "postgres://user:s3cret@[::1/db",
        "postgres://user:s3cret@host:99999/db",
    ] {
        outcomes.push(config_error(
            &["--database-url", bad, "export"],
            &[],
            &["database.url"],
        ));
    }
    // A bad value elsewhere, with the URL in the environment.
    outcomes.push(config_error(
        &["export"],
        &[
            ("CONTRACTD__DATABASE__URL", refused),
            ("CONTRACTD__SWEEP__BATCH_SIZE", "0"),
        ],
        &["sweep.batch_size"],
    ));
    for outcome in outcomes {
        assert!(
            !outcome.stderr.contains(secret) && !outcome.stdout.contains(secret),
            "contractd {:?} printed the password:\n{}{}",
            outcome.args,
            outcome.stdout,
            outcome.stderr
        );
    }
}

/// A working PostgreSQL URL with a password (the test server trusts, so any password
/// works): no command prints it, even at debug level.
#[test]
fn password_of_a_working_postgres_url_is_never_printed() {
    let db = TestDb::new(Backend::Postgres);
    let mut url = url::Url::parse(&db.url).expect("test database URL");
    let secret = match url.password() {
        Some(password) => password.to_string(),
        None => {
            url.set_password(Some("s3cret-pw")).expect("set a password");
            "s3cret-pw".to_string()
        }
    };
    let url = url.to_string();
    let file = db.write_file(
        "two.jsonl",
        &crate::harness::jsonl(&[
            minimal("PW-1"),
            crate::harness::changed(minimal("PW-2"), &[("/end_date", json!("2025-03-31"))]),
        ]),
    );
    let bad = db.write_file("bad.jsonl", "{\"ref\":\"PW-3\"}\n");
    let file = file.to_str().expect("UTF-8");
    let bad = bad.to_str().expect("UTF-8");
    let commands: [(&[&str], i32); 9] = [
        (&["migrate"], 0),
        (&["import", file], 0),
        (&["import", bad], 3),
        (&["run", "--as-of", "2025-07-01"], 0),
        (&["export"], 0),
        (&["show", "PW-1"], 0),
        (&["history", "PW-2"], 0),
        (&["runs"], 0),
        (&["show", "NOPE"], 3),
    ];
    // Debug level logs everything info does, and more (sqlx's connection and queries).
    for (args, code) in commands {
        let mut command = contractd(db.dir.path());
        command
            .arg("--database-url")
            .arg(&url)
            .args(args)
            .env("RUST_LOG", "debug");
        let outcome = run_command(command);
        outcome.expect_code(code);
        assert!(
            !outcome.stderr.contains(&secret) && !outcome.stdout.contains(&secret),
            "contractd {args:?} printed the password:\n{}{}",
            outcome.stdout,
            outcome.stderr
        );
    }
}

#[test]
fn unknown_command_or_flag_is_a_usage_error() {
    for (args, needle) in [
        (&["frobnicate"][..], "frobnicate"),
        (&["export", "--frob"][..], "--frob"),
        (&["--frob", "export"][..], "--frob"),
        (&["import"][..], "FILE"),
        (&[][..], "Usage"),
        (&["run", "--as-of", "2025-02-30"][..], "2025-02-30"),
        (&["run", "--job", "sweep_floor"][..], "sweep_floor"),
        (
            &[
                "run",
                "--as-of",
                "2025-01-01",
                "--now",
                "2025-01-01T00:00:00Z",
            ][..],
            "--now",
        ),
    ] {
        let (outcome, dir) = run_in_empty_dir(args, &[]);
        outcome.expect_code(2).expect_stderr(&[needle]);
        assert_nothing_created(dir.path(), &outcome);
    }
    let (help, _dir) = run_in_empty_dir(&["--help"], &[]);
    help.expect_code(0);
    assert!(help.stdout.contains("import"), "{}", help.stdout);
}

fn unknown_zone_in_run_is_a_usage_error(backend: Backend) {
    let db = TestDb::new(backend);
    db.import_ok(&[minimal("Z")]);
    let outcome = db.run(&["run", "--zone", "Mars/Base", "--as-of", "2025-07-01"]);
    outcome.expect_code(2).expect_stderr(&["Mars/Base"]);
    assert_eq!(db.count("job_runs"), 0, "a run was recorded");
}

fn migrate_twice_is_fine(backend: Backend) {
    let db = TestDb::new(backend);
    db.run(&["migrate"]).expect_code(0);
    db.run(&["migrate"]).expect_code(0);
    db.import_ok(&[minimal("AFTER-MIGRATE")]);
    db.run(&["migrate"]).expect_code(0);
    assert_eq!(db.export_ok(&[]).exported_refs(), ["AFTER-MIGRATE"]);
}

/// The zone of contracts that name none: the shipped default, overridden by a file,
/// overridden by the environment.
fn default_time_zone_layers_default_file_environment(backend: Backend) {
    let db = TestDb::new(backend);
    let file = config_file(
        db.dir.path(),
        "zone.toml",
        "[contracts]\ndefault_time_zone = \"Europe/Berlin\"\n",
    );
    let import = |reference: &str, config: bool, env: &[(&str, &str)]| {
        let path = db.write_file(
            &format!("{reference}.jsonl"),
            &format!("{}\n", minimal(reference)),
        );
        let mut args = Vec::new();
        if config {
            args.extend(["--config", file.as_str()]);
        }
        args.extend(["import", path.to_str().expect("UTF-8")]);
        db.run_with_env(&args, env).expect_code(0);
    };
    let tokyo = [("CONTRACTD__CONTRACTS__DEFAULT_TIME_ZONE", "Asia/Tokyo")];
    import("DEFAULT", false, &[]);
    import("FILE", true, &[]);
    import("ENV", true, &tokyo);
    import("ENV-ONLY", false, &tokyo);
    for (reference, zone) in [
        ("DEFAULT", "UTC"),
        ("FILE", "Europe/Berlin"),
        ("ENV", "Asia/Tokyo"),
        ("ENV-ONLY", "Asia/Tokyo"),
    ] {
        assert_eq!(db.exported(reference)["time_zone"], zone, "{reference}");
    }
}

/// The database: a file's URL wins over the default, the environment's over the file's,
/// `--database-url` over the environment's. Each layer's database is a different place.
fn database_url_layers_file_environment_flag(backend: Backend) {
    let db = TestDb::new(backend);
    let dir = db.dir.path();
    let file = config_file(
        dir,
        "url.toml",
        "[database]\nurl = \"sqlite://from-file.db\"\n",
    );
    let env = [("CONTRACTD__DATABASE__URL", "sqlite://from-env.db")];
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = contractd(dir);
        command.args(args).envs(env.iter().copied());
        run_command(command)
    };
    std::fs::write(dir.join("c.jsonl"), format!("{}\n", minimal("LAYERED"))).expect("write");

    run(&["--config", &file, "migrate"], &[]).expect_code(0);
    assert!(
        dir.join("from-file.db").is_file(),
        "the file's URL was not used"
    );
    assert!(
        !dir.join("contractd.db").exists(),
        "the default won over the file"
    );

    run(&["--config", &file, "migrate"], &env).expect_code(0);
    assert!(
        dir.join("from-env.db").is_file(),
        "the environment's URL was not used"
    );

    run(
        &[
            "--config",
            &file,
            "--database-url",
            &db.url,
            "import",
            "c.jsonl",
        ],
        &env,
    )
    .expect_code(0);
    assert_eq!(db.export_ok(&[]).exported_refs(), ["LAYERED"]);
    for layer in ["sqlite://from-file.db", "sqlite://from-env.db"] {
        let export = run(&["--database-url", layer, "export"], &[]);
        export.expect_code(0);
        assert_eq!(export.stdout, "", "the import went to {layer}");
    }
    assert!(
        !dir.join("contractd.db").exists(),
        "the default database was used"
    );
}
