mod api;
mod cli;
mod harness;
mod harness_smoke;
mod support;
