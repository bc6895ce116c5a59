//! One integration-test binary: every test starts a real server on a random
//! port, with a PostgreSQL database or a SQLite file of its own.

mod helpers;

mod alerts;
mod auth;
mod concurrency;
mod group_commit;
mod input;
mod replay;
mod websocket;
