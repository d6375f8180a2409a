//! One integration test binary (ripgrep style): each module is a topic.
//!
//! - `examples`: the bundled sites against the vendor page's "Ports examples".
//! - `validation`: the `check` command on bad site and rules files.

mod examples;
mod validation;
