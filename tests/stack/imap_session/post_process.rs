//! Post-processing actions seen from a second session, and UTF-8 mailbox names.

use super::*;

/// Appends two mails, post-processes the first and returns its UID, the
/// second's UID and the observer.
async fn post_process_first(fixture: &Fixture, action: PostProcess) -> (u32, u32, Observer) {
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "processed", None).await;
    observer.append("INBOX", "untouched", None).await;
    let mut session = fixture.session().await;
    let uids = within(session.uids_after(0)).await.unwrap();

    within(session.post_process(&uids[..1], &action))
        .await
        .unwrap_or_else(|error| panic!("{action:?}: {error}"));
    session.logout().await;
    (uids[0], uids[1], observer)
}

#[tokio::test]
async fn post_process_mark_seen() {
    let fixture = Fixture::new(implicit()).await;

    let (first, second, mut observer) = post_process_first(&fixture, PostProcess::MarkSeen).await;

    assert!(observer.flags(first).await.iter().any(|f| f == "Seen"));
    assert!(!observer.flags(second).await.iter().any(|f| f == "Seen"));
}

#[tokio::test]
async fn post_process_add_keyword() {
    let fixture = Fixture::new(implicit()).await;
    let action = PostProcess::AddKeyword("$Published".to_owned());

    let (first, second, mut observer) = post_process_first(&fixture, action).await;

    let first_flags = observer.flags(first).await;
    assert!(
        first_flags.iter().any(|f| f.contains("$Published")),
        "{first_flags:?}"
    );
    assert!(!first_flags.iter().any(|f| f == "Seen"), "{first_flags:?}");
    let second_flags = observer.flags(second).await;
    assert!(!second_flags.iter().any(|f| f.contains("$Published")));
}

#[tokio::test]
async fn post_process_move_to_utf8_mailbox() {
    let fixture = Fixture::new(implicit()).await;
    let target = "Verarbeitet ✓ Grüße";
    Observer::new(&fixture.user).await.create(target).await;

    let action = PostProcess::Move(target.to_owned());
    let (_, second, mut observer) = post_process_first(&fixture, action).await;

    assert_eq!(observer.uids("INBOX").await, [second]);
    assert_eq!(observer.uids(target).await.len(), 1);
}

#[tokio::test]
async fn post_process_move_to_missing_mailbox() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "stays", None).await;
    let mut session = fixture.session().await;
    let uids = within(session.uids_after(0)).await.unwrap();

    let action = PostProcess::Move("Fehlt völlig".to_owned());
    let error = within(session.post_process(&uids, &action))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "mailbox_not_found", "{error}");
    assert!(error.to_string().contains("\"Fehlt völlig\""), "{error}");
    assert_eq!(observer.uids("INBOX").await, uids);
}

#[tokio::test]
async fn post_process_delete() {
    let fixture = Fixture::new(implicit()).await;

    let (_, second, mut observer) = post_process_first(&fixture, PostProcess::Delete).await;

    assert_eq!(observer.uids("INBOX").await, [second]);
}

#[tokio::test]
async fn post_process_delete_spares_other_deleted_mail() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer
        .append("INBOX", "deleted by another client", Some("(\\Deleted)"))
        .await;
    observer.append("INBOX", "published", None).await;
    let mut session = fixture.session().await;
    let uids = within(session.uids_after(0)).await.unwrap();

    within(session.post_process(&uids[1..], &PostProcess::Delete))
        .await
        .unwrap();

    assert_eq!(observer.uids("INBOX").await, uids[..1]);
}

#[tokio::test]
async fn post_process_keep() {
    let fixture = Fixture::new(implicit()).await;

    let (first, second, mut observer) = post_process_first(&fixture, PostProcess::Keep).await;

    assert_eq!(observer.uids("INBOX").await, [first, second]);
    assert!(observer.flags(first).await.is_empty());
}

// === Mailbox names ===

#[tokio::test]
async fn session_selects_utf8_mailbox() {
    let fixture = Fixture::new(implicit()).await;
    let mailbox = "Entwürfe & Belege 📁";
    let mut observer = Observer::new(&fixture.user).await;
    observer.create(mailbox).await;
    let body = observer.append(mailbox, "draft", None).await;

    let mut session = within(fixture.connector().connect()).await.unwrap();
    let selected = within(session.select(mailbox))
        .await
        .expect("SELECT by UTF-8 name");
    let uids = within(session.uids_after(0)).await.unwrap();
    let fetched = within(session.fetch(&uids)).await.unwrap();

    assert_eq!(selected.exists, 1);
    assert_eq!(session.selected(), Some(mailbox));
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].body, body);
}

#[tokio::test]
async fn session_missing_mailbox_named() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = within(fixture.connector().connect()).await.unwrap();

    let error = within(session.select("Gibt es nicht ä")).await.unwrap_err();

    assert_eq!(error.kind(), "mailbox_not_found", "{error}");
    assert!(error.to_string().contains("\"Gibt es nicht ä\""), "{error}");
    assert!(error.to_string().contains("127.0.0.1:"), "{error}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn special_use_mailboxes_found_on_dovecot() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = within(fixture.connector().connect()).await.unwrap();

    let trash = within(session.find_special_use("move_to", "\\Trash")).await;
    let archive = within(session.find_special_use("move_to", "\\archive")).await;
    let flagged = within(session.find_special_use("move_to", "\\Flagged")).await;
    session.logout().await;

    assert_eq!(trash.unwrap(), "Trash");
    assert_eq!(archive.unwrap(), "Archive");
    assert_eq!(flagged.unwrap_err().kind(), "special_use_not_found");
}
