//! The console's session store on both engines (migration `0002_console_sessions`): a session
//! is found until it expires or is deleted, and a flash is read at most once, by the key it is for.

use keygate_control_plane::Db;

async fn sessions_on(db: Db) {
    let (a, b, credential) = ([1u8; 32], [2u8; 32], [9u8; 32]);
    db.insert_console_session(&a, &credential, 1_000, 2_000)
        .await
        .expect("insert");
    db.insert_console_session(&b, &credential, 1_000, 1_500)
        .await
        .expect("insert");
    let found = db.find_console_session(&a, 1_600).await.expect("find");
    assert_eq!(
        found.map(|s| (s.credential_digest, s.expires_at)),
        Some((credential, 2_000))
    );
    assert!(
        db.find_console_session(&b, 1_600)
            .await
            .expect("find")
            .is_none(),
        "expired"
    );

    let (key, other) = ([7u8; 16], [8u8; 16]);
    db.set_console_flash(&a, &key, b"sealed")
        .await
        .expect("flash");
    assert!(
        db.take_console_flash(&a, &other)
            .await
            .expect("take")
            .is_none(),
        "another key's page"
    );
    assert_eq!(
        db.take_console_flash(&a, &key)
            .await
            .expect("take")
            .as_deref(),
        Some(&b"sealed"[..])
    );
    assert!(
        db.take_console_flash(&a, &key)
            .await
            .expect("take")
            .is_none(),
        "read once"
    );

    // A new sign-in prunes the expired ones; sign-out deletes.
    db.insert_console_session(&[3u8; 32], &credential, 1_600, 9_000)
        .await
        .expect("insert");
    db.delete_console_session(&a).await.expect("delete");
    assert!(
        db.find_console_session(&a, 1_600)
            .await
            .expect("find")
            .is_none(),
        "signed out"
    );
    assert!(
        db.find_console_session(&[3u8; 32], 1_600)
            .await
            .expect("find")
            .is_some()
    );
}

#[tokio::test]
async fn console_sessions_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}", dir.path().join("k.db").display());
    sessions_on(Db::connect(&url).await.expect("sqlite")).await;
}

#[tokio::test]
async fn console_sessions_on_postgres() {
    let url = keygate_testkit::PgCluster::shared()
        .fresh_database()
        .expect("a fresh PostgreSQL database");
    sessions_on(Db::connect(&url).await.expect("postgres")).await;
}
