//! The pure core: decisions about agents, with `now` passed in. No I/O crate
//! is imported here; sources and sinks talk to it through [`model`] types.

pub mod model;
pub mod policy;
pub mod snapshot;
pub mod supervisor;
pub mod timestamp;

pub use model::*;
pub use policy::{AgentRule, Defaults, Labels, Policy};
pub use snapshot::{Persisted, Snapshot};
pub use supervisor::{Dirty, SourceKind, Supervisor};
