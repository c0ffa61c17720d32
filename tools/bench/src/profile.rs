//! The "Profile" and "Memory by max_batch_bytes" sections of BENCHMARKS.md:
//! callgrind instruction counts that `scripts/profile` stores as
//! `profile-{set}-{label}.json`, and the peak memory of backfills that
//! `scripts/bench` runs with several `max_batch_bytes` values and stores as
//! `caps-{bytes}.json`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// Mail sets of the profile, with their names on the page.
const SETS: [(&str, &str); 2] = [
    ("plain", "mails of about 5 KB"),
    ("attachments", "mails with a 1 MB attachment"),
];

/// Builds of the profile, in the order of the columns.
const LABELS: [(&str, &str); 2] = [("baseline", "Before"), ("current", "After")];

/// Writes the Profile section when the run directory contains profile results.
pub fn profile_section(page: &mut String, dir: &Path) -> Result<(), String> {
    let found: Vec<(&str, &str)> = SETS
        .into_iter()
        .filter(|(set, _)| dir.join(format!("profile-{set}-current.json")).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }

    let _ = writeln!(page, "## Profile\n");
    let _ = writeln!(
        page,
        "Instructions that mailbridge executed, in all its threads, during a \
         backfill to Kafka under valgrind's callgrind, written by \
         `scripts/profile`. Instruction counts change little between runs on \
         a busy machine, unlike times. A run counts from the process start, \
         so sign-in and connection are included. \"Before\" is the build \
         given as `--baseline`, when there is one. valgrind emulates a \
         processor without the SHA extensions of this machine's processor, so \
         callgrind overstates hashing; where perf can sample, each build also \
         ran once outside valgrind, sampled with perf's cpu-clock event, \
         which shows the share of processor time instead.\n"
    );
    for (set, title) in found {
        set_table(page, dir, set, title)?;
    }
    Ok(())
}

fn set_table(page: &mut String, dir: &Path, set: &str, title: &str) -> Result<(), String> {
    let results: Vec<(&str, Value)> = LABELS
        .into_iter()
        .filter_map(|(label, name)| read(dir, &format!("profile-{set}-{label}")).map(|v| (name, v)))
        .collect();
    let Some((_, first)) = results.first() else {
        return Ok(());
    };
    let mails = number(first, "mails")?;

    let _ = writeln!(page, "### {mails:.0} {title}\n");
    let _ = writeln!(
        page,
        "| Build | Instructions | Instructions per 1,000 mails |"
    );
    let _ = writeln!(page, "| --- | ---: | ---: |");
    for (name, result) in &results {
        let total = number(result, "instructions")?;
        let _ = writeln!(
            page,
            "| {name} | {:.0} M | {:.0} M |",
            total / 1e6,
            total / 1e6 * 1000.0 / mails.max(1.0)
        );
    }
    page.push('\n');

    for (name, result) in &results {
        let total = number(result, "instructions")?;
        let _ = writeln!(
            page,
            "{name}: functions with the most instructions of their own.\n"
        );
        let _ = writeln!(page, "| Function | Share |\n| --- | ---: |");
        for row in result["top"].as_array().into_iter().flatten() {
            let function = row["function"].as_str().unwrap_or("?");
            let own = number(row, "instructions")?;
            let _ = writeln!(
                page,
                "| `{}` | {:.1} % |",
                shorten(function),
                own * 100.0 / total
            );
        }
        page.push('\n');
    }
    sampled_tables(page, dir, set)
}

/// Writes the perf samples of each build of one set, when there are any.
fn sampled_tables(page: &mut String, dir: &Path, set: &str) -> Result<(), String> {
    for (label, name) in LABELS {
        let Some(result) = read(dir, &format!("profile-{set}-{label}-perf")) else {
            continue;
        };
        let _ = writeln!(
            page,
            "{name}, sampled by perf outside valgrind: functions with the most \
             processor time of their own, kernel functions marked `[k]`.\n"
        );
        let _ = writeln!(page, "| Function | Share |\n| --- | ---: |");
        for row in result["top"].as_array().into_iter().flatten() {
            let function = row["function"].as_str().unwrap_or("?");
            let (kernel, function) = match function.split_once(' ') {
                Some(("[k]", rest)) => (" `[k]`", rest.trim()),
                Some(("[.]", rest)) => ("", rest.trim()),
                _ => ("", function),
            };
            let _ = writeln!(
                page,
                "| `{}`{kernel} | {:.1} % |",
                shorten(function),
                number(row, "share")?
            );
        }
        page.push('\n');
    }
    Ok(())
}

/// Writes the peak memory of the backfills run with each `max_batch_bytes`.
pub fn caps_section(page: &mut String, dir: &Path) -> Result<(), String> {
    let mut runs = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("failed to list {}: {err}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(bytes) = name
            .strip_prefix("caps-")
            .and_then(|rest| rest.strip_suffix(".json"))
            .and_then(|bytes| bytes.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(result) = read(dir, &format!("caps-{bytes}")) {
            runs.push((bytes, result));
        }
    }
    if runs.is_empty() {
        return Ok(());
    }
    runs.sort_by_key(|(bytes, _)| *bytes);

    let _ = writeln!(page, "## Memory by `max_batch_bytes`\n");
    let _ = writeln!(
        page,
        "The same backfill of mails with a 1 MB attachment to Kafka, \
         `batch_size` 100, run once for each `max_batch_bytes`. The cap \
         bounds the peak memory, not the number of mails in the mailbox.\n"
    );
    let _ = writeln!(
        page,
        "| `max_batch_bytes` | Mails | Peak RSS (VmHWM) | Seconds | Mails/s |\n\
         | ---: | ---: | ---: | ---: | ---: |"
    );
    for (bytes, result) in runs {
        let documents = number(&result, "documents")?;
        let seconds = number(&result, "seconds")?;
        let _ = writeln!(
            page,
            "| {} MiB | {documents:.0} | {:.1} MiB | {seconds:.2} | {:.0} |",
            bytes / 1024 / 1024,
            number(&result, "peak_rss_bytes")? / 1024.0 / 1024.0,
            documents / seconds
        );
    }
    page.push('\n');
    Ok(())
}

/// Drops the generic arguments and the hash suffix of a Rust symbol, which
/// make the table wide without telling the function apart.
fn shorten(function: &str) -> String {
    let mut short = String::new();
    let mut depth = 0;
    for character in function.chars() {
        match character {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => short.push(character),
            _ => {}
        }
    }
    // A method of a trait impl, `<A as B>::next`, would lose its type.
    if short.starts_with("::") {
        short = function.to_owned();
    }
    let short = short.replace('|', "\\|");
    match short.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 => head.to_owned(),
        _ => short,
    }
}

fn read(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn number(value: &Value, key: &str) -> Result<f64, String> {
    value[key]
        .as_f64()
        .ok_or_else(|| format!("missing number {key:?} in a profile result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_drops_generics_and_hash() {
        let symbol = "mail_parser::parsers::MessageStream::parse<u8>::h0123456789abcdef";

        assert_eq!(
            shorten(symbol),
            "mail_parser::parsers::MessageStream::parse"
        );
    }

    #[test]
    fn shorten_keeps_plain_c_names() {
        assert_eq!(shorten("memcpy@GLIBC_2.14"), "memcpy@GLIBC_2.14");
    }
}
