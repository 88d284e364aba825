//! PostgreSQL: the production database (placeholder until its module lands).
