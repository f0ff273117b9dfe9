//! Which store holds the data, and where.

use std::path::PathBuf;
use url::Url;

use super::{ConfigError, check_url, invalid};
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite {
        data_dir: PathBuf,
    },
    Postgres {
        url: Secret,
    },
    /// `database_url` (the project's Postgres URL) is only needed by `exai migrate`.
    Supabase {
        url: Url,
        key: Secret,
        database_url: Option<Secret>,
    },
}

impl StoreConfig {
    pub fn backend(&self) -> &'static str {
        match self {
            StoreConfig::Sqlite { .. } => "sqlite",
            StoreConfig::Postgres { .. } => "postgres",
            StoreConfig::Supabase { .. } => "supabase",
        }
    }

    /// Where the data lives, without credentials, for logs.
    pub fn location(&self) -> String {
        match self {
            StoreConfig::Sqlite { data_dir } => data_dir.join("exai.db").display().to_string(),
            StoreConfig::Postgres { url } => without_password(url.expose()),
            StoreConfig::Supabase { url, .. } => {
                // The user of an HTTP URL is a credential, not a role name as in Postgres.
                let mut url = url.clone();
                let _ = url.set_username("");
                without_password(url.as_str())
            }
        }
    }
}

/// A URL with its password, query and fragment left out: a query may carry a token or
/// a `password=` parameter as well.
pub fn without_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

pub(super) fn store_config(var: &impl Fn(&str) -> Option<String>) -> Result<StoreConfig, ConfigError> {
    let derived = if var("SUPABASE_URL").is_some() {
        "supabase"
    } else if var("DATABASE_URL").is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let database_url = var("DATABASE_URL")
        .map(|url| check_url("DATABASE_URL", &url, &["postgres", "postgresql"]).map(|_| Secret::new(url)))
        .transpose()?;
    let chosen = var("EXAI_STORE");
    match chosen.as_deref().unwrap_or(derived) {
        "sqlite" => Ok(StoreConfig::Sqlite {
            data_dir: var("EXAI_DATA_DIR").unwrap_or_else(|| "./data".into()).into(),
        }),
        "postgres" => Ok(StoreConfig::Postgres {
            url: database_url.ok_or_else(|| invalid("DATABASE_URL", "required when EXAI_STORE=postgres"))?,
        }),
        "supabase" => {
            let url = var("SUPABASE_URL")
                .ok_or_else(|| invalid("SUPABASE_URL", "required when EXAI_STORE=supabase"))?;
            let url = check_url("SUPABASE_URL", &url, &["https", "http"])?;
            let key = var("SUPABASE_SERVICE_ROLE_KEY").or_else(|| var("SUPABASE_KEY")).ok_or_else(|| {
                invalid("SUPABASE_SERVICE_ROLE_KEY", "required (or SUPABASE_KEY) with SUPABASE_URL")
            })?;
            Ok(StoreConfig::Supabase { url, key: Secret::new(key), database_url })
        }
        other => Err(invalid("EXAI_STORE", format!("{other:?} is not sqlite, postgres or supabase"))),
    }
}
