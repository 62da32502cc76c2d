//! What an engine reports about a change it made: one of Vault's event notifications, handed
//! back with the handler's answer ([`crate::Response::events`]). The core publishes it only when
//! the handler succeeded, that is once the change is durable; a failed request publishes nothing.
//!
//! An event names paths and carries non-secret metadata (versions, the operation), never a
//! secret's value: engines put only what Vault's own plugins send into it.

use std::collections::BTreeMap;

/// Vault's metadata keys every event has, set by [`Event::new`] and [`Event::data_path`].
pub(crate) const META_PATH: &str = "path";
pub(crate) const META_DATA_PATH: &str = "data_path";

/// One change, as its engine sees it: paths are relative to the mount (the core prefixes the
/// mount path before anybody sees them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub(crate) event_type: String,
    /// Vault's event metadata; every value is a string, as Vault's plugins send them.
    pub(crate) metadata: BTreeMap<String, String>,
    /// A subscriber receives the event only if its token may read one of these paths.
    pub(crate) readable_at: Vec<String>,
}

impl Event {
    /// An event of type `<kind>/<operation>` (`kv-v2/data-write`) about a request to `path`,
    /// with Vault's `operation` and `modified = "true"` metadata.
    pub fn new(kind: &str, operation: &str, path: impl Into<String>) -> Self {
        let mut metadata = BTreeMap::new();
        metadata.insert(META_PATH.to_owned(), path.into());
        metadata.insert("operation".to_owned(), operation.to_owned());
        metadata.insert("modified".to_owned(), "true".to_owned());
        Self { event_type: format!("{kind}/{operation}"), metadata, readable_at: Vec::new() }
    }

    /// Where the changed data can be read now (Vault's `data_path`); absent when it cannot
    /// (a deletion).
    pub fn data_path(mut self, path: impl Into<String>) -> Self {
        self.metadata.insert(META_DATA_PATH.to_owned(), path.into());
        self
    }

    /// An engine-specific metadata entry, such as `current_version`.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// A path (relative to the mount) whose `read` capability lets a subscriber see this event.
    /// Without any, the `data_path` decides, else the `path`.
    pub fn readable_at(mut self, path: impl Into<String>) -> Self {
        self.readable_at.push(path.into());
        self
    }

    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The paths that admit a subscriber, relative to the mount.
    pub(crate) fn gates(&self) -> Vec<&str> {
        if !self.readable_at.is_empty() {
            return self.readable_at.iter().map(String::as_str).collect();
        }
        self.metadata
            .get(META_DATA_PATH)
            .or_else(|| self.metadata.get(META_PATH))
            .map(|p| vec![p.as_str()])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_vaults_common_metadata() {
        let e = Event::new("kv-v2", "data-write", "data/app")
            .data_path("data/app")
            .with("current_version", "3");
        assert_eq!(e.event_type(), "kv-v2/data-write");
        assert_eq!(e.metadata()["operation"], "data-write");
        assert_eq!(e.metadata()["modified"], "true");
        assert_eq!(e.metadata()["path"], "data/app");
        assert_eq!(e.metadata()["current_version"], "3");
        assert_eq!(e.gates(), ["data/app"]);
    }

    #[test]
    fn gates_fall_back_from_readable_at_to_data_path_to_path() {
        assert_eq!(Event::new("kv-v1", "delete", "app").gates(), ["app"]);
        let e = Event::new("kv-v2", "destroy", "destroy/app")
            .readable_at("data/app")
            .readable_at("metadata/app");
        assert_eq!(e.gates(), ["data/app", "metadata/app"]);
    }
}
