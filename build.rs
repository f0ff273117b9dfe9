//! `sqlx::migrate!` embeds `migrations/` at compile time, but Cargo does not know the
//! macro reads that directory: without this, a new migration file would not reach the
//! binary until some source file changed.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
