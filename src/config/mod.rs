//! Loading rules and site files into a [`Policy`](crate::policy::Policy):
//! bundled defaults, every problem located (see [`crate::diag`]).

mod load;

pub use load::{load_policy, LoadError, Loaded, RulesSource, BUNDLED_SITES};
