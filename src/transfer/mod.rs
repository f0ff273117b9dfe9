//! Moving a deployment between backends: `exai export` writes every thread (with its
//! turns) and every run as JSON Lines; `exai import` reads them into any store.

mod export;
mod format;
mod import;

pub use export::{ExportError, Exported, export};
pub use format::{FORMAT, Line, VERSION};
pub use import::{ImportError, Imported, import};
