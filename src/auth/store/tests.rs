use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::auth::token::RefreshToken;

const ACCOUNT: &str = "support";
const TOKEN_URL: &str = "https://login.microsoftonline.com/organizations/oauth2/v2.0/token";

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn store(directory: &Path) -> TokenStore {
    TokenStore::new(&State {
        directory: directory.to_path_buf(),
    })
}

fn update(access: &str, refresh: Option<&str>) -> TokenUpdate {
    TokenUpdate {
        access_token: AccessToken::new(access),
        expires_in: Some(Duration::from_secs(3599)),
        refresh_token: refresh.map(RefreshToken::new),
        scopes: Some(vec![
            "https://outlook.office.com/IMAP.AccessAsUser.All".to_owned(),
        ]),
    }
}

fn tokens() -> StoredTokens {
    StoredTokens::authorized(
        TOKEN_URL,
        update("AT-0001", Some("RT-1")),
        at(1_700_000_000),
    )
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut saved = tokens();
    saved.apply(update("AT-0002", Some("RT-2")), at(1_700_003_600));

    store.save(ACCOUNT, &saved).unwrap();
    let loaded = store.load(ACCOUNT).unwrap().unwrap();

    assert_eq!(loaded, saved);
    assert_eq!(loaded.refresh_token.unwrap().expose(), "RT-2");
    assert_eq!(loaded.refresh_token_issued_at, Some(at(1_700_000_000)));
    assert_eq!(loaded.refresh_token_rotated_at, Some(at(1_700_003_600)));
    assert_eq!(loaded.access_token_expires_at, Some(at(1_700_007_199)));
}

#[test]
fn file_has_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());

    store.save(ACCOUNT, &tokens()).unwrap();

    let text = fs::read_to_string(dir.path().join("tokens/support.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["token_url"], TOKEN_URL);
    assert_eq!(json["refresh_token"], "RT-1");
    assert_eq!(json["refresh_token_issued_at"], "2023-11-14T22:13:20Z");
    assert_eq!(json["access_token_expires_at"], "2023-11-14T23:13:19Z");
    assert!(json.get("refresh_token_rotated_at").is_none());
}

#[test]
fn fractional_seconds_dropped() {
    let now = at(1_700_000_000) + Duration::from_millis(999);

    let tokens = StoredTokens::authorized(TOKEN_URL, update("AT", Some("RT")), now);

    assert_eq!(tokens.refresh_token_issued_at, Some(at(1_700_000_000)));
}

#[test]
fn missing_file_is_none() {
    let dir = tempfile::tempdir().unwrap();

    assert!(store(dir.path()).load(ACCOUNT).unwrap().is_none());
}

#[test]
fn file_mode_0600_directory_0700() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());

    store.save(ACCOUNT, &tokens()).unwrap();

    assert_eq!(mode(&dir.path().join("tokens/support.json")), 0o600);
    assert_eq!(mode(&dir.path().join("tokens")), 0o700);
}

#[test]
fn mode_0600_kept_on_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.save(ACCOUNT, &tokens()).unwrap();

    store.save(ACCOUNT, &tokens()).unwrap();

    assert_eq!(mode(&dir.path().join("tokens/support.json")), 0o600);
}

#[test]
fn mode_0644_rejected_with_fix() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.save(ACCOUNT, &tokens()).unwrap();
    let path = dir.path().join("tokens/support.json");
    fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();

    let error = store.load(ACCOUNT).unwrap_err();

    assert_eq!(error.kind(), "permissions");
    let text = error.to_string();
    assert!(
        text.contains(&format!("run `chmod 600 {}`", path.display())),
        "{text}"
    );
    assert!(text.contains("mode 644"), "{text}");
    assert!(!text.contains("RT-1"), "{text}");
}

#[test]
fn group_writable_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.save(ACCOUNT, &tokens()).unwrap();
    let path = dir.path().join("tokens/support.json");
    fs::set_permissions(&path, Permissions::from_mode(0o620)).unwrap();

    assert_eq!(store.load(ACCOUNT).unwrap_err().kind(), "permissions");
}

/// Writes `content` as the token file of [`ACCOUNT`] with mode 0600.
fn write_token_file(dir: &Path, content: &str) -> PathBuf {
    let tokens = dir.join("tokens");
    fs::create_dir_all(&tokens).unwrap();
    let path = tokens.join("support.json");
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn corrupt_json_rejected_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let content = "{\"version\": 1, \"refresh_token\": \"RT-SECRET";
    let path = write_token_file(dir.path(), content);

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert_eq!(error.kind(), "corrupt");
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("left untouched"), "{text}");
    assert!(text.contains("mailbridge authorize support"), "{text}");
    assert!(!text.contains("RT-SECRET"), "{text}");
    assert_eq!(fs::read_to_string(&path).unwrap(), content);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn wrong_type_does_not_echo_value() {
    let dir = tempfile::tempdir().unwrap();
    let content = r#"{"version": 1, "token_url": "x", "refresh_token": 987654321}"#;
    write_token_file(dir.path(), content);

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert_eq!(error.kind(), "corrupt");
    assert!(!error.to_string().contains("987654321"), "{error}");
    assert!(!format!("{error:?}").contains("987654321"), "{error:?}");
}

#[test]
fn missing_field_named() {
    let dir = tempfile::tempdir().unwrap();
    write_token_file(dir.path(), r#"{"version": 1}"#);

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert!(
        error.to_string().contains("missing field `token_url`"),
        "{error}"
    );
}

#[test]
fn missing_version_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_token_file(dir.path(), r#"{"token_url": "x"}"#);

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert_eq!(error.kind(), "corrupt");
    assert!(
        error.to_string().contains("no numeric `version`"),
        "{error}"
    );
}

#[test]
fn future_version_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_token_file(dir.path(), r#"{"version": 2, "tokens": {}}"#);

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert_eq!(error.kind(), "unsupported_version");
    assert!(error.to_string().contains("format version 2"), "{error}");
    assert!(path.exists());
}

#[test]
fn oversized_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_token_file(dir.path(), &" ".repeat(MAX_FILE_BYTES as usize + 10));

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
}

#[test]
fn directory_in_place_of_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("tokens/support.json")).unwrap();

    let error = store(dir.path()).load(ACCOUNT).unwrap_err();

    assert_eq!(error.kind(), "not_a_file");
}

#[test]
fn leftover_temp_file_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.save(ACCOUNT, &tokens()).unwrap();
    // A save interrupted after creating and partly writing its temp file.
    let stray = dir.path().join("tokens/.support.Ab12Cd.tmp");
    fs::write(&stray, "{\"version\": 1, \"tok").unwrap();

    assert_eq!(store.load(ACCOUNT).unwrap(), Some(tokens()));
    store.save(ACCOUNT, &tokens()).unwrap();
    assert_eq!(store.load(ACCOUNT).unwrap(), Some(tokens()));
}

#[test]
fn leftover_temp_file_without_saved_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("tokens")).unwrap();
    fs::write(dir.path().join("tokens/.support.Zz99.tmp"), "garbage").unwrap();

    assert!(store(dir.path()).load(ACCOUNT).unwrap().is_none());
}

#[test]
fn save_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    store(dir.path()).save(ACCOUNT, &tokens()).unwrap();

    let names: Vec<String> = fs::read_dir(dir.path().join("tokens"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();

    assert_eq!(names, ["support.json"]);
}

#[test]
fn concurrent_saves_do_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let versions: Vec<StoredTokens> = (0..2)
        .map(|n| {
            let big = format!("AT-{n}-{}", "x".repeat(4000));
            StoredTokens::authorized(TOKEN_URL, update(&big, Some(&format!("RT-{n}"))), at(n))
        })
        .collect();

    let handles: Vec<_> = versions
        .iter()
        .cloned()
        .map(|tokens| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for _ in 0..25 {
                    store.save(ACCOUNT, &tokens).unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }

    let loaded = store.load(ACCOUNT).unwrap().unwrap();
    assert!(versions.contains(&loaded));
}

#[test]
fn invalid_account_names_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());

    for name in ["", "../etc", ".hidden", "a/b", "a b", "-dash", "ä"] {
        let error = store.path(name).unwrap_err();
        assert_eq!(error.kind(), "invalid_account", "{name:?}");
        assert!(store.load(name).is_err(), "{name:?}");
    }
}

#[test]
fn path_in_tokens_directory() {
    let dir = tempfile::tempdir().unwrap();

    let path = store(dir.path()).path("ops-alerts_2").unwrap();

    assert_eq!(path, dir.path().join("tokens").join("ops-alerts_2.json"));
}

#[test]
fn debug_redacts_tokens() {
    let printed = format!("{:?}", tokens());

    assert!(!printed.contains("AT-0001"), "{printed}");
    assert!(!printed.contains("RT-1"), "{printed}");
    assert!(printed.contains(TOKEN_URL), "{printed}");
}

#[test]
fn commit_stores_rotated_refresh_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut tokens = tokens();

    let access = store
        .commit(
            ACCOUNT,
            &mut tokens,
            update("AT-0002", Some("RT-2")),
            at(1_700_003_600),
        )
        .unwrap();

    assert_eq!(access.expose(), "AT-0002");
    let stored = store.load(ACCOUNT).unwrap().unwrap();
    assert_eq!(stored.refresh_token.as_ref().unwrap().expose(), "RT-2");
    assert_eq!(stored.refresh_token_rotated_at, Some(at(1_700_003_600)));
    assert_eq!(stored, tokens);
}

#[test]
fn commit_without_refresh_token_keeps_previous() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let mut tokens = tokens();

    store
        .commit(
            ACCOUNT,
            &mut tokens,
            update("AT-0002", None),
            at(1_700_003_600),
        )
        .unwrap();

    let stored = store.load(ACCOUNT).unwrap().unwrap();
    assert_eq!(stored.refresh_token.unwrap().expose(), "RT-1");
    assert_eq!(stored.refresh_token_rotated_at, None);
    assert_eq!(stored.access_token.unwrap().expose(), "AT-0002");
}

#[test]
fn commit_failure_returns_no_token_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the state directory should be makes every save fail.
    let blocked = dir.path().join("state");
    fs::write(&blocked, "").unwrap();
    let store = store(&blocked);
    let mut tokens = tokens();
    let before = tokens.clone();

    let error = store
        .commit(
            ACCOUNT,
            &mut tokens,
            update("AT-0002", Some("RT-2")),
            at(1_700_003_600),
        )
        .unwrap_err();

    assert_eq!(error.kind(), "write");
    assert!(error.is_transient());
    assert_eq!(tokens, before);
}

#[test]
fn usable_access_token_respects_margin() {
    let tokens = tokens();
    let margin = Duration::from_secs(300);

    assert!(
        tokens
            .usable_access_token(at(1_700_000_000), margin)
            .is_some()
    );
    assert!(
        tokens
            .usable_access_token(at(1_700_003_400), margin)
            .is_none()
    );
    assert!(
        tokens
            .usable_access_token(at(1_700_009_000), margin)
            .is_none()
    );
}

#[test]
fn unknown_expiry_not_usable() {
    let mut update = update("AT", Some("RT"));
    update.expires_in = None;

    let tokens = StoredTokens::authorized(TOKEN_URL, update, at(0));

    assert!(tokens.usable_access_token(at(0), Duration::ZERO).is_none());
}

#[test]
fn scopes_kept_when_response_omits_them() {
    let mut tokens = tokens();
    let mut refresh = update("AT-0002", None);
    refresh.scopes = None;

    tokens.apply(refresh, at(1_700_003_600));

    assert_eq!(
        tokens.scopes,
        ["https://outlook.office.com/IMAP.AccessAsUser.All"]
    );
}

#[test]
fn changed_token_endpoint_detected() {
    let tokens = tokens();

    assert!(tokens.belongs_to(TOKEN_URL));
    assert!(!tokens.belongs_to("https://oauth2.googleapis.com/token"));
}

#[test]
fn lock_creates_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let _lock = store(dir.path()).lock(ACCOUNT).unwrap();

    let tokens = dir.path().join("tokens");
    let directory_mode = fs::metadata(&tokens).unwrap().permissions().mode() & 0o777;
    let file_mode = fs::metadata(tokens.join("support.lock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(directory_mode, 0o700);
    assert_eq!(file_mode, 0o600);
}

#[test]
fn lock_waits_for_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let held = store.lock(ACCOUNT).unwrap();

    let waiter = {
        let store = Arc::clone(&store);
        thread::spawn(move || store.lock(ACCOUNT).map(drop))
    };
    thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "a second lock was taken while held");

    drop(held);
    waiter.join().unwrap().expect("lock after release");
}

#[test]
fn lock_of_other_account_independent() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let _held = store.lock(ACCOUNT).unwrap();

    let other = store.lock("billing");

    assert!(other.is_ok(), "{other:?}");
}

#[test]
fn lock_rejects_invalid_account() {
    let dir = tempfile::tempdir().unwrap();

    let error = store(dir.path()).lock("../x").unwrap_err();

    assert_eq!(error.kind(), "invalid_account");
}
