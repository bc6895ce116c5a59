//! One integration-test binary: every test starts a real server on a random
//! port, with a PostgreSQL database or a SQLite file of its own.

mod helpers;

mod alerts;
mod auth;
mod concurrency;
mod dashboard;
mod external;
mod forecast;
mod group_commit;
mod holds;
mod input;
mod limits;
mod observability;
mod openapi;
mod pipeline;
mod push_actors;
mod redis_proxy;
mod replay;
mod scaleout;
mod trust_edges;
mod trust_parsers;
mod trust_push;
mod trust_write;
mod webhooks;
mod websocket;
