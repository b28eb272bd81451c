use ambient_service::migrate::{self, Dialect, MigrateError, Migration};
use ambient_service::sqlite::SqliteActor;
use rusqlite::Connection;

use crate::StoreError;

const V1: &str = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);";
const V2: &str = "ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'none';";

const ONE: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: &[(Dialect::Sqlite, V1)],
}];

const TWO: &[Migration] = &[
    ONE[0],
    Migration {
        version: 2,
        name: "notes_add_tag",
        sql: &[(Dialect::Sqlite, V2)],
    },
];

fn version(conn: &Connection) -> u32 {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[test]
fn an_unversioned_database_is_adopted_then_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    {
        // Written by code from before versioning: the v1 tables, user_version 0.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute("INSERT INTO notes (body) VALUES ('kept')", [])
            .unwrap();
    }
    let mut conn = Connection::open(&path).unwrap();
    let plan = migrate::migrate(&mut conn, ONE).unwrap();
    assert_eq!((plan.from, plan.to, plan.steps.len()), (0, 1, 1));
    assert_eq!(version(&conn), 1);
    // Nothing to do the second time.
    assert!(migrate::migrate(&mut conn, ONE).unwrap().steps.is_empty());
    let plan = migrate::migrate(&mut conn, TWO).unwrap();
    assert_eq!((plan.from, plan.to), (1, 2));
    let (body, tag): (String, String) = conn
        .query_row("SELECT body, tag FROM notes", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((body.as_str(), tag.as_str()), ("kept", "none"));
}

#[test]
fn a_failing_migration_changes_nothing() {
    const BROKEN: &[Migration] = &[
        ONE[0],
        Migration {
            version: 2,
            name: "broken",
            sql: &[(
                Dialect::Sqlite,
                "CREATE TABLE extra (x); SELECT * FROM missing_table;",
            )],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("n.db")).unwrap();
    match migrate::migrate(&mut conn, BROKEN) {
        Err(MigrateError::Failed {
            version: 2, name, ..
        }) => assert_eq!(name, "broken"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // Version 1 ran in the same transaction, so it was rolled back too.
    assert_eq!(version(&conn), 0);
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
    // The connection is usable afterwards.
    migrate::migrate(&mut conn, ONE).unwrap();
    assert_eq!(version(&conn), 1);
}

#[test]
fn a_database_from_a_newer_build_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.db");
    let mut conn = Connection::open(&path).unwrap();
    migrate::migrate(&mut conn, TWO).unwrap();
    drop(conn);
    let mut conn = Connection::open(&path).unwrap();
    let err = migrate::migrate(&mut conn, ONE).unwrap_err();
    assert!(
        matches!(err, MigrateError::TooNew { found: 2, known: 1 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(version(&conn), 2);
}

#[tokio::test]
async fn the_actor_serves_a_migrated_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = Connection::open(dir.path().join("n.db")).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    migrate::migrate(&mut conn, TWO).unwrap();
    let db = SqliteActor::spawn("it-store", conn).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.call(move |c| {
                    c.execute(
                        "INSERT INTO notes (body, tag) VALUES (?1, 'it')",
                        [format!("n{i}")],
                    )?;
                    Ok::<_, StoreError>(())
                })
                .await
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let n: i64 = db
        .call(|c| {
            Ok::<_, StoreError>(c.query_row(
                "SELECT COUNT(*) FROM notes WHERE tag = 'it'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(n, 8);
    let err = db
        .call(|c| Ok::<_, StoreError>(c.execute("INSERT INTO nowhere VALUES (1)", [])?))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Sql(_)), "{err}");
}
