//! Listings of threads in SQLite: by activity, by title, and a thread's children.

use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use super::rows::{decode_thread, encode_time, position};
use crate::domain::Thread;
use crate::store::{
    Activity, Listed, Page, StoreError, ThreadQuery, child_position, escape_like, thread_position,
};

/// The rows a listing may return. The activity index serves one range: rows before an
/// upper position, the nearer of the cursor and an expiry cutoff, and after a lower
/// instant. Both are always bound, an absent one as the end of the range (text timestamps
/// sort between `''` and `'~'`), where `?n IS NULL OR …` would make SQLite scan the index.
macro_rules! thread_range {
    () => {
        " (c.updated_at, c.id) < (?1, ?2) AND c.updated_at > ?3 AND (?6 IS NULL OR c.id = ?6)"
    };
}

/// The search term (`?4`, `LIKE`-escaped) as a part of the title, any case.
macro_rules! title_matches {
    () => {
        " AND (?4 IS NULL OR c.title LIKE '%' || ?4 || '%' ESCAPE '\\')"
    };
}

macro_rules! newest_first {
    () => {
        " ORDER BY c.updated_at DESC, c.id DESC"
    };
}

const LIST_THREADS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM conversations c WHERE",
    thread_range!(),
    title_matches!(),
    newest_first!(),
    " LIMIT ?5"
);

/// A search among the `?7` most recent threads of the range only: when a term is common
/// these already hold a whole page of matches, found in order without the index.
const SEARCH_RECENT: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM (SELECT * FROM conversations c WHERE",
    thread_range!(),
    newest_first!(),
    " LIMIT ?7) c WHERE true",
    title_matches!(),
    newest_first!(),
    " LIMIT ?5"
);

/// How many of the most recent threads `SEARCH_RECENT` reads.
const RECENT: u32 = 2000;

/// Reads only the threads whose title holds every trigram of the term (`?7`), found in
/// the trigram index, then checks them with the same `LIKE` as any other listing.
const SEARCH_THREADS: &str = concat!(
    "SELECT ",
    thread_columns!(),
    " FROM conversations_title f CROSS JOIN conversations c ON c.rowid = f.rowid",
    " WHERE f.conversations_title MATCH ?7 AND",
    thread_range!(),
    title_matches!(),
    newest_first!(),
    " LIMIT ?5"
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
        // `(updated_at, id) < (t, '~')` holds exactly when `updated_at <= t`.
        let cutoff = |t| (encode_time(t), "~".to_owned());
        let cursor = query.after.map(|c| (encode_time(c.at), c.id.to_string()));
        let (upper, lower) = match query.activity {
            Activity::Any => (cursor, None),
            Activity::ChangedAfter(t) => (cursor, Some(encode_time(t))),
            Activity::ChangedAtOrBefore(t) => {
                let bound = cutoff(t);
                (Some(cursor.map_or(bound.clone(), |at| at.min(bound))), None)
            }
        };
        let (upper_at, upper_id) = upper.unwrap_or_else(|| ("~".to_owned(), String::new()));
        let indexed = query.search.as_deref().filter(|term| term.chars().count() >= TRIGRAM);
        let select = |sql, last| {
            self.trip();
            sqlx::query(sql)
                .bind(upper_at.clone())
                .bind(upper_id.clone())
                .bind(lower.clone().unwrap_or_default())
                .bind(query.search.as_deref().map(escape_like))
                .bind(query.limit + 1)
                .bind(query.continuation_id.as_deref())
                .bind(last)
                .fetch_all(&self.reader)
        };
        let rows = match indexed {
            None => select(LIST_THREADS, None).await?,
            Some(term) => {
                let recent = select(SEARCH_RECENT, Some(RECENT.to_string())).await?;
                if recent.len() > query.limit as usize {
                    recent
                } else {
                    select(SEARCH_THREADS, Some(phrase(term))).await?
                }
            }
        };
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
