//! One behaviour for every store backend: each case runs against each of them.

mod history;
mod numbers;
mod runs;
mod threads;
mod turns;
mod unreadable;

use chrono::{DateTime, Utc};
use exai::domain::{
    ConversationPolicy, HISTORY_MAX_BYTES, HistoryLimits, NewThread, NewTurn, Role, truncate_to_micros,
};
use exai::secret::Secret;
use exai::store::{AppendTurns, PostgresStore, Store, SupabaseStore};
use std::sync::Arc;
use uuid::Uuid;

use self::history::{
    bounds_history_depth, keeps_the_newest_turns_within_the_byte_budget,
    reads_history_along_parents_in_one_round_trip,
};
use self::numbers::reads_accepted_numbers_back_exactly;
use self::runs::{
    a_reserved_run_records_its_answer_past_expiry, appends_leave_the_room_runs_reserved,
    fails_runs_whose_lease_ended, lists_runs_newest_first_with_filters,
    refuses_the_turns_of_a_run_that_has_ended, reserves_room_atomically,
    reserves_room_for_the_turns_of_runs_under_way, saves_and_reads_runs,
};
use self::threads::{
    creates_and_reads_threads, deletes_threads_with_their_turns,
    finds_titles_by_substring_through_their_index, lists_children_newest_first,
    lists_threads_by_activity_with_keyset_paging, pages_through_threads_changed_at_the_same_instant,
    refuses_a_missing_parent,
};
use self::turns::{
    appends_with_contiguous_seqs, pages_through_turns, refuses_appends_past_the_turn_limit,
    refuses_appends_to_an_expired_thread, refuses_appends_to_an_unknown_thread, replays_an_idempotent_append,
    serializes_concurrent_appends,
};
use crate::support;
use crate::support::postgrest::{self, PostgrestServer};
use crate::support::services;

fn now() -> DateTime<Utc> {
    truncate_to_micros(Utc::now())
}

fn titled(title: &str) -> NewThread {
    NewThread { title: Some(title.into()), ..NewThread::default() }
}

fn user(content: &str) -> NewTurn {
    NewTurn::new(Role::User, content)
}

fn depth(max_depth: u32) -> HistoryLimits {
    HistoryLimits { max_depth, max_bytes: HISTORY_MAX_BYTES }
}

fn append(thread_id: Uuid, turns: Vec<NewTurn>, policy: ConversationPolicy) -> AppendTurns {
    AppendTurns { thread_id, turns, idempotency_key: None, policy, now: now() }
}

async fn new_thread(store: &dyn Store, new: NewThread, at: DateTime<Utc>) -> Uuid {
    store.create_thread(Uuid::new_v4(), &new, at).await.expect("create thread").id
}

/// Declares every case as a test against one backend.
macro_rules! store_conformance {
    ($backend:ident, $open:expr) => {
        conformance!(
            $backend,
            $open,
            cases: [
                creates_and_reads_threads,
                refuses_a_missing_parent,
                appends_with_contiguous_seqs,
                replays_an_idempotent_append,
                refuses_appends_to_an_expired_thread,
                refuses_appends_past_the_turn_limit,
                refuses_appends_to_an_unknown_thread,
                lists_threads_by_activity_with_keyset_paging,
                pages_through_threads_changed_at_the_same_instant,
                finds_titles_by_substring_through_their_index,
                lists_children_newest_first,
                deletes_threads_with_their_turns,
                pages_through_turns,
                reads_history_along_parents_in_one_round_trip,
                bounds_history_depth,
                keeps_the_newest_turns_within_the_byte_budget,
                reserves_room_for_the_turns_of_runs_under_way,
                appends_leave_the_room_runs_reserved,
                refuses_the_turns_of_a_run_that_has_ended,
                a_reserved_run_records_its_answer_past_expiry,
                saves_and_reads_runs,
                lists_runs_newest_first_with_filters,
                fails_runs_whose_lease_ended,
                reads_accepted_numbers_back_exactly,
            ],
            shared: [serializes_concurrent_appends, reserves_room_atomically]
        );
    };
}

pub async fn sqlite() -> Option<(Arc<dyn Store>, tempfile::TempDir)> {
    let (store, dir) = support::sqlite_store().await;
    Some((store, dir))
}

pub async fn postgres() -> Option<(Arc<dyn Store>, ())> {
    let url = services::postgres_database()?;
    Some((Arc::new(PostgresStore::connect(&url).unwrap()), ()))
}

pub async fn supabase() -> Option<(Arc<dyn Store>, PostgrestServer)> {
    let url = services::postgres_database()?;
    let gateway = postgrest::start(&url, postgrest::SECRET_KEY).await;
    let project = gateway.url.parse().unwrap();
    let store = SupabaseStore::connect(&project, &Secret::new(postgrest::SECRET_KEY)).unwrap();
    Some((Arc::new(store), gateway))
}

store_conformance!(sqlite_backend, super::sqlite());
store_conformance!(postgres_backend, super::postgres());
store_conformance!(supabase_backend, super::supabase());
