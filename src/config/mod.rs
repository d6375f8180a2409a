//! Loading rules and site files: located diagnostics, bundled defaults.

pub mod diag;
mod load;

pub use load::{load_policy, LoadError, Loaded, RulesSource, BUNDLED_SITES};
