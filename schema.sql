-- sandboxd schema: every migration in Sources/Store/Migrations.swift, in order.
--
-- The rule: this file is exactly the concatenation of the migrations' SQL texts (a test compares
-- them byte for byte), so it is always the full picture of the newest schema, and applying it by
-- hand gives the database the daemon's migrations give. A schema change appends a numbered
-- migration to Migration.all and the same text to the end of this file. A migration that has
-- shipped is never changed (comments aside: the ledger records version numbers, not text).
-- Every statement is idempotent, so applying this file twice is a no-op.
--
-- Migration 1: the seven tables of the original plan, exactly as specified there (names, columns,
-- types, defaults, foreign keys), followed by what the daemon adds: additive columns only, indexes
-- for history queries, and the schema_migrations ledger.

CREATE EXTENSION IF NOT EXISTS pgcrypto; -- gen_random_uuid() before PostgreSQL 13

-- ---------------------------------------------------------------------------------------------
-- The original plan's tables.
-- ---------------------------------------------------------------------------------------------

-- 사용자 관리 (users)
CREATE TABLE IF NOT EXISTS users (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    username VARCHAR(50) UNIQUE NOT NULL,
    email VARCHAR(100) UNIQUE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    is_active BOOLEAN DEFAULT TRUE
);

-- 세션 관리 (sessions)
CREATE TABLE IF NOT EXISTS sessions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id),
    session_name VARCHAR(100),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    ended_at TIMESTAMP,
    status VARCHAR(20) DEFAULT 'active'
);

-- 문서 관리 (documents)
CREATE TABLE IF NOT EXISTS documents (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id),
    filename VARCHAR(255) NOT NULL,
    content TEXT,
    file_type VARCHAR(50),
    file_size INTEGER,
    upload_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    metadata JSONB
);

-- 코드 실행 기록 (code executions)
CREATE TABLE IF NOT EXISTS code_executions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id UUID REFERENCES sessions(id),
    code TEXT NOT NULL,
    language VARCHAR(20) NOT NULL,
    execution_mode VARCHAR(20), -- 'docker', 'local', 'sandbox'
    result JSONB,
    execution_time FLOAT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- Agent 실행 기록 (agent executions)
CREATE TABLE IF NOT EXISTS agent_executions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id UUID REFERENCES sessions(id),
    agent_type VARCHAR(50) NOT NULL,
    input_data JSONB,
    output_data JSONB,
    execution_time FLOAT,
    sandbox_id VARCHAR(100), -- 샌드박스 식별자 (sandbox identifier)
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- 채팅 기록 (chat messages)
CREATE TABLE IF NOT EXISTS chat_messages (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id UUID REFERENCES sessions(id),
    user_message TEXT,
    agent_response TEXT,
    message_type VARCHAR(20), -- 'query', 'code', 'analysis'
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- 인덱스 통계 (index statistics)
CREATE TABLE IF NOT EXISTS index_stats (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID REFERENCES users(id),
    document_count INTEGER,
    chunk_count INTEGER,
    vector_count INTEGER,
    last_rebuild TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- ---------------------------------------------------------------------------------------------
-- What sandboxd adds. Additive only: no original column is changed or dropped.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Execution status and where it ran. 'running' rows left by a crashed daemon become 'aborted'.
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS status VARCHAR(20) NOT NULL DEFAULT 'running'
    CHECK (status IN ('running', 'ok', 'error', 'timeout', 'oom', 'killed', 'aborted'));
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS isolation_level SMALLINT
    CHECK (isolation_level BETWEEN 1 AND 4);
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS policy VARCHAR(100);
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS exit_code INTEGER;
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS signal INTEGER;
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS started_at TIMESTAMPTZ;
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS finished_at TIMESTAMPTZ;
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS cpu_usec BIGINT;
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS memory_peak_bytes BIGINT;
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS limits_enforced BOOLEAN;
-- The caller, from SO_PEERCRED: who may see this record.
ALTER TABLE agent_executions ADD COLUMN IF NOT EXISTS owner_uid BIGINT;

-- Code runs point at their agent execution (same id chosen before the run).
ALTER TABLE code_executions ADD COLUMN IF NOT EXISTS agent_execution_id UUID
    REFERENCES agent_executions(id) ON DELETE SET NULL;

-- Users created from a socket peer carry their uid.
ALTER TABLE users ADD COLUMN IF NOT EXISTS unix_uid BIGINT UNIQUE;

-- History queries: by sandbox, by session, by owner, newest first.
CREATE INDEX IF NOT EXISTS agent_executions_sandbox_idx ON agent_executions (sandbox_id, created_at DESC);
CREATE INDEX IF NOT EXISTS agent_executions_session_idx ON agent_executions (session_id, created_at DESC);
CREATE INDEX IF NOT EXISTS agent_executions_owner_idx ON agent_executions (owner_uid, created_at DESC);
CREATE INDEX IF NOT EXISTS agent_executions_created_idx ON agent_executions (created_at DESC);
CREATE INDEX IF NOT EXISTS agent_executions_running_idx ON agent_executions (status) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS code_executions_session_idx ON code_executions (session_id, created_at DESC);
CREATE INDEX IF NOT EXISTS sessions_user_idx ON sessions (user_id);

INSERT INTO schema_migrations (version, name) VALUES (1, 'initial schema') ON CONFLICT (version) DO NOTHING;

-- ---------------------------------------------------------------------------------------------
-- Migration 2: egress events. Every connection a sandbox made (or tried) through the egress
-- proxy, allowed or not, tied to the execution that made it.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS egress_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: the connection happened between executions of a persistent sandbox.
    execution_id UUID REFERENCES agent_executions(id) ON DELETE CASCADE,
    sandbox_id VARCHAR(100) NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    method TEXT NOT NULL,       -- 'CONNECT' or the HTTP method; '' when unparsable
    host TEXT NOT NULL,         -- as requested; '' when unknown
    port INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
    address TEXT,               -- the address connected to or refused
    decision VARCHAR(10) NOT NULL CHECK (decision IN ('allowed', 'denied', 'failed')),
    reason TEXT NOT NULL,
    status INTEGER,             -- HTTP status the proxy answered with itself
    bytes_up BIGINT NOT NULL DEFAULT 0 CHECK (bytes_up >= 0),
    bytes_down BIGINT NOT NULL DEFAULT 0 CHECK (bytes_down >= 0),
    duration FLOAT NOT NULL DEFAULT 0 -- seconds
);

CREATE INDEX IF NOT EXISTS egress_events_execution_idx ON egress_events (execution_id, occurred_at);
CREATE INDEX IF NOT EXISTS egress_events_sandbox_idx ON egress_events (sandbox_id, occurred_at);

INSERT INTO schema_migrations (version, name) VALUES (2, 'egress events') ON CONFLICT (version) DO NOTHING;
