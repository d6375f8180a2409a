//! Loading rules and site files into a [`Policy`](crate::policy::Policy):
//! bundled defaults, every problem located (see [`crate::diag`]).

mod load;

/// Located diagnostics live below the loaders that use them; re-exported
/// here for callers that knew them as `config::diag`.
pub use crate::diag;
pub use load::{load_policy, LoadError, Loaded, RulesSource, BUNDLED_SITES};
