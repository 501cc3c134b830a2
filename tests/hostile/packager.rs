//! Hostile requests to the packager.

use crate::{Cases, Demo};

pub fn run(_demo: &Demo, _cases: &mut Cases) {}
