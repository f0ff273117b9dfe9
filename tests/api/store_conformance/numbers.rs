//! JSON numbers read back exactly as they were written.

use chrono::TimeDelta;
use exai::domain::{Metadata, NewThread, NewTurn};
use exai::store::{Activity, Store, ThreadQuery};

use super::{append, depth, new_thread, now, titled, user};
use crate::support;

/// Numbers as clients send them: the extremes of every JSON number serde_json holds.
const NUMBERS: [&str; 16] = [
    "1.7976931348623157e308",
    "1.7e308",
    "1e300",
    "5e-324",
    "2.2250738585072014e-308",
    "-0.0",
    "-0",
    "0.1",
    "123.456",
    "1e-7",
    "18446744073709551615",
    "-9223372036854775808",
    "18446744073709551616",
    "-9223372036854775809",
    "100000000000000000000000000000",
    "1.0",
];

/// Every number the domain accepts reads back as the exact JSON it was written as:
/// in the thread, its turns, a turn page, the history and a list page.
pub async fn reads_accepted_numbers_back_exactly(store: &dyn Store) {
    let mut refused = Vec::new();
    for text in NUMBERS {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let metadata: Metadata = [("n".to_owned(), value)].into_iter().collect();
        let new = NewThread { metadata: metadata.clone(), ..titled(text) };
        if new.validate().is_err() {
            refused.push(text);
            continue;
        }
        let written = serde_json::to_string(&metadata).unwrap();
        let at = now() + TimeDelta::days(1);
        let id = new_thread(store, new, at).await;
        let turn = NewTurn { metadata: metadata.clone(), ..user("numbers") };
        let mut append = append(id, vec![turn], support::policy(20));
        append.now = at;
        store.append_turns(&append).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        let read = |what: &str, metadata: &Metadata| {
            assert_eq!(serde_json::to_string(metadata).unwrap(), written, "{text} in {what}");
        };
        let thread = store.get_thread(id).await.unwrap_or_else(|e| panic!("{text}: {e}")).unwrap();
        read("thread", &thread.thread.metadata);
        read("turn", &thread.turns[0].metadata);
        let page = store.list_turns(id, 0, 10).await.unwrap_or_else(|e| panic!("{text}: {e}")).unwrap();
        read("turn page", &page[0].metadata);
        let history = store.history(id, depth(20)).await.unwrap_or_else(|e| panic!("{text}: {e}")).unwrap();
        read("history", &history.turns[0].metadata);
        let query = ThreadQuery {
            limit: 1,
            after: None,
            search: Some(text.into()),
            activity: Activity::Any,
            continuation_id: None,
        };
        let listed = store.list_threads(&query).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        read("list page", &listed.items[0].metadata);
        assert!(store.delete_thread(id).await.unwrap());
    }
    assert_eq!(refused, ["-0.0", "-0"], "only negative zero cannot be stored everywhere");
}
