//! `sqlx::migrate!` embeds `migrations/` at compile time, but Cargo does
//! not know the macro read those files: without this, a new migration is
//! left out of the binary until some Rust source changes (sqlx's docs on
//! `migrate!` ask for exactly this line).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
