//! Listings of threads in SQLite: by activity, by title, and a thread's children.

use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use super::rows::{decode_thread, encode_time, position};
use crate::domain::Thread;
use crate::store::{
    Activity, Listed, Page, StoreError, ThreadQuery, child_position, escape_like, thread_position,
};

/// Every filter of a listing, written so that an absent one is a range that holds every
/// row (text timestamps sort between `''` and `'~'`): the activity index then serves the
/// keyset and the activity bounds, where `?n IS NULL OR …` would make SQLite scan it.
macro_rules! thread_filters {
    () => {
        " (c.updated_at, c.id) < (coalesce(?1, '~'), coalesce(?2, ''))\
         AND c.updated_at > coalesce(?3, '') AND c.updated_at <= coalesce(?4, '~')\
         AND (?5 IS NULL OR c.title LIKE '%' || ?5 || '%' ESCAPE '\\')\
         AND (?7 IS NULL OR c.id = ?7)\
         ORDER BY c.updated_at DESC, c.id DESC LIMIT ?6"
    };
}

const LIST_THREADS: &str =
    concat!("SELECT ", thread_columns!(), " FROM conversations c WHERE", thread_filters!());

/// Reads only the threads whose title holds every trigram of the term, found in the
/// trigram index, then checks them with the same `LIKE` as any other listing.
const SEARCH_THREADS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM conversations_title f CROSS JOIN conversations c ON c.rowid = f.rowid",
    " WHERE f.conversations_title MATCH ?8 AND",
    thread_filters!()
);

const LIST_CHILDREN: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM conversations c WHERE c.parent_id = ?1",
    " ORDER BY c.created_at DESC, c.id DESC LIMIT ?2"
);

/// The shortest term the trigram index can find; shorter ones are matched row by row.
const TRIGRAM: usize = 3;

/// The term as one FTS5 phrase: its trigrams, in order.
fn phrase(term: &str) -> String {
    format!("\"{}\"", term.replace('"', "\"\""))
}

impl SqliteStore {
    pub(super) async fn select_threads(&self, query: &ThreadQuery) -> Result<Page<Thread>, StoreError> {
        let (changed_after, changed_at_or_before) = match query.activity {
            Activity::Any => (None, None),
            Activity::ChangedAfter(t) => (Some(encode_time(t)), None),
            Activity::ChangedAtOrBefore(t) => (None, Some(encode_time(t))),
        };
        let indexed = query.search.as_deref().filter(|term| term.chars().count() >= TRIGRAM);
        let sql = if indexed.is_some() { SEARCH_THREADS } else { LIST_THREADS };
        self.trip();
        let mut select = sqlx::query(sql)
            .bind(query.after.map(|c| encode_time(c.at)))
            .bind(query.after.map(|c| c.id.to_string()))
            .bind(changed_after)
            .bind(changed_at_or_before)
            .bind(query.search.as_deref().map(escape_like))
            .bind(query.limit + 1)
            .bind(query.continuation_id.as_deref());
        if let Some(term) = indexed {
            select = select.bind(phrase(term));
        }
        let rows = select.fetch_all(&self.reader).await?;
        Ok(page_of(&rows, query.limit, thread_position, "updated_at"))
    }

    pub(super) async fn select_children(
        &self,
        parent_id: uuid::Uuid,
        limit: u32,
    ) -> Result<Page<Thread>, StoreError> {
        self.trip();
        let rows = sqlx::query(LIST_CHILDREN)
            .bind(parent_id.to_string())
            .bind(limit + 1)
            .fetch_all(&self.reader)
            .await?;
        Ok(page_of(&rows, limit, child_position, "created_at"))
    }
}

fn page_of(
    rows: &[SqliteRow],
    limit: u32,
    at: fn(&Thread) -> crate::store::Cursor,
    time_column: &str,
) -> Page<Thread> {
    let rows = rows.iter().map(|row| Listed::decode(decode_thread(row), || position(row, time_column)));
    Page::of(rows.collect(), limit, at, "thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_is_one_quoted_phrase() {
        assert_eq!(phrase("number 42"), "\"number 42\"");
        assert_eq!(phrase("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
