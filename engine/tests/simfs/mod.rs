//! Test implementations of the engine's I/O seam ([`uncorreo_engine::Io`]).
#![allow(dead_code)]

pub mod crash;
pub mod fault;
