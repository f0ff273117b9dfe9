//! Tool execution: the registry, the runners that call upstreams, and the executor that
//! bounds, queues, reports and records every run.

mod executor;
pub mod registry;
mod runners;

pub use executor::{Executor, RunError, RunEvent, RunRequest, Started, Subscription, fail_orphaned_runs};
pub use registry::{ToolDefinition, ToolKind};
