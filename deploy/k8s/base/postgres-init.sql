-- One database per service: every service has its own tables and its own `outbox` table of the
-- same name, so two services cannot share a database. docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d, which PostgreSQL runs once, when its data volume is still empty.
CREATE DATABASE tranche_signal;
CREATE DATABASE tranche_safety;
CREATE DATABASE tranche_executor;
CREATE DATABASE tranche_ledger;
