//! IDLE, and connections that are cut or go silent.

use super::*;

#[tokio::test]
async fn idle_returns_changed_on_append() {
    let fixture = Fixture::new(implicit()).await;
    let mut session = fixture.session().await;
    let mut observer = Observer::new(&fixture.user).await;

    let delivery = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        observer.append("INBOX", "pushed", None).await;
        Instant::now()
    });
    let event = within(session.idle(Duration::from_secs(60), Duration::from_secs(60))).await;
    let returned = Instant::now();
    let appended = delivery.await.expect("append task");

    assert_eq!(event.expect("IDLE"), IdleEvent::Changed);
    let delay = returned.saturating_duration_since(appended);
    assert!(
        delay < Duration::from_secs(2),
        "Changed came {delay:?} after APPEND"
    );
    assert_eq!(within(session.uids_after(0)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn idle_times_out_then_idles_again() {
    let fixture = Fixture::new(starttls()).await;
    let mut session = fixture.session().await;
    let started = Instant::now();

    let first = within(session.idle(Duration::from_secs(1), Duration::from_secs(60))).await;
    let elapsed = started.elapsed();
    let second = within(session.idle(Duration::from_millis(500), Duration::from_secs(60))).await;

    assert_eq!(first.expect("first IDLE"), IdleEvent::Timeout);
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(second.expect("second IDLE"), IdleEvent::Timeout);
    assert!(
        session.last_activity() > started,
        "DONE's OK was not recorded"
    );
    within(session.noop(Duration::from_secs(5)))
        .await
        .expect("NOOP after IDLE");
}

#[tokio::test]
async fn idle_connection_cut_is_error() {
    let fixture = Fixture::new(implicit()).await;
    let forwarder = Forwarder::start((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT"))).await;
    let connector = fixture.connector_via(forwarder.port, Tls::Implicit);
    let mut session = within(connector.connect())
        .await
        .expect("connect through the forwarder");
    within(session.select("INBOX")).await.unwrap();

    let cut = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        forwarder.cut();
    };
    let idle = session.idle(Duration::from_secs(60), Duration::from_secs(60));
    let (result, ()) = within(async { tokio::join!(idle, cut) }).await;

    let error = result.expect_err("IDLE on a cut connection");
    assert!(
        matches!(error.kind(), "connection_lost" | "io"),
        "{}: {error}",
        error.kind()
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn idle_silent_connection_is_dead() {
    let fixture = Fixture::new(implicit()).await;
    let forwarder = Forwarder::start((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT"))).await;
    let timeouts = Timeouts {
        response: Duration::from_secs(5),
        done: Duration::from_secs(1),
    };
    let connector = fixture
        .connector_via(forwarder.port, Tls::Implicit)
        .with_timeouts(timeouts);
    let mut session = within(connector.connect()).await.unwrap();
    within(session.select("INBOX")).await.unwrap();
    let started = Instant::now();

    // The freeze comes after the continuation, so the liveness check and
    // DONE run into the silence.
    let freeze = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        forwarder.freeze();
    };
    let idle = session.idle(Duration::from_secs(60), Duration::from_secs(1));
    let (result, ()) = within(async { tokio::join!(idle, freeze) }).await;

    let error = result.expect_err("IDLE on a frozen connection");
    assert_eq!(error.kind(), "dead_connection", "{error}");
    assert!(error.is_transient());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "liveness and DONE took {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

#[tokio::test]
async fn noop_on_frozen_connection_is_dead() {
    let fixture = Fixture::new(implicit()).await;
    let forwarder = Forwarder::start((stack("STACK_IMAP_HOST"), port("STACK_IMAPS_PORT"))).await;
    let connector = fixture.connector_via(forwarder.port, Tls::Implicit);
    let mut session = within(connector.connect()).await.unwrap();
    within(session.noop(Duration::from_secs(5)))
        .await
        .expect("NOOP");
    forwarder.freeze();

    let error = within(session.noop(Duration::from_secs(1)))
        .await
        .unwrap_err();

    assert_eq!(error.kind(), "dead_connection", "{error}");
}
