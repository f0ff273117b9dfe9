//! Tool execution: the registry, the runners that call upstreams, and the executor that
//! bounds, queues, reports and records every run.

mod error;
mod executor;
mod live;
mod recorder;
pub mod registry;
mod relay;
mod runners;
mod tool;

pub use error::RunError;
pub use executor::{Executor, RunRequest};
pub use live::{RunEvent, Started, Subscription};
pub use registry::{ToolDefinition, ToolKind, ToolSettings};
pub use relay::{PgRelay, RedisRelay, Relay, RelayError};
