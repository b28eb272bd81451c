//! End-to-end tests: real brokers, coordinator and agents, driven as a submitter would.

mod bad_input;
mod faults;
mod flow;
mod util;
