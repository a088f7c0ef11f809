//! Wiring: builds the HTTP app and runs watchers, scraper and the secure port together.
//!
//! OWNER: pipeline helper.
