//! Transactions, session settings and prepared statements across nodes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_locks_run_on_the_primary_and_keep_the_session_there() {
    let env = start(1, eventual).await;
    let c = env.connect().await;
    assert_on_replica(&env, &c, WHERE).await;

    let row = simple_row(
        &c,
        "SELECT pg_try_advisory_lock(42) AS locked, inet_server_port() AS port",
    )
    .await;
    assert_eq!(row_at(&env, &row), At::Primary);
    assert_eq!(text(&row, "locked"), "t");
    assert_eq!(
        simple_at(
            &env,
            &c,
            "SELECT pg_advisory_lock(43), inet_server_port() AS port"
        )
        .await,
        At::Primary
    );
    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid IN (42, 43)"
        ),
        "2"
    );
    // The lock belongs to that backend: the session stays there for everything after it, and
    // the unlock finds the lock.
    assert_on_primary(&env, &c, WHERE).await;
    let row = c
        .query_one(
            "SELECT pg_advisory_unlock(42) AS a, pg_advisory_unlock(43) AS b, \
             inet_server_port() AS port",
            &[],
        )
        .await
        .expect("unlock");
    assert_eq!(at(&env, row.get("port")), At::Primary);
    assert!(row.get::<_, bool>("a") && row.get::<_, bool>("b"));
}

// ---------------------------------------------------------------------------------------------
// 2. Transactions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_write_transaction_runs_entirely_on_the_primary() {
    let env = start(2, eventual).await;
    primary_sql(
        &env,
        "CREATE TABLE tx_log (id serial PRIMARY KEY, port int NOT NULL);
         GRANT ALL ON tx_log, tx_log_id_seq TO app;",
    );
    caught_up(&env);
    let mut c = env.connect().await;
    let insert = "INSERT INTO tx_log (port) VALUES (inet_server_port()) RETURNING port";

    for _ in 0..3 {
        c.batch_execute("BEGIN").await.expect("BEGIN");
        assert_eq!(simple_at(&env, &c, WHERE).await, At::Primary);
        assert_eq!(ext_at(&env, &c, WHERE, &[]).await, At::Primary);
        assert_eq!(simple_at(&env, &c, insert).await, At::Primary);
        assert_eq!(simple_at(&env, &c, WHERE).await, At::Primary);
        assert_eq!(ext_at(&env, &c, WHERE, &[]).await, At::Primary);
        c.batch_execute("COMMIT").await.expect("COMMIT");
        // Outside the transaction reads go back to replicas.
        assert!(simple_at(&env, &c, WHERE).await.is_replica());
    }

    // The same through tokio-postgres' transaction API (BEGIN, then extended-protocol statements).
    let tx = c.transaction().await.expect("begin");
    for sql in [WHERE, insert, WHERE] {
        let row = tx.query_one(sql, &[]).await.expect("in transaction");
        assert_eq!(at(&env, row.get("port")), At::Primary, "{sql}");
    }
    tx.commit().await.expect("commit");

    // A rolled-back transaction leaves nothing behind.
    let tx = c.transaction().await.expect("begin");
    tx.execute(insert, &[]).await.expect("insert");
    tx.rollback().await.expect("rollback");

    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) || ',' || count(*) FILTER (WHERE port = inet_server_port()) FROM tx_log"
        ),
        "4,4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_runs_entirely_on_one_replica() {
    let env = start(2, eventual).await;
    let mut c = env.connect().await;
    for round in 0..4 {
        c.batch_execute("BEGIN READ ONLY").await.expect("BEGIN");
        let mut nodes = Vec::new();
        for i in 0..6 {
            nodes.push(if i % 2 == 0 {
                simple_at(&env, &c, WHERE).await
            } else {
                ext_at(&env, &c, WHERE, &[]).await
            });
        }
        let row = simple_row(&c, "SELECT current_setting('transaction_read_only') AS ro").await;
        assert_eq!(text(&row, "ro"), "on");
        c.batch_execute("COMMIT").await.expect("COMMIT");
        assert!(nodes[0].is_replica(), "round {round}: {nodes:?}");
        assert!(
            nodes.iter().all(|n| *n == nodes[0]),
            "round {round}: statements of one transaction ran on {nodes:?}"
        );
    }

    // tokio-postgres' builder: START TRANSACTION READ ONLY, then extended-protocol statements.
    for _ in 0..2 {
        let tx = c
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .expect("start transaction read only");
        let mut nodes = Vec::new();
        for _ in 0..4 {
            let row = tx.query_one(WHERE, &[]).await.expect("read");
            nodes.push(at(&env, row.get("port")));
        }
        tx.commit().await.expect("commit");
        assert!(nodes[0].is_replica(), "{nodes:?}");
        assert!(nodes.iter().all(|n| *n == nodes[0]), "{nodes:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Session settings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_the_client_to_every_node() {
    let env = start(1, eventual).await;
    primary_sql(
        &env,
        "CREATE SCHEMA app_s AUTHORIZATION app;
         CREATE TABLE app_s.only_here (id serial PRIMARY KEY, note text);
         GRANT ALL ON app_s.only_here, app_s.only_here_id_seq TO app;
         INSERT INTO app_s.only_here (note) VALUES ('seed');",
    );
    caught_up(&env);
    let c = env.connect().await;
    let initial_app = text(
        &simple_row(&c, "SHOW application_name").await,
        "application_name",
    );

    // `only_here` resolves only with the search_path set, so each check also proves the setting
    // is in effect for name resolution where the statement ran.
    const READ: &str = "SELECT current_setting('search_path') AS sp, \
        current_setting('application_name') AS app, \
        current_setting('statement_timeout') AS st, \
        (SELECT count(*) FROM only_here) AS n, inet_server_port() AS port";
    const WRITE: &str =
        "INSERT INTO only_here (note) VALUES (current_setting('application_name')) \
        RETURNING current_setting('search_path') AS sp, \
        current_setting('application_name') AS app, \
        current_setting('statement_timeout') AS st, \
        id AS n, inet_server_port() AS port";

    /// (search_path, application_name, statement_timeout) on a replica and on the primary, each
    /// read with both protocols.
    async fn settings(env: &Env, c: &Client) -> [(String, String, String); 4] {
        let mut out = Vec::new();
        for (sql, want) in [(READ, "replica"), (WRITE, "primary")] {
            let row = simple_row(c, sql).await;
            let node = row_at(env, &row);
            assert_eq!(
                node.is_replica(),
                want == "replica",
                "simple {sql}: {node:?}"
            );
            out.push((text(&row, "sp"), text(&row, "app"), text(&row, "st")));
            let row = c
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("extended {sql}: {}", show(&e)));
            let node = at(env, row.get("port"));
            assert_eq!(
                node.is_replica(),
                want == "replica",
                "extended {sql}: {node:?}"
            );
            out.push((row.get("sp"), row.get("app"), row.get("st")));
        }
        out.try_into().expect("four results")
    }
    fn all_are(got: &[(String, String, String); 4], sp: &str, app: &str, st: &str) -> bool {
        got.iter().all(|(a, b, c)| a == sp && b == app && c == st)
    }

    // search_path set while the session is on the primary (where it starts) ...
    c.batch_execute("SET search_path = app_s, public")
        .await
        .expect("SET search_path");
    assert!(simple_at(&env, &c, WHERE).await.is_replica());
    // ... the others while it is on the replica.
    c.batch_execute("SET application_name = 'routing-test'")
        .await
        .expect("SET application_name");
    c.batch_execute("SET statement_timeout = '5s'")
        .await
        .expect("SET statement_timeout");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "5s"),
        "{got:?}"
    );
    let shown = simple_row(&c, "SHOW application_name").await;
    assert_eq!(text(&shown, "application_name"), "routing-test");

    // A SET inside a rolled-back transaction (read-write on the primary, read-only on a
    // replica) is not replayed anywhere.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("SET statement_timeout = '7s'")
        .await
        .expect("SET in transaction");
    c.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    c.batch_execute("BEGIN READ ONLY")
        .await
        .expect("BEGIN READ ONLY");
    c.batch_execute("SET application_name = 'rolled-back'")
        .await
        .expect("SET in read-only transaction");
    c.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "5s"),
        "after ROLLBACK: {got:?}"
    );

    // A SET inside a committed transaction is kept; SET LOCAL is not.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("SET statement_timeout = '6s'")
        .await
        .expect("SET in transaction");
    c.batch_execute("COMMIT").await.expect("COMMIT");
    c.batch_execute("BEGIN").await.expect("BEGIN");
    c.batch_execute("SET LOCAL statement_timeout = '9s'")
        .await
        .expect("SET LOCAL");
    c.batch_execute("COMMIT").await.expect("COMMIT");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "6s"),
        "after COMMIT: {got:?}"
    );

    // A SET through the extended protocol counts too.
    c.execute("SET statement_timeout = '4s'", &[])
        .await
        .expect("extended SET");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", "routing-test", "4s"),
        "after extended SET: {got:?}"
    );

    // RESET one setting.
    c.batch_execute("RESET application_name")
        .await
        .expect("RESET");
    let got = settings(&env, &c).await;
    assert!(
        all_are(&got, "app_s, public", &initial_app, "4s"),
        "after RESET: {got:?}"
    );

    // RESET ALL: the search_path is gone on every node, so `only_here` no longer resolves.
    c.batch_execute("RESET ALL").await.expect("RESET ALL");
    let row = simple_row(
        &c,
        "SELECT current_setting('search_path') AS sp, current_setting('statement_timeout') AS st, \
         inet_server_port() AS port",
    )
    .await;
    assert!(row_at(&env, &row).is_replica());
    assert_eq!(
        (text(&row, "sp"), text(&row, "st")),
        ("\"$user\", public".to_string(), "0".to_string())
    );
    for sql in [READ, WRITE] {
        let err = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} after RESET ALL should not resolve only_here"));
        assert_eq!(sqlstate(&err).as_deref(), Some("42P01"), "{}", show(&err));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Prepared statements
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_prepared_statements_run_wherever_they_are_routed() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE pw (id serial PRIMARY KEY, v int NOT NULL, port int NOT NULL);
         GRANT ALL ON pw, pw_id_seq TO app;",
    );
    caught_up(&env);
    let c = env.connect().await;
    let read = c
        .prepare("SELECT $1::int + 1 AS next, inet_server_port() AS port")
        .await
        .expect("prepare read");
    let write = c
        .prepare("INSERT INTO pw (v, port) VALUES ($1, inet_server_port()) RETURNING v, port")
        .await
        .expect("prepare write");
    let mut reads = HashMap::new();
    for i in 0..30i32 {
        let r = c
            .query_one(&read, &[&i])
            .await
            .unwrap_or_else(|e| panic!("read {i}: {}", show(&e)));
        assert_eq!(r.get::<_, i32>("next"), i + 1);
        let node = at(&env, r.get("port"));
        assert!(node.is_replica(), "read {i} ran on {node:?}");
        *reads.entry(node).or_insert(0) += 1;
        let w = c
            .query_one(&write, &[&i])
            .await
            .unwrap_or_else(|e| panic!("write {i}: {}", show(&e)));
        assert_eq!(w.get::<_, i32>("v"), i);
        assert_eq!(at(&env, w.get("port")), At::Primary, "write {i}");
    }
    assert_eq!(
        primary_sql(&env, "SELECT count(*) || ',' || sum(v) FROM pw"),
        "30,435"
    );
    // Re-preparing where needed happened on both replicas (round robin over equal replicas).
    assert_eq!(reads.len(), 2, "reads ran on {reads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_run_wherever_they_are_executed() {
    let env = start(2, |cfg| {
        eventual(cfg);
        equal_replicas(cfg);
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE pw (id serial PRIMARY KEY, v int NOT NULL, port int NOT NULL);
         GRANT ALL ON pw, pw_id_seq TO app;",
    );
    caught_up(&env);
    let c = env.connect().await;
    c.batch_execute("PREPARE r AS SELECT inet_server_port() AS port, 'first'::text AS tag")
        .await
        .expect("PREPARE r");
    c.batch_execute(
        "PREPARE w (int) AS INSERT INTO pw (v, port) VALUES ($1, inet_server_port()) RETURNING port",
    )
    .await
    .expect("PREPARE w");
    let mut reads = HashMap::new();
    for i in 0..6 {
        let row = simple_row(&c, "EXECUTE r").await;
        let node = row_at(&env, &row);
        assert!(node.is_replica(), "EXECUTE r ran on {node:?}");
        assert_eq!(text(&row, "tag"), "first");
        *reads.entry(node).or_insert(0) += 1;
        assert_eq!(
            simple_at(&env, &c, &format!("EXECUTE w({})", 1000 + i)).await,
            At::Primary
        );
    }
    assert_eq!(reads.len(), 2, "EXECUTE r ran on {reads:?}");
    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) || ',' || count(*) FILTER (WHERE port = inet_server_port()) FROM pw"
        ),
        "6,6"
    );

    // DEALLOCATE removes them wherever they were prepared ...
    c.batch_execute("DEALLOCATE r").await.expect("DEALLOCATE r");
    c.batch_execute("DEALLOCATE w").await.expect("DEALLOCATE w");
    for sql in ["EXECUTE r", "EXECUTE w(1)"] {
        let err = c
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} after DEALLOCATE succeeded"));
        assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{}", show(&err));
    }
    // ... so the names can be used again, and every node runs the new statement.
    c.batch_execute("PREPARE r AS SELECT inet_server_port() AS port, 'second'::text AS tag")
        .await
        .expect("PREPARE r again");
    let mut reads = HashMap::new();
    for _ in 0..6 {
        let row = simple_row(&c, "EXECUTE r").await;
        let node = row_at(&env, &row);
        assert!(node.is_replica(), "EXECUTE r ran on {node:?}");
        assert_eq!(text(&row, "tag"), "second");
        *reads.entry(node).or_insert(0) += 1;
    }
    assert_eq!(reads.len(), 2, "EXECUTE r ran on {reads:?}");
    c.batch_execute("DEALLOCATE ALL")
        .await
        .expect("DEALLOCATE ALL");
    let err = c
        .simple_query("EXECUTE r")
        .await
        .err()
        .expect("EXECUTE r after DEALLOCATE ALL fails");
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"), "{}", show(&err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_can_be_executed_through_the_extended_protocol() {
    // Drivers that only speak the extended protocol send `EXECUTE name` as Parse/Bind/Execute.
    let env = start(1, eventual).await;
    let c = env.connect().await;
    // Prepared while the session is on the primary, where it starts.
    c.batch_execute("PREPARE r AS SELECT inet_server_port() AS port")
        .await
        .expect("PREPARE r");
    for i in 0..4 {
        let row = c
            .query_one("EXECUTE r", &[])
            .await
            .unwrap_or_else(|e| panic!("extended EXECUTE r #{i}: {}", show(&e)));
        assert!(at(&env, row.get("port")).is_replica());
    }
}

// ---------------------------------------------------------------------------------------------
// 5. User-defined functions
// ---------------------------------------------------------------------------------------------
