//! The verified identity: the claims of a verified token, as the JWT stage produces them and the
//! later stages (policy, rate limiting) and the flow read them. Shared vocabulary: it imports no
//! other module of the core, so no stage depends on another to name the caller.

use std::any::Any;
use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// A verified claims set. Its JSON (for filter state and the optional claims header) and a
/// later stage's view of it (the policy's input value) are made at most once per verified token,
/// and only when something asks for them: a configuration without a policy never converts
/// claims for one, and cache hits reuse what an earlier request made.
pub struct Claims {
    pub map: Map<String, Value>,
    json: OnceLock<String>,
    /// Stored without naming its type, so the JWT stage does not depend on the policy engine.
    derived: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("map", &self.map)
            .finish_non_exhaustive()
    }
}

impl Claims {
    pub fn new(map: Map<String, Value>) -> Claims {
        Claims {
            map,
            json: OnceLock::new(),
            derived: OnceLock::new(),
        }
    }

    /// The claims as compact JSON.
    pub fn json(&self) -> &str {
        self.json
            .get_or_init(|| serde_json::to_string(&self.map).unwrap_or_default())
    }

    /// The claims as one later stage represents them, made by `make` on first use and kept with
    /// the verified token. One type per process (the policy's value): asked for another type,
    /// this answers `None` and the caller converts without caching.
    pub fn derived<T: Any + Send + Sync>(
        &self,
        make: impl FnOnce(&Map<String, Value>) -> T,
    ) -> Option<&T> {
        self.derived
            .get_or_init(|| Box::new(make(&self.map)))
            .downcast_ref::<T>()
    }
}
