//! Accounts and brokers that pipelines name, so that a pipeline naming an
//! unknown one, or one of the wrong kind, is reported.

use std::collections::BTreeMap;

use super::broker::BrokerKind;
use super::reader::Table;
use super::server::Protocol;
use super::values::Invalid;

/// Names of the defined accounts and brokers, and what each offers. An
/// invalid account or broker is still listed, so pipelines that name it
/// are not also reported.
#[derive(Debug, Default)]
pub(crate) struct Refs {
    /// Protocol tables present in each account.
    accounts: BTreeMap<String, Vec<Protocol>>,
    /// Kind of each broker, `None` when its kind is invalid.
    brokers: BTreeMap<String, Option<BrokerKind>>,
}

/// Target of a pipeline's `broker` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerRef {
    /// The key is not set.
    Absent,
    /// The key names a broker of this kind.
    Found(String, BrokerKind),
    /// The key is invalid, or names a broker whose kind is invalid; the
    /// problem is already recorded.
    Invalid,
}

impl BrokerRef {
    pub(crate) fn kind(&self) -> Option<BrokerKind> {
        match self {
            Self::Found(_, kind) => Some(*kind),
            _ => None,
        }
    }

    /// Returns the broker name for the pipeline: `Some(None)` when no
    /// broker is set, `None` when the reference is invalid.
    pub(crate) fn name(&self) -> Option<Option<String>> {
        match self {
            Self::Absent => Some(None),
            Self::Found(name, _) => Some(Some(name.clone())),
            Self::Invalid => None,
        }
    }
}

impl Refs {
    pub(crate) fn add_account(&mut self, name: &str, table: &Table<'_>) {
        let protocols = [Protocol::Imap, Protocol::Smtp]
            .into_iter()
            .filter(|protocol| table.contains(protocol.key()))
            .collect();
        self.accounts.insert(name.to_owned(), protocols);
    }

    pub(crate) fn add_broker(&mut self, name: &str, kind: Option<BrokerKind>) {
        self.brokers.insert(name.to_owned(), kind);
    }

    /// Reads the required `account` key, which must name an account with
    /// a `protocol` table.
    pub(crate) fn account(&self, table: &mut Table<'_>, protocol: Protocol) -> Option<String> {
        table.require_checked("account", |name: &String| {
            let Some(protocols) = self.accounts.get(name) else {
                let reason = format!("unknown account `{name}`");
                return Err(Invalid::new(reason).with_fix(Some(known("accounts", &self.accounts))));
            };
            if protocols.contains(&protocol) {
                return Ok(());
            }

            let key = protocol.key();
            let reason = format!("account `{name}` has no {key} table");
            Err(Invalid::new(reason).with_fix(Some(format!("add [accounts.{name}.{key}]"))))
        })
    }

    /// Reads the `broker` key, which must name a defined broker.
    pub(crate) fn broker(&self, table: &mut Table<'_>, required: bool) -> BrokerRef {
        if !required && !table.contains("broker") {
            table.take("broker");
            return BrokerRef::Absent;
        }

        let name = table.require_checked("broker", |name: &String| match self.brokers.get(name) {
            Some(_) => Ok(()),
            None => {
                let reason = format!("unknown broker `{name}`");
                Err(Invalid::new(reason).with_fix(Some(known("brokers", &self.brokers))))
            }
        });
        let Some(name) = name else {
            return BrokerRef::Invalid;
        };

        match self.brokers[&name] {
            Some(kind) => BrokerRef::Found(name, kind),
            // The broker's invalid kind is already recorded.
            None => BrokerRef::Invalid,
        }
    }
}

fn known<T>(section: &str, names: &BTreeMap<String, T>) -> String {
    match names.is_empty() {
        true => format!("no {section} are defined; add a [{section}.NAME] table"),
        false => {
            let names: Vec<&str> = names.keys().map(String::as_str).collect();
            format!("defined {section}: {}", names.join(", "))
        }
    }
}
