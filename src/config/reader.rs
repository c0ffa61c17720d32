//! A reader over figment's merged value tree. Unlike plain serde
//! deserialization it does not stop at the first error: every read records
//! its problem and goes on, and each table reports the keys that were not
//! read.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use figment::providers::Env;
use figment::value::{Dict, Value};
use figment::{Figment, Provider};

use super::error::{Origin, Problem, env_var};
use super::keys;
use super::secret::Secret;
use super::secret_forms::{Form, choose_form, read_secret_file, secret_text};
use super::values::{FromValue, Invalid, describe, kind_of};

/// Shared state of one read: where each value came from, and the problems
/// found so far.
pub(crate) struct Context<'a> {
    figment: &'a Figment,
    env_name: String,
    /// Raw text of every environment variable, by dotted key. figment parses
    /// `0123` as the number 123 and `[a,b]` as a list, so string keys read
    /// the text as it was written.
    env_text: BTreeMap<String, String>,
    problems: RefCell<Vec<Problem>>,
    /// Key patterns read so far, so a test can compare them with the key list.
    #[cfg(test)]
    pub(crate) read_patterns: RefCell<BTreeSet<String>>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(figment: &'a Figment, env: &Env) -> Self {
        Self {
            figment,
            env_name: env.metadata().name.into_owned(),
            env_text: env
                .iter()
                .map(|(key, text)| (key.into_string(), text))
                .collect(),
            problems: RefCell::default(),
            #[cfg(test)]
            read_patterns: RefCell::default(),
        }
    }

    pub(crate) fn into_problems(self) -> Vec<Problem> {
        self.problems.into_inner()
    }

    pub(crate) fn origin(&self, value: &Value) -> Option<Origin> {
        let metadata = self.figment.get_metadata(value.tag())?;
        if metadata.name == self.env_name {
            return Some(Origin::Environment);
        }

        metadata
            .source
            .as_ref()?
            .file_path()
            .map(|path| Origin::File(path.to_owned()))
    }

    /// Returns the value as text: a string as it is, and any other value
    /// set by an environment variable as the variable's raw text.
    pub(crate) fn text(&self, path: &[String], value: &Value) -> Option<String> {
        if let Value::String(_, text) = value {
            return Some(text.clone());
        }
        if self.origin(value) != Some(Origin::Environment) {
            return None;
        }

        self.env_text.get(&path.join(".")).cloned()
    }

    /// Records a problem with the value at `path`. `show` is false for
    /// secrets, whose value never appears in a message.
    pub(crate) fn reject(&self, path: &[String], value: &Value, show: bool, invalid: Invalid) {
        let mut problem = Problem::new(path, invalid.reason);
        problem.fix = invalid.fix;
        problem.origin = self.origin(value);
        if show {
            problem.value = describe(value);
        }
        self.report(problem);
    }

    pub(crate) fn report(&self, problem: Problem) {
        self.problems.borrow_mut().push(problem);
    }
}

/// One table of the tree, with the keys read from it so far.
pub(crate) struct Table<'a> {
    cx: &'a Context<'a>,
    path: Vec<String>,
    /// Path with section names replaced by `NAME`, as in the key list.
    pattern: String,
    dict: &'a Dict,
    read: BTreeSet<String>,
}

impl<'a> Table<'a> {
    pub(crate) fn root(cx: &'a Context<'a>, dict: &'a Dict) -> Self {
        Self {
            cx,
            path: Vec::new(),
            pattern: String::new(),
            dict,
            read: BTreeSet::new(),
        }
    }

    fn child(&self, key: &str, pattern: &str, dict: &'a Dict) -> Self {
        Self {
            cx: self.cx,
            path: self.path_of(key),
            pattern: keys::join(&self.pattern, pattern),
            dict,
            read: BTreeSet::new(),
        }
    }

    pub(crate) fn cx(&self) -> &'a Context<'a> {
        self.cx
    }

    pub(crate) fn path_of(&self, key: &str) -> Vec<String> {
        let mut path = self.path.clone();
        path.push(key.to_owned());
        path
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.dict.contains_key(key)
    }

    /// Returns the value at `path` below this table, without marking it
    /// read.
    pub(crate) fn value_at(&self, path: &[&str]) -> Option<&'a Value> {
        let (last, parents) = path.split_last()?;
        let mut dict = self.dict;
        for key in parents {
            match dict.get(*key)? {
                Value::Dict(_, child) => dict = child,
                _ => return None,
            }
        }

        dict.get(*last)
    }

    /// Marks `key` as read and returns its value.
    pub(crate) fn take(&mut self, key: &str) -> Option<&'a Value> {
        let pattern = keys::join(&self.pattern, key);
        debug_assert!(keys::is_known(&pattern), "{pattern} is missing from KEYS");
        #[cfg(test)]
        self.cx.read_patterns.borrow_mut().insert(pattern);

        self.read.insert(key.to_owned());
        self.dict.get(key)
    }

    /// Reads an optional key. An invalid value is recorded and read as `None`.
    pub(crate) fn get<T: FromValue>(&mut self, key: &str) -> Option<T> {
        let value = self.take(key)?;
        let path = self.path_of(key);
        let text = self.cx.text(&path, value);

        match T::from_value(value, text.as_deref()) {
            Ok(parsed) => Some(parsed),
            Err(invalid) => {
                self.cx.reject(&path, value, self.shows(key), invalid);
                None
            }
        }
    }

    /// Tells whether a problem with `key` may show its value: every value
    /// but a secret's.
    fn shows(&self, key: &str) -> bool {
        !keys::is_secret(&keys::join(&self.pattern, key))
    }

    /// Reads a required key, recording a problem when it is missing.
    pub(crate) fn require<T: FromValue>(&mut self, key: &str) -> Option<T> {
        self.require_checked(key, |_| Ok(()))
    }

    /// Reads a required key and checks the parsed value.
    pub(crate) fn require_checked<T: FromValue>(
        &mut self,
        key: &str,
        check: impl FnOnce(&T) -> Result<(), Invalid>,
    ) -> Option<T> {
        if !self.contains(key) {
            self.take(key);
            self.missing(key, None);
            return None;
        }

        self.get_checked(key, check)
    }

    /// Reads an optional key and checks the parsed value.
    pub(crate) fn get_checked<T: FromValue>(
        &mut self,
        key: &str,
        check: impl FnOnce(&T) -> Result<(), Invalid>,
    ) -> Option<T> {
        let parsed = self.get::<T>(key);
        self.check(key, parsed, check)
    }

    /// Checks `value`, read from `key` and possibly normalised since, and
    /// records a problem with `key` when the check fails.
    pub(crate) fn check<T>(
        &mut self,
        key: &str,
        value: Option<T>,
        check: impl FnOnce(&T) -> Result<(), Invalid>,
    ) -> Option<T> {
        let value = value?;
        match check(&value) {
            Ok(()) => Some(value),
            Err(invalid) => {
                self.reject(key, invalid);
                None
            }
        }
    }

    /// Records that the required `key` is missing.
    pub(crate) fn missing(&self, key: &str, fix: Option<String>) {
        let mut problem = Problem::new(&self.path_of(key), "missing required key");
        problem.fix = fix;
        self.cx.report(problem);
    }

    /// Records that `key` is missing although `condition` requires it,
    /// unless it is set.
    pub(crate) fn required_for(&mut self, key: &str, condition: &str) {
        if self.contains(key) || self.contains(&format!("{key}_file")) {
            return;
        }

        let mut problem = Problem::new(
            &self.path_of(key),
            format!("missing key, required {condition}"),
        );
        if keys::is_secret(&keys::join(&self.pattern, key)) {
            problem.fix = Some(self.secret_fix(key));
        }
        self.cx.report(problem);
    }

    /// Records a problem with the value of `key`, when it is set. This
    /// also rejects keys that do not apply here (a Kafka key on an AMQP
    /// broker).
    pub(crate) fn reject(&mut self, key: &str, invalid: Invalid) {
        let Some(value) = self.take(key) else { return };
        self.cx
            .reject(&self.path_of(key), value, self.shows(key), invalid);
    }

    /// Reads a nested table.
    pub(crate) fn table(&mut self, key: &str) -> Option<Table<'a>> {
        let value = self.take(key)?;
        match value {
            Value::Dict(_, dict) => Some(self.child(key, key, dict)),
            other => {
                let reason = format!("expected a table, found {}", kind_of(other));
                self.cx
                    .reject(&self.path_of(key), other, false, Invalid::new(reason));
                None
            }
        }
    }

    /// Reads a table of named sections such as `[accounts.NAME]`.
    pub(crate) fn sections(&mut self, key: &str) -> Vec<(String, Table<'a>)> {
        let Some(mut parent) = self.table(key) else {
            return Vec::new();
        };
        let names: Vec<&'a String> = parent.dict.keys().collect();

        names
            .into_iter()
            .filter_map(|name| parent.section(name))
            .collect()
    }

    fn section(&mut self, name: &'a String) -> Option<(String, Table<'a>)> {
        self.read.insert(name.clone());
        let value = &self.dict[name];
        let path = self.path_of(name);
        if let Err(invalid) = keys::check_name(name) {
            self.cx.reject(&path, value, false, invalid);
            return None;
        }

        match value {
            Value::Dict(_, dict) => Some((name.clone(), self.child(name, keys::NAME, dict))),
            other => {
                let reason = format!("expected a table, found {}", kind_of(other));
                self.cx.reject(&path, other, false, Invalid::new(reason));
                None
            }
        }
    }

    /// Reads an optional secret, given either as `key` or as `key_file`.
    pub(crate) fn secret(&mut self, key: &str) -> Option<Secret> {
        self.secret_checked(key, |_| Ok(()))
    }

    /// Reads an optional secret, given either as `key` or as `key_file`,
    /// and checks it. A problem found by `check` is recorded on the form
    /// that was read, without the secret.
    pub(crate) fn secret_checked(
        &mut self,
        key: &str,
        check: impl FnOnce(&Secret) -> Result<(), Invalid>,
    ) -> Option<Secret> {
        let file_key = format!("{key}_file");
        let inline = self.take(key);
        self.read.insert(file_key.clone());
        let file = self.dict.get(&file_key);
        let inline_path = self.path_of(key);
        let file_path = self.path_of(&file_key);

        let form = match (inline, file) {
            (Some(inline), Some(file)) => {
                choose_form(self.cx, key, (&inline_path, inline), (&file_path, file))?
            }
            (Some(_), None) => Form::Inline,
            (None, Some(_)) => Form::File,
            (None, None) => return None,
        };
        let (path, value) = match form {
            Form::Inline => (inline_path, inline?),
            Form::File => (file_path, file?),
        };
        let secret = match form {
            Form::Inline => secret_text(self.cx, &path, value, key),
            Form::File => read_secret_file(self.cx, &path, value),
        }?;

        match check(&secret) {
            Ok(()) => Some(secret),
            Err(invalid) => {
                self.cx.reject(&path, value, form == Form::File, invalid);
                None
            }
        }
    }

    /// Reads a required secret, given either as `key` or as `key_file`,
    /// and checks it.
    pub(crate) fn require_secret_checked(
        &mut self,
        key: &str,
        check: impl FnOnce(&Secret) -> Result<(), Invalid>,
    ) -> Option<Secret> {
        if !self.contains(key) && !self.contains(&format!("{key}_file")) {
            self.take(key);
            self.missing(key, Some(self.secret_fix(key)));
            return None;
        }

        self.secret_checked(key, check)
    }

    /// Names both forms of the secret `key`, in the file and as
    /// environment variables.
    fn secret_fix(&self, key: &str) -> String {
        let file_key = format!("{key}_file");
        format!(
            "set `{key}` or `{file_key}` in the configuration file, or the environment \
             variable {} or {}",
            env_var(&self.path_of(key)),
            env_var(&self.path_of(&file_key))
        )
    }

    /// Reads a table of free-form keys (Kafka client properties) as leaves
    /// with their paths. Nested tables are walked, so `sasl.mechanism`
    /// given as a nested key by an environment variable is found too.
    pub(crate) fn leaves(&mut self, key: &str) -> Vec<(Vec<String>, &'a Value)> {
        let Some(value) = self.take(key) else {
            return Vec::new();
        };
        let mut leaves = Vec::new();
        collect_leaves(self.path_of(key), value, &mut leaves);
        leaves
    }

    /// Marks every key as read, for a table whose kind is unknown, so its
    /// keys are not also reported as unknown.
    pub(crate) fn skip_rest(&mut self) {
        self.read.extend(self.dict.keys().cloned());
    }

    /// Reports every key of the table that was not read.
    pub(crate) fn finish(self) {
        for (key, value) in self.dict {
            if self.read.contains(key) {
                continue;
            }
            let invalid = keys::unknown(&self.pattern, key);
            self.cx.reject(&self.path_of(key), value, false, invalid);
        }
    }
}

fn collect_leaves<'a>(
    path: Vec<String>,
    value: &'a Value,
    out: &mut Vec<(Vec<String>, &'a Value)>,
) {
    let Value::Dict(_, dict) = value else {
        out.push((path, value));
        return;
    };
    for (key, child) in dict {
        let mut child_path = path.clone();
        child_path.push(key.clone());
        collect_leaves(child_path, child, out);
    }
}
