//! Compiled fast path of `bounce-consumer classify` for generic MTA events (the flat
//! RFC 3464 shape of consumer/providers/dsn.py).
//!
//! The Python package stays the reference: this crate reproduces its output byte for
//! byte for the lines it accepts and declines every other line, which the caller then
//! hands to the Python path.  The rule data is not copied here; Python builds the tables
//! from consumer/data/*.toml and passes them in (`tables::Tables`).

pub mod blake2b;
pub mod engine;
pub mod json;
pub mod tables;
pub mod text;
pub mod time;

#[cfg(feature = "python")]
mod python;
