//! The appliance's integration tests, in one binary: each area is a module
//! (its tests plus the helpers only it uses), `support` is the harness all of
//! them share (`TestServer` on 127.0.0.1 port 0, a raw SMTP client). One
//! binary links the appliance once instead of once per test file.

mod api;
mod cluster;
mod cluster_accounts;
mod cluster_campaigns;
mod cluster_handover;
mod cluster_listing;
mod cluster_mailpit;
mod cluster_mailpit_events;
mod cluster_netns;
mod mailpit;
mod mcp;
mod ports;
mod realtime;
mod ses;
mod smtp;
mod support;
mod tidy;
mod ui;
mod webhooks;
