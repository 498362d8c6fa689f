-- Cliniko's businesses (a clinic's locations): a small reference list read whole on every run, so the active
-- patients' appointment details can name where each appointment is. Row-level security comes from sql/views.
CREATE TABLE cliniko_businesses (
    organization_id text NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    id              text NOT NULL,
    name            text,
    created_at      timestamptz,
    updated_at      timestamptz NOT NULL,
    archived_at     timestamptz,
    deleted_at      timestamptz,
    raw             jsonb NOT NULL,
    last_full_pass  bigint,
    removed_at      timestamptz,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, id)
);
