//! Modes of the token store: `mailbridge authorize` creates the token
//! directory 0700 and the token file 0600, and `check` rejects a token
//! file that group or others may read, naming the file and the `chmod 600`
//! fix. `run` does the same, as `accounts` tests. `authorize` replaces
//! such a file with a new one of mode 0600, because a new sign-in is the
//! remedy when the old tokens may have been read.

use std::os::unix::fs::PermissionsExt;

use crate::bridge::{ACCOUNT, Setup};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test]
async fn token_store_created_private() {
    let setup = Setup::new("token-modes-created");
    setup.prepare("").await;

    let file = setup.token_file(ACCOUNT);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().expect("tokens directory")), 0o700);
}

#[tokio::test]
async fn readable_token_file_rejected_by_check() {
    let setup = Setup::new("token-modes-readable");
    setup.prepare("").await;
    let file = setup.token_file(ACCOUNT);
    let fix = format!("chmod 600 {}", file.display());

    for readable in [0o640, 0o604, 0o644] {
        set_mode(&file, readable);
        let check = setup.output(&["check", ACCOUNT, "--imap"]).await;

        assert_eq!(check.status.code(), Some(1), "{readable:o}: {check:?}");
        let stdout = String::from_utf8_lossy(&check.stdout);
        assert!(stdout.contains(&fix), "check with {readable:o}: {stdout}");
        assert_eq!(mode(&file), readable, "check changed the mode");
    }
}

#[tokio::test]
async fn readable_token_file_replaced_by_authorize() {
    let setup = Setup::new("token-modes-replaced");
    setup.prepare("").await;
    let file = setup.token_file(ACCOUNT);
    let before = std::fs::read_to_string(&file).expect("token file");
    set_mode(&file, 0o644);

    setup.authorize_again().await;

    assert_eq!(mode(&file), 0o600);
    let after = std::fs::read_to_string(&file).expect("token file");
    assert_ne!(after, before, "the tokens were not replaced");
}
