mod harness;
mod harness_smoke;
