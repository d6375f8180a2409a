//! Integration tests: one binary (see STYLE.md §5), modules by topic.

mod daemon;
mod util;
