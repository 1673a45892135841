"""The durable state: plans, members, baselines, claim history, ledgers, provider
statistics, reviews and the audit trail. SQLAlchemy 2 with Alembic migrations; a SQLite
file by default, PostgreSQL by URL, the same code for both."""
