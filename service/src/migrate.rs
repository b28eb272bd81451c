//! Versioned schema migrations.
//!
//! A database's schema is an ordered list of [`Migration`]s, numbered 1, 2, 3, … with no gaps,
//! each carrying its SQL once per [`Dialect`]. The database stores the number of the last one
//! applied (SQLite: `PRAGMA user_version`, 0 in a fresh file). At open, [`migrate`] reads it and,
//! in one transaction, runs every later migration and stores the new number; a failure rolls
//! everything back. A database whose number is above the list's last is refused with
//! [`MigrateError::TooNew`]: it was written by a newer build, and this one would misread it.
//!
//! The mechanism is split so that another backend can reuse it unchanged:
//! - the list is plain data, one list per database, shared by every backend;
//! - [`plan`] is pure: stored version + list + dialect → the steps to run, or the typed refusal;
//! - [`Backend`] is the little a database must do (begin, read and write the version, execute,
//!   commit, roll back), and [`migrate`] drives any `Backend` through the plan. SQLite
//!   implements it on `rusqlite::Connection`. The coordinator's PostgreSQL store, an async
//!   client that cannot implement the synchronous trait, calls [`plan`] itself and keeps its
//!   version in a `schema_version` table.
//!
//! Version 1 of a database that existed before versioning must be exactly the schema that code
//! wrote, with `CREATE … IF NOT EXISTS`, so that opening such a database (version 0, tables
//! present) adopts it as version 1 without touching its rows.

use rusqlite::Connection;

/// The SQL dialect a migration's text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite 3 (bundled with rusqlite).
    Sqlite,
    /// PostgreSQL 13 or later.
    Postgres,
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        })
    }
}

/// One step of a schema: its number, a name for logs and errors, and its SQL per dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its position, from 1. The database stores the last applied one.
    pub version: u32,
    /// A short name, e.g. `initial` or `tasks_add_priority`.
    pub name: &'static str,
    /// The statements, per dialect (a `;`-separated batch). Never edit a released one: add a
    /// new migration instead.
    pub sql: &'static [(Dialect, &'static str)],
}

impl Migration {
    /// Its SQL in `dialect`, if written.
    pub fn sql_for(&self, dialect: Dialect) -> Option<&'static str> {
        self.sql
            .iter()
            .find(|(d, _)| *d == dialect)
            .map(|(_, s)| *s)
    }
}

/// Why a schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was written by a newer build than this one.
    #[error(
        "the database has schema version {found}, newer than the {known} this build knows: \
         run a newer build, or point this one at another data directory"
    )]
    TooNew {
        /// The version stored in the database.
        found: u32,
        /// The last version this build's list has.
        known: u32,
    },
    /// The migration list itself is malformed (a bug in the code, caught at open).
    #[error("migration list: {0}")]
    BadList(String),
    /// A migration has no SQL for the backend's dialect.
    #[error("migration {version} ({name}) has no {dialect} SQL")]
    NoSql {
        /// The migration.
        version: u32,
        /// Its name.
        name: &'static str,
        /// The dialect it lacks.
        dialect: Dialect,
    },
    /// A migration's SQL failed; nothing of the run was kept.
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        /// The migration.
        version: u32,
        /// Its name.
        name: &'static str,
        /// The database's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database refused a bookkeeping statement (begin, read or write the version, commit).
    #[error("schema bookkeeping: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> MigrateError {
        MigrateError::Database(Box::new(e))
    }
}

/// What [`plan`] decided: the versions before and after, and the steps between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The version stored now.
    pub from: u32,
    /// The version once the steps have run (the list's last).
    pub to: u32,
    /// The migrations to run, in order, with their SQL in the chosen dialect.
    pub steps: Vec<(Migration, &'static str)>,
}

/// The steps that take a database at version `current` to the end of `list` in `dialect`.
///
/// Refuses a malformed list (versions not 1, 2, 3, … in order), a database newer than the list,
/// and a pending migration without SQL for `dialect`.
pub fn plan(list: &[Migration], dialect: Dialect, current: u32) -> Result<Plan, MigrateError> {
    for (i, m) in list.iter().enumerate() {
        let expected = i as u32 + 1;
        if m.version != expected {
            return Err(MigrateError::BadList(format!(
                "entry {i} ({}) has version {}, expected {expected}",
                m.name, m.version
            )));
        }
    }
    let known = list.len() as u32;
    if current > known {
        return Err(MigrateError::TooNew {
            found: current,
            known,
        });
    }
    let steps = list[current as usize..]
        .iter()
        .map(|m| {
            m.sql_for(dialect)
                .map(|sql| (*m, sql))
                .ok_or(MigrateError::NoSql {
                    version: m.version,
                    name: m.name,
                    dialect,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan {
        from: current,
        to: known,
        steps,
    })
}

/// What a database must offer for [`migrate`] to drive it. Every method runs on the one
/// connection, between [`Backend::begin`] and [`Backend::commit`] or [`Backend::rollback`].
pub trait Backend {
    /// The dialect its migrations' SQL is taken in.
    const DIALECT: Dialect;

    /// Starts a transaction that keeps other connections from migrating at the same time.
    fn begin(&mut self) -> Result<(), MigrateError>;
    /// The stored version; 0 for a database never migrated.
    fn schema_version(&mut self) -> Result<u32, MigrateError>;
    /// Stores `version` as the schema's.
    fn set_schema_version(&mut self, version: u32) -> Result<(), MigrateError>;
    /// Runs one migration's SQL.
    fn execute(&mut self, sql: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// Commits the transaction.
    fn commit(&mut self) -> Result<(), MigrateError>;
    /// Rolls the transaction back (best effort: it runs on a path that already failed).
    fn rollback(&mut self);
}

/// Brings `db` up to the end of `list` in one transaction and returns the plan it ran (empty
/// steps when the database was current). On any error nothing is changed.
pub fn migrate<B: Backend>(db: &mut B, list: &[Migration]) -> Result<Plan, MigrateError> {
    db.begin()?;
    let run = |db: &mut B| -> Result<Plan, MigrateError> {
        let plan = plan(list, B::DIALECT, db.schema_version()?)?;
        if plan.steps.is_empty() {
            return Ok(plan);
        }
        for (m, sql) in &plan.steps {
            db.execute(sql).map_err(|source| MigrateError::Failed {
                version: m.version,
                name: m.name,
                source,
            })?;
        }
        db.set_schema_version(plan.to)?;
        Ok(plan)
    };
    match run(db) {
        Ok(plan) => {
            db.commit()?;
            if !plan.steps.is_empty() {
                tracing::info!(from = plan.from, to = plan.to, "Database schema migrated.");
            }
            Ok(plan)
        }
        Err(e) => {
            db.rollback();
            Err(e)
        }
    }
}

/// SQLite keeps the version in `PRAGMA user_version` (the file header, so it commits and rolls
/// back with the transaction) and takes the write lock at `BEGIN IMMEDIATE`, so two processes
/// opening one file migrate it once.
impl Backend for Connection {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn begin(&mut self) -> Result<(), MigrateError> {
        Ok(self.execute_batch("BEGIN IMMEDIATE")?)
    }

    fn schema_version(&mut self) -> Result<u32, MigrateError> {
        let v: i64 = self.pragma_query_value(None, "user_version", |r| r.get(0))?;
        u32::try_from(v).map_err(|_| {
            MigrateError::Database(format!("user_version {v} is not a schema version").into())
        })
    }

    fn set_schema_version(&mut self, version: u32) -> Result<(), MigrateError> {
        Ok(self.pragma_update(None, "user_version", version)?)
    }

    fn execute(&mut self, sql: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.execute_batch(sql)?)
    }

    fn commit(&mut self) -> Result<(), MigrateError> {
        Ok(self.execute_batch("COMMIT")?)
    }

    fn rollback(&mut self) {
        let _ = self.execute_batch("ROLLBACK");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration with no SQL in any dialect.
    const fn bare(version: u32, name: &'static str) -> Migration {
        Migration {
            version,
            name,
            sql: &[],
        }
    }

    #[test]
    fn plan_takes_the_pending_tail() {
        const LIST: &[Migration] = &[
            Migration {
                version: 1,
                name: "a",
                sql: &[(Dialect::Sqlite, "A")],
            },
            Migration {
                version: 2,
                name: "b",
                sql: &[(Dialect::Sqlite, "B")],
            },
        ];
        let p = plan(LIST, Dialect::Sqlite, 0).unwrap();
        assert_eq!((p.from, p.to), (0, 2));
        assert_eq!(
            p.steps.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            ["A", "B"]
        );
        let p = plan(LIST, Dialect::Sqlite, 1).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].0.name, "b");
        assert!(plan(LIST, Dialect::Sqlite, 2).unwrap().steps.is_empty());
        assert!(matches!(
            plan(LIST, Dialect::Sqlite, 3),
            Err(MigrateError::TooNew { found: 3, known: 2 })
        ));
    }

    #[test]
    fn plan_refuses_a_malformed_list_or_missing_sql() {
        let gap = [bare(1, "a"), bare(3, "c")];
        assert!(matches!(
            plan(&gap, Dialect::Sqlite, 0),
            Err(MigrateError::BadList(_))
        ));
        let no_sql = [bare(1, "a")];
        assert!(matches!(
            plan(&no_sql, Dialect::Sqlite, 0),
            Err(MigrateError::NoSql { version: 1, .. })
        ));
        // Already applied, so its SQL is not needed.
        assert!(plan(&no_sql, Dialect::Sqlite, 1).is_ok());
    }
}
