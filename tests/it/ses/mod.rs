//! SES → SNS ingest over HTTP: the webhook route in memory with injected
//! certificates, confirmations and time (`route`), and the running appliance
//! (`webhook`). Signing material comes from `uncorreo_ses::fixture`.

mod route;
mod webhook;

use uncorreo_ses::fixture;
