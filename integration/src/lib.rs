//! Demo MCP backends and MCP client helpers for the gateway's integration tests.
pub mod backend;
pub mod client;
pub mod harness;
pub mod jwks;
pub mod idp;
