//! The one integration test binary (ripgrep style): each module is a topic.
//!
//! `UPDATE_GOLDEN=1 cargo test --test main golden` rewrites the golden
//! reports in `fixtures/` instead of comparing them.

mod corpus;
mod golden;
mod scenarios;
