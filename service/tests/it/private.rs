//! User data readable by its owner only: databases `0600` (with their WAL side files), data
//! directories `0700`, whatever the umask (the default 022 would give 0644 and 0755).
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ambient_service::migrate::{Dialect, Migration};
use ambient_service::private;
use ambient_service::sqlite::SqliteActor;

use crate::StoreError;

const NOTES: &[Migration] = &[Migration {
    version: 1,
    name: "initial",
    sql: &[(
        Dialect::Sqlite,
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )],
}];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn write_a_row(db: &SqliteActor) {
    db.call(|c| {
        c.execute("INSERT INTO notes (body) VALUES ('secret inputs')", [])?;
        Ok::<_, StoreError>(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_new_database_and_its_wal_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.db");
    let db = SqliteActor::open("it-private", &path, NOTES).await.unwrap();
    write_a_row(&db).await;
    assert_eq!(mode(&path), 0o600, "the database");
    for side in ["agent.db-wal", "agent.db-shm"] {
        assert_eq!(mode(&dir.path().join(side)), 0o600, "{side}");
    }
}

#[tokio::test]
async fn a_database_readable_by_others_is_narrowed_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator.db");
    drop(SqliteActor::open("it-private", &path, NOTES).await.unwrap());
    // As an older version left it.
    for file in ["coordinator.db", "coordinator.db-wal", "coordinator.db-shm"] {
        let file = dir.path().join(file);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let db = SqliteActor::open("it-private", &path, NOTES).await.unwrap();
    write_a_row(&db).await;
    for file in ["coordinator.db", "coordinator.db-wal", "coordinator.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
}

#[test]
fn data_directories_are_created_for_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("data").join("blobs");
    private::create_dir(&nested).unwrap();
    assert_eq!(mode(&dir.path().join("data")), 0o700);
    assert_eq!(mode(&nested), 0o700);
    // Existing directories keep the mode the operator gave them.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    private::create_dir(dir.path()).unwrap();
    assert_eq!(mode(dir.path()), 0o750);
}
