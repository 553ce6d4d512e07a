//! SES → SNS ingest through the running appliance. The signing fixture (a
//! test CA and SNS messages signed with it) is the one the `api` crate's own
//! SNS tests use.

#[path = "../../../api/tests/support/sns_fixture.rs"]
mod fixture;
mod webhook;
