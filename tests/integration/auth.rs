//! Authentication: clients prove themselves to Meridian (SCRAM-SHA-256, or md5 where configured),
//! and Meridian logs in upstream with whatever method each server asks for.

use meridian_testkit::creds;

use crate::support::{sqlstate, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_auth_method_works() {
    let env = Env::start(1).await;
    // (user, password): scram upstream, md5 upstream (and md5 to Meridian), cleartext upstream,
    // trust upstream.
    let users = [
        (creds::APP_USER, creds::APP_PASSWORD),
        (creds::MD5_USER, creds::MD5_PASSWORD),
        (creds::PLAIN_USER, creds::PLAIN_PASSWORD),
        (creds::TRUST_USER, "trust-needs-none"),
    ];
    for (user, password) in users {
        let client = env
            .try_connect(user, password)
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        let row = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query");
        assert_eq!(row.get::<_, String>(0), user);
    }
}

fn app_backends(env: &Env) -> i64 {
    env.primary_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend'",
    )
    .parse()
    .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_refused_before_anything_goes_upstream() {
    let env = Env::start(1).await;
    let keeper = env.connect().await;
    let before = app_backends(&env);

    let err = env
        .try_connect(creds::APP_USER, "wrong")
        .await
        .err()
        .expect("wrong password refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");

    let err = env
        .try_connect("nobody", "whatever")
        .await
        .err()
        .expect("unknown user refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");

    // md5-configured user with a wrong password.
    let err = env
        .try_connect(creds::MD5_USER, "wrong")
        .await
        .err()
        .expect("wrong md5 password refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");

    assert_eq!(
        app_backends(&env),
        before,
        "failed logins must not open server connections"
    );
    // The established session never noticed.
    let row = keeper.query_one("SELECT 1", &[]).await.expect("keeper");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_server_rejects_reports_the_servers_error() {
    let env = Env::start(1).await;
    let mut cfg = env.pg_config(creds::APP_USER, creds::APP_PASSWORD);
    cfg.dbname("no_such_db");
    let err = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
}
