//! Tool execution: the registry, the runners that call upstreams, and the executor that
//! bounds, queues, reports and records every run.

mod executor;
mod live;
pub mod registry;
mod runners;
mod tool;

pub use executor::{Executor, RunError, RunRequest, fail_orphaned_runs};
pub use live::{RunEvent, Started, Subscription};
pub use registry::{ToolDefinition, ToolKind, ToolSettings};
