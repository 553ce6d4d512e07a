//! The SES ingest crate's integration tests, in one binary: signature
//! verification and the certificate layer (`verify`), and the real HTTPS
//! fetcher against a local TLS server (`https`). All signing material comes
//! from the crate's `fixture` feature (a test CA made at run time).

mod https;
mod verify;
