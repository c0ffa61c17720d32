//! Fetching without `\Seen`, capabilities and UID searches.

use super::*;

async fn assert_fetch_leaves_flags(imap: Server) {
    let fixture = Fixture::new(imap).await;
    let mut observer = Observer::new(&fixture.user).await;
    let first = observer.append("INBOX", "first", Some("(\\Flagged)")).await;
    let second = observer.append("INBOX", "second", None).await;

    let mut session = within(fixture.connector().connect())
        .await
        .expect("connect");
    let selected = within(session.select("INBOX")).await.expect("SELECT");
    let uids = within(session.uids_after(0)).await.expect("UID SEARCH");
    let fetched = within(session.fetch(&[uids[1], uids[0]]))
        .await
        .expect("FETCH");

    assert_eq!(selected.exists, 2);
    assert!(selected.uidnext.is_some_and(|next| next > uids[1]));
    assert_eq!(uids.len(), 2);
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].uid, uids[0], "not sorted by UID");
    assert_eq!(fetched[0].body, first);
    assert_eq!(fetched[1].body, second);
    assert_eq!(fetched[0].size, Some(first.len() as u32));
    assert!(fetched[0].internal_date.is_some());
    assert!(fetched[0].flags.iter().any(|flag| flag == "\\Flagged"));
    for mail in &fetched {
        assert!(!mail.flags.iter().any(|flag| flag == "\\Seen"), "{mail:?}");
    }
    for uid in uids {
        let flags = observer.flags(uid).await;
        assert!(!flags.iter().any(|flag| flag.contains("Seen")), "{flags:?}");
    }
    session.logout().await;
}

#[tokio::test]
async fn session_fetch_implicit_tls_keeps_flags() {
    assert_fetch_leaves_flags(implicit()).await;
}

#[tokio::test]
async fn session_fetch_starttls_keeps_flags() {
    assert_fetch_leaves_flags(starttls()).await;
}

#[tokio::test]
async fn session_capabilities_after_sign_in() {
    let fixture = Fixture::new(implicit()).await;

    let session = within(fixture.connector().connect())
        .await
        .expect("connect");

    let capabilities = session.capabilities();
    assert!(capabilities.idle());
    assert!(capabilities.r#move());
    assert!(capabilities.uidplus());
    assert!(capabilities.has("IMAP4rev1"));
    assert_eq!(session.selected(), None);
}

#[tokio::test]
async fn session_uids_after_star_quirk() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "one", None).await;
    observer.append("INBOX", "two", None).await;
    let mut session = fixture.session().await;

    let all = within(session.uids_after(0)).await.expect("search all");
    let last = *all.last().expect("two mails");

    // `UID SEARCH UID n:*` with n above every UID matches the last mail.
    assert_eq!(all.len(), 2);
    assert_eq!(
        within(session.uids_after(last)).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(within(session.uids_after(all[0])).await.unwrap(), [last]);
    assert_eq!(
        within(session.uids_after(last + 10)).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(
        within(session.uids_after(u32::MAX)).await.unwrap(),
        Vec::<u32>::new()
    );
}

#[tokio::test]
async fn session_uids_unseen() {
    let fixture = Fixture::new(implicit()).await;
    let mut observer = Observer::new(&fixture.user).await;
    observer.append("INBOX", "seen", Some("(\\Seen)")).await;
    observer.append("INBOX", "unseen", None).await;
    let mut session = fixture.session().await;

    let all = within(session.uids_after(0)).await.unwrap();
    let unseen = within(session.uids_unseen()).await.unwrap();

    assert_eq!(unseen, [all[1]]);
}

#[tokio::test]
async fn session_search_before_select_rejected() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = within(fixture.connector().connect()).await.unwrap();

    let error = session.uids_after(0).await.unwrap_err();

    assert_eq!(error.kind(), "not_selected");
}
