//! Output of `mailbridge check`: one text line per step, with the
//! diagnosis of a failed step on the line after it, or one JSON object.

use serde_json::json;

use super::Step;

/// Returns the text line of `step`, and the diagnosis line of a failure.
pub fn line(step: &Step) -> String {
    let status = if step.ok { "ok  " } else { "FAIL" };
    let mut text = format!(
        "{} {:<4} {status} {:<12} {}",
        step.account, step.protocol, step.step, step.detail
    );
    if let Some(fix) = &step.diagnosis {
        text.push_str(&format!("\n  diagnosis: {fix}"));
    }
    text
}

/// Returns the JSON document of a whole check: `ok` and the steps.
pub fn json(steps: &[Step], ok: bool) -> serde_json::Value {
    json!({ "ok": ok, "steps": steps })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(ok: bool) -> Step {
        Step {
            account: "box".into(),
            protocol: "imap",
            step: "tcp",
            ok,
            detail: "connected".into(),
            diagnosis: (!ok).then(|| "check the port".into()),
            anchor: None,
        }
    }

    #[test]
    fn failed_step_has_diagnosis_line() {
        let text = line(&step(false));

        assert!(text.starts_with("box imap FAIL tcp"), "{text}");
        assert!(text.ends_with("\n  diagnosis: check the port"), "{text}");
    }

    #[test]
    fn passed_step_is_one_line() {
        let text = line(&step(true));

        assert!(text.contains(" ok "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn json_lists_steps() {
        let value = json(&[step(true)], true);

        assert_eq!(value["ok"], true);
        assert_eq!(value["steps"][0]["step"], "tcp");
        assert!(value["steps"][0].get("diagnosis").is_none());
    }
}
