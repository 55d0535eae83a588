//! # regcache-bench — registration hit rates and costs
//!
//! The library behind the `regcache-bench` binary (the project's main job):
//! the trace format ([`trace`]), how trace addresses land in real memory
//! ([`layout`]), replay through the real cache ([`replay`]), the optimal
//! bounds ([`optimal`]), built-in synthetic workloads ([`workloads`]),
//! miss-ratio curves ([`mrc`]), the side-by-side replay through UCX's
//! registration cache ([`ucx`]) and the intra-node bandwidth plot
//! ([`intranode`]).

pub mod intranode;
pub mod layout;
pub mod mrc;
pub mod optimal;
pub mod replay;
pub mod trace;
pub mod ucx;
pub mod workloads;
