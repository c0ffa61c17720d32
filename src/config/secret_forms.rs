//! The two forms of a secret: the value itself under `KEY`, or the path of
//! a file that contains it under `KEY_file`. Neither the value nor the
//! file content ever appears in a problem.

use std::path::{Path, PathBuf};

use figment::value::Value;

use super::error::{Origin, env_var};
use super::reader::Context;
use super::secret::{REDACTED, Secret};
use super::values::{FromValue, Invalid, kind_of};

/// Form of a secret that is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `KEY`: the value itself.
    Inline,
    /// `KEY_file`: the path of a file that contains the value.
    File,
}

/// Chooses between the secret `key` and `key_file` when both are set. As
/// for every other key, a value set by an environment variable wins over
/// one set in the file. Both forms from the same source are a problem,
/// recorded on `key_file`, and give `None`.
pub(crate) fn choose_form(
    cx: &Context<'_>,
    key: &str,
    inline: (&[String], &Value),
    file: (&[String], &Value),
) -> Option<Form> {
    let inline_origin = cx.origin(inline.1);
    let file_origin = cx.origin(file.1);
    let from_env = |origin: &Option<Origin>| *origin == Some(Origin::Environment);
    match (from_env(&inline_origin), from_env(&file_origin)) {
        (true, false) => return Some(Form::Inline),
        (false, true) => return Some(Form::File),
        _ => {}
    }

    let place = match inline_origin.or(file_origin) {
        Some(Origin::File(path)) => format!("in {}", path.display()),
        Some(Origin::Environment) => format!(
            "by the environment variables {} and {}",
            env_var(inline.0),
            env_var(file.0)
        ),
        None => "in the same source".to_owned(),
    };
    let reason = format!("both `{key}` and `{key}_file` are set {place}");
    let invalid = Invalid::new(reason).with_fix(Some("remove one of them".into()));
    cx.reject(file.0, file.1, true, invalid);
    None
}

/// Reads a secret given inline. `key` names the secret in the fix for a
/// `[redacted]` marker copied from `mailbridge config` output.
pub(crate) fn secret_text(
    cx: &Context<'_>,
    path: &[String],
    value: &Value,
    key: &str,
) -> Option<Secret> {
    let Some(text) = cx.text(path, value) else {
        let reason = format!("expected a string, found {}", kind_of(value));
        cx.reject(path, value, false, Invalid::new(reason));
        return None;
    };

    let invalid = if text.trim().is_empty() {
        Invalid::new("secret is empty or contains only whitespace")
    } else if text.trim() == REDACTED {
        let fix = format!("set the real value, or set `{key}_file` to a file that contains it");
        Invalid::new(format!("secret is {}", marker())).with_fix(Some(fix))
    } else {
        return Some(Secret::new(text));
    };
    cx.reject(path, value, false, invalid);
    None
}

/// Describes the redaction marker, for a secret that was copied from
/// `mailbridge config` output.
fn marker() -> String {
    format!("`{REDACTED}`, the marker that `mailbridge config` prints in place of a secret")
}

/// Reads a secret from the file named by the `_file` key at `path`. A
/// problem names the key, the file and the OS error, never the content.
pub(crate) fn read_secret_file(cx: &Context<'_>, path: &[String], value: &Value) -> Option<Secret> {
    let text = cx.text(path, value);
    let secret = PathBuf::from_value(value, text.as_deref()).and_then(|file| read_secret(&file));

    secret
        .map_err(|invalid| cx.reject(path, value, true, invalid))
        .ok()
}

fn read_secret(file: &Path) -> Result<Secret, Invalid> {
    let content = std::fs::read_to_string(file)
        .map_err(|err| Invalid::new(format!("failed to read secret file: {err}")))?;
    // Editors and `echo` end files with a newline that is not part of the value.
    let content = content.strip_suffix('\n').unwrap_or(&content);
    let content = content.strip_suffix('\r').unwrap_or(content);

    if content.trim().is_empty() {
        return Err(Invalid::new(
            "secret file is empty or contains only whitespace",
        ));
    }
    if content.trim() == REDACTED {
        let fix = "write the real value to the file";
        let reason = format!("secret file contains {}", marker());
        return Err(Invalid::new(reason).with_fix(Some(fix.into())));
    }

    Ok(Secret::new(content))
}
