//! Where single statements run: reads, writes, functions, hints.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let env = start(1, eventual).await;
    primary_sql(
        &env,
        "CREATE TABLE items (id serial PRIMARY KEY, v int NOT NULL);
         CREATE SEQUENCE ids;
         GRANT ALL ON items, items_id_seq, ids TO app;
         INSERT INTO items (v) SELECT g FROM generate_series(1, 10) g;",
    );
    caught_up(&env);
    let c = env.connect().await;

    // Plain reads.
    assert_on_replica(&env, &c, WHERE).await;
    let row = simple_row(
        &c,
        "SELECT count(*) AS n, inet_server_port() AS port FROM items",
    )
    .await;
    assert!(row_at(&env, &row).is_replica());
    assert_eq!(text(&row, "n"), "10");
    let row = c
        .query_one(
            "SELECT sum(v)::int AS s, inet_server_port() AS port FROM items WHERE id <= $1",
            &[&4i32],
        )
        .await
        .expect("extended read");
    assert!(at(&env, row.get("port")).is_replica());
    assert_eq!(row.get::<_, i32>("s"), 10);

    // Everything that writes, locks or needs primary-only state. Each is run with both protocols,
    // and a plain read after each one goes back to a replica.
    let writes = [
        "INSERT INTO items (v) VALUES (100) RETURNING inet_server_port() AS port",
        "UPDATE items SET v = v + 1 WHERE id = 1 RETURNING inet_server_port() AS port",
        "DELETE FROM items WHERE id = (SELECT max(id) FROM items WHERE v = 100) \
         RETURNING inet_server_port() AS port",
        "SELECT v, inet_server_port() AS port FROM items WHERE id = 1 FOR UPDATE",
        "SELECT v, inet_server_port() AS port FROM items WHERE id = 1 FOR SHARE",
        "SELECT nextval('ids') AS n, inet_server_port() AS port",
        "WITH ins AS (INSERT INTO items (v) VALUES (700) RETURNING id) \
         SELECT inet_server_port() AS port FROM ins",
        "SELECT txid_current() AS x, inet_server_port() AS port",
        "SELECT pg_try_advisory_xact_lock(7) AS locked, inet_server_port() AS port",
        "SELECT pg_advisory_xact_lock(8), inet_server_port() AS port",
    ];
    for sql in writes {
        assert_on_primary(&env, &c, sql).await;
        assert_on_replica(&env, &c, WHERE).await;
    }
    // The effects are on the primary: two inserts of 100 and two deletes of them, two updates,
    // two nextval calls, two CTE inserts.
    assert_eq!(
        primary_sql(
            &env,
            "SELECT (SELECT count(*) FROM items WHERE v = 100) || ',' || \
                    (SELECT v FROM items WHERE id = 1) || ',' || \
                    (SELECT last_value FROM ids) || ',' || \
                    (SELECT count(*) FROM items WHERE v = 700)"
        ),
        "0,3,2,2"
    );

    // DDL through Meridian, both protocols: it must run on the primary (a replica refuses it).
    c.simple_query("CREATE TABLE made_simple (x int)")
        .await
        .unwrap_or_else(|e| panic!("CREATE TABLE (simple): {}", show(&e)));
    c.execute("CREATE TABLE made_extended (x int)", &[])
        .await
        .unwrap_or_else(|e| panic!("CREATE TABLE (extended): {}", show(&e)));
    assert_eq!(
        primary_sql(
            &env,
            "SELECT string_agg(relname || ':' || pg_get_userbyid(relowner), ',' ORDER BY relname) \
             FROM pg_class WHERE relname IN ('made_simple', 'made_extended')"
        ),
        "made_extended:app,made_simple:app"
    );
    assert_on_replica(&env, &c, WHERE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_functions_are_routed_by_volatility_and_configuration() {
    let env = start(1, |cfg| {
        eventual(cfg);
        cfg.routing.read_only_functions = vec!["f_vol_read".into()];
        cfg.routing.write_functions = vec!["f_stable_forced".into()];
    })
    .await;
    primary_sql(
        &env,
        "CREATE TABLE fn_log (id serial PRIMARY KEY, v int NOT NULL, port int NOT NULL);
         GRANT ALL ON fn_log, fn_log_id_seq TO app;
         CREATE FUNCTION f_insert(x int) RETURNS int LANGUAGE sql VOLATILE
           AS $$ INSERT INTO fn_log (v, port) VALUES (x, inet_server_port()) RETURNING port $$;
         CREATE FUNCTION f_stable() RETURNS int LANGUAGE sql STABLE
           AS $$ SELECT inet_server_port() $$;
         CREATE FUNCTION f_immutable(x int) RETURNS int LANGUAGE sql IMMUTABLE
           AS $$ SELECT x * 2 $$;
         CREATE FUNCTION f_vol_read() RETURNS int LANGUAGE sql VOLATILE
           AS $$ SELECT inet_server_port() $$;
         CREATE FUNCTION f_vol_unlisted() RETURNS int LANGUAGE sql VOLATILE
           AS $$ SELECT inet_server_port() $$;
         CREATE FUNCTION f_stable_forced() RETURNS int LANGUAGE sql STABLE
           AS $$ SELECT inet_server_port() $$;",
    );
    caught_up(&env);
    let c = env.connect().await;

    // A VOLATILE function that writes runs on the primary, and works.
    for i in 0..3 {
        assert_eq!(
            simple_at(&env, &c, &format!("SELECT f_insert({i}) AS port")).await,
            At::Primary
        );
        assert_eq!(
            ext_at(&env, &c, "SELECT f_insert($1) AS port", &[&(10 + i)]).await,
            At::Primary
        );
    }
    assert_eq!(
        primary_sql(
            &env,
            "SELECT count(*) || ',' || sum(v) || ',' || \
             count(*) FILTER (WHERE port = inet_server_port()) FROM fn_log"
        ),
        "6,36,6"
    );

    // STABLE and IMMUTABLE functions go to a replica once Meridian has loaded the catalog
    // (asynchronously: retried, bounded).
    eventually("a STABLE function to run on a replica", || async {
        simple_at(&env, &c, "SELECT f_stable() AS port")
            .await
            .is_replica()
    })
    .await;
    for _ in 0..3 {
        assert_on_replica(&env, &c, "SELECT f_stable() AS port").await;
    }
    eventually("an IMMUTABLE function to run on a replica", || async {
        simple_at(
            &env,
            &c,
            "SELECT f_immutable(21) AS x, inet_server_port() AS port",
        )
        .await
        .is_replica()
    })
    .await;
    let row = c
        .query_one(
            "SELECT f_immutable($1) AS x, inet_server_port() AS port",
            &[&21i32],
        )
        .await
        .expect("immutable");
    assert_eq!(row.get::<_, i32>("x"), 42);
    assert!(at(&env, row.get("port")).is_replica());

    // routing.read_only_functions sends a VOLATILE function to a replica; an unlisted VOLATILE
    // one (same body) still goes to the primary.
    assert_on_replica(&env, &c, "SELECT f_vol_read() AS port").await;
    assert_on_primary(&env, &c, "SELECT f_vol_unlisted() AS port").await;
    // routing.write_functions forces a STABLE function to the primary.
    assert_on_primary(&env, &c, "SELECT f_stable_forced() AS port").await;
    // ... while the other STABLE one still reads from a replica.
    assert_on_replica(&env, &c, "SELECT f_stable() AS port").await;
}

// ---------------------------------------------------------------------------------------------
// 6. Hints
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_hints_override_the_classification() {
    let env = start(1, eventual).await;
    primary_sql(
        &env,
        "CREATE TABLE hinted (x int);
         GRANT ALL ON hinted TO app;
         CREATE FUNCTION f_report() RETURNS int LANGUAGE sql VOLATILE
           AS $$ SELECT inet_server_port() $$;",
    );
    caught_up(&env);
    let c = env.connect().await;

    assert_on_replica(&env, &c, WHERE).await;
    assert_on_primary(&env, &c, &format!("/* meridian:primary */ {WHERE}")).await;
    assert_on_primary(&env, &c, &format!("-- meridian:primary\n{WHERE}")).await;

    // A read Meridian cannot parse goes to the primary, unless hinted.
    let unparsable =
        "SELECT inet_server_port() AS port FROM ROWS FROM (generate_series(1, 1)) AS g(x)";
    assert_on_primary(&env, &c, unparsable).await;
    assert_on_replica(&env, &c, &format!("/* meridian:replica */ {unparsable}")).await;
    // Likewise a function of unknown or VOLATILE volatility.
    assert_on_primary(&env, &c, "SELECT f_report() AS port").await;
    assert_on_replica(&env, &c, "/* meridian:replica */ SELECT f_report() AS port").await;

    // The replica hint never moves a write.
    assert_on_primary(
        &env,
        &c,
        "/* meridian:replica */ INSERT INTO hinted VALUES (1) RETURNING inet_server_port() AS port",
    )
    .await;
    assert_eq!(primary_sql(&env, "SELECT count(*) FROM hinted"), "2");
}

// ---------------------------------------------------------------------------------------------
// 7. Lag
// ---------------------------------------------------------------------------------------------
