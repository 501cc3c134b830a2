//! Hostile requests to the edge.

use crate::{Cases, Demo};

pub fn run(_demo: &Demo, _cases: &mut Cases) {}
