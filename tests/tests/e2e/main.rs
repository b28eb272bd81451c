//! End-to-end tests: real brokers, coordinator and agents, driven as a submitter would.

mod adversary;
mod bad_input;
mod broker_cluster;
mod compute;
mod coordinators;
mod credits;
mod docs;
mod edge;
mod engines;
mod faults;
mod fl;
mod flow;
mod join;
mod kernels;
mod policy;
mod store;
mod templates;
mod util;
mod zk;
mod zk_inference;
