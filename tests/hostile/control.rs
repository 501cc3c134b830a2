//! Hostile requests to the control.

use crate::{Cases, Demo};

pub fn run(_demo: &Demo, _cases: &mut Cases) {}
